"""Which checkpoint `--resume` continues from, and the clean-up a run folder gets before it starts.

    from shapedce.train.checkpoint import select_checkpoint
    path = select_checkpoint(StageDir("runs/ce").checkpoints)   # newest intact step_N, or None

A checkpoint is intact when its config.json and trainer_state.pt are there, the trainer state
loads weights-only with finite tensors (optimizer moments included), and its weights are finite
(model.safetensors) or, for a sharded checkpoint, its DCP metadata reads safely. Corrupt ones are
named in one line each and moved aside to `corrupt-step_N` (never deleted); the newest intact one
is used. Unfinished writes (`.tmp-*`, left by a killed writer) are removed. `lock_stage` takes the
stage folder's lock (one writer per folder) and `check_resume_config` refuses a `--resume` override
that changes the model or the data.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from ...errors import UserError
from ...rundir import CORRUPT_PREFIX, LEGACY_RL_PREFIX, TMP_PREFIX, FolderLock, StageDir
from ..dist import Dist, gather_objects
from .files import STATE_FILE, list_checkpoints, load_trainer_state
from .sharded import check_sharded_metadata, is_sharded_checkpoint


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
    target = path.with_name(f"{CORRUPT_PREFIX}{path.name}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{CORRUPT_PREFIX}{path.name}-{n}")
    path.rename(target)
    return target


def select_checkpoint(root: Path) -> Path | None:
    """The newest intact checkpoint under `root` (None when there is none at all). Corrupt ones are
    moved aside and named in one line each; if every one is corrupt, one line says so. Call it from
    one process (rank 0 decides for all)."""
    ckpts = list_checkpoints(root)
    legacy = sorted(root.glob(f"{LEGACY_RL_PREFIX}*")) if root.is_dir() else []
    if not ckpts and legacy:
        raise UserError(
            f"{legacy[-1]} was written by an earlier shapedce version (checkpoint-N); it cannot be "
            "resumed: start the stage again in a new --out"
        )
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


def remove_stale_writes(*roots: Path) -> list[Path]:
    """Delete `.tmp-*` folders directly under each root: a killed writer's unfinished checkpoint,
    final/ or tokenizer/. Call it while holding the folder's lock (no other writer is alive)."""
    removed = []
    for root in map(Path, roots):
        if not root.is_dir():
            continue
        for tmp in root.glob(f"{TMP_PREFIX}*"):
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
                removed.append(tmp)
    return removed


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, name + "."))
        else:
            out[name] = value
    return out


def check_resume_config(
    saved: dict[str, Any], new: dict[str, Any], fixed: tuple[str, ...], where: Path
) -> None:
    """One-line UserError when `new` (the saved config plus `--resume` overrides) changes a setting
    that fixes the model's or the data's shape: a key in `fixed` or under `fixed` + "." (e.g.
    "model" covers model.flavor). The checkpoint was trained with the saved value; config.yaml is
    never rewritten to claim another."""
    old, now = _flat(saved), _flat(new)
    for key in sorted(set(old) | set(now)):
        if any(key == f or key.startswith(f + ".") for f in fixed) and old.get(key) != now.get(key):
            raise UserError(
                f"--resume cannot change {key} ({old.get(key)!r} in {where}, {now.get(key)!r} asked): "
                "it fixes the model or the data the checkpoint was trained on; start a new --out instead"
            )


def lock_stage(stage: StageDir, d: Dist) -> FolderLock | None:
    """Rank 0 takes the stage folder's lock for the run's whole life (one writer per folder); a
    second process on the folder gets one line naming the holder's pid. Every rank learns the
    outcome (collective)."""
    lock: FolderLock | UserError | None = None
    if d.main:
        try:
            lock = FolderLock(stage.lock, f"run folder {stage.path}").acquire()
        except UserError as err:
            lock = err
    failed = gather_objects(d, lock if isinstance(lock, UserError) else None)[0]
    if isinstance(failed, UserError):
        raise failed
    return lock
