"""One run of the grid through its stages, in the current process: the worker of `shapedce reproduce`.

    python -m shapedce.reproduce.stages ROOT tiny/precision/s0 --threads 1   # what the scheduler runs

Reads ROOT/grid.yaml, then runs every unfinished stage of the run in order (pretrain, eval,
midtrain, eval, RL, eval). A stage interrupted mid-way resumes from its last checkpoint when it
has one and restarts otherwise. Each stage's wall time goes to RUN/timings.json. User errors
print one line ("error: ...") and exit 2; other errors print their traceback to RUN/log.txt; the
scheduler shows the last line. With SHAPEDCE_PARENT_PID set (the scheduler sets it), the worker
checkpoints and stops when that process dies; RUN/.lock is held while it runs. SIGINT always means
"checkpoint and stop", even when the worker was started with SIGINT ignored (a job a
non-interactive shell put in the background).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from ..errors import UserError
from ..rundir import STAGES, FolderLock, GridDir, StageDir
from .grid import GridConfig, Run, eval_settings, plan, pretrain_config, rl_config
from .grid_file import load_grid_file


def _resume_or_restart(stage_dir: Path) -> bool:
    """True when the stage has a checkpoint (checkpoints/step_N) to resume from; a stage that
    started but saved none is removed, to restart from scratch."""
    if StageDir(stage_dir).has_checkpoint():
        return True
    if stage_dir.exists():
        shutil.rmtree(stage_dir)
    return False


def obey_interrupts() -> None:
    """Make SIGINT raise KeyboardInterrupt again when this process started with it ignored (what a
    non-interactive shell does to a background job, and its children inherit): interrupting a stage
    is how the scheduler asks for a checkpoint, so an ignored SIGINT would let it run on."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def watch_parent(parent_pid: int, poll_s: float = 1.0, grace_s: float = 300.0) -> threading.Thread:
    """A daemon thread that, once `parent_pid` is no longer our parent (the scheduler died, even by
    SIGKILL), sends us SIGINT, so the running stage saves a checkpoint and exits; after `grace_s`
    it ends the process outright."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        print("error: the reproduce scheduler is gone; saving a checkpoint and stopping", file=sys.stderr)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # wakes a sleeping main thread
        time.sleep(grace_s)
        os._exit(130)

    thread = threading.Thread(target=watch, name="watch-parent", daemon=True)
    thread.start()
    return thread


def run_stage(grid: GridConfig, run: Run, stage: str) -> None:
    from ..eval.run import evaluate
    from ..train.lm import run_midtrain, train_lm
    from ..train.rl import run_rl

    out = run.stage_dir(stage)
    if stage.startswith("eval-"):
        evaluate(run.stage_dir(stage.split("-", 1)[1]), eval_settings(grid), out)
    elif stage == "pretrain":
        train_lm(pretrain_config(grid, run), out, resume=_resume_or_restart(out))
    elif stage == "midtrain":
        run_midtrain(run.stage_dir("pretrain"), out, resume=_resume_or_restart(out))
    elif stage == "rl":
        run_rl(
            rl_config(grid, run),
            run.stage_dir("midtrain"),
            out,
            resume=_resume_or_restart(out),
        )
    else:
        raise UserError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")


def run_all(grid: GridConfig, run: Run) -> None:
    """Every unfinished stage of `run`, in order; wall times to RUN/timings.json."""
    timings_path = run.files.timings
    run.dir.mkdir(parents=True, exist_ok=True)
    while (stage := run.next_stage()) is not None:
        t0 = time.perf_counter()
        run_stage(grid, run, stage)
        timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0
        timings_path.write_text(json.dumps(timings, indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shapedce.reproduce.stages")
    parser.add_argument("root", help="the reproduce output directory (holds grid.yaml)")
    parser.add_argument("run", help="MODEL/CONFIG/sSEED")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument(
        "--lock-wait",
        type=float,
        default=600.0,
        help="seconds to wait for another worker of the same run to stop (default 600)",
    )
    args = parser.parse_args(argv)
    obey_interrupts()
    import torch

    threads = torch.get_num_threads()  # restored below: main() also runs in-process (tests)
    try:
        if args.threads > 0:
            torch.set_num_threads(args.threads)
        root = Path(args.root)
        grid = load_grid_file(GridDir(root).grid_file)
        runs = {r.name: r for r in plan(grid, root)}
        if args.run not in runs:
            raise UserError(f"run {args.run!r} is not in the grid of {root}; runs: {', '.join(runs)}")
        run = runs[args.run]
        parent = os.environ.get("SHAPEDCE_PARENT_PID")
        if parent and parent.isdigit():
            watch_parent(int(parent))
        # an orphan of a killed scheduler may still be saving its checkpoint here: wait for it
        with FolderLock(run.files.lock, f"run {run.name}").acquire(wait_s=args.lock_wait):
            run_all(grid, run)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        torch.set_num_threads(threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
