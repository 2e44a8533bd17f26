"""The fused pass's learning-shift statistics (grad_shift, w_mean, w_max) against direct computations,
and their merge over micro-batches and ranks (`shapedce.train.metrics.merge_stats`).

    PYTHONPATH=src python -m pytest -q tests/test_loss_stats.py        # CPU, a few seconds
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from shapedce.loss import PRESETS, fused_linear_shaped_cross_entropy, shaped_cross_entropy
from shapedce.train.metrics import merge_stats

KNOBS = {name: {k: v for k, v in PRESETS[name].knobs().items() if k != "ignore_index"} for name in PRESETS}
KNOBS.update(
    {
        "mixed": dict(beta=-0.25, lambda_top=0.1, lambda_tail=-0.1, k=5),
        "beta_-1": dict(beta=-1.0, lambda_tail=-0.1, k=10),
        "dft": dict(beta=math.inf),
        "k_ge_V": dict(beta=0.5, lambda_top=0.2, lambda_tail=-0.3, k=5000),
    }
)


def make_logits(n=90, vocab=211, seed=0, dtype=torch.float64, ignore_frac=0.2):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(n, vocab, generator=g, dtype=torch.float64) * 2.5).to(dtype)
    t = torch.randint(0, vocab, (n,), generator=g)
    t[torch.rand(n, generator=g) < ignore_frac] = -100
    return z, t


def direct(z, t, knobs):
    """grad_shift by autograd of the reference and of torch's CE; w from docs/method/loss.md's formula."""
    z = z.detach().double().requires_grad_()
    (g_shaped,) = torch.autograd.grad(shaped_cross_entropy(z, t, reduction="sum", **knobs), z)
    (g_ce,) = torch.autograd.grad(F.cross_entropy(z, t, reduction="sum", ignore_index=-100), z)
    ratio = (g_shaped - g_ce).norm() / g_ce.norm()
    valid = t != -100
    pi_x = torch.softmax(z.detach(), -1)[valid].gather(1, t[valid][:, None]).squeeze(1)
    beta = knobs.get("beta", 0.0)
    w = pi_x if beta == math.inf else pi_x ** (1 - (1 - pi_x) ** beta)
    return {"grad_shift": ratio, "w_mean": w.mean(), "w_max": w.max()}


def fused_stats(z, t, chunk=16, **knobs):
    eye = torch.eye(z.shape[-1], dtype=z.dtype)  # logits = hidden @ I.T = hidden
    return fused_linear_shaped_cross_entropy(z, eye, t, chunk_size=chunk, return_stats=True, **knobs)[1]


@pytest.mark.parametrize("setting", list(KNOBS))
@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-6), (torch.float32, 2e-4)])  # stats are float32
def test_grad_shift_and_w_match_autograd_and_the_spec(setting, dtype, rtol):
    z, t = make_logits(dtype=dtype, seed=1)
    want = direct(z, t, KNOBS[setting])
    for stats in (
        fused_stats(z, t, **KNOBS[setting]),
        shaped_cross_entropy(z, t, return_stats=True, **KNOBS[setting])[1],
    ):
        for name, value in want.items():
            torch.testing.assert_close(stats[name].double(), value.double(), rtol=rtol, atol=1e-9)
    if setting == "ce":
        assert float(want["grad_shift"]) == 0.0 and float(fused_stats(z, t)["grad_shift"]) == 0.0


def test_grad_shift_with_ties_inside_the_top_k_and_a_tied_target():
    """Logits from a few levels: ties everywhere except across the k-th/(k+1)-th boundary."""
    vocab, k = 60, 6
    g = torch.Generator().manual_seed(2)
    rows = []
    for _ in range(40):
        levels = torch.tensor([4.0] * 3 + [2.5] * 3 + [1.0] * 20 + [-1.0] * 34, dtype=torch.float64)
        rows.append(levels[torch.randperm(vocab, generator=g)])
    z = torch.stack(rows)
    t = torch.randint(0, vocab, (40,), generator=g)
    t[::5] = -100
    knobs = dict(beta=-0.25, lambda_top=0.1, lambda_tail=-0.1, k=k)
    want = direct(z, t, knobs)
    got = fused_stats(z, t, chunk=7, **knobs)
    for name, value in want.items():
        torch.testing.assert_close(got[name].double(), value, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("shift", [20.0, 40.0, 200.0, -200.0])
def test_extreme_logits_give_finite_stats(shift):
    z, t = make_logits(n=30, vocab=101, seed=3, dtype=torch.float32, ignore_frac=0.1)
    z.scatter_add_(1, t.clamp_min(0)[:, None], torch.full((30, 1), shift))
    for knobs in (KNOBS["precision"], KNOBS["tail"], KNOBS["beta_-1"]):
        stats = fused_stats(z, t, **knobs)
        assert all(math.isfinite(float(v)) for v in stats.values())
        if (
            shift == 20.0
        ):  # pi_x is 1 in float32, not in the float64 reference: still exact vs CE's tiny gradient
            want = direct(z, t, knobs)
            torch.testing.assert_close(stats["grad_shift"].double(), want["grad_shift"], rtol=1e-3, atol=0.0)


def test_empty_batch_gives_zero_stats():
    z, t = make_logits(n=5)
    stats = fused_stats(z, torch.full_like(t, -100), **KNOBS["mixed"])
    assert float(stats["grad_shift"]) == 0.0 and float(stats["w_max"]) == 0.0 and int(stats["tokens"]) == 0


def test_merge_stats_equals_the_unsplit_batch_over_micro_batches_and_ranks():
    knobs = KNOBS["mixed"]
    z, t = make_logits(n=120, seed=4)
    t[:20] = -100  # the first micro-batch is empty
    z[20:37] *= 0.2  # a flat stretch and a confident one: parts differ in grad_shift, the largest w
    z[71:] *= 3.0  # sits in one part only
    whole = fused_stats(z, t, **knobs)
    cuts = [0, 20, 37, 70, 71, 120]
    parts = []
    for a, b in zip(cuts, cuts[1:]):
        stats = fused_stats(z[a:b], t[a:b], **knobs)
        loss = fused_linear_shaped_cross_entropy(z[a:b], torch.eye(211, dtype=z.dtype), t[a:b], **knobs)
        parts.append((float(loss), stats))
    one = merge_stats(parts)
    ranks = [parts[:3], parts[3:]]  # two ranks: every rank sends its vector, all_sum adds them
    sent = [[] for _ in ranks]
    for r, mine in enumerate(ranks):
        merge_stats(mine, all_sum=lambda v, r=r: sent[r].append(v) or v, rank_world=(r, 2))
    total = [a + b for a, b in zip(sent[0][0], sent[1][0])]
    many = [merge_stats(mine, all_sum=lambda v: total, rank_world=(r, 2)) for r, mine in enumerate(ranks)]
    assert many[0] == many[1]
    for row in (one, many[0]):
        for name in ("grad_shift", "w_mean", "w_max", "ce", "entropy"):
            assert row[name] == pytest.approx(float(whole[name]), rel=1e-6), name
        assert row["eval_tokens"] == int(whole["tokens"])
    mean_of_ratios = sum(float(s["grad_shift"]) * int(s["tokens"]) for _, s in parts) / int(whole["tokens"])
    assert abs(mean_of_ratios / one["grad_shift"] - 1) > 0.01  # the two definitions differ here
    assert one["w_max"] == max(float(s["w_max"]) for _, s in parts) > one["w_mean"]
