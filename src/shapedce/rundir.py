"""The run-directory layout: the one module that knows where every file of a run lives.

    from shapedce.rundir import StageDir, GridDir
    stage = StageDir("runs/ce")                  # what `shapedce pretrain|midtrain|rl --out runs/ce` writes
    stage.finished()                             # True once runs/ce/final/config.json exists
    GridDir("runs/reproduce").run_dir("tiny", "ce", 0).stage("midtrain").final

A stage directory (one `--out` of pretrain, midtrain or rl):
    config.yaml          the resolved config (written first, after every check passed)
    metrics.jsonl        one JSON row per logged step: {"stage", "step", "tokens", "split", ...}
    tokenizer/, cache/   the run's tokenizer and token caches (pre-/mid-training)
    checkpoints/         step_NNNNNNN/ for every stage (`checkpoint_name`); .tmp-* are unfinished
                         writes (removed at the next start), corrupt-* were moved aside by --resume
                         (`shapedce.train.checkpoint` writes and reads them)
    .lock                held by the one process writing the folder (`FolderLock`)
    final/               a plain Hugging Face model directory; the stage is finished when
                         final/config.json exists
    eval/results.json    `shapedce eval` of final/ (what the reproduce grid's eval stages write)
    from.txt             RL only: the model directory it started from
    error.log            tracebacks of internal errors (see shapedce.cli)
A reproduce directory (`shapedce reproduce --out ROOT`):
    grid.yaml, report.md, verdicts.json, runs.csv, *.png, .lock (held while a scheduler runs)
    runs/MODEL/CONFIG/sSEED/{pretrain,midtrain,rl}/   stage directories as above
    runs/MODEL/CONFIG/sSEED/{log.txt, timings.json, .lock}
Imports nothing heavy (no torch): the report and the scheduler read runs through it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError

STAGES = ("pretrain", "eval-pretrain", "midtrain", "eval-midtrain", "rl", "eval-rl")
"""Every stage of a reproduce run, in order; eval-X scores X's final model."""
TRAIN_STAGES = ("pretrain", "midtrain", "rl")
FINAL = "final"
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
RESULTS = "results.json"
LOCK = ".lock"
CHECKPOINT_PREFIX = "step_"
"""Every stage's checkpoints are CHECKPOINTS/step_NNNNNNN (the optimizer step, 7 digits or more)."""
TMP_PREFIX = ".tmp-"
"""An unfinished atomic write (a folder renamed into place when complete); stale ones are removed."""
CORRUPT_PREFIX = "corrupt-"
"""A checkpoint `--resume` found corrupt and moved aside (never deleted)."""
LEGACY_RL_PREFIX = "checkpoint-"
"""RL checkpoints of earlier versions (checkpoint-N): recognised to say they cannot be resumed."""


def checkpoint_name(step: int) -> str:
    """The folder name of the checkpoint after optimizer step `step`."""
    return f"{CHECKPOINT_PREFIX}{step:07d}"


def checkpoint_step(name: str) -> int | None:
    """The step of a checkpoint folder name, or None for any other name (.tmp-*, corrupt-*, ...)."""
    digits = name[len(CHECKPOINT_PREFIX) :]
    if name.startswith(CHECKPOINT_PREFIX) and len(digits) >= 7 and digits.isdigit():
        return int(digits)
    return None


def list_checkpoints(root: str | Path) -> list[Path]:
    """The checkpoint folders (step_N) under a checkpoints/ folder, oldest first; .tmp-* and corrupt-*
    are not listed."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and checkpoint_step(p.name) is not None]
    return sorted(found, key=lambda p: checkpoint_step(p.name))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All complete JSON rows of a file; a torn last line (a run killed mid-write) is skipped."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):  # torn, or nested past the parser's stack
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def is_model_dir(path: str | Path) -> bool:
    """True for a Hugging Face model directory (it holds config.json)."""
    return (Path(path) / "config.json").is_file()


def resolve_model_dir(path: str | Path) -> Path:
    """A stage directory's final/ model, or `path` itself when it is a model directory."""
    path = Path(path)
    for candidate in (path / FINAL, path):
        if is_model_dir(candidate):
            return candidate
    raise UserError(f"{path} is not a model directory (no config.json in it or in {path / FINAL})")


