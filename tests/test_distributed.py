"""Data-parallel pre-training on CPU (gloo): two processes launched by torch.distributed.run give the
one-process loss curve, survive a killed rank, and their sharded checkpoints resume at another
world size. Bad launches fail with one line.

    python -m pytest tests/test_distributed.py -q

One-process baselines run in this process with one thread, the same as each torchrun worker
(OMP_NUM_THREADS=1), so that thread-count differences in float32 sums do not enter the comparison.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from shapedce.cli import main
from shapedce.train.checkpoint.sharded import is_sharded_checkpoint
from shapedce.train.dist import RENDEZVOUS, Dist, detect
from shapedce.train.metrics import read_metrics

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="uses /proc to find a worker to kill"
)

SMOKE = ("pretrain", "--preset", "smoke")
MOE = "model.flavor=tiny-moe"
ACCUM = "train.micro_batch=2"  # 4 micro-batches per step: 2 per rank, so grad sync is skipped on the first


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in RENDEZVOUS and not k.startswith("TORCHELASTIC")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _torchrun(nproc: int, *args: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "-m",
        "shapedce",
        *map(str, args),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())


def _torchrun_ok(nproc: int, *args: str) -> None:
    proc = _torchrun(nproc, *args)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err.decode()[-2000:]


def _one_process(*args: str) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([str(a) for a in args]) == 0
    finally:
        torch.set_num_threads(threads)


def _assert_same_curve(run: Path, reference: Path, rel: float = 1e-4) -> None:
    """Same rows (split, step) in the same order, every logged number within float32 tolerance."""
    got, want = read_metrics(run / "metrics.jsonl"), read_metrics(reference / "metrics.jsonl")
    assert [(r["split"], r["step"]) for r in got] == [(r["split"], r["step"]) for r in want]
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        for key, value in w.items():
            if isinstance(value, float) and key != "tokens_per_s":
                assert math.isclose(g[key], value, rel_tol=rel, abs_tol=1e-7), (
                    g["split"],
                    g["step"],
                    key,
                    g[key],
                    value,
                )


def _assert_same_weights(a: Path, b: Path, atol: float = 1e-5) -> None:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < atol


def _resume_copy(run: Path, dest: Path, step: int) -> Path:
    """A copy of `run` as if it had died right after its step-`step` checkpoint."""
    shutil.copytree(run, dest)
    shutil.rmtree(dest / "final")
    for ckpt in (dest / "checkpoints").iterdir():
        if int(ckpt.name.split("_")[1]) > step:
            shutil.rmtree(ckpt)
    return dest


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dist")
    one, two = root / "one", root / "two"
    _one_process(*SMOKE, "--out", one, ACCUM)
    _torchrun_ok(2, *SMOKE, "--out", two, ACCUM)  # train.parallel=auto: ddp on CPU
    return {"one": one, "two": two, "root": root}


def test_two_processes_give_the_one_process_curve_and_final_model(runs):
    one, two = runs["one"], runs["two"]
    _assert_same_curve(two, one)  # float32 all-reduce order: grad_norm agrees to ~1e-5 relative
    assert len([r for r in read_metrics(two / "metrics.jsonl") if r["split"] == "train"]) == 6
    _assert_same_weights(two / "final", one / "final")  # final/ is a plain save_pretrained directory
    ckpts = sorted((two / "checkpoints").iterdir())
    assert [c.name for c in ckpts] == ["step_0000003", "step_0000006"] and all(
        map(is_sharded_checkpoint, ckpts)
    )
    assert sorted(p.name for p in (ckpts[0] / "dcp").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]


def test_two_rank_checkpoint_resumes_on_one_process(runs):
    resumed = _resume_copy(runs["two"], runs["root"] / "two-on-one", step=3)
    _one_process("pretrain", "--out", resumed, "--resume")
    _assert_same_curve(resumed, runs["one"])
    _assert_same_weights(resumed / "final", runs["one"] / "final")


def test_one_process_checkpoint_resumes_on_two_fsdp_ranks(runs):
    resumed = _resume_copy(runs["one"], runs["root"] / "one-on-two", step=3)
    _torchrun_ok(2, "pretrain", "--out", resumed, "--resume", "train.parallel=fsdp")
    _assert_same_curve(resumed, runs["one"])
    _assert_same_weights(resumed / "final", runs["one"] / "final")


def _worker_pid(out: Path, rank: int) -> int | None:
    """The pid of the torchrun worker of `rank` training into `out` (its command line names `out`)."""
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or str(out).encode() not in (proc / "cmdline").read_bytes():
                continue
            if f"RANK={rank}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                return int(proc.name)
        except OSError:  # the process ended while we looked
            continue
    return None


def test_killed_rank_then_resume_gives_the_same_moe_fsdp_curve(tmp_path):
    reference, killed = tmp_path / "one", tmp_path / "killed"
    _one_process(*SMOKE, "--out", reference, MOE, ACCUM)
    proc = _torchrun(2, *SMOKE, "--out", killed, MOE, ACCUM, "train.parallel=fsdp", "train.steps=500")
    deadline = time.time() + 180
    while not (killed / "checkpoints" / "step_0000003").is_dir():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "timed out waiting for the first checkpoint"
        time.sleep(0.02)
    pid = _worker_pid(killed, rank=1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=120)
    assert proc.returncode != 0 and not (killed / "final").exists()
    _torchrun_ok(2, "pretrain", "--out", killed, "--resume", "train.steps=6")  # decay_fraction=0: same lr
    _assert_same_curve(killed, reference)


# ------------------------------------------------------------------------------------ bad input
TORCHRUN_ENV = {
    "RANK": "0",
    "WORLD_SIZE": "2",
    "LOCAL_RANK": "0",
    "MASTER_ADDR": "127.0.0.1",
    "MASTER_PORT": "29999",
}


def _cli_error(monkeypatch, capsys, env: dict[str, str], *args: str) -> str:
    for key in RENDEZVOUS:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    return err


def test_world_size_that_does_not_divide_the_global_batch(monkeypatch, capsys, tmp_path):
    err = _cli_error(
        monkeypatch, capsys, {**TORCHRUN_ENV, "WORLD_SIZE": "3"}, *SMOKE, "--out", tmp_path / "r"
    )
    assert "world size 3" in err and "train.global_batch_tokens" in err and "256 / (4 * 32) = 2" in err
    assert not (tmp_path / "r").exists()


def test_missing_rendezvous_variable(monkeypatch, capsys, tmp_path):
    env = {k: v for k, v in TORCHRUN_ENV.items() if k != "MASTER_ADDR"}
    err = _cli_error(monkeypatch, capsys, env, *SMOKE, "--out", tmp_path / "r")
    assert "MASTER_ADDR is missing" in err and "torchrun" in err


def test_detect_reads_torchrun_variables():
    assert detect({}) == Dist()
    assert detect({**TORCHRUN_ENV, "RANK": "1"}) == Dist(rank=1, world=2, local_rank=0)
    assert not detect({**TORCHRUN_ENV, "WORLD_SIZE": "1"}).on  # torchrun --nproc-per-node 1: one process
    with pytest.raises(ValueError, match=r"RANK must be an integer in \[0, 1\]; got '2'"):
        detect({**TORCHRUN_ENV, "RANK": "2"})
    with pytest.raises(ValueError, match="MASTER_PORT must be an integer"):
        detect({**TORCHRUN_ENV, "MASTER_PORT": "x"})


def test_parallel_must_be_known(capsys, tmp_path):
    assert main([*SMOKE, "--out", str(tmp_path / "r"), "train.parallel=zero3"]) == 2
    assert "train.parallel must be one of auto, ddp, fsdp; got 'zero3'" in capsys.readouterr().err
