"""One-process checkpoints and model folders: Hugging Face weights plus the trainer's state, atomically.

    from shapedce.train.checkpoint.files import save_checkpoint, write_model_dir

A checkpoint is a directory `RUN/checkpoints/step_0000100/` (`shapedce.rundir.checkpoint_name`) holding
  - `model.safetensors` + `config.json` (`save_pretrained`) and the tokenizer files, so that
    `AutoModelForCausalLM.from_pretrained(path)` loads it with no project code; config.json and
    generation_config.json name the tokenizer's eos, bos and pad ids (`name_special_tokens`);
  - `trainer_state.pt`: optimizer, scheduler, RNG states, data position, step;
  - `run_config.yaml`: the resolved run config.
It is written to a temporary sibling and renamed into place, so a crash never leaves a
half-written checkpoint under a real name; the last `keep_last` are kept. Loading never runs
code from a file: safetensors for weights, `torch.load(weights_only=True)`, `yaml.safe_load`.
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from ...data.pretrained import generation_config_of, load_causal_lm
from ...errors import UserError
from ...rundir import TMP_PREFIX, checkpoint_name, list_checkpoints

STATE_FILE = "trainer_state.pt"


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


def _fresh_tmp(final: Path) -> Path:
    """An empty temporary sibling of `final` (this process's), for a write renamed into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f"{TMP_PREFIX}{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    return tmp


def replace_dir(tmp: Path, final: Path) -> Path:
    """Rename the finished `tmp` to `final`, replacing an older folder of that name."""
    if final.exists():  # the same step written again (e.g. a resumed run's last save)
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def save_tokenizer(tokenizer, path: Path) -> Path:
    """Write a tokenizer folder atomically (a killed writer never leaves half a tokenizer)."""
    tmp = _fresh_tmp(Path(path))
    tokenizer.save_pretrained(tmp)
    return replace_dir(tmp, Path(path))


def name_special_tokens(model, tokenizer) -> None:
    """Copy the tokenizer's eos, bos and pad token ids into `model.config` and a fresh
    `model.generation_config` (saved as generation_config.json), so a plain `model.generate()` stops
    at eos and pads with pad. Ids the tokenizer lacks are left as the config has them."""
    ids = {name: getattr(tokenizer, name, None) for name in ("eos_token_id", "bos_token_id", "pad_token_id")}
    ids = {name: value for name, value in ids.items() if value is not None}
    for name, value in ids.items():
        setattr(model.config, name, value)
    old = getattr(model, "generation_config", None)  # keeps sampling defaults already set (temperature, ...)
    generation = generation_config_of(model.config) if old is None else copy.deepcopy(old)
    for name, value in ids.items():
        setattr(generation, name, value)
    model.generation_config = generation


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
    tmp = _fresh_tmp(final)
    name_special_tokens(model, tokenizer)
    model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(tmp)
    if trainer_state is not None:
        torch.save({**trainer_state, "rng": rng_state()}, tmp / STATE_FILE)
    config.save(tmp / "run_config.yaml")
    return replace_dir(tmp, final)


def save_checkpoint(
    root: Path, step: int, model, tokenizer, trainer_state: dict[str, Any], config, keep_last: int
) -> Path:
    """Write RUN/checkpoints/step_N atomically and prune old ones; returns its path."""
    final = write_model_dir(
        root / checkpoint_name(step), model, tokenizer, config, {**trainer_state, "step": step}
    )
    prune(root, keep_last)
    return final


def prune(root: Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` checkpoints under `root`."""
    for old in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


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
