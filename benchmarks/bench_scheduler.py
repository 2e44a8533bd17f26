"""Core idle time of `shapedce reproduce`: how much of cores x wall time its workers leave unused.

Runs a reproduce grid (default: the smoke preset, 5 configurations x 1 seed) into a temporary
folder and compares the workers' CPU time (getrusage of the children) with cores x wall time.
Two measures: "idle" = 1 - workers' core-seconds / (cores x wall), which on a shared machine also
counts the cores other processes took (the load average before and after is printed beside it), and
"slots idle" = the time integral of max(0, cores - live workers) over cores x wall: what the
scheduler's own packing leaves unused (workers' start and exit times, sampled every 20 ms).

Run from the repository root (about a minute or two on 2 cores):
    PYTHONPATH=src python benchmarks/bench_scheduler.py
    PYTHONPATH=src python benchmarks/bench_scheduler.py --preset smoke seeds=2
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import threading
import time
from pathlib import Path

from shapedce.reproduce import scheduler
from shapedce.reproduce.grid import load_grid
from shapedce.reproduce.scheduler import _schedule, check_grid, resolve_jobs
from shapedce.rundir import GridDir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="smoke")
    ap.add_argument("--poll", type=float, default=1.0, help="scheduler poll interval in seconds")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    grid = load_grid(args.preset, args.overrides)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        runs = check_grid(grid, root)
        grid.save(GridDir(root).grid_file)
        load0 = os.getloadavg()[0]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        procs: list = []
        inner = scheduler.Worker.__init__

        def init(self, *a, **kw):
            inner(self, *a, **kw)
            procs.append(self.proc)

        scheduler.Worker.__init__ = init
        slots, done = [0.0], threading.Event()

        def watch():  # integrate the free worker slots: cores - live workers
            last = time.perf_counter()
            while not done.is_set():
                time.sleep(0.02)
                now = time.perf_counter()
                slots[0] += max(0, cores - sum(p.poll() is None for p in list(procs))) * (now - last)
                last = now

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            _schedule(runs, grid, root, False, args.poll)
        finally:
            done.set()
            watcher.join()
            scheduler.Worker.__init__ = inner
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        load1 = os.getloadavg()[0]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    jobs = resolve_jobs(grid.jobs, len(runs), cores)
    print(
        f"| preset | runs | jobs | cores | poll s | wall s | workers' core-s | idle | slots idle | load |\n"
        f"|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
        f"| {args.preset} {' '.join(args.overrides)} | {len(runs)} | {jobs} | {cores} | {args.poll} | "
        f"{wall:.1f} | {cpu:.1f} | {1 - cpu / (cores * wall):.0%} | {slots[0] / (cores * wall):.1%} | "
        f"{load0:.2f} / {load1:.2f} |"
    )


if __name__ == "__main__":
    main()
