"""The patched causal-LM forward: decoder, then the fused linear + shaped loss; no [B, T, V] logits.

    from shapedce.hf import patch_causal_lm, set_shaped_loss
    patch_causal_lm(model, "precision")              # any *ForCausalLM that shapedce.hf.heads can read
    out = model(input_ids=ids, labels=ids)           # out.loss (+ MoE router term), out.loss_stats
    set_shaped_loss(model, ShapedLoss(beta=-0.1))    # new knobs, same patched forward

Run its tests with `PYTHONPATH=src python -m pytest -q tests/test_hf.py tests/test_hf_families.py`.
Without labels (generation) the model's original forward runs untouched, and `save_pretrained`
writes the usual files. A `PeftModel` is patched through its base model; a frozen head gets no
weight gradient. TRL's `SFTTrainer` installs its own cross-entropy head (`add_fused_lm_head`)
when it is built: patch `trainer.model` after building the trainer, and the forward answers TRL's
`fused_lm_head=True` calls with the shaped loss (see `_trl_output`), with TRL's per-token entropy and
top-1 (token accuracy) computed in the same fused pass.

`token_weights=` (the labels' shape, shifted with them; or `shift_labels`' shape) weighs each token's
loss; the mean still divides by the number of counted tokens (`shapedce.loss.shaped_cross_entropy`).
A loss with beta="auto" is accepted but needs `shapedce.hf.ShapedLossCallback`, which sets beta each
optimizer step; without it the loss path raises a UserError. While a callback collects
(`_shaped_collect` is a list), every training-mode loss-path call appends (loss, loss_stats) to it.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers.utils import ModelOutput

from ..errors import UserError
from ..loss import LossConfig, ShapedLoss
from .heads import HeadSpec, module_at, read_head


def as_shaped_loss(loss: LossConfig | str) -> ShapedLoss:
    """A callable `ShapedLoss` from a setting name, a `ShapedLoss`, or a plain `LossConfig` (a run
    config's `loss:` section)."""
    if isinstance(loss, ShapedLoss):
        return loss
    if isinstance(loss, LossConfig):
        return ShapedLoss(**loss.settings())
    if isinstance(loss, str):
        return ShapedLoss.named(loss)
    raise UserError(
        f"shaped_loss must be a ShapedLoss, a LossConfig or a setting name; got {type(loss).__name__}"
    )


def shift_labels_of(labels: Tensor, ignore_index: int) -> Tensor:
    """Next-token targets: position t predicts labels[t + 1]; the last position is ignored."""
    return torch.nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:]


def _reduce(loss_sum_or_mean, num_items_in_batch):
    return loss_sum_or_mean if num_items_in_batch is None else loss_sum_or_mean / num_items_in_batch


@dataclass
class ShapedCausalLMOutput(ModelOutput):
    """What a patched model returns on the loss path; `logits` is None unless asked for.

    On TRL's `fused_lm_head=True` path `log_probs` holds minus the per-token shaped loss (so TRL's
    `-log_probs.sum() / tokens` is the shaped loss), `entropy` each counted token's entropy and
    `is_top1` whether its target has the largest logit (TRL's token accuracy); 0 on ignored tokens.
    """

    loss: Tensor | None = None
    logits: Tensor | None = None
    aux_loss: Tensor | None = None
    loss_stats: dict | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None
    router_logits: tuple | None = None
    log_probs: Tensor | None = None
    entropy: Tensor | None = None
    is_top1: Tensor | None = None
    label_mask: Tensor | None = None


def _load_balancing_loss_func(model):
    """The router balance loss of the model's modeling file; found through the class's bases, since
    FSDP2's `fully_shard` swaps in a subclass defined in torch's own module."""
    for cls in type(model).__mro__:
        func = getattr(sys.modules.get(cls.__module__), "load_balancing_loss_func", None)
        if func is not None:
            return func
    raise UserError(f"{type(model).__name__}: no load_balancing_loss_func in its modeling module")


def _router_aux(self, outputs, attention_mask):
    experts, top_k, _ = self._shaped_spec.router
    return _load_balancing_loss_func(self)(outputs.router_logits, experts, top_k, attention_mask)


def current_loss(lm) -> ShapedLoss:
    """The fixed-beta loss the next loss-path call of a patched model uses (beta=auto: the callback's)."""
    knobs: ShapedLoss = lm._shaped_loss
    if not knobs.auto_beta:
        return knobs
    step = getattr(lm, "_shaped_step_loss", None)
    if step is None:
        raise UserError(
            "beta=auto on a patched model needs shapedce.hf.ShapedLossCallback in the Trainer's callbacks "
            "(it sets beta every optimizer step)"
        )
    return step


