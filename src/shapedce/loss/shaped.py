"""`ShapedLoss`: the loss configuration (`LossConfig`) that can also be called, on logits or fused.

    from shapedce.loss import ShapedLoss
    loss_cfg = ShapedLoss.named("precision")          # beta=-0.25
    loss = loss_cfg(logits, targets)                  # reference path (shaped_cross_entropy)
    loss = loss_cfg.fused(hidden, lm_head.weight, targets)   # fused_linear_shaped_cross_entropy

The same fields, validation and named settings as `shapedce.loss.config.LossConfig` (which this
subclass adds nothing to but the two calls); it sits above both implementations, so the pure
config module imports neither. The `loss:` section of a run's config is a `ShapedLoss`.
`PRESETS` / `SETTINGS` here (exported as `shapedce.loss.PRESETS` / `SETTINGS`) are the config
module's named settings as callable `ShapedLoss` objects, equal field for field.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import config
from .config import LossConfig
from .fused import fused_linear_shaped_cross_entropy
from .reference import shaped_cross_entropy


@dataclass(frozen=True, slots=True, kw_only=True)
class ShapedLoss(LossConfig):
    """A `LossConfig` whose call computes the loss (see the module docstring)."""

    def __call__(self, logits, targets, **kwargs):
        """`shaped_cross_entropy(logits, targets, **self.knobs(), **kwargs)`."""
        return shaped_cross_entropy(logits, targets, **self.knobs(), **kwargs)

    def fused(self, hidden, weight, targets, **kwargs):
        """`fused_linear_shaped_cross_entropy(hidden, weight, targets, **self.knobs(), **kwargs)`; kwargs
        include bias, reduction, return_stats, chunk_size, logit_scale, softcap."""
        return fused_linear_shaped_cross_entropy(hidden, weight, targets, **self.knobs(), **kwargs)


PRESETS: dict[str, ShapedLoss] = {name: ShapedLoss.named(name) for name in config.PRESETS}
"""The paper's five reward configurations and "dft" (see `shapedce.loss.config.PRESETS`), callable."""

SETTINGS: dict[str, ShapedLoss] = {name: ShapedLoss.named(name) for name in config.SETTINGS}
"""Every named setting `loss=NAME` accepts: the paper's five, "dft" and "auto" (automatic beta), callable."""
