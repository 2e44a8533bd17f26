"""The loss knobs: validation and `ShapedLoss`, a frozen dataclass with the paper's settings.

    from shapedce.loss import ShapedLoss
    loss_cfg = ShapedLoss.named("precision")          # beta=-0.25
    loss = loss_cfg(logits, targets)                  # reference path
    loss = loss_cfg.fused(hidden, lm_head.weight, targets)

The knobs (SPEC section 1):
  beta        positive channel; w = pi_x ** (1 - (1 - pi_x) ** beta). 0 is CE, < 0 sharpens
              ("precision"), > 0 flattens ("diversity"), +inf is DFT (w = pi_x). Must be >= -1.
  lambda_top  reward of the top-k negatives (a in TopK(pi, k), a != target).
  lambda_tail reward of the other negatives.
  k           size of the top-k set; k >= vocabulary size makes every negative "top".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

REDUCTIONS = ("mean", "sum", "none")


def check_knobs(beta: float, lambda_top: float, lambda_tail: float, k: int) -> None:
    """Raise a one-line ValueError naming the first knob outside its allowed range."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or math.isnan(beta) or beta < -1:
        raise ValueError(f"beta must be a number >= -1 (w is unbounded below -1); got {beta!r}")
    for name, value in (("lambda_top", lambda_top), ("lambda_tail", lambda_tail)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number; got {value!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1; got {k!r}")


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}; got {reduction!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ShapedLoss:
    """The reward-shaped next-token loss of SPEC section 1, as validated, immutable knobs."""

    beta: float = 0.0
    """Positive-channel exponent. 0 = cross-entropy; -0.25 = the paper's "precision";
    0.5 = "diversity"; float("inf") = DFT. Allowed: [-1, +inf]."""
    lambda_top: float = 0.0
    """Reward given to negatives inside the top-k (paper's "head" setting: 0.1)."""
    lambda_tail: float = 0.0
    """Reward given to negatives outside the top-k (paper's "tail" setting: -0.1)."""
    k: int = 100
    """Size of the top-k set that splits negatives into head and tail (paper: 100)."""
    ignore_index: int = -100
    """Target value of positions that take no part in the loss."""

    def __post_init__(self) -> None:
        if isinstance(self.k, float) and self.k.is_integer():  # YAML may give 100.0
            object.__setattr__(self, "k", int(self.k))
        if isinstance(self.beta, int) and not isinstance(self.beta, bool):
            object.__setattr__(self, "beta", float(self.beta))
        check_knobs(self.beta, self.lambda_top, self.lambda_tail, self.k)
        if isinstance(self.ignore_index, bool) or not isinstance(self.ignore_index, int):
            raise ValueError(f"ignore_index must be an integer; got {self.ignore_index!r}")

    @classmethod
    def named(cls, name: str, **overrides: Any) -> "ShapedLoss":
        """One of the paper's five settings (see `PRESETS`), optionally with fields overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown loss setting {name!r}; choose one of {', '.join(PRESETS)}")
        return replace(PRESETS[name], **overrides)

    @property
    def is_cross_entropy(self) -> bool:
        return self.beta == 0 and self.lambda_top == 0 and self.lambda_tail == 0

    @property
    def uses_topk(self) -> bool:
        """True when the negative channel is on, i.e. the loss needs each row's top-k set."""
        return self.lambda_top != 0 or self.lambda_tail != 0

    def knobs(self) -> dict[str, Any]:
        """Keyword arguments for `shaped_cross_entropy` / `fused_linear_shaped_cross_entropy`."""
        return asdict(self)

    def __call__(self, logits, targets, **kwargs):
        from .reference import shaped_cross_entropy

        return shaped_cross_entropy(logits, targets, **self.knobs(), **kwargs)

    def fused(self, hidden, weight, targets, **kwargs):
        from .fused import fused_linear_shaped_cross_entropy

        return fused_linear_shaped_cross_entropy(hidden, weight, targets, **self.knobs(), **kwargs)


PRESETS: dict[str, ShapedLoss] = {
    "ce": ShapedLoss(),
    "precision": ShapedLoss(beta=-0.25),
    "diversity": ShapedLoss(beta=0.5),
    "tail": ShapedLoss(lambda_tail=-0.1, k=100),
    "head": ShapedLoss(lambda_top=0.1, k=100),
}
"""The paper's five reward configurations, by the names the CLI and reports use."""
