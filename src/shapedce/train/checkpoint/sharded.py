r"""Sharded checkpoints of a distributed run (torch.distributed.checkpoint), loadable at any world size.

    python -m torch.distributed.run --standalone --nproc-per-node 2 \
        -m shapedce pretrain --preset smoke --out /tmp/s2
    shapedce pretrain --out /tmp/s2 --resume              # the 2-rank checkpoint, resumed by one process

A distributed run writes RUN/checkpoints/step_N/ with
  - `dcp/`: model and optimizer state saved by every rank in parallel with `dcp.save`, keyed by
    the Hugging Face parameter names (DDP's `module.` prefix dropped by the state-dict helpers);
    under FSDP2 each rank writes only its own shards;
  - `config.json`, the tokenizer, `run_config.yaml` and `trainer_state.pt` (step, scheduler,
    data position, the world size that wrote it, every rank's RNG state), written by rank 0.
The directory is written under a temporary name and renamed by rank 0 after every rank has
finished, so a crash never leaves a half checkpoint under a real name (as in `checkpoint.py`).

Resharding: DCP stores each tensor's global shape and loads into whatever layout the reader has,
so a checkpoint written by N ranks resumes on M ranks, DDP or FSDP, or on one process without a
process group. A one-process checkpoint (plain `save_pretrained` + `opt.state_dict()`) resumes
on N ranks too: its optimizer state is turned into the name-keyed full form, then sharded.
`final/` stays a plain HF model directory: the full state dict is gathered to rank 0 (on CPU)
and written with `save_pretrained`.

Loading never runs code from a file. DCP's own reader would unpickle its `dcp/.metadata` and read
non-tensor items without the weights-only restriction; a crafted file would run. Rank 0 therefore
also writes the metadata as `dcp/metadata.json` (`shapedce.train.checkpoint.dcp_metadata`), and `load_sharded`
reads only that (never the pickle) and reads non-tensor items with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    get_state_dict,
    set_optimizer_state_dict,
    set_state_dict,
)

from ...errors import UserError
from ...rundir import TMP_PREFIX, checkpoint_name
from ..dist import Dist, barrier, gather_objects, unwrap
from .dcp_metadata import read_metadata_json, write_metadata_json
from .files import STATE_FILE, prune, replace_dir, rng_state, write_model_dir

SHARDED_DIR = "dcp"
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def is_sharded_checkpoint(path: Path) -> bool:
    """True for a checkpoint written by a distributed run (it holds dcp/)."""
    return (Path(path) / SHARDED_DIR).is_dir()


def save_sharded_checkpoint(
    root: Path,
    step: int,
    module: torch.nn.Module,
    opt: torch.optim.Optimizer,
    tokenizer,
    trainer_state: dict[str, Any],
    config,
    keep_last: int,
    d: Dist,
) -> Path:
    """Collective: every rank calls it. Writes root/step_N atomically and prunes old checkpoints."""
    final = root / checkpoint_name(step)
    tmp = root / f"{TMP_PREFIX}{final.name}"
    if d.main:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    barrier(d)
    model_sd, optim_sd = get_state_dict(module, opt)
    metadata = dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=tmp / SHARDED_DIR)
    rngs = gather_objects(d, rng_state())
    if d.main:
        write_metadata_json(metadata, tmp / SHARDED_DIR)  # what loading reads (never the .metadata pickle)
        unwrap(module).config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        config.save(tmp / "run_config.yaml")
        state = {**trainer_state, "step": step, "world_size": d.world, "rng": rngs[0], "rng_by_rank": rngs}
        torch.save(state, tmp / STATE_FILE)
        replace_dir(tmp, final)
        prune(root, keep_last)
    barrier(d)
    return final


def model_from_checkpoint_config(path: Path) -> torch.nn.Module:
    """A model with the checkpoint's architecture (weights are loaded afterwards by `load_sharded`)."""
    from ...data.pretrained import load_auto_config, model_from_config

    return model_from_config(load_auto_config(path)).to(torch.float32)


