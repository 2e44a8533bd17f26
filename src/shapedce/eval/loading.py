"""Find and load the model to evaluate or train: a run directory's final/ or any HF model directory.

    from shapedce.eval.loading import resolve_model_dir, load_model, pick_device
    model, tokenizer = load_model(resolve_model_dir("runs/ce-mid"), pick_device("auto"))

Used by `shapedce eval`, `shapedce rl` and `shapedce readiness`. Every failure the user can fix
(no config.json, a bad tokenizer, weights that do not load, NaN/inf weights) is one UserError line.
Weights are read by transformers from safetensors / the HF formats; nothing is unpickled here.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.pretrained import load_causal_lm
from ..data.tokenizer import check_special_tokens, load_tokenizer
from ..errors import UserError
from ..models import cast_weights, check_finite_weights
from ..rundir import resolve_model_dir

__all__ = ["load_model", "pick_device", "resolve_model_dir"]


def pick_device(device: str = "auto") -> torch.device:
    """ "auto" = CUDA when available, else CPU; otherwise the named device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise UserError(f"--device must be auto, cpu, cuda or cuda:N; got {device!r}") from None


def load_model(
    path: Path, device: torch.device, *, pad_from_eos: bool = False, dtype: torch.dtype | None = None
):
    """(model in eval mode on `device`, tokenizer); refuses a model with non-finite weights. `dtype`
    (e.g. bf16 for evaluation on CUDA) casts the weights before they move to `device`.

    `pad_from_eos=True` (evaluation only) accepts a tokenizer without a pad token, as many released
    models have, padding with eos: evaluation masks every pad position, training would not."""
    tokenizer = load_tokenizer(path, pad_from_eos=pad_from_eos)  # first: fails before any weights are read
    check_special_tokens(tokenizer)
    model = load_causal_lm(path)  # remote code refused, one line on failure
    check_finite_weights(model, path)
    if dtype is not None:
        cast_weights(model, dtype)  # parameters only: RoPE's inv_freq stays float32
    return model.to(device).eval(), tokenizer
