"""Automatic beta: a bounded, smoothed feedback controller that steers the per-token entropy to a target.

    from shapedce.loss import ShapedLoss
    from shapedce.loss.control import EntropyController
    loss_cfg = ShapedLoss.named("auto", target_entropy=0.55)     # or loss.beta=auto loss.target_entropy=0.55
    control = EntropyController.from_loss(loss_cfg)
    for batch in batches:
        out = fused_linear_shaped_cross_entropy(h, W, y, **control.loss().knobs(), return_stats=True)
        ...optimizer step...
        control.update(float(out[1]["entropy"]))                 # beta for the next step

Why: the paper picks beta by grid search; what a practitioner wants is an entropy level. This is
SAC's automatic temperature moved to the positive channel: the knob that raises entropy (beta;
higher beta = flatter, docs/method/loss.md) is adjusted online from the entropy the loss already
measures in the same pass, so the controller costs nothing extra.

The law, once per optimizer step, with H the step's token-weighted mean entropy (nats):
    ema  <- H                                  on the first update
    ema  <- (1 - entropy_ema) * ema + entropy_ema * H       afterwards
    beta <- clamp(beta + beta_lr * clamp((target - ema) / target, -1, 1), -1, beta_max)
An integral controller on the relative error of a smoothed measurement; no step exceeds
beta_lr (a fresh model's entropy, ln |V|, is many times any target). The outer clamp is the
anti-windup: beta never leaves [-1, beta_max] (below -1 the weight w is unbounded), so a long
stretch of large error (e.g. the high entropy of a fresh initialisation) costs at most
(beta_max + 1) / beta_lr steps of recovery. Non-finite measurements are ignored (state unchanged).
`state_dict()` holds beta, the EMA and the update count as Python floats / ints, so a checkpoint
restores the trajectory bit for bit.

How far beta can move entropy is limited. At the stationary point of the shaped loss on a fixed
next-token distribution q, pi_j is proportional to q_j * w(pi_j): on a 40-word Zipf law beta in
[-1, 1] moves entropy only from -8 % to +4 % of CE's; the paper's larger gaps come from training
dynamics (how fast confident tokens are learned). Targets far from CE's entropy end with beta at
a bound: the run's `beta` column shows it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from .config import LossConfig, check_control
from .shaped import ShapedLoss

BETA_MIN = -1.0
"""Lower bound of beta: the ground-truth weight is bounded only for beta >= -1 (docs/method/loss.md)."""


@dataclass(slots=True)
class EntropyController:
    """State and law of the automatic-beta controller (see the module docstring)."""

    target: float
    """Target per-token entropy, nats (> 0)."""
    beta_max: float = 1.0
    """Upper clamp of beta."""
    beta_lr: float = 0.05
    """Step on beta per unit of relative entropy error, per update."""
    entropy_ema: float = 0.2
    """Weight of the newest measurement in the EMA, in (0, 1]."""
    beta: float = 0.0
    """Current beta: the value the next loss uses. Starts at 0 (cross-entropy)."""
    ema: float | None = None
    """Smoothed entropy; None before the first update."""
    updates: int = 0
    base: ShapedLoss | None = None
    """The other knobs (lambdas, k, ignore_index) of the loss this controller drives."""

    def __post_init__(self) -> None:
        check_control(self.target, self.beta_max, self.beta_lr, self.entropy_ema)
        if not self.target > 0:
            raise UserError(
                f"target_entropy must be > 0 (nats per token) with beta=auto; got {self.target!r}"
            )
        self.beta = min(max(float(self.beta), BETA_MIN), self.beta_max)

    @classmethod
    def from_loss(cls, loss: LossConfig) -> EntropyController:
        if not loss.auto_beta:
            raise UserError(f"EntropyController needs a loss with beta=auto; got beta={loss.beta!r}")
        base = loss if isinstance(loss, ShapedLoss) else ShapedLoss(**loss.settings())  # callable
        return cls(
            target=loss.target_entropy,
            beta_max=loss.beta_max,
            beta_lr=loss.beta_lr,
            entropy_ema=loss.entropy_ema,
            base=base,
        )

    def loss(self) -> ShapedLoss:
        """The fixed-beta loss for the next step (the driven loss's other knobs, beta = self.beta)."""
        return (self.base or ShapedLoss(beta="auto", target_entropy=self.target)).at_beta(self.beta)

    def update(self, entropy: float) -> float:
        """Feed one step's measured mean entropy; returns the beta for the next step."""
        if not math.isfinite(entropy):
            return self.beta
        self.ema = (
            entropy if self.ema is None else (1 - self.entropy_ema) * self.ema + self.entropy_ema * entropy
        )
        error = min(max((self.target - self.ema) / self.target, -1.0), 1.0)
        step = self.beta_lr * error
        self.beta = min(max(self.beta + step, BETA_MIN), self.beta_max)
        self.updates += 1
        return self.beta

    def state_dict(self) -> dict[str, Any]:
        return {"beta": self.beta, "ema": self.ema, "updates": self.updates, "target": self.target}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore beta, the EMA and the count (the law's constants come from the config)."""
        self.beta = min(max(float(state["beta"]), BETA_MIN), self.beta_max)
        self.ema = None if state.get("ema") is None else float(state["ema"])
        self.updates = int(state.get("updates", 0))
