"""The reward-shaped next-token loss (docs/method/loss.md): public API.

    from shapedce.loss import ShapedLoss, shaped_cross_entropy, fused_linear_shaped_cross_entropy

`shaped_cross_entropy` works on logits (readable reference); `fused_linear_shaped_cross_entropy`
takes the last hidden states and the lm-head weight and never holds the N x V logits. Both take
`token_weights=` (per-position weights; "mean" divides by the non-ignored count).
`PRESETS["dft"]` is Dynamic Fine-Tuning (beta = +inf).
`EntropyController` drives beta=auto (see `shapedce.loss.control`).

Modules, each importing only those before it (tests/test_loss_package.py checks it):
    config     LossConfig (the validated knobs), the named settings; pure Python, no torch
    rows       per-row math shared by both implementations: top-k set, w, S, statistics
    chunks     the fused path's chunk loop (logits GEMM, row math, gradient GEMMs)
    reference  shaped_cross_entropy on logits
    fused      fused_linear_shaped_cross_entropy on hidden states (chunked)
    shaped     ShapedLoss = LossConfig + the two calls; PRESETS / SETTINGS as ShapedLoss
    control    EntropyController (automatic beta)
    token_head token_head: per-token log pi(target) and entropy (RL, evaluation), chunked
"""

from .config import LossConfig
from .control import EntropyController
from .fused import fused_linear_shaped_cross_entropy
from .reference import shaped_cross_entropy
from .rows import MAX_STAT_NAMES, STAT_NAMES
from .shaped import PRESETS, SETTINGS, ShapedLoss
from .token_head import TokenHeadOutput, token_head, token_head_reference

__all__ = [
    "MAX_STAT_NAMES",
    "PRESETS",
    "SETTINGS",
    "STAT_NAMES",
    "EntropyController",
    "LossConfig",
    "ShapedLoss",
    "TokenHeadOutput",
    "fused_linear_shaped_cross_entropy",
    "shaped_cross_entropy",
    "token_head",
    "token_head_reference",
]
