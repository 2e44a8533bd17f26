"""Hugging Face integration of the shaped loss: a Trainer loss function and a causal-LM patch.

    from shapedce.hf import compute_loss_func, patch_causal_lm
    trainer = Trainer(model=model, args=args, train_dataset=ds,
                      compute_loss_func=compute_loss_func("precision"))       # on logits

    patch_causal_lm(model, "precision")                     # fused: no [B, T, V] logits
    out = model(input_ids=ids, labels=ids)                   # out.loss, out.loss_stats

`compute_loss_func` works with any model that returns logits (it is what `transformers.Trainer`
and TRL's `SFTTrainer` call as `compute_loss_func(outputs, labels, num_items_in_batch)`).
`patch_causal_lm` replaces the `forward` of one model instance (a `Qwen3ForCausalLM`,
`Qwen3MoeForCausalLM`, or any `*ForCausalLM` with `.model` and `.lm_head`): with `labels` it runs
the decoder, then the fused linear + shaped loss on the last hidden states, and adds the MoE
router auxiliary loss, whatever `config.output_router_logits` says (generation needs that off;
pass `output_router_logits=False` to drop the term), weighted by this micro-batch's share of
`num_items_in_batch` when given, so gradient accumulation adds up to one global-batch term.
Without labels (generation) the original forward runs untouched. Checkpoints are unaffected: `save_pretrained` writes the usual files.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers.utils import ModelOutput

from .loss import ShapedLoss
from .errors import UserError


def as_shaped_loss(loss: ShapedLoss | str) -> ShapedLoss:
    if isinstance(loss, ShapedLoss):
        return loss
    if isinstance(loss, str):
        return ShapedLoss.named(loss)
    raise UserError(f"shaped_loss must be a ShapedLoss or a setting name; got {type(loss).__name__}")


def shift_labels_of(labels: Tensor, ignore_index: int) -> Tensor:
    """Next-token targets: position t predicts labels[t + 1]; the last position is ignored."""
    return torch.nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:]


def _reduce(loss_sum_or_mean, num_items_in_batch):
    return loss_sum_or_mean if num_items_in_batch is None else loss_sum_or_mean / num_items_in_batch


def compute_loss_func(shaped_loss: ShapedLoss | str, *, router_aux_loss_coef: float = 0.0):
    """A `compute_loss_func(outputs, labels, num_items_in_batch=None)` for `transformers.Trainer`.

    Uses the logits the model returned. Mean over non-ignored tokens, or the sum divided by
    `num_items_in_batch` when the Trainer passes it (gradient accumulation). For MoE models run
    with `output_router_logits=True`, `router_aux_loss_coef * outputs.aux_loss` is added.
    """
    knobs = as_shaped_loss(shaped_loss)

    def loss_fn(outputs, labels: Tensor, num_items_in_batch=None, **_: object) -> Tensor:
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        targets = shift_labels_of(labels, knobs.ignore_index).to(logits.device)
        reduction = "mean" if num_items_in_batch is None else "sum"
        loss = _reduce(knobs(logits, targets, reduction=reduction), num_items_in_batch)
        aux = outputs.get("aux_loss") if isinstance(outputs, dict) else None
        if router_aux_loss_coef and aux is not None:
            loss = loss + router_aux_loss_coef * aux.to(loss.device)
        return loss

    return loss_fn


@dataclass
class ShapedCausalLMOutput(ModelOutput):
    """What a patched model returns on the loss path; `logits` is None unless asked for."""

    loss: Tensor | None = None
    logits: Tensor | None = None
    aux_loss: Tensor | None = None
    loss_stats: dict | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None
    router_logits: tuple | None = None


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
    **kwargs,
):
    knobs: ShapedLoss = self._shaped_loss
    targets = shift_labels if shift_labels is not None or labels is None else shift_labels_of(labels, knobs.ignore_index)
    reduction = "mean" if num_items_in_batch is None else "sum"
    if skip_logits is None:
        skip_logits = targets is not None
    if not skip_logits:  # the original forward, then (if labels) the reference loss on its logits
        out = self._shaped_original_forward(input_ids, attention_mask, *args, **kwargs)
        if targets is not None:
            out.loss = _reduce(knobs(out.logits, targets.to(out.logits.device), reduction=reduction), num_items_in_batch)
        return out
    if args:
        raise TypeError("patched forward: pass arguments after attention_mask by keyword")
    if targets is None:
        raise UserError("skip_logits=True needs labels or shift_labels")
    kwargs.pop("logits_to_keep", None)
    is_moe = hasattr(self, "router_aux_loss_coef")
    if is_moe:
        router = kwargs.pop("output_router_logits", None)  # the loss path keeps the balance loss by default
        kwargs["output_router_logits"] = True if router is None else router
    outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    hidden = outputs.last_hidden_state if hasattr(outputs, "last_hidden_state") else outputs[0]
    want_stats = self._shaped_return_stats if return_loss_stats is None else return_loss_stats
    result = knobs.fused(
        hidden, self.lm_head.weight, targets.to(hidden.device), bias=self.lm_head.bias,
        reduction=reduction, return_stats=want_stats, chunk_size=self._shaped_chunk_size,
    )
    loss, stats = result if want_stats else (result, None)
    loss = _reduce(loss, num_items_in_batch)

    aux_loss = None
    if is_moe and kwargs["output_router_logits"]:
        balance = _load_balancing_loss_func(self)
        aux_loss = balance(outputs.router_logits, self.num_experts, self.num_experts_per_tok, attention_mask)
        share = 1.0  # with num_items_in_batch this micro-batch is a part of a larger batch: weigh by tokens
        if num_items_in_batch is not None:
            share = (targets != knobs.ignore_index).sum().to(loss.device) / num_items_in_batch
        loss = loss + self.router_aux_loss_coef * share * aux_loss.to(loss.device)
    return ShapedCausalLMOutput(
        loss=loss,
        aux_loss=aux_loss,
        loss_stats=stats,
        hidden_states=getattr(outputs, "hidden_states", None),
        attentions=getattr(outputs, "attentions", None),
        router_logits=getattr(outputs, "router_logits", None),
    )


def _load_balancing_loss_func(model):
    """The router balance loss of the model's modeling file; found through the class's bases, since
    FSDP2's `fully_shard` swaps in a subclass defined in torch's own module."""
    for cls in type(model).__mro__:
        func = getattr(sys.modules.get(cls.__module__), "load_balancing_loss_func", None)
        if func is not None:
            return func
    raise UserError(f"{type(model).__name__}: no load_balancing_loss_func in its modeling module")


def patch_causal_lm(model, shaped_loss: ShapedLoss | str, *, return_stats: bool = False, chunk_size: int | None = None):
    """Make `model(…, labels=…)` use the fused shaped loss; returns the same model.

    With `return_stats=True` each loss-path output carries `loss_stats` (ce, entropy,
    topk_mass, tail_mass, target_in_topk, tokens). Calling it again replaces the loss.
    """
    if not (hasattr(model, "model") and isinstance(getattr(model, "lm_head", None), torch.nn.Linear)):
        raise UserError(f"patch_causal_lm needs a *ForCausalLM with .model and a Linear .lm_head; got {type(model).__name__}")
    if not hasattr(model, "_shaped_original_forward"):
        model._shaped_original_forward = model.forward
    model._shaped_loss = as_shaped_loss(shaped_loss)
    model._shaped_return_stats = return_stats
    model._shaped_chunk_size = chunk_size
    model.forward = types.MethodType(_shaped_forward, model)
    return model
