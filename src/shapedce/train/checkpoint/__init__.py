"""The checkpointer: the one place that writes and reads training state, for every stage.

    from shapedce.train.checkpoint import Checkpointer
    ckpt = Checkpointer(StageDir("runs/ce"), d, keep_last=2)
    path = ckpt.decide(resume=True)       # rank 0 at start: the checkpoint to resume, or None
    model = ckpt.start_model(path)        # its weights (one process) or the bare architecture (sharded)
    state = ckpt.load(path, module, opt)  # optimizer in place; the trainer's state (step, RNG, ...)
    ckpt.save(step, module, opt, tokenizer, trainer.state_dict(), cfg)   # checkpoints/step_N, pruned
    ckpt.write_final(module, tokenizer, cfg)                               # final/, a plain HF model

Pre-training, mid-training and RL (`LMTrainer`, `RLTrainer`) use it alike; nothing else in the
package calls `torch.save` or `save_pretrained` on training state.
  - Names: `shapedce.rundir` (`checkpoint_name`: step_NNNNNNN for every stage; `.tmp-*` unfinished
    writes; `corrupt-*` moved aside).
  - Formats: one process writes `save_pretrained` weights + `trainer_state.pt` (`files`); a
    distributed run (DDP or FSDP2) writes model and optimizer sharded with
    torch.distributed.checkpoint into dcp/ (`sharded`), loadable at any world size, one process
    included; a one-process checkpoint resumes on N ranks too.
  - Atomic writes: a temporary sibling renamed into place; the last `keep_last` are kept.
  - Integrity and the resume policy (`policy`): the newest checkpoint whose trainer state loads
    weights-only with finite tensors and whose weights are finite is used; corrupt ones are moved
    aside as corrupt-step_N (one line each); stale .tmp-* folders are removed at start, in the
    checkpoints folder and the stage folder.
  - Loading never runs code from a file (safetensors, `torch.load(weights_only=True)`, DCP metadata
    from JSON: `dcp_metadata`).
The caller holds the stage folder's lock (`shapedce.rundir.FolderLock`) for its whole life, so no
other process writes the folder meanwhile.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from ...config import parse_yaml
from ...errors import UserError
from ...models import check_finite_weights
from ...rundir import StageDir
from .. import dist as dist_
from .files import (
    STATE_FILE,
    list_checkpoints,
    load_trainer_state,
    load_weights,
    prune,
    rng_state,
    save_checkpoint,
    save_tokenizer,
    set_rng_state,
    write_model_dir,
)
from .policy import check_checkpoint, check_resume_config, lock_stage, remove_stale_writes, select_checkpoint
from .sharded import (
    full_optimizer_state,
    is_sharded_checkpoint,
    load_sharded,
    model_from_checkpoint_config,
    save_sharded_checkpoint,
    set_full_optimizer_state,
    write_final,
)

__all__ = [
    "STATE_FILE",
    "Checkpointer",
    "check_checkpoint",
    "check_resume_config",
    "lock_stage",
    "is_sharded_checkpoint",
    "list_checkpoints",
    "load_trainer_state",
    "load_weights",
    "prune",
    "remove_stale_writes",
    "rng_state",
    "save_tokenizer",
    "select_checkpoint",
    "set_rng_state",
]


class Checkpointer:
    """Checkpoints and final/ of one stage folder, for one rank of a job (every rank builds one;
    `save`, `load` and `write_final` are collective under torchrun)."""

    def __init__(self, stage: StageDir, d: dist_.Dist, keep_last: int):
        self.stage, self.d, self.keep_last = stage, d, keep_last

    @property
    def root(self) -> Path:
        return self.stage.checkpoints

    def last(self) -> Path | None:
        """The newest checkpoint by name (not checked)."""
        found = list_checkpoints(self.root)
        return found[-1] if found else None

    def clean(self) -> None:
        """Remove stale temporary folders (a killed writer's) in the checkpoints and stage folders."""
        remove_stale_writes(self.root, self.stage.path)

    def decide(self, resume: bool) -> Path | None:
        """One process's decision (rank 0): stale writes removed, then the checkpoint to resume from
        (the newest intact one; corrupt ones moved aside) or None for a fresh start. A folder with
        no checkpoint can always start again, `--resume` included; a fresh start on a folder holding
        a run is refused."""
        self.clean()
        if not resume:
            if self.stage.finished():
                raise UserError(f"{self.stage.path} already holds a finished run; choose another --out")
            if self.stage.has_checkpoint():
                raise UserError(
                    f"{self.stage.path} already holds a run; pass --resume to continue it "
                    "or choose another --out"
                )
            return None
        return select_checkpoint(self.root)

    def claim(self, resume: bool, config: dict[str, Any], fixed: tuple[str, ...]) -> Path | None:
        """Every rank: rank 0 `decide`s and checks that the `--resume` overrides in `config` change
        none of the `fixed` settings the checkpoint was trained with (`check_resume_config`); every
        rank follows its answer, a refusal included (one UserError on every rank)."""
        outcome: Path | UserError | None = None
        if self.d.main:
            try:
                outcome = self.decide(resume)
                if resume and outcome is None:  # stopped before its first checkpoint: never stuck
                    print(
                        f"resume: no checkpoint in {self.root}; starting the run from the beginning",
                        file=sys.stderr,
                    )
                if outcome is not None and self.stage.config.is_file():
                    saved = parse_yaml(self.stage.config.read_text(), str(self.stage.config))
                    if isinstance(saved, dict):
                        check_resume_config(saved, config, fixed, self.stage.config)
            except UserError as err:
                outcome = err
        outcome = dist_.gather_objects(self.d, outcome)[0]
        if isinstance(outcome, UserError):
            raise outcome
        return outcome

    # ------------------------------------------------------------------------------ reading
    def start_model(self, path: Path) -> torch.nn.Module:
        """The model to resume: its weights (one-process checkpoint) or, for a sharded one, the bare
        architecture whose weights `load` reads from dcp/ once the model is wrapped."""
        if is_sharded_checkpoint(path):
            return model_from_checkpoint_config(path)
        return load_weights(path)

    def full_optimizer(self, path: Path, model: torch.nn.Module, make_optimizer) -> dict | None:
        """For a one-process checkpoint resumed on N ranks: its optimizer state keyed by parameter
        name, to shard once the model is wrapped. Call before wrapping; None when not needed.
        `make_optimizer(model)` builds the optimizer the way the trainer does."""
        if is_sharded_checkpoint(path) or not self.d.on:
            return None
        return full_optimizer_state(model, make_optimizer(model), load_trainer_state(path)["optimizer"])

    def load(
        self, path: Path, module: torch.nn.Module, opt: torch.optim.Optimizer, full_optim: dict | None = None
    ) -> dict[str, Any]:
        """Load the optimizer (and, for a sharded checkpoint, the weights) into module / opt; returns
        the trainer state (step, RNG, ...) for the trainer's `load_state_dict`."""
        state = load_trainer_state(path)
        if is_sharded_checkpoint(path):
            load_sharded(path, module, opt)
        elif full_optim is not None:
            set_full_optimizer_state(module, opt, full_optim)
        else:
            opt.load_state_dict(state["optimizer"])
        state.pop("optimizer", None)
        return state

    # ------------------------------------------------------------------------------ writing
    def save(self, step: int, module, opt, tokenizer, state: dict[str, Any], config) -> Path:
        """RUN/checkpoints/step_N: sharded (dcp/) under torchrun, else weights + trainer_state.pt with
        the optimizer; pruned to `keep_last`. Collective under torchrun."""
        if self.d.on:
            state = {k: v for k, v in state.items() if k != "optimizer"}
            return save_sharded_checkpoint(
                self.root, step, module, opt, tokenizer, state, config, self.keep_last, self.d
            )
        state = {**state, "optimizer": opt.state_dict()}
        return save_checkpoint(
            self.root, step, dist_.unwrap(module), tokenizer, state, config, self.keep_last
        )

    def write_final(self, module, tokenizer, config) -> Path:
        """RUN/final: a plain Hugging Face model folder (full weights gathered to rank 0 under
        torchrun). A model with non-finite weights is never written."""
        if self.d.on:
            return write_final(self.stage.final, module, tokenizer, config, self.d)
        model = dist_.unwrap(module)
        check_finite_weights(model, "the trained model")
        return write_model_dir(self.stage.final, model, tokenizer, config)
