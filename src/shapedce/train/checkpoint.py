"""Resumable checkpoints: Hugging Face weights plus the trainer's state, written atomically.

A checkpoint is a directory `RUN/checkpoints/step_0000100/` holding
  - `model.safetensors` + `config.json` (`save_pretrained`) and the tokenizer files, so that
    `AutoModelForCausalLM.from_pretrained(path)` loads it with no project code;
  - `trainer_state.pt`: optimizer, scheduler, RNG states, data position, step;
  - `run_config.yaml`: the resolved run config.
It is written to a temporary sibling and renamed into place, so a crash never leaves a
half-written checkpoint under a real name; the last `keep_last` are kept. Loading never runs
code from a file: safetensors for weights, `torch.load(weights_only=True)`, `yaml.safe_load`.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from ..data.pretrained import load_causal_lm
from ..errors import UserError

STATE_FILE = "trainer_state.pt"
STEP_DIR = re.compile(r"^step_(\d{7})$")


def rng_state() -> dict[str, Any]:
    """Torch RNG states (the trainer draws its data order from its own seeded generators)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_model_dir(
    final: Path,
    model,
    tokenizer,
    config,
    trainer_state: dict[str, Any] | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a Hugging Face model directory (plus trainer state if given) atomically: a temporary
    sibling renamed into place, replacing an older directory of the same name. `state_dict`
    replaces the model's own weights (the full weights gathered from a sharded model)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(tmp)
    if trainer_state is not None:
        torch.save({**trainer_state, "rng": rng_state()}, tmp / STATE_FILE)
    config.save(tmp / "run_config.yaml")
    if final.exists():  # same step written again (e.g. a resumed run's final save)
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def save_checkpoint(
    root: Path, step: int, model, tokenizer, trainer_state: dict[str, Any], config, keep_last: int
) -> Path:
    """Write RUN/checkpoints/step_N atomically and prune old ones; returns its path."""
    final = write_model_dir(
        root / f"step_{step:07d}", model, tokenizer, config, {**trainer_state, "step": step}
    )
    for old in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary directories are ignored)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and STEP_DIR.match(p.name))


def load_trainer_state(path: Path) -> dict[str, Any]:
    """The trainer state of checkpoint `path`, with a one-line error if it is missing or corrupt."""
    state_file = path / STATE_FILE
    if not (path / "config.json").is_file() or not state_file.is_file():
        raise UserError(f"{path} is not a complete checkpoint (needs config.json and {STATE_FILE})")
    try:
        return torch.load(state_file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise UserError(f"checkpoint {state_file} is corrupt: {type(err).__name__}") from None


def load_weights(path: Path, **kwargs):
    """`AutoModelForCausalLM.from_pretrained(path)`, remote code refused, with a one-line error on a
    missing or corrupt file (`data/pretrained.py`)."""
    return load_causal_lm(path, **kwargs)
