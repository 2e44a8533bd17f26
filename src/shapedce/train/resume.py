"""Which checkpoint `--resume` continues from, and the clean-up a run folder gets before it starts.

    from shapedce.train.resume import select_checkpoint
    path = select_checkpoint(StageDir("runs/ce").checkpoints)   # newest intact step_N, or None

A checkpoint is intact when its config.json and trainer_state.pt are there, the trainer state
loads weights-only with finite tensors (optimizer moments included), and its weights are finite
(model.safetensors) or, for a sharded checkpoint, its DCP metadata reads safely. Corrupt ones are
named in one line each and moved aside to `corrupt-step_N` (never deleted); the newest intact one
is used. Unfinished writes (`.tmp-*`, left by a killed writer) are removed.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from .checkpoint import STATE_FILE, list_checkpoints, load_trainer_state
from .dist_checkpoint import check_sharded_metadata, is_sharded_checkpoint


def _non_finite(obj: Any, where: str = "") -> str | None:
    """The path of the first tensor holding NaN or inf inside nested dicts / lists, else None."""
    if isinstance(obj, torch.Tensor):
        return where if obj.is_floating_point() and not bool(torch.isfinite(obj).all()) else None
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for key, value in items:
        found = _non_finite(value, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


def check_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's trainer state, or a one-line UserError saying why it cannot be resumed."""
    state = load_trainer_state(path)
    bad = _non_finite(state)
    if bad is not None:
        raise UserError(f"checkpoint {path / STATE_FILE} holds non-finite values ({bad})")
    if is_sharded_checkpoint(path):
        check_sharded_metadata(path)
        return state
    from safetensors import safe_open

    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise UserError(f"checkpoint {path} has no model.safetensors")
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():
                    t = f.get_tensor(name)
                    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                        raise UserError(f"checkpoint {file} holds non-finite weights ({name})")
        except UserError:
            raise
        except Exception as err:  # noqa: BLE001 - a truncated or garbled safetensors file
            raise UserError(f"checkpoint {file} is corrupt ({type(err).__name__})") from None
    return state


def _move_aside(path: Path) -> Path:
    target = path.with_name(f"corrupt-{path.name}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"corrupt-{path.name}-{n}")
    path.rename(target)
    return target


def select_checkpoint(root: Path) -> Path | None:
    """The newest intact checkpoint under `root` (None when there is none at all). Corrupt ones are
    moved aside and named in one line each; if every one is corrupt, one line says so. Call it from
    one process (rank 0 decides for all)."""
    ckpts = list_checkpoints(root)
    notes, reasons = [], []
    for path in reversed(ckpts):
        try:
            check_checkpoint(path)
        except UserError as err:
            reasons.append(f"{path.name} ({err})")
            notes.append(
                f"resume: skipping corrupt checkpoint {path.name}, moved to {_move_aside(path).name}: {err}"
            )
            continue
        for note in notes:
            print(note, file=sys.stderr)
        return path
    if ckpts:
        raise UserError(f"no intact checkpoint in {root}, moved aside as corrupt-*: " + "; ".join(reasons))
    return None


def remove_stale_writes(root: Path) -> list[Path]:
    """Delete `.tmp-*` folders under `root`: a killed writer's unfinished checkpoint or final/."""
    removed = []
    if root.is_dir():
        for tmp in root.glob(".tmp-*"):
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
                removed.append(tmp)
    return removed