def _collect(self, loss: Tensor, stats) -> None:
    if self.training and stats is not None and isinstance(getattr(self, "_shaped_collect", None), list):
        self._shaped_collect.append((float(loss.detach()), {k: v for k, v in stats.items() if v.dim() == 0}))


def _shift_weights(token_weights, labels, shift_labels):
    """token_weights aligned with the next-token targets (shifted like the labels)."""
    if token_weights is None or shift_labels is not None or labels is None:
        return token_weights
    return torch.nn.functional.pad(token_weights, (0, 1), value=0.0)[..., 1:]


def _fused_loss(self, hidden: Tensor, targets: Tensor, **kwargs):
    spec: HeadSpec = self._shaped_spec
    head = getattr(self, spec.head)
    if type(head) is not torch.nn.Linear:  # e.g. LoRA put on the head after patching: its delta would be lost
        kind = f"{type(head).__module__}.{type(head).__name__}"
        raise UserError(f"{type(self).__name__}.{spec.head} is now a {kind}; patch after wrapping the model")
    shape = {}
    if spec.logit_scale != 1.0:
        shape["logit_scale"] = spec.logit_scale
    if spec.softcap is not None:
        shape["softcap"] = spec.softcap
    hidden = hidden.to(head.weight.device)
    return current_loss(self).fused(
        hidden,
        head.weight,
        targets.to(hidden.device),
        bias=head.bias,
        chunk_size=self._shaped_chunk_size,
        **shape,
        **kwargs,
    )


