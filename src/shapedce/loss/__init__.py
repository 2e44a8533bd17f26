"""The reward-shaped next-token loss (SPEC section 1): public API.

    from shapedce.loss import ShapedLoss, shaped_cross_entropy, fused_linear_shaped_cross_entropy

`shaped_cross_entropy` works on logits (readable reference); `fused_linear_shaped_cross_entropy`
takes the last hidden states and the lm-head weight and never holds the N x V logits.
"""

from .fused import fused_linear_shaped_cross_entropy
from .knobs import PRESETS, ShapedLoss
from .reference import shaped_cross_entropy
from .rows import STAT_NAMES

__all__ = ["PRESETS", "STAT_NAMES", "ShapedLoss", "fused_linear_shaped_cross_entropy", "shaped_cross_entropy"]
