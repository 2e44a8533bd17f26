"""bf16 under FSDP2 is its MixedPrecisionPolicy, not autocast (`shapedce.train.dist`), on CPU gloo.

    python -m pytest tests/test_fsdp_mp.py -q
    torchrun --standalone --nproc-per-node 2 tests/test_fsdp_mp.py OUT      # the worker

Two gloo ranks (bf16 all-gathers work on CPU gloo) wrap a tiny Qwen3 and a tiny Qwen3-MoE with the
policy and feed both ranks the same batch; against one process running the same model cast to bf16:
the layers compute with bf16 weights, the loss is the bf16 model's, the reduced gradients are the
bf16 model's gradients held in float32, the sharded parameters, gradients and AdamW state stay
float32, and the RL rollout copy refreshed one parameter at a time holds exactly the trained float32
weights cast to bf16. The choice of autocast vs the policy, and the bf16 rollout copy, single-process.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shapedce.models import cast_weights
from shapedce.train import dist as dist_
from shapedce.train.rl_trainer import refresh_weights, resolve_precision, rollout_copy

RENDEZVOUS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
BF16 = torch.bfloat16


def _tiny(flavor: str) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    from shapedce.hf import patch_causal_lm
    from shapedce.models import flavor_config

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(flavor_config(flavor, vocab_size=96)).float()
    return patch_causal_lm(model, "ce").train()


def _check(flavor: str, d: dist_.Dist) -> dict:
    model = _tiny(flavor)
    reference = copy.deepcopy(model)  # one process, every weight in bf16 (buffers as they are), no autocast
    cast_weights(reference, BF16)
    rollout = rollout_copy(model, BF16, torch.device("cpu"))
    module = dist_.wrap(model, d, "fsdp", torch.device("cpu"), BF16)
    seen = []
    layer = module.model.layers[0]
    layer.register_forward_pre_hook(lambda m, a: seen.append(str(m.input_layernorm.weight.dtype)))
    batch = torch.randint(0, 96, (2, 17), generator=torch.Generator().manual_seed(1))  # same on every rank
    loss = module(input_ids=batch[:, :-1], shift_labels=batch[:, 1:]).loss
    loss.backward()
    ref = reference(input_ids=batch[:, :-1], shift_labels=batch[:, 1:]).loss
    ref.backward()
    grads = dict(reference.named_parameters())
    worst, kinds = 0.0, set()
    for name, p in module.named_parameters():
        kinds.add((type(p).__name__, str(p.dtype), str(p.grad.dtype)))
        g = p.grad.full_tensor()  # averaged over the 2 ranks in float32: the same gradient twice
        want = grads[name].grad.float()
        worst = max(worst, float((g - want).abs().max() / want.abs().max().clamp_min(1e-12)))
    opt = torch.optim.AdamW(module.parameters(), lr=1e-2, foreach=True)
    opt.step()
    states = {str(s["exp_avg"].dtype) for s in opt.state.values()}
    refresh_weights(rollout, module)
    full = {n: p.full_tensor() for n, p in module.named_parameters()}
    exact = all(torch.equal(p, full[n].to(BF16)) for n, p in rollout.named_parameters())
    return {
        "layer_weight_dtypes": sorted(set(seen)),
        "loss": float(loss),
        "ref_loss": float(ref),
        "grad_rel_err": worst,
        "params": sorted(map(list, kinds)),
        "adam_state": sorted(states),
        "rollout_dtypes": sorted({str(p.dtype) for p in rollout.parameters()}),
        "rollout_exact": exact,
    }


def _worker(out: Path) -> None:
    d = dist_.detect()
    dist_.init(d, torch.device("cpu"))
    result = {flavor: _check(flavor, d) for flavor in ("tiny", "tiny-moe")}
    if d.main:
        (out / "mp.json").write_text(json.dumps(result))
    dist_.teardown(d)


@pytest.mark.slow
def test_two_gloo_ranks_train_with_the_bf16_policy(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in RENDEZVOUS and not k.startswith("TORCHELASTIC")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    proc = subprocess.run(
        [*cmd, __file__, str(tmp_path)], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for flavor, r in json.loads((tmp_path / "mp.json").read_text()).items():
        assert r["layer_weight_dtypes"] == ["torch.bfloat16"], flavor  # all-gathered in bf16
        assert r["loss"] == pytest.approx(r["ref_loss"], rel=1e-6), flavor  # the bf16 model's loss
        assert r["grad_rel_err"] < 1e-5, flavor  # its gradients, reduced in float32
        assert r["params"] == [["DTensor", "torch.float32", "torch.float32"]], flavor  # fp32 shards
        assert r["adam_state"] == ["torch.float32"], flavor
        assert r["rollout_dtypes"] == ["torch.bfloat16"] and r["rollout_exact"], flavor


@pytest.mark.slow
def test_pretrain_under_the_policy_tracks_one_bf16_autocast_process(tmp_path):
    """`shapedce pretrain` on 2 gloo ranks, train.parallel=fsdp train.precision=bf16 (the policy, no
    autocast) against one process with bf16 autocast: other roundings, the same losses to 2%; the
    final weights are the float32 master weights."""
    from safetensors.torch import load_file

    from shapedce.cli import main
    from shapedce.train.metrics import read_metrics

    settings = ["train.precision=bf16", "train.steps=3", "train.val_every=3"]
    two, one = tmp_path / "two", tmp_path / "one"
    env = {k: v for k, v in os.environ.items() if k not in RENDEZVOUS and not k.startswith("TORCHELASTIC")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd = [*torchrun, "-m", "shapedce", "pretrain", "--preset", "smoke", "--out", str(two)]
    proc = subprocess.run(
        [*cmd, *settings, "train.parallel=fsdp"], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert main(["pretrain", "--preset", "smoke", "--out", str(one), *settings]) == 0
    got, want = (read_metrics(run / "metrics.jsonl") for run in (two, one))
    assert [(r["split"], r["step"]) for r in got] == [(r["split"], r["step"]) for r in want]
    for g, w in zip(got, want):
        assert g["loss"] == pytest.approx(w["loss"], rel=2e-2), (g["split"], g["step"])
    weights = load_file(two / "final" / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float32}


def test_bf16_is_the_policy_under_fsdp_and_autocast_otherwise():
    one, two = dist_.Dist(), dist_.Dist(rank=0, world=2)
    assert dist_.autocast_dtype(two, "fsdp", BF16) is None and dist_.mixed_precision(two, "fsdp", BF16)
    assert dist_.autocast_dtype(two, "ddp", BF16) is BF16 and not dist_.mixed_precision(two, "ddp", BF16)
    assert dist_.autocast_dtype(one, "fsdp", BF16) is BF16  # one process: nothing is sharded
    assert dist_.autocast_dtype(two, "fsdp", None) is None and not dist_.mixed_precision(two, "fsdp", None)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cpu) is None and resolve_precision("auto", cuda) is BF16
    assert resolve_precision("bf16", cpu) is BF16 and resolve_precision("fp32", cuda) is None


def test_rollout_copy_is_bf16_only_when_asked_and_refresh_copies_every_weight():
    model = _tiny("tiny")
    half, full = (
        rollout_copy(model, BF16, torch.device("cpu")),
        rollout_copy(model, None, torch.device("cpu")),
    )
    assert {p.dtype for p in half.parameters()} == {BF16} and not half.training
    assert {b.dtype for b in half.buffers()} == {torch.float32}  # RoPE's inv_freq is not rounded
    assert {p.dtype for p in full.parameters()} == {torch.float32}  # CPU keeps float32
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # the policy is untouched
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    refresh_weights(half, model)
    refresh_weights(full, model)
    trained = dict(model.named_parameters())
    assert all(torch.equal(p, trained[n].to(BF16)) for n, p in half.named_parameters())
    assert all(torch.equal(p, trained[n]) for n, p in full.named_parameters())


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