def prepare_out(path: str | Path, what: str = "--out") -> Path:
    """Create the output folder `path` (and parents) or fail with one line: an existing file, a
    place that cannot hold folders (/proc), or a folder this user cannot write."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path} is an existing file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{what} {path}: cannot create this folder ({err.strerror or err})") from None
    probe = path / f".write-test-{os.getpid()}"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UserError(f"{what} {path}: cannot write in this folder ({err.strerror or err})") from None
    return path


@dataclass(frozen=True)
class StageDir:
    """One stage's output folder (pretrain, midtrain or rl) and the files in it."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def final(self) -> Path:
        return self.path / FINAL

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def tokenizer(self) -> Path:
        return self.path / "tokenizer"

    @property
    def cache(self) -> Path:
        return self.path / "cache"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    @property
    def results(self) -> Path:
        return self.eval_dir / RESULTS

    @property
    def error_log(self) -> Path:
        return self.path / "error.log"

    def finished(self) -> bool:
        """True once final/ holds a complete model (it is written atomically, config.json included)."""
        return is_model_dir(self.final)

    def evaluated(self) -> bool:
        return self.results.is_file()

    def started(self) -> bool:
        """True once the stage wrote its config (it may have saved no checkpoint yet)."""
        return self.config.is_file()

    @property
    def lock(self) -> Path:
        """The lock file the stage's one writer holds for its whole life."""
        return self.path / LOCK

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / checkpoint_name(step)

    def list_checkpoints(self) -> list[Path]:
        """Complete checkpoints (step_N), oldest first; .tmp-* and corrupt-* are not listed."""
        return list_checkpoints(self.checkpoints)

    def has_checkpoint(self) -> bool:
        """A complete checkpoint is there (its integrity is checked when --resume reads it)."""
        return bool(self.list_checkpoints())

    def rows(self, split: str | None = None) -> list[dict[str, Any]]:
        """metrics.jsonl rows (of one split when given); [] before the first row."""
        rows = read_jsonl(self.metrics) if self.metrics.is_file() else []
        return rows if split is None else [r for r in rows if r.get("split") == split]

    def last_train_step(self) -> int:
        """The step of the last "train" row (0 before the first)."""
        steps = [int(r.get("step", 0)) for r in self.rows("train")]
        return max(steps, default=0)


@dataclass(frozen=True)
class RunDir:
    """One (model, config, seed) run of a reproduce grid: ROOT/runs/MODEL/CONFIG/sSEED."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def stage(self, stage: str) -> StageDir:
        """pretrain / midtrain / rl; eval-X is scored into X/eval/."""
        return StageDir(
            self.path / stage.split("-", 1)[1] if stage.startswith("eval-") else self.path / stage
        )

    def is_done(self, stage: str) -> bool:
        sd = self.stage(stage)
        return sd.evaluated() if stage.startswith("eval-") else sd.finished()

    def next_stage(self, stages: tuple[str, ...] = STAGES) -> str | None:
        """The first of `stages` (in order) that is not done, or None."""
        return next((s for s in stages if not self.is_done(s)), None)

    @property
    def log(self) -> Path:
        return self.path / "log.txt"

    @property
    def timings(self) -> Path:
        return self.path / "timings.json"

    @property
    def lock(self) -> Path:
        return self.path / ".lock"


@dataclass(frozen=True)
class GridDir:
    """A `shapedce reproduce` output folder."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def grid_file(self) -> Path:
        return self.path / "grid.yaml"

    @property
    def lock(self) -> Path:
        return self.path / ".lock"

    @property
    def report(self) -> Path:
        return self.path / "report.md"

    @property
    def verdicts(self) -> Path:
        return self.path / "verdicts.json"

    @property
    def runs_csv(self) -> Path:
        return self.path / "runs.csv"

    def run_dir(self, model: str, config: str, seed: int) -> RunDir:
        return RunDir(self.path / "runs" / model / config / f"s{seed}")

    def seed_dirs(self, model: str, config: str) -> list[RunDir]:
        """The runs of (model, config) that exist, by seed."""
        cdir = self.path / "runs" / model / config
        found = (
            [p for p in cdir.glob("s[0-9]*") if p.is_dir() and p.name[1:].isdigit()] if cdir.is_dir() else []
        )
        return [RunDir(p) for p in sorted(found, key=lambda p: int(p.name[1:]))]


class FolderLock:
    """An exclusive lock on a lock file (`fcntl.flock`), held by this process until `release()`
    or its exit: the kernel drops it when the process dies, even by SIGKILL, so it never goes
    stale. The holder's pid is written into the file for the error message."""

    def __init__(self, path: str | Path, what: str):
        self.path, self.what, self._fd = Path(path), what, None

    def acquire(self, wait_s: float = 0.0, poll_s: float = 0.5) -> FolderLock:
        """Take the lock; wait up to `wait_s` seconds for another holder, then fail with one line."""
        import fcntl
        import time

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    os.close(fd)
                    raise UserError(
                        f"{self.what} is in use by another process (pid {holder}); "
                        "wait for it to finish or stop it first"
                    ) from None
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self if self._fd is not None else self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
