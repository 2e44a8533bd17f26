"""shapedce.tasks.sandbox: hostile programs score 0, stay within their limits and leave nothing behind.

    python -m pytest tests/test_sandbox.py -q      # CPU, ~30 s (two programs wait out a short wall limit)

Run as root (the container) the uid / network / tmpfs guards are checked too; as another user
those cases are skipped with the reason, and the Python-level guards are still tested.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import pytest

from shapedce.tasks.sandbox import Limits, guards, run_many, run_python

ROOT = os.geteuid() == 0
SHORT = Limits(wall_s=3.0, cpu_s=3, memory_mb=512)


@pytest.fixture
def marker(tmp_path_factory):
    """A path outside the sandbox that no program may create; removed afterwards if one did."""
    path = Path("/tmp") / f"shapedce-sbx-test-{uuid.uuid4().hex}"
    yield path
    existed = path.exists()
    path.unlink(missing_ok=True)
    assert not existed, f"{path} was written by a sandboxed program"


def leftovers() -> set[str]:
    """Sandbox directories in /tmp (other processes may have theirs: compare before and after)."""
    return {
        p.name for p in Path("/tmp").glob("shapedce-sbx-*") if not p.name.startswith("shapedce-sbx-test-")
    }


def test_a_good_program_passes_and_a_failing_one_does_not():
    before = leftovers()
    assert run_python("assert sum(range(4)) == 6\nprint('hi')").passed
    result = run_python("assert 1 == 2")
    assert not result.passed and result.status == "failed" and "AssertionError" in result.output
    assert not run_python("import os\nos._exit(0)").passed  # exit 0 before the end is no pass
    assert not run_python("raise SystemExit(0)").passed
    assert leftovers() <= before


def test_infinite_loop_is_killed_at_the_wall_limit():
    start = time.monotonic()
    result = run_python("while True:\n    pass", SHORT)
    assert not result.passed and result.status in ("timeout", "killed")
    assert time.monotonic() - start < SHORT.wall_s + 5


def test_fork_that_sleeps_then_writes_is_stopped(marker):
    code = (
        f"import os, time\nif os.fork() == 0:\n    time.sleep(1)\n"
        f"    open({str(marker)!r}, 'w').write('x')\n    os._exit(0)\n"
    )
    assert not run_python(code, SHORT).passed
    time.sleep(1.5)
    assert not marker.exists()


@pytest.mark.skipif(not ROOT, reason="the sweep by uid needs root (the per-sample uid)")
def test_processes_that_left_the_group_are_swept_by_uid():
    import subprocess

    from shapedce.tasks.sandbox import _kill_uid

    uid = 1_599_999_999
    escaped = subprocess.Popen(["sleep", "60"], user=uid, group=uid, extra_groups=[], start_new_session=True)
    try:
        _kill_uid(uid)
        assert escaped.wait(timeout=5) == -9
    finally:
        escaped.kill()


def test_writing_outside_its_directory_is_refused(marker):
    for code in (
        f"open({str(marker)!r}, 'w').write('x')",
        f"import os\nos.close(os.open({str(marker)!r}, os.O_CREAT | os.O_WRONLY))",
        f"import os\nos.mkdir({str(marker)!r})",
        "open('inside.txt', 'w').write('ok')\nopen('../escape.txt', 'w').write('x')",
    ):
        result = run_python(code, SHORT)
        assert not result.passed and "sandbox" in result.output, result.output
    assert not (Path("/tmp") / "escape.txt").exists()
    assert run_python("open('mine.txt', 'w').write('ok')\nassert open('mine.txt').read() == 'ok'").passed


def test_allocating_8_gb_fails_within_the_memory_limit():
    result = run_python("x = bytearray(8 * 1024 ** 3)\nprint(len(x))", SHORT)
    assert not result.passed and "MemoryError" in result.output


def test_killing_the_parent_fails_and_we_survive():
    for code in ("import os\nos.kill(os.getppid(), 9)", f"import os\nos.kill({os.getpid()}, 15)"):
        result = run_python(code, SHORT)
        assert not result.passed and "PermissionError" in result.output
    assert os.getppid() > 0  # this process is alive to run the line


def test_environment_secrets_do_not_reach_the_program(monkeypatch):
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    monkeypatch.setenv("SHAPEDCE_TEST_SECRET", secret)
    code = (
        f"import os\nprint(dict(os.environ))\n"
        f"for pid in (os.getppid(), {os.getpid()}):\n"
        "    try:\n        print(open(f'/proc/{pid}/environ').read())\n"
        "    except OSError as e:\n        print('refused', e)\n"
        "assert False, 'a hostile program is not a solution'"
    )
    result = run_python(code, SHORT)
    assert not result.passed
    assert secret not in result.output and "SHAPEDCE_TEST_SECRET" not in result.output
    assert "refused" in result.output if ROOT else True


def test_network_and_subprocess_are_refused():
    for code in (
        "import subprocess\nsubprocess.run(['true'])",
        "import os\nos.system('true')",
        "import ctypes\nctypes.CDLL(None)",
    ):
        result = run_python(code, SHORT)
        assert not result.passed, code


@pytest.mark.skipif(not ROOT, reason="the uid, network-namespace and tmpfs guards need root")
def test_os_guards_hold_as_root():
    assert guards() == dict.fromkeys(
        ["rlimits", "process_group", "env_scrub", "audit_hook", "uid", "netns", "tmpfs"], True
    )


def test_many_in_parallel_and_from_threads():
    results = run_many(["assert True", "assert False", "while True: pass", "print(1)"], SHORT, workers=4)
    assert [r.passed for r in results] == [True, False, False, True]
    out: list[bool] = []
    thread = threading.Thread(target=lambda: out.append(run_python("x = 1").passed))
    thread.start()
    thread.join()
    assert out == [True]
