"""A reproduce folder's saved grid (ROOT/grid.yaml), read back as a `GridConfig`.

    from shapedce.reproduce.grid_file import load_grid_file
    grid = load_grid_file("runs/reproduce/grid.yaml", ["rl.steps=4"])

A grid.yaml written before the stage sections (`pretrain_preset`, `rl_overrides`, flat `eval_*`
keys) reads as the grid it meant, with its presets as they are now, so a rerun in an older folder
still fits; of its mid-training overrides only `train.steps=N` has a field today
(`pretrain.midtrain.steps`), any other is refused in one line.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from ..config import merge, parse_override, parse_yaml
from ..errors import UserError
from .grid import SECTION_PRESETS, GridConfig, build_grid

LEGACY = ("pretrain_preset", "pretrain_overrides", "midtrain_overrides", "rl_preset", "rl_overrides")


def _from_flat(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """The sections of a grid.yaml written before them (stage settings as preset names and override
    strings). Of its mid-training overrides only train.steps=N has a field (pretrain.midtrain.steps)."""
    data, mid = dict(data), dict[str, Any]()
    for text in shlex.split(str(data.pop("midtrain_overrides", "") or "")):
        mid = merge(mid, parse_override(text))
    steps = mid.get("train", {}).get("steps") if isinstance(mid.get("train"), dict) else None
    if mid and mid != {"train": {"steps": steps}}:
        raise UserError(
            f"{path}: midtrain_overrides of an older grid.yaml are no longer read; the grid's mid-training "
            "is now pretrain.midtrain.* (rerun in another --out)"
        )
    out = {k: v for k, v in data.items() if k not in LEGACY and not k.startswith("eval_")}
    for name in SECTION_PRESETS:
        section: dict[str, Any] = {"preset": data.get(f"{name}_preset", "tiny")}
        for text in shlex.split(str(data.get(f"{name}_overrides") or "")):
            section = merge(section, parse_override(text))
        out[name] = section
    if mid:
        out["pretrain"] = merge(out["pretrain"], {"midtrain": {"steps": steps}})
    out["eval"] = {k[len("eval_") :]: v for k, v in data.items() if k.startswith("eval_")}
    return out


def load_grid_file(path: str | Path, overrides: list[str] | None = None) -> GridConfig:
    """The grid a reproduce directory saved (DIR/grid.yaml), plus overrides. A grid.yaml from before
    the sections reads as the grid it meant, with its presets as they are now."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no reproduce grid at {path}")
    data = parse_yaml(path.read_text(), str(path))  # plain YAML: tags and aliases refused
    if isinstance(data, dict) and any(k in data for k in LEGACY):
        data = _from_flat(data, path)
    return build_grid(data, overrides or [])
