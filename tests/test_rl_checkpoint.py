"""RL checkpoints through the one checkpointer (shapedce.train.checkpoint) and the stage contract:
Ctrl-C saves and resumes bit-exactly, a garbled newest checkpoint is kept aside and the older one
resumed, stale temporary folders go, a second writer is refused, a diverging run stops with one
line and no final/, `--resume` refuses a shape-changing override. CPU, tiny models.

    python -m pytest tests/test_rl_checkpoint.py -q
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from shapedce.cli import main
from shapedce.rundir import FolderLock, StageDir, checkpoint_name
from shapedce.train.lm_trainer import NonFiniteError
from shapedce.train.rl import run_rl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_rl import PROMPTS, parity_reward, read_rows, toy_config  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from test_rl import model_dir as make

    return make.__wrapped__(tmp_path_factory)


@pytest.fixture(scope="module")
def straight(model_dir, tmp_path_factory) -> Path:
    """The uninterrupted run: 2 generation batches x 2 optimizer steps."""
    out = tmp_path_factory.mktemp("straight") / "run"
    run_rl(toy_config(save_steps=100), model_dir, out, reward=parity_reward, prompts=PROMPTS)
    return out


def interrupting(after_calls: int):
    """The toy reward, sending this process SIGINT on its `after_calls`-th call (mid-rollout)."""
    calls = [0]

    def reward(prompt, text: str) -> float:
        calls[0] += 1
        if calls[0] == after_calls:
            signal.raise_signal(signal.SIGINT)
        return parity_reward(prompt, text)

    return reward


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _same_train_rows(a: Path, b: Path) -> None:
    ra, rb = read_rows(a), read_rows(b)
    assert [r["step"] for r in rb] == [r["step"] for r in ra] == [1, 2, 3, 4]
    for x, y in zip(ra, rb):
        for key in ("loss", "grad_norm", "clip_frac", "reward", "entropy", "sampling_rounds"):
            assert x[key] == y[key], (key, x["step"])  # bit-exact on the same CPU


def test_sigint_saves_then_resume_equals_the_uninterrupted_run(model_dir, straight, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C during the first batch's rollouts
        run_rl(toy_config(save_steps=100), model_dir, out, reward=interrupting(3), prompts=PROMPTS)
    stage = StageDir(out)
    assert [p.name for p in stage.list_checkpoints()] == [checkpoint_name(2)] and not stage.finished()
    run_rl(toy_config(save_steps=100), model_dir, out, resume=True, reward=parity_reward, prompts=PROMPTS)
    _same_train_rows(straight, out)
    assert _same_weights(straight / "final", out / "final")


def test_garbled_newest_checkpoint_is_kept_aside_and_the_older_one_resumed(model_dir, straight, tmp_path):
    out = tmp_path / "run"
    run_rl(toy_config(save_steps=2), model_dir, out, reward=parity_reward, prompts=PROMPTS)
    stage = StageDir(out)
    assert [p.name for p in stage.list_checkpoints()] == [checkpoint_name(2), checkpoint_name(4)]
    import shutil

    shutil.rmtree(stage.final)  # as if killed after its last checkpoint, before final/
    newest = stage.checkpoint(4) / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:300])  # garbled
    (stage.checkpoints / ".tmp-step_0000006-999").mkdir()  # a killed writer's leftover
    (stage.path / ".tmp-final-999").mkdir()
    run_rl(toy_config(save_steps=2), model_dir, out, resume=True, reward=parity_reward, prompts=PROMPTS)
    names = sorted(p.name for p in stage.checkpoints.iterdir())
    assert names == [f"corrupt-{checkpoint_name(4)}", checkpoint_name(2), checkpoint_name(4)]
    assert not list(stage.path.glob(".tmp-*"))
    _same_train_rows(straight, out)
    assert _same_weights(straight / "final", out / "final")


def test_a_second_writer_is_refused_with_the_holders_pid(model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    holder = FolderLock(StageDir(out).lock, "test").acquire()
    try:
        for argv in (
            ["rl", "--from", str(model_dir), "--out", str(out), "--preset", "smoke"],
            ["pretrain", "--preset", "smoke", "--out", str(out)],
            ["eval", str(model_dir), "--out", str(out), "--samples", "1", "--problems", "1"],
        ):
            assert main(argv) == 2
            err = capsys.readouterr().err.strip()
            assert f"in use by another process (pid {os.getpid()})" in err and len(err.splitlines()) == 1
    finally:
        holder.release()
    assert not (out / "config.yaml").exists() and not (out / "metrics.jsonl").exists()


@pytest.mark.parametrize("setting", [{"lr": 1e30}, {"weight_decay": 1e30}])
def test_diverging_run_stops_with_one_line_and_no_final(model_dir, tmp_path, setting):
    out = tmp_path / "run"
    with pytest.raises(NonFiniteError) as err:
        run_rl(toy_config(**setting), model_dir, out, reward=parity_reward, prompts=PROMPTS)
    assert "non-finite" in str(err.value) and "\n" not in str(err.value)
    assert not StageDir(out).finished()


def test_non_finite_weight_decay_is_a_config_error(model_dir, tmp_path, capsys):
    argv = ["rl", "--from", str(model_dir), "--out", str(tmp_path / "r"), "--preset", "smoke"]
    assert main([*argv, "weight_decay=inf"]) == 2
    err = capsys.readouterr().err.strip()
    assert "weight_decay" in err and len(err.splitlines()) == 1


def test_resume_refuses_a_shape_changing_override(model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["rl", "--from", str(model_dir), "--out", str(out), "--preset", "smoke"]
    assert main([*argv, "steps=1", "save_steps=1"]) == 0
    before = (out / "config.yaml").read_text()
    capsys.readouterr()
    assert main([*argv, "--resume", "group_size=8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume cannot change group_size" in err[0]
    assert (out / "config.yaml").read_text() == before  # not rewritten to claim it
    assert main([*argv, "--resume", "steps=2"]) == 0  # a longer run is fine


def test_pretrain_resume_refuses_a_shape_changing_override(tmp_path, capsys):
    out = tmp_path / "pre"
    assert main(["pretrain", "--preset", "smoke", "--out", str(out), "train.steps=1"]) == 0
    before = (out / "config.yaml").read_text()
    capsys.readouterr()
    assert main(["pretrain", "--out", str(out), "--resume", "data.seq_len=64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume cannot change data.seq_len" in err[0]
    assert (out / "config.yaml").read_text() == before


@pytest.mark.slow
def test_ctrl_c_on_the_command_line_exits_130_and_resumes(model_dir, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "shapedce", "rl", "--from", str(model_dir), "--out", str(out)]
    proc = subprocess.Popen(
        [*cmd, "--preset", "smoke", "steps=200", "save_steps=1000"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not (out / "metrics.jsonl").is_file() or not read_rows(out):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    ckpts = StageDir(out).list_checkpoints()
    assert len(ckpts) == 1 and "interrupted: checkpoint saved" in stdout
    step = torch.load(ckpts[0] / "trainer_state.pt", weights_only=True)["step"]
    resumed = subprocess.run([*cmd, "--resume", f"steps={step + 1}"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [r["step"] for r in read_rows(out)] == list(range(1, step + 2))
    assert json.loads((out / "final" / "config.json").read_text())["model_type"]


def test_only_the_checkpointer_writes_training_state():
    """Calls of `torch.save` / `.save_pretrained` appear only in shapedce/train/checkpoint/ (and in the
    vLLM sampler's export of a model to a throw-away folder, which is no training state)."""
    import ast

    src = Path(__file__).resolve().parent.parent / "src" / "shapedce"
    allowed = {src / "eval" / "sample.py"}
    found, seen = [], 0
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                f = node.func
                if f.attr == "save_pretrained" or (
                    f.attr == "save" and isinstance(f.value, ast.Name) and f.value.id == "torch"
                ):
                    seen += 1
                    if src / "train" / "checkpoint" not in path.parents and path not in allowed:
                        found.append(f"{path.relative_to(src)}:{node.lineno}")
    assert seen >= 5 and not found, found  # seen: the checkpointer's own calls are found