def _shaped_forward(
    self,
    input_ids=None,
    attention_mask=None,
    *args,
    labels=None,
    shift_labels=None,
    num_items_in_batch=None,
    skip_logits=None,
    return_loss_stats=None,
    fused_lm_head=False,
    token_weights=None,
    **kwargs,
):
    knobs: ShapedLoss = self._shaped_loss
    token_weights = _shift_weights(token_weights, labels, shift_labels)
    targets = (
        shift_labels
        if shift_labels is not None or labels is None
        else shift_labels_of(labels, knobs.ignore_index)
    )
    reduction = "mean" if num_items_in_batch is None else "sum"
    if skip_logits is None:
        skip_logits = targets is not None
    if not skip_logits and not fused_lm_head:  # the original forward, then (if labels) the loss on its logits
        out = self._shaped_original_forward(input_ids, attention_mask, *args, **kwargs)
        if targets is not None:
            tw = None if token_weights is None else token_weights.to(out.logits.device)
            loss = current_loss(self)(
                out.logits, targets.to(out.logits.device), reduction=reduction, token_weights=tw
            )
            out.loss = _reduce(loss, num_items_in_batch)
        return out
    if args:
        raise UserError("patched forward: pass the arguments after attention_mask by keyword")
    if targets is None:
        raise UserError("the fused loss path (skip_logits / fused_lm_head) needs labels or shift_labels")
    kwargs.pop("logits_to_keep", None)
    spec: HeadSpec = self._shaped_spec
    if spec.moe:  # the loss path keeps the balance loss by default (TRL's path: as its config says)
        default = bool(getattr(self.config, "output_router_logits", False)) if fused_lm_head else True
        router = kwargs.pop("output_router_logits", None)
        kwargs["output_router_logits"] = default if router is None else router
    if fused_lm_head:
        kwargs["use_cache"] = False
    outputs = module_at(self, spec.decoder)(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    hidden = outputs.last_hidden_state if hasattr(outputs, "last_hidden_state") else outputs[0]
    aux_loss = None
    if spec.moe and kwargs["output_router_logits"]:
        aux_loss = _router_aux(self, outputs, attention_mask)
    if token_weights is not None:
        token_weights = token_weights.to(hidden.device)
    if fused_lm_head:
        return _trl_output(self, hidden, targets, aux_loss, num_items_in_batch, token_weights)
    want_stats = self._shaped_return_stats if return_loss_stats is None else return_loss_stats
    want_stats = want_stats or isinstance(getattr(self, "_shaped_collect", None), list)
    result = _fused_loss(
        self, hidden, targets, reduction=reduction, return_stats=want_stats, token_weights=token_weights
    )
    loss, stats = result if want_stats else (result, None)
    loss = _reduce(loss, num_items_in_batch)
    _collect(self, loss, stats)
    if aux_loss is not None:
        share = 1.0  # with num_items_in_batch this micro-batch is a part of a larger batch: weigh by tokens
        if num_items_in_batch is not None:
            share = (targets != knobs.ignore_index).sum().to(loss.device) / num_items_in_batch
        loss = loss + module_at(self, spec.router[2]) * share * aux_loss.to(loss.device)
    return ShapedCausalLMOutput(
        loss=loss,
        aux_loss=aux_loss,
        loss_stats=stats,
        hidden_states=getattr(outputs, "hidden_states", None),
        attentions=getattr(outputs, "attentions", None),
        router_logits=getattr(outputs, "router_logits", None),
    )


def _trl_output(self, hidden, targets, aux_loss, num_items_in_batch, token_weights=None):
    """Answer TRL's `fused_lm_head=True` call: per-token shaped losses where TRL expects -log_probs, and
    each token's entropy and top-1 hit from the same fused pass (TRL's entropy and token accuracy)."""
    per_token, stats = _fused_loss(
        self,
        hidden,
        targets,
        reduction="none",
        return_stats=True,
        token_stats=True,
        token_weights=token_weights,
    )
    mask = targets.to(per_token.device) != self._shaped_loss.ignore_index
    denominator = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
    loss = per_token.sum() / denominator
    entropy, is_top1 = stats.pop("token_entropy"), stats.pop("token_is_top1")
    _collect(self, loss, stats)
    if aux_loss is not None:
        loss = loss + module_at(self, self._shaped_spec.router[2]) * aux_loss.to(loss.device)
    return ShapedCausalLMOutput(
        loss=loss,
        aux_loss=aux_loss,
        loss_stats=stats,
        log_probs=-per_token,
        label_mask=mask,
        entropy=entropy.to(per_token.dtype),
        is_top1=is_top1.bool(),
    )


def _causal_lm_of(model):
    """The module whose forward is patched: the model itself, or a PeftModel's base model."""
    if hasattr(model, "peft_config") and hasattr(model, "get_base_model"):
        return model.get_base_model()
    return model


def _original_forward(model):
    """The forward to keep for generation: the instance's, unless it is TRL's cross-entropy head."""
    forward = model.forward
    code = getattr(getattr(forward, "__func__", forward), "__code__", None)
    if code is not None and code.co_name == "_fused_forward" and f"{'trl'}" in code.co_filename:
        return types.MethodType(type(model).forward, model)
    return forward


def _guarded_output_embeddings(self):
    """get_output_embeddings, refusing TRL's cross-entropy head when it wrapped this patched model: that
    head would call it and train with cross-entropy, silently skipping the shaped loss."""
    caller = sys._getframe(1).f_code
    if caller.co_name == "_fused_forward" and "trl" in caller.co_filename:
        raise UserError(
            "TRL's fused cross-entropy head wrapped a model patched by patch_causal_lm; "
            "build the SFTTrainer first, then call patch_causal_lm(trainer.model, ...)"
        )
    return type(self).get_output_embeddings(self)


def patch_causal_lm(
    model, shaped_loss: ShapedLoss | str, *, return_stats: bool = False, chunk_size: int | None = None
):
    """Make `model(…, labels=…)` use the fused shaped loss; returns the same model.

    With `return_stats=True` each loss-path output carries `loss_stats` (ce, entropy,
    topk_mass, tail_mass, target_in_topk, tokens). Calling it again replaces the loss; models
    whose logits it cannot reproduce exactly are refused with a UserError. A beta="auto" loss
    needs `ShapedLossCallback` (see the module docstring).
    """
    lm = _causal_lm_of(model)
    if not isinstance(lm, torch.nn.Module):
        raise UserError(f"patch_causal_lm needs a *ForCausalLM (torch module); got {type(model).__name__}")
    knobs = as_shaped_loss(shaped_loss)
    if getattr(lm, "_shaped_spec", None) is None:
        lm._shaped_spec = read_head(lm)
    if getattr(lm.forward, "__func__", None) is not _shaped_forward:
        lm._shaped_original_forward = _original_forward(lm)
    lm._shaped_loss = knobs
    lm._shaped_return_stats = return_stats
    lm._shaped_chunk_size = chunk_size
    lm.forward = types.MethodType(_shaped_forward, lm)
    if hasattr(type(lm), "get_output_embeddings"):
        lm.get_output_embeddings = types.MethodType(_guarded_output_embeddings, lm)
    return model


def set_shaped_loss(model, shaped_loss: ShapedLoss | str):
    """Change the knobs of an already patched model (e.g. beta each step); the forward stays as it is."""
    lm = _causal_lm_of(model)
    if getattr(getattr(lm, "forward", None), "__func__", None) is not _shaped_forward:
        raise UserError(
            f"set_shaped_loss needs a model patched by patch_causal_lm; got {type(model).__name__}"
        )
    lm._shaped_loss = as_shaped_loss(shaped_loss)
    if not lm._shaped_loss.auto_beta:
        lm._shaped_step_loss = None
    return model
