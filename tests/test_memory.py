"""Activation checkpointing (`train.activation_checkpointing`, RL's `activation_checkpointing`): the
same loss curve and gradients as without it, in the training loops that use it.

    PYTHONPATH=src OMP_NUM_THREADS=1 python -m pytest -q tests/test_memory.py
"""

from __future__ import annotations

import pytest
import torch

from shapedce.cli import main
from shapedce.hf import patch_causal_lm
from shapedce.models import build_model
from shapedce.train.grpo import clipped_loss, token_logps
from shapedce.train.memory import set_activation_checkpointing
from shapedce.train.metrics import read_metrics


def curve(checkpointing: bool, steps: int = 4) -> tuple[list[float], int]:
    """Losses of a few AdamW steps of the tiny flavor on one fixed batch (the pre-training path), and
    how many times the first layer's MLP ran (twice per step when its activations are recomputed)."""
    model = build_model("tiny", seed=0)
    patch_causal_lm(model, "precision")
    model.train()
    set_activation_checkpointing(model, checkpointing)
    calls, mlp = [], model.model.layers[0].mlp
    forward = mlp.forward  # module hooks do not run in the recomputation; an instance forward does
    mlp.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 2048, (4, 33), generator=g)
    losses = []
    for _ in range(steps):
        loss = model(input_ids=batch[:, :-1], shift_labels=batch[:, 1:]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss))
    return losses, len(calls)


def test_pretraining_loss_curve_is_unchanged():
    (plain, runs_plain), (ckpt, runs_ckpt) = curve(False), curve(True)
    assert (runs_plain, runs_ckpt) == (4, 8)  # checkpointing is really on: the backward recomputes
    assert plain[-1] < plain[0]  # it learns something, so the curve is not flat by accident
    assert ckpt == pytest.approx(plain, rel=1e-5, abs=1e-6)


def test_checkpointing_is_on_and_off_and_rl_gradients_agree():
    model = build_model("tiny", seed=1)
    set_activation_checkpointing(model, True)
    assert model.is_activation_checkpointing
    prompts, completions = [[5, 6, 7], [8, 9]], [[10, 11, 12], [13]]
    adv = torch.tensor([1.0, -0.5])

    def grads():
        model.zero_grad(set_to_none=True)
        logp, mask = token_logps(model, prompts, completions, pad=0, temperature=0.9)
        loss, _ = clipped_loss(logp, logp.detach() + 0.1, adv, mask, 0.2, 0.28, float(mask.sum()))
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    with_ckpt = grads()
    set_activation_checkpointing(model, False)
    assert not model.is_activation_checkpointing
    for a, b in zip(with_ckpt, grads()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_pretrain_command_same_metrics_with_checkpointing(tmp_path):
    """`shapedce pretrain --preset smoke` with and without train.activation_checkpointing=true."""
    runs = {}
    for flag in ("false", "true"):
        out = tmp_path / flag
        assert (
            main(
                ["pretrain", "--preset", "smoke", "--out", str(out), f"train.activation_checkpointing={flag}"]
            )
            == 0
        )
        runs[flag] = [r["loss"] for r in read_metrics(out / "metrics.jsonl") if r["split"] == "train"]
    assert len(runs["true"]) == 6
    assert runs["true"] == pytest.approx(runs["false"], rel=1e-5)
