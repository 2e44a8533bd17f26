"""The grid's workers and their scheduler: one scheduler per folder; workers stop (and checkpoint) with it.

python -m pytest -q tests/test_grid_workers.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shapedce.cli import main
from shapedce.rundir import FolderLock


def test_a_second_reproduce_on_the_same_folder_is_refused(tmp_path, capsys):
    root = tmp_path / "grid"
    root.mkdir()
    holder = FolderLock(root / ".lock", "test").acquire()
    try:
        argv = ["reproduce", "--preset", "smoke", "--out", str(root), "--configs", "ce"]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "is in use by another" in err, err
        assert "Traceback" not in err
    finally:
        holder.release()


def _alive(pid: int) -> bool:
    """Running (a zombie that nobody reaped yet has exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_workers_stop_when_the_scheduler_is_killed(tmp_path):
    """A parent (standing in for the scheduler) starts a worker that watches it, then is SIGKILLed:
    the worker gets SIGINT (its stage would save a checkpoint) and exits."""
    flag, ready = tmp_path / "got-sigint", tmp_path / "ready"
    worker = (
        "import os, signal, sys, time\n"
        "from shapedce.reproduce.stages import watch_parent\n"
        f"signal.signal(signal.SIGINT, lambda *a: (open({str(flag)!r}, 'w').close(), sys.exit(130)))\n"
        "watch_parent(int(os.environ['SHAPEDCE_PARENT_PID']), poll_s=0.1)\n"
        f"open({str(ready)!r}, 'w').close()\n"
        "time.sleep(120)\n"
    )
    parent = (
        "import os, subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-c', {worker!r}], env={{**os.environ, "
        "'SHAPEDCE_PARENT_PID': str(os.getpid())})\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    deadline = time.time() + 180
    while not ready.exists():  # the worker is up and watching (importing torch takes a while)
        assert time.time() < deadline, "the worker never started"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 60
    while time.time() < deadline:
        if not _alive(child):
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the worker outlived its parent")
    assert flag.exists()


def test_a_worker_started_with_sigint_ignored_still_checkpoints_on_it(sigint_ignored, tmp_path):
    """The scheduler stops a worker with SIGINT; a worker that inherited an ignored SIGINT would run
    its stage on to the end (found when a study started with `nohup ... &` would not stop)."""
    from shapedce.reproduce.stages import main as worker

    assert worker([str(tmp_path), "tiny/ce/s0", "--threads", "1"]) == 2  # no grid here: one-line error
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
