"""`shapedce reproduce`: run the grid's runs in parallel worker processes, then write the report.

    shapedce reproduce                                   # tiny preset: 5 configurations, dense, 1 seed
    shapedce reproduce --preset small --seeds 3 --models small,small-moe --out runs/grid-small
    shapedce reproduce --preset paper --dry-run          # print the plan, validate every config

Each run (model, config, seed) goes through its stages in one worker process
(`shapedce.reproduce.stages`), its output in RUN/log.txt; up to `jobs` workers at a time, each
with cores // jobs torch threads, the first cores % jobs of them one more (tiny models scale
poorly over threads, so two single-thread runs finish far sooner than two runs one after the
other on two threads). Progress is read back
from the runs' own files: one overall bar over all stages with its ETA, and one bar per worker
for the stage it is in (bars only on a terminal: tqdm's disable=None). Finished stages are skipped
on a rerun; Ctrl-C stops the workers (each saves a checkpoint) and a rerun continues from there.
One scheduler at a time per folder: ROOT/.lock is held while it runs (a second `reproduce` on the
same folder stops with one line). Workers watch their parent: if the scheduler dies, even by
SIGKILL, each worker saves a checkpoint and exits, and each holds its run's RUN/.lock until it has,
so a rerun's worker waits for it instead of writing beside it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from ..errors import UserError
from ..rundir import FolderLock, GridDir, prepare_out
from .grid import GridConfig, Run, check_grid
from .grid_file import load_grid_file

GROWABLE = {
    "configs",
    "models",
    "seeds",
    "pretrain_seeds",
    "pretrain_configs",
    "pretrain_models",
    "first_look_seeds",
    "jobs",
}
"""Grid fields a rerun in the same directory may change: the grid grows, finished runs stay valid
(first_look_seeds only from 0: `_check_same_grid` keeps a recorded one)."""


def resolve_jobs(requested: int, runs: int, cores: int | None = None) -> int:
    """Runs trained at once: `requested`, else 1 on GPU; on CPU every run at once while they are at
    most 4 per core (5 runs on 2 cores as 2 + 2 + 1 would leave a core idle for the last fifth of the
    time; all 5 time-share the cores and finish in about 5/2 of a run), else one per core."""
    if requested > 0:
        return requested
    if torch.cuda.is_available():
        return 1
    cores = max(1, cores or os.cpu_count() or 1)
    return max(1, runs if runs <= 4 * cores else cores)


def worker_threads(slot: int, jobs: int, cores: int) -> int:
    """Torch threads of the worker in `slot` (0 <= slot < jobs) on `cores` CPU cores: cores // jobs,
    and one more for the first cores % jobs slots, so no core is left without a worker (50 runs on
    64 cores: 14 workers get 2 threads instead of 14 idle cores; docs/guides/performance.md)."""
    return max(1, cores // jobs + (slot < cores % jobs))


def _check_same_grid(grid: GridConfig, root: Path) -> None:
    """Refuse a grid ROOT's finished runs do not fit; carry over ROOT's recorded first_look_seeds."""
    path = GridDir(root).grid_file
    if not path.is_file():
        return
    old = load_grid_file(path).to_dict()
    look = old.get("first_look_seeds") or 0
    if look and grid.first_look_seeds in (0, look):
        grid.first_look_seeds = look  # a design record: a rerun that does not name it keeps it
    elif look:
        raise UserError(
            f"{root} was first read at first_look_seeds={look}; that record cannot change "
            f"(not {grid.first_look_seeds}): leave it out or rerun with the same value"
        )
    old, new = _flat(old), _flat(grid.to_dict())
    for key in dict.fromkeys([*new, *old]):
        if key not in GROWABLE and old.get(key) != new.get(key):
            raise UserError(
                f"{root} holds a grid with {key}={old.get(key)!r}, not {new.get(key)!r}; "
                f"rerun with the same settings or choose another --out"
            )


def _flat(data: dict, prefix: str = "") -> dict:
    """{"rl": {"steps": 5}} -> {"rl.steps": 5}: the dotted key of every setting."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _stage_progress(run: Run, stage: str) -> tuple[int, int | None]:
    """(steps done, total steps or None) of a training stage, read from its files."""
    if stage.startswith("eval-"):
        return 0, None
    files = run.files.stage(stage)
    try:
        cfg = yaml.safe_load(files.config.read_text())
        total = cfg["train"]["steps"] if stage != "rl" else cfg["steps"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return 0, None
    return files.last_train_step(), total


def _error_line(log: Path) -> str:
    lines = (
        [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        if log.is_file()
        else []
    )
    errors = [ln for ln in lines if ln.startswith("error: ")]
    return (errors[-1][len("error: ") :] if errors else (lines[-1] if lines else "no output")).split("\r")[-1]


class Worker:
    """One run's worker process and its progress bar."""

    def __init__(self, run: Run, root: Path, threads: int, slot: int, show: bool):
        self.run, self.slot = run, slot
        run.dir.mkdir(parents=True, exist_ok=True)
        self.log = run.dir / "log.txt"
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(threads),
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
            "SHAPEDCE_PARENT_PID": str(os.getpid()),
        }  # the worker stops (with a checkpoint) if we die
        cmd = [
            sys.executable,
            "-m",
            "shapedce.reproduce.stages",
            str(root),
            run.name,
            "--threads",
            str(threads),
        ]
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.bar = tqdm(
            total=1,
            position=slot + 1,
            desc=run.name,
            leave=False,
            dynamic_ncols=True,
            disable=None if show else True,
        )

    def refresh(self) -> None:
        stage = self.run.next_stage()
        if stage is None:
            return
        done, total = _stage_progress(self.run, stage)
        self.bar.set_description(f"{self.run.name} {stage}", refresh=False)
        self.bar.total = total
        self.bar.n = done
        self.bar.refresh()


def _stages_done(runs: list[Run]) -> int:
    return sum(run.is_done(s) for run in runs for s in run.stages)


def reproduce(grid: GridConfig, root: Path, *, progress: bool = True, poll_s: float = 1.0) -> list[Run]:
    """Train and evaluate every unfinished run of the grid into ROOT/runs/; returns the plan."""
    root = Path(root)
    runs = check_grid(grid, root)
    _check_same_grid(grid, root)
    layout = GridDir(prepare_out(root))
    lock = FolderLock(layout.lock, f"{root} (a `shapedce reproduce` is running there)").acquire()
    try:
        grid.save(layout.grid_file)
        return _schedule(runs, grid, root, progress, poll_s)
    finally:
        lock.release()


def _schedule(runs: list[Run], grid: GridConfig, root: Path, progress: bool, poll_s: float) -> list[Run]:
    queue = [run for run in runs if run.next_stage() is not None]
    jobs = resolve_jobs(grid.jobs, len(queue))
    cores = 0 if torch.cuda.is_available() else os.cpu_count() or 1
    overall = tqdm(
        total=sum(len(run.stages) for run in runs),
        initial=_stages_done(runs),
        desc="reproduce",
        unit="stage",
        position=0,
        dynamic_ncols=True,
        disable=None if progress else True,
    )
    active: list[Worker] = []
    try:
        while queue or active:
            while queue and len(active) < jobs:
                free = min(set(range(jobs)) - {w.slot for w in active})
                threads = worker_threads(free, jobs, cores) if cores else 0
                active.append(Worker(queue.pop(0), root, threads, free, progress))
            time.sleep(poll_s)
            for worker in list(active):
                worker.refresh()
                rc = worker.proc.poll()
                if rc is None:
                    continue
                worker.bar.close()
                active.remove(worker)
                if rc != 0:
                    stage = worker.run.next_stage()
                    raise UserError(
                        f"run {worker.run.name} failed in stage {stage}: {_error_line(worker.log)} "
                        f"(log: {worker.log})"
                    )
            overall.n = _stages_done(runs)
            overall.refresh()
    except BaseException:
        for worker in active:  # let each save a checkpoint, as Ctrl-C does
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGINT)
        for worker in active:
            try:
                worker.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
            worker.bar.close()
        raise
    finally:
        overall.close()
    return runs