class _SafeReader(FileSystemReader):
    """DCP's file reader, with the metadata read from our metadata.json instead of the .metadata pickle."""

    def read_metadata(self, *args: Any, **kwargs: Any):
        from torch.distributed.checkpoint.metadata import StorageMeta

        metadata = read_metadata_json(Path(self.path))
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class _SafePlanner(DefaultLoadPlanner):
    """DCP's default planner, reading non-tensor items (optimizer hyper-parameters) weights-only."""

    def load_bytes(self, read_item, value) -> None:
        from torch.distributed.checkpoint._nested_dict import set_element

        try:
            obj = torch.load(value, weights_only=True)
        except Exception as err:  # noqa: BLE001 - a crafted or corrupt item
            raise UserError(
                f"refusing checkpoint item {read_item.dest_index.fqn}: {type(err).__name__}"
            ) from None
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj


def _first_user_error(err: BaseException) -> UserError | None:
    """The UserError inside a DCP CheckpointException (it wraps every rank's failure)."""
    failures = getattr(err, "failures", None) or {}
    for failure in failures.values():
        seen = failure[0] if isinstance(failure, tuple) else failure  # (exception, traceback) per rank
        while seen is not None:
            if isinstance(seen, UserError):
                return seen
            seen = seen.__cause__ or seen.__context__
    return None


def check_sharded_metadata(path: Path) -> None:
    """One-line UserError unless path/dcp/metadata.json reads safely (used to pick an intact checkpoint)."""
    _SafeReader(Path(path) / SHARDED_DIR).read_metadata()


def load_sharded(path: Path, module: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    """Load model + optimizer from path/dcp into `module` / `opt`, whatever world size wrote it."""
    check_sharded_metadata(path)  # before DCP reads it: a refused file never reaches DCP's own logging
    model_sd, optim_sd = get_state_dict(module, opt)
    state = {"model": model_sd, "optim": optim_sd}
    with warnings.catch_warnings():  # one process without a process group is a supported reader
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        try:
            dcp.load(state, storage_reader=_SafeReader(Path(path) / SHARDED_DIR), planner=_SafePlanner())
        except UserError:
            raise
        except CheckpointException as err:  # a BaseException: wraps each rank's failure
            inner = _first_user_error(err)
            if inner is not None:
                raise UserError(f"cannot load sharded checkpoint {path}: {inner}") from None
            raise UserError(
                f"cannot load sharded checkpoint {path}: {str(err).strip().splitlines()[0][:300]}"
            ) from None
        except Exception as err:  # noqa: BLE001 - missing shard files, another model, ...
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(f"cannot load sharded checkpoint {path}: {first[:300]}") from None
    set_state_dict(module, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])


def full_optimizer_state(
    model: torch.nn.Module, opt: torch.optim.Optimizer, saved: dict[str, Any]
) -> dict[str, Any]:
    """A one-process `opt.state_dict()` (parameters by index) as the name-keyed full form that
    `set_full_optimizer_state` shards. `opt` must be built over the unwrapped `model` like the saved one."""
    opt.load_state_dict(saved)
    return get_optimizer_state_dict(model, opt)


def set_full_optimizer_state(
    module: torch.nn.Module, opt: torch.optim.Optimizer, full: dict[str, Any]
) -> None:
    set_optimizer_state_dict(module, opt, full, options=StateDictOptions(full_state_dict=True))


def write_final(final: Path, module: torch.nn.Module, tokenizer, config, d: Dist) -> Path:
    """Collective: gather the full weights to rank 0 and write a plain `save_pretrained` directory."""
    full = get_model_state_dict(module, options=FULL)
    first: dict[int, str] = {}
    for name, param in unwrap(module).named_parameters(remove_duplicate=False):
        if first.setdefault(id(param), name) != name:  # a tied copy (lm_head = embed_tokens): gathered
            full.pop(name, None)  # separately under FSDP, so HF cannot see the tie
    if d.main:
        write_model_dir(final, unwrap(module), tokenizer, config, state_dict=full)
    barrier(d)
    return final
