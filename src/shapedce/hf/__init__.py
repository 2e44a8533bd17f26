"""Hugging Face integration of the shaped loss: a Trainer loss function, a causal-LM patch, a callback.

    from shapedce.hf import ShapedLossCallback, compute_loss_func, patch_causal_lm, set_shaped_loss
    trainer = Trainer(model=model, args=args, train_dataset=ds,
                      compute_loss_func=compute_loss_func("precision"))       # on logits

    patch_causal_lm(model, "precision")                     # fused: no [B, T, V] logits
    out = model(input_ids=ids, labels=ids)                   # out.loss, out.loss_stats
    trainer = Trainer(model=model, ..., callbacks=[ShapedLossCallback()])   # stats in the logs; beta=auto

Guide with runnable examples (Trainer, SFTTrainer, GRPOTrainer): docs/guides/huggingface.md.

`compute_loss_func` works with any model that returns logits (it is what `transformers.Trainer`
and TRL's `SFTTrainer` call as `compute_loss_func(outputs, labels, num_items_in_batch)`).
`patch_causal_lm` (in `patch.py`) replaces the `forward` of one model instance: with `labels` it
runs the decoder, then the fused linear + shaped loss on the last hidden states, with the model's
own logit scale and final-logit softcap (read from its forward by `heads.py`), and adds the MoE
router auxiliary loss, whatever `config.output_router_logits` says (generation needs that off;
pass `output_router_logits=False` to drop the term), weighted by this micro-batch's share of
`num_items_in_batch` when given, so gradient accumulation adds up to one global-batch term.
`ShapedLossCallback` (in `callback.py`) puts the loss statistics into the Trainer's own log rows (so
every `report_to` backend gets them) and runs the automatic-beta controller for beta="auto".
No module here imports trl, datasets, tensorboard, trackio or wandb.
It is loaded on first access (`transformers.trainer_callback` pulls in accelerate and peft: seconds).
Tests: `python -m pytest -q tests/test_hf.py tests/test_hf_families.py tests/test_hf_callback.py`.
"""

from __future__ import annotations

from ..loss import ShapedLoss
from .heads import HeadSpec, read_head
from .patch import (
    ShapedCausalLMOutput,
    _reduce,
    as_shaped_loss,
    patch_causal_lm,
    set_shaped_loss,
    shift_labels_of,
)

__all__ = [
    "HeadSpec",
    "ShapedCausalLMOutput",
    "ShapedLossCallback",
    "as_shaped_loss",
    "compute_loss_func",
    "patch_causal_lm",
    "read_head",
    "set_shaped_loss",
    "shift_labels_of",
]


def __getattr__(name: str):
    if name == "ShapedLossCallback":  # lazy: importing the Trainer's callback module is slow
        from .callback import ShapedLossCallback

        return ShapedLossCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def compute_loss_func(shaped_loss: ShapedLoss | str, *, router_aux_loss_coef: float = 0.0):
    """A `compute_loss_func(outputs, labels, num_items_in_batch=None)` for `transformers.Trainer`.

    Uses the logits the model returned. Mean over non-ignored tokens, or the sum divided by
    `num_items_in_batch` when the Trainer passes it (gradient accumulation). For MoE models run
    with `output_router_logits=True`, `router_aux_loss_coef * outputs.aux_loss` is added.
    """
    knobs = as_shaped_loss(shaped_loss)

    def loss_fn(outputs, labels, num_items_in_batch=None, **_: object):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        targets = shift_labels_of(labels, knobs.ignore_index).to(logits.device)
        reduction = "mean" if num_items_in_batch is None else "sum"
        loss = _reduce(knobs(logits, targets, reduction=reduction), num_items_in_batch)
        aux = outputs.get("aux_loss") if isinstance(outputs, dict) else None
        if router_aux_loss_coef and aux is not None:
            loss = loss + router_aux_loss_coef * aux.to(loss.device)
        return loss

    return loss_fn
