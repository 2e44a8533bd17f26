"""The loss's configuration: knob validation, `LossConfig` (the `loss:` section) and the named settings.

    from shapedce.loss.config import SETTINGS, LossConfig
    cfg = LossConfig.named("precision")              # beta=-0.25
    cfg.knobs()                                      # keyword arguments of both loss functions

Pure data: no torch, no other loss module. `shapedce.loss.ShapedLoss` is this class plus the two
calls (reference on logits, fused on hidden states); the entropy controller is `shapedce.loss.control`.

The knobs (docs/method/loss.md):
  beta        positive channel; w = pi_x ** (1 - (1 - pi_x) ** beta). 0 is CE, < 0 sharpens
              ("precision"), > 0 flattens ("diversity"), +inf is DFT (w = pi_x). Must be >= -1.
  lambda_top  reward of the top-k negatives (a in TopK(pi, k), a != target).
  lambda_tail reward of the other negatives.
  k           size of the top-k set; k >= vocabulary size makes every negative "top".

Automatic beta (beyond the paper; `shapedce.loss.control`): beta="auto" with target_entropy=H
lets the trainer adjust beta online so that the per-token entropy approaches H nats, within
[-1, beta_max], stepping by beta_lr per unit of relative error of an EMA (weight entropy_ema) of
the measured entropy. These four settings are flat keys of the `loss:` section (loss.beta_lr=...),
validated here by `check_control`, which the controller uses too. Such a loss cannot be called
directly: `at_beta(b)` gives the fixed-beta loss of one step. `SETTINGS` = the `PRESETS` (the
paper's five and "dft") plus "auto".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Self

from ..errors import UserError, check, check_int, check_real, is_int, is_real

REDUCTIONS = ("mean", "sum", "none")


def check_knobs(beta: float, lambda_top: float, lambda_tail: float, k: int) -> None:
    """Raise a one-line UserError naming the first knob outside its allowed range."""
    check(
        is_real(beta) and not math.isnan(beta) and beta >= -1,
        "beta",
        "a number >= -1 (w is unbounded below -1)",
        beta,
    )
    check_real("lambda_top", lambda_top)
    check_real("lambda_tail", lambda_tail)
    check_int("k", k, 1)


def check_control(target_entropy: float, beta_max: float, beta_lr: float, entropy_ema: float) -> None:
    """Raise a one-line UserError naming the first automatic-beta setting outside its allowed range."""
    check_real("target_entropy", target_entropy, 0)
    check_real("beta_max", beta_max, -1, lo_open=True)
    check_real("beta_lr", beta_lr, 0, lo_open=True)
    check(is_real(entropy_ema) and 0 < entropy_ema <= 1, "entropy_ema", "in (0, 1]", entropy_ema)


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise UserError(f"reduction must be one of {', '.join(REDUCTIONS)}; got {reduction!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class LossConfig:
    """The reward-shaped next-token loss of docs/method/loss.md, as validated, immutable knobs."""

    beta: float | str = 0.0
    """Positive-channel exponent. 0 = cross-entropy; -0.25 = the paper's "precision";
    0.5 = "diversity"; float("inf") = DFT. Allowed: [-1, +inf], or "auto" (needs target_entropy)."""
    lambda_top: float = 0.0
    """Reward given to negatives inside the top-k (paper's "head" setting: 0.1)."""
    lambda_tail: float = 0.0
    """Reward given to negatives outside the top-k (paper's "tail" setting: -0.1)."""
    k: int = 100
    """Size of the top-k set that splits negatives into head and tail (paper: 100)."""
    ignore_index: int = -100
    """Target value of positions that take no part in the loss."""
    target_entropy: float = 0.0
    """beta=auto only: the per-token entropy (nats) the controller steers to; 0 = no controller."""
    beta_max: float = 1.0
    """beta=auto only: upper bound of beta (the lower bound is -1). 1.0 keeps w >= pi_x ** pi_x."""
    beta_lr: float = 0.05
    """beta=auto only: change of beta per step per unit of relative entropy error."""
    entropy_ema: float = 0.2
    """beta=auto only: weight of the newest step's entropy in the smoothed measurement, in (0, 1]."""

    def __post_init__(self) -> None:
        k: Any = self.k
        if isinstance(k, float) and k.is_integer():  # YAML may give 100.0
            object.__setattr__(self, "k", int(k))
        if is_int(self.beta):
            object.__setattr__(self, "beta", float(self.beta))
        for name in ("target_entropy", "beta_max", "beta_lr", "entropy_ema"):
            value = getattr(self, name)
            check(is_real(value), name, "a number", value)
            object.__setattr__(self, name, float(value))
        if isinstance(self.beta, str) and self.beta != "auto":
            raise UserError(f"beta must be a number >= -1 or 'auto'; got {self.beta!r}")
        beta = 0.0 if isinstance(self.beta, str) else self.beta  # "auto": the controller starts at CE
        check_knobs(beta, self.lambda_top, self.lambda_tail, self.k)
        check_control(self.target_entropy, self.beta_max, self.beta_lr, self.entropy_ema)
        if self.auto_beta and self.target_entropy <= 0:
            raise UserError(
                f"target_entropy must be > 0 (nats per token) with beta=auto; got {self.target_entropy!r}"
            )
        if not self.auto_beta and self.target_entropy != 0:
            raise UserError(
                f"target_entropy is used only with beta=auto; "
                f"got {self.target_entropy!r} with beta={self.beta!r}"
            )
        check_int("ignore_index", self.ignore_index)

    @classmethod
    def named(cls, name: str, **overrides: Any) -> Self:
        """One of the named settings (see `SETTINGS`) as a `cls`, optionally with fields overridden."""
        if name not in SETTINGS:
            raise UserError(f"unknown loss setting {name!r}; choose one of {', '.join(SETTINGS)}")
        return cls(**{**SETTINGS[name].settings(), **overrides})

    @property
    def auto_beta(self) -> bool:
        """True when beta is set online by `shapedce.loss.control.EntropyController`."""
        return self.beta == "auto"

    def at_beta(self, beta: float) -> Self:
        """This loss with a fixed beta (the controller's value for one step); no controller fields."""
        return replace(self, beta=float(beta), target_entropy=0.0)

    @property
    def is_cross_entropy(self) -> bool:
        return self.beta == 0 and self.lambda_top == 0 and self.lambda_tail == 0

    @property
    def uses_topk(self) -> bool:
        """True when the negative channel is on, i.e. the loss needs each row's top-k set."""
        return self.lambda_top != 0 or self.lambda_tail != 0

    def knobs(self) -> dict[str, Any]:
        """Keyword arguments for `shaped_cross_entropy` / `fused_linear_shaped_cross_entropy`."""
        if self.auto_beta:
            raise UserError(
                "beta=auto is set online by the trainer's entropy controller "
                "(shapedce.loss.control); use loss.at_beta(b) for a fixed-beta loss"
            )
        return {
            name: getattr(self, name) for name in ("beta", "lambda_top", "lambda_tail", "k", "ignore_index")
        }

    def settings(self) -> dict[str, Any]:
        """Every field, as a config's `loss:` section holds it."""
        return asdict(self)


PRESETS: dict[str, LossConfig] = {
    "ce": LossConfig(),
    "precision": LossConfig(beta=-0.25),
    "diversity": LossConfig(beta=0.5),
    "tail": LossConfig(lambda_tail=-0.1, k=100),
    "head": LossConfig(lambda_top=0.1, k=100),
    "dft": LossConfig(beta=float("inf")),
}
"""The paper's five reward configurations, by the names the CLI and reports use, and "dft": Dynamic
Fine-Tuning (Wu et al. 2025, arXiv 2508.05629), the beta -> +inf limit, loss_t = -sg(pi_x) log pi_x
(TRL's SFTConfig(loss_type="dft"))."""

AUTO_TARGET_ENTROPY = 0.55
"""Default target of the "auto" setting, nats per token: 16% below the 0.657 training entropy CE ends
pre-training with on the default `shapedce reproduce` grid (tiny model, 200 steps, mean of the last
20 steps), i.e. in the paper's "precision" direction. Other models and data have other entropies:
set loss.target_entropy (or the grid's auto_target_entropy)."""

STUDY_SETTINGS: dict[str, LossConfig] = {
    "precision-strong": LossConfig(beta=-1.0),
    "tail-strong": LossConfig(lambda_tail=-1.0, k=20),
    "diversity-strong": LossConfig(beta=5.0, lambda_tail=0.4, k=100),
}
"""The RL study's calibrated priors (docs/rl-study/design.md): the paper's knob values move the tiny
model's pre-training entropy by about 1%, so the study strengthens them until the priors differ the
way the paper's do. Chosen on tuning text and tuning seeds, for the tiny model on the built-in world:
- precision-strong: the global channel at its bound (beta >= -1: below, w is unbounded); it cannot
  reach a 10% entropy gap here (fixed point about -7%);
- tail-strong: tail suppression at 5x the paper's lambda_tail with k = 20, about 10% below CE's
  entropy at perplexity within 5%;
- diversity-strong: beta = 5 with a tail reward (lambda_tail = +0.4), about 10% above.
Other models and worlds need their own calibration (scripts/calibrate_priors.py)."""

SETTINGS: dict[str, LossConfig] = {
    **PRESETS,
    **STUDY_SETTINGS,
    "auto": LossConfig(beta="auto", target_entropy=AUTO_TARGET_ENTROPY),
}
"""Every named setting `loss=NAME` and `shapedce reproduce --configs` accept: the paper's five, "dft",
the study's calibrated priors (STUDY_SETTINGS) and "auto" (automatic beta towards AUTO_TARGET_ENTROPY)."""
