"""Data-parallel RL on CPU (gloo): two processes launched by torch.distributed.run against one
process with the same seeds: the same groups kept, the same losses, clip fractions and final
weights, under DDP and FSDP2, also across a 2-process (sharded) checkpoint and resume, Ctrl-C on
one rank, and resuming at another world size; a filter outcome where every kept group
comes from rank 0 (refills, no hang); the round cap printing one line under torchrun.

    python -m pytest tests/test_rl_dist.py -q
    python tests/test_rl_dist.py run OUT MODEL_DIR        # the worker (one process, or under torchrun)
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
RENDEZVOUS = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "GROUP_RANK",
)


def _worker(mode: str, out: Path, model_dir: Path) -> None:
    from shapedce.train import dist as dist_
    from shapedce.train.rl import run_rl
    from shapedce.train.rl_rollout import PromptStream, collect_batch
    from test_rl import PROMPTS, load, parity_reward, toy_config

    precision, mode = ("bf16", mode[5:]) if mode.startswith("bf16-") else ("auto", mode)
    parallel, mode = ("fsdp", mode[5:]) if mode.startswith("fsdp-") else ("ddp", mode)
    cfg = toy_config(
        steps=2 if mode == "half" else 4,
        mini_batches=2,
        micro_batch=2,
        parallel=parallel,
        precision=precision,
    )
    if precision == "bf16":
        _probe_precision(out)
    if mode in ("run", "half", "resume"):  # "half" stops after the first batch; "resume" continues it
        run_rl(cfg, model_dir, out, resume=mode == "resume", reward=parity_reward, prompts=PROMPTS)
        return
    if mode == "sigint":  # Ctrl-C on rank 0 during the first batch's rollouts: every rank saves and stops
        rank0 = os.environ.get("RANK", "0") == "0"
        calls = [0]

        def reward(prompt, text):
            calls[0] += 1
            if rank0 and calls[0] == 2:
                signal.raise_signal(signal.SIGINT)
            return parity_reward(prompt, text)

        try:
            run_rl(cfg, model_dir, out, reward=reward, prompts=PROMPTS)
        except KeyboardInterrupt:
            (out / f"interrupted-{os.environ.get('RANK', '0')}").write_text("")
            return
        raise SystemExit("not interrupted")
    # "collect": informative only for prompts at stream positions 0, 4, 8, ...: sampled by rank 0 alone
    d = dist_.detect()
    dist_.init(d, torch.device("cpu"))
    perm = PromptStream(len(PROMPTS), cfg.seed)._perm
    chosen = {PROMPTS[i].uid for k, i in enumerate(perm) if k % 4 == 0}

    def reward(prompt, text):
        return float(len(text) % 2) if prompt.uid in chosen else 0.0

    model, tok = load(model_dir)
    batch = collect_batch(model, tok, PROMPTS, reward, PromptStream(len(PROMPTS), cfg.seed), cfg, d)
    groups = [[g.index, g.draw, g.owner, g.rewards, g.completion_ids] for g in batch.groups]
    same = dist_.gather_objects(d, groups)
    if d.main:
        (out / "collect.json").write_text(
            json.dumps(
                {"groups": groups, "stats": batch.stats, "ranks_agree": all(x == same[0] for x in same)}
            )
        )
    dist_.teardown(d)


def _probe_precision(out: Path) -> None:
    """Record, at each rollout refresh, the rollout copy's dtypes, the trainer's autocast and the
    policy's parameter kinds (RUN/probe-RANK.json)."""
    from shapedce.train.rl_trainer import RLTrainer

    refresh = RLTrainer.refresh_rollout

    def probe(self):
        refresh(self)
        seen = {
            "rollout": sorted({str(p.dtype) for p in self.sampler.parameters()}),
            "rollout_buffers": sorted({str(b.dtype) for b in self.sampler.buffers()}),
            "autocast": str(self.autocast),
            "policy": sorted({(type(p).__name__, str(p.dtype)) for p in self.module.parameters()}),
        }
        (out / f"probe-{os.environ.get('RANK', '0')}.json").write_text(json.dumps(seen))

    RLTrainer.refresh_rollout = probe


