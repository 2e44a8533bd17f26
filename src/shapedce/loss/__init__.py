"""The reward-shaped next-token loss (SPEC section 1): public API.

    from shapedce.loss import ShapedLoss, shaped_cross_entropy, fused_linear_shaped_cross_entropy

`shaped_cross_entropy` works on logits (readable reference); `fused_linear_shaped_cross_entropy`
takes the last hidden states and the lm-head weight and never holds the N x V logits.
`EntropyController` drives beta=auto (see `shapedce.loss.control`).
"""

from .control import EntropyController
from .fused import fused_linear_shaped_cross_entropy
from .knobs import PRESETS, SETTINGS, ShapedLoss
from .reference import shaped_cross_entropy
from .rows import MAX_STAT_NAMES, STAT_NAMES

__all__ = ["MAX_STAT_NAMES", "PRESETS", "SETTINGS", "STAT_NAMES", "EntropyController", "ShapedLoss", "fused_linear_shaped_cross_entropy", "shaped_cross_entropy"]
