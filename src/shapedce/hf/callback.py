"""`ShapedLossCallback`: the shaped loss's statistics in a Hugging Face Trainer's own logs, and beta="auto".

    from shapedce.hf import ShapedLossCallback, patch_causal_lm
    patch_causal_lm(model, "precision")               # or ShapedLoss(beta="auto", target_entropy=1.5)
    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[ShapedLossCallback()])
    trainer.train()      # state.log_history rows hold shaped/entropy, shaped/w_mean, shaped/grad_shift, ...

What it does, per optimizer step, on a model patched by `patch_causal_lm` (TRL's `SFTTrainer`: patch
`trainer.model` after building the trainer, then `trainer.add_callback(ShapedLossCallback())`):
- collects each training micro-batch's loss statistics from the fused pass (no extra compute);
- on every logging step merges them over the steps since the last log, token-weighted (maxima for
  w_max; grad_shift = sqrt(sum ||g_shaped - g_ce||^2 / sum ||g_ce||^2), see docs/method/statistics.md)
  and over ranks, and writes them into the Trainer's `logs` dict (and `state.log_history`) under
  `prefix` + ce, ppl, entropy, topk_mass, tail_mass, target_in_topk, w_mean, w_max, grad_shift.
  It moves itself to the front of the callback list so every `report_to` backend (TensorBoard,
  wandb, trackio, ...) receives them in the same row as the Trainer's loss;
- with beta="auto" runs `shapedce.loss.control.EntropyController` on each step's token-weighted mean
  entropy and hands the patched model the next step's fixed-beta loss (`prefix` + beta and
  entropy_ema are logged too). Its state rides in `state_dict()` / `load_state_dict()`.

Tests: `PYTHONPATH=src python -m pytest -q tests/test_hf_callback.py`.
"""

from __future__ import annotations

import math
import sys

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import CallbackHandler

from ..errors import UserError
from ..loss import MAX_STAT_NAMES, STAT_NAMES, EntropyController
from .patch import _causal_lm_of

LOGGED = ("ce", "ppl", "entropy", "topk_mass", "tail_mass", "target_in_topk", "w_mean", "w_max", "grad_shift")
"""The statistics written into each training log row (prefixed)."""


def _patched_lm(model):
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):  # DDP / accelerate wrappers
        model = model.module
    lm = _causal_lm_of(model)
    if getattr(lm, "_shaped_loss", None) is None:  # (accelerate may wrap the patched forward: not checked)
        raise UserError(
            "ShapedLossCallback needs a model patched by shapedce.hf.patch_causal_lm "
            f"(patch trainer.model after building a TRL trainer); got {type(model).__name__}"
        )
    return lm


def merge_parts(parts: list[dict]) -> tuple[list[float], int]:
    """Token-weighted sums of STAT_NAMES, then the MAX_STAT_NAMES maxima, and the token count."""
    sums = [0.0] * len(STAT_NAMES)
    maxima = [0.0] * len(MAX_STAT_NAMES)
    tokens = 0
    for stats in parts:
        n = int(stats["tokens"])
        if n == 0:
            continue
        tokens += n
        for i, name in enumerate(STAT_NAMES):
            sums[i] += float(stats[name]) * n
        for i, name in enumerate(MAX_STAT_NAMES):
            maxima[i] = max(maxima[i], float(stats[name]))
    return sums + maxima, tokens


def _all_ranks(values: list[float], tokens: int) -> tuple[list[float], int]:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values, tokens
    n = len(STAT_NAMES)
    sums = torch.tensor(values[:n] + [float(tokens)], dtype=torch.float64)
    maxima = torch.tensor(values[n:], dtype=torch.float64)
    if torch.distributed.get_backend() == "nccl":
        sums, maxima = sums.cuda(), maxima.cuda()
    torch.distributed.all_reduce(sums)
    torch.distributed.all_reduce(maxima, op=torch.distributed.ReduceOp.MAX)
    return sums[:n].tolist() + maxima.tolist(), int(sums[n])


def stats_row(values: list[float], tokens: int) -> dict[str, float]:
    """Per-token means, maxima, ppl = exp(mean ce) and grad_shift from merged sums (see `merge_parts`)."""
    denom = max(tokens, 1)
    row = {name: values[i] / denom for i, name in enumerate(STAT_NAMES)}
    row.update({name: values[len(STAT_NAMES) + i] for i, name in enumerate(MAX_STAT_NAMES)})
    diff, ce = row["grad_diff_sq"], row["grad_ce_sq"]
    row["grad_shift"] = math.sqrt(diff / ce) if ce > 0 else 0.0
    row["ppl"] = math.exp(min(row["ce"], 50.0))
    return row


class ShapedLossCallback(TrainerCallback):
    """Logs the shaped loss's statistics through the Trainer and drives beta="auto" (module docstring)."""

    def __init__(self, prefix: str = "shaped/"):
        self.prefix = prefix
        self.controller: EntropyController | None = None
        self._parts: list[dict] = []
        self._lm = None
        self._saved_state: dict | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._move_to_front()
        lm = _patched_lm(model)
        self._lm, self._parts = lm, []
        lm._shaped_collect = []
        if lm._shaped_loss.auto_beta:
            self.controller = EntropyController.from_loss(lm._shaped_loss)
            if self._saved_state is not None:
                self.controller.load_state_dict(self._saved_state)
            lm._shaped_step_loss = self.controller.loss()

    def _move_to_front(self) -> None:
        """Run first in `on_log`, before the reporting callbacks the Trainer put ahead of user callbacks.

        Found from the calling `CallbackHandler.call_event` frame; moving this callback from index i to 0
        while the handler iterates leaves the iteration's next index pointing at the same next callback."""
        frame = sys._getframe(1)
        while frame is not None and not isinstance(frame.f_locals.get("self"), CallbackHandler):
            frame = frame.f_back
        handler = None if frame is None else frame.f_locals["self"]
        if handler is not None and self in handler.callbacks and handler.callbacks[0] is not self:
            handler.callbacks.remove(self)
            handler.callbacks.insert(0, self)

    def on_step_end(self, args, state, control, **kwargs):
        lm = self._lm
        if lm is None:
            return
        step, lm._shaped_collect = [s for _, s in lm._shaped_collect], []
        self._parts.extend(step)
        if self.controller is not None:
            values, tokens = _all_ranks(*merge_parts(step))
            if tokens:
                self.controller.update(values[STAT_NAMES.index("entropy")] / tokens)
            lm._shaped_step_loss = self.controller.loss()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs or self._lm is None:
            return
        values, tokens = _all_ranks(*merge_parts(self._parts))
        self._parts = []
        if tokens == 0:
            return
        row = {self.prefix + k: v for k, v in stats_row(values, tokens).items() if k in LOGGED}
        if self.controller is not None:
            row[self.prefix + "beta"] = self.controller.beta
            row[self.prefix + "entropy_ema"] = self.controller.ema
        logs.update(row)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(row)  # the Trainer appended its copy before calling on_log

    def on_train_end(self, args, state, control, **kwargs):
        if self._lm is not None:
            self._lm._shaped_collect = None

    def state_dict(self) -> dict:
        """The controller's state (beta, EMA, update count), to restore with `load_state_dict`."""
        return {} if self.controller is None else self.controller.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._saved_state = dict(state) or None
        if self.controller is not None and self._saved_state:
            self.controller.load_state_dict(self._saved_state)