def _launch(nproc: int, mode: str, out: Path, model_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in RENDEZVOUS and not k.startswith("TORCHELASTIC")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    script = [str(Path(__file__).resolve()), mode, str(out), str(model_dir)]
    cmd = (
        [sys.executable, *script]
        if nproc == 1
        else [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(nproc),
            *script,
        ]
    )
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from test_rl import model_dir as make

    return make.__wrapped__(tmp_path_factory)


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def one_process(model_dir, tmp_path_factory) -> Path:
    one = tmp_path_factory.mktemp("one")
    _launch(1, "run", one, model_dir)  # the worker writes OUT/run
    return one


def test_two_processes_give_the_one_process_run(model_dir, one_process, tmp_path):
    _launch(2, "run", tmp_path, model_dir)
    _assert_same_run(one_process, tmp_path)


def test_two_processes_resume_into_the_one_process_run(model_dir, one_process, tmp_path):
    _launch(2, "half", tmp_path, model_dir)
    assert (tmp_path / "run" / "checkpoints" / "step_0000002" / "dcp" / "metadata.json").is_file()
    _launch(2, "resume", tmp_path, model_dir)
    _assert_same_run(one_process, tmp_path, train_only=True)  # the stopped run evaluated at its end


def test_fsdp_two_processes_give_the_one_process_run(model_dir, one_process, tmp_path):
    """FSDP2 (parameters, gradients, optimizer state sharded; rollouts from an unsharded copy)."""
    _launch(2, "fsdp-run", tmp_path, model_dir)
    _assert_same_run(one_process, tmp_path)


def test_sigint_under_fsdp_saves_sharded_and_resumes_on_one_process(model_dir, one_process, tmp_path):
    """Ctrl-C on rank 0 of 2 FSDP ranks: both save their shards and stop; the sharded checkpoint then
    resumes on one process (another world size) into the uninterrupted run."""
    _launch(2, "fsdp-sigint", tmp_path, model_dir)
    run = tmp_path / "run"
    assert (run / "interrupted-0").is_file() and (run / "interrupted-1").is_file()
    assert (run / "checkpoints" / "step_0000002" / "dcp" / "metadata.json").is_file()
    assert not (run / "final").exists()
    _launch(1, "resume", tmp_path, model_dir)
    _assert_same_run(one_process, tmp_path, train_only=True)


def test_one_process_checkpoint_resumes_on_two_fsdp_ranks(model_dir, one_process, tmp_path):
    _launch(1, "half", tmp_path, model_dir)
    assert (tmp_path / "run" / "checkpoints" / "step_0000002" / "model.safetensors").is_file()
    _launch(2, "fsdp-resume", tmp_path, model_dir)
    _assert_same_run(one_process, tmp_path, train_only=True)


def test_fsdp_bf16_trains_with_the_policy_and_samples_a_bf16_copy(model_dir, tmp_path):
    """precision=bf16 under FSDP2 on gloo: FSDP2's MixedPrecisionPolicy (no autocast), float32 sharded
    policy, a bf16 rollout copy (float32 RoPE buffers); the run trains and ends with final/."""
    _launch(2, "bf16-fsdp-run", tmp_path, model_dir)
    for rank in (0, 1):
        probe = json.loads((tmp_path / "run" / f"probe-{rank}.json").read_text())
        assert probe == {
            "rollout": ["torch.bfloat16"],
            "rollout_buffers": ["torch.float32"],
            "autocast": "None",
            "policy": [["DTensor", "torch.float32"]],
        }
    train = [r for r in _rows(tmp_path) if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in train)
    assert (tmp_path / "run" / "final" / "config.json").is_file()


def _assert_same_run(one: Path, two: Path, train_only: bool = False) -> None:
    from test_rl import load

    a, b = _rows(one), _rows(two)
    if train_only:
        a, b = ([r for r in rows if r["split"] == "train"] for rows in (a, b))
    assert [(r["split"], r["step"]) for r in a] == [(r["split"], r["step"]) for r in b]
    for ra, rb in zip(a, b):
        for key in (
            "reward",
            "reward_all_rounds",
            "sampling_rounds",
            "frac_groups_dropped",
            "response_length",
            "avg_at_k",
            "pass_at_k",
        ):
            assert ra.get(key) == rb.get(key), (key, ra["step"])
        for key in ("loss", "clip_frac_low", "clip_frac_high", "grad_norm", "entropy"):
            if key in ra:
                assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-5), (key, ra["step"])
    assert any(r.get("clip_frac", 0) > 0 for r in a)
    wa, wb = load(one / "run" / "final")[0].state_dict(), load(two / "run" / "final")[0].state_dict()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


def test_uneven_filter_outcome_refills_and_agrees(model_dir, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _launch(1, "collect", one, model_dir)
    _launch(2, "collect", two, model_dir)
    a, b = (json.loads((p / "collect.json").read_text()) for p in (one, two))
    assert b["ranks_agree"] and len(b["groups"]) == 4
    assert [g[2] for g in b["groups"]] == [0, 0, 0, 0]  # rank 1 kept nothing: every kept group is rank 0's
    assert b["stats"]["sampling_rounds"] >= 4
    strip = [[g[0], g[1], g[3], g[4]] for g in a["groups"]]  # owner differs (one process owns all)
    assert strip == [[g[0], g[1], g[3], g[4]] for g in b["groups"]]
    assert b["stats"] == pytest.approx(a["stats"], rel=1e-6)  # entropy: float noise of batch composition


def test_round_cap_under_torchrun_prints_one_line(model_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in RENDEZVOUS and not k.startswith("TORCHELASTIC")}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "shapedce",
        "rl",
        "--from",
        str(model_dir),
        "--out",
        str(tmp_path / "r"),
        "--preset",
        "smoke",
        "dynamic_sampling=true",
        "max_sampling_rounds=1",
    ]
    proc = subprocess.run(
        cmd, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600
    )
    ours = [
        line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("shapedce rl: error")
    ]
    assert proc.returncode != 0 and len(ours) == 1 and "after 1 rounds only 0 of 2 groups" in ours[0]


if __name__ == "__main__":
    mode, out = sys.argv[1], Path(sys.argv[2])
    _worker(mode, out if mode == "collect" else out / "run", Path(sys.argv[3]))
