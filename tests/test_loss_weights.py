"""Per-token weights (`token_weights=`) and the "dft" setting, on both loss implementations.

    PYTHONPATH=src OMP_NUM_THREADS=1 python -m pytest -q tests/test_loss_weights.py

The weighted loss must equal the hand composition sum_t w_t * loss_t(reduction="none") / n_valid in
value and gradient (float64, odd shapes, ignored positions, every reduction, fused with several
chunks); PRESETS["dft"] must equal -mean(sg(pi_x) log pi_x) and TRL's SFTTrainer(loss_type="dft").
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from shapedce.errors import UserError
from shapedce.loss import PRESETS, fused_linear_shaped_cross_entropy, shaped_cross_entropy

KNOBS = {
    "ce": {},
    "mixed": dict(beta=-0.25, lambda_top=0.1, lambda_tail=-0.1, k=5),
    "dft": dict(beta=math.inf),
    "softcap": dict(beta=0.5, lambda_tail=-0.2, k=3, softcap=4.0, logit_scale=0.7),
}


def inputs(shape=(3, 17), hidden=11, vocab=53, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(*shape, hidden, generator=g, dtype=torch.float64, requires_grad=True)
    w = (torch.randn(vocab, hidden, generator=g, dtype=torch.float64) * 0.8).requires_grad_()
    b = torch.randn(vocab, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, vocab, shape, generator=g)
    t[torch.rand(shape, generator=g) < 0.3] = -100
    tw = torch.rand(shape, generator=g, dtype=torch.float64) * 3 - 0.5  # some negative (advantage-like)
    return h, w, b, t, tw


def loss_of(impl, h, w, b, t, reduction, tw=None, softcap=None, logit_scale=1.0, **knobs):
    if impl == "fused":
        return fused_linear_shaped_cross_entropy(
            h, w, t, bias=b, reduction=reduction, chunk_size=7, token_weights=tw,
            softcap=softcap, logit_scale=logit_scale, **knobs,
        )  # fmt: skip
    z = (h @ w.T + b) * logit_scale
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    return shaped_cross_entropy(z, t, reduction=reduction, token_weights=tw, **knobs)


def by_hand(impl, h, w, b, t, reduction, tw, **knobs):
    rows = loss_of(impl, h, w, b, t, "none", **knobs) * tw
    n = int((t != -100).sum())
    return {"mean": rows.sum() / max(n, 1), "sum": rows.sum(), "none": rows}[reduction]


@pytest.mark.parametrize("setting", list(KNOBS))
@pytest.mark.parametrize("impl", ["reference", "fused"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_weighted_loss_equals_the_hand_composition(setting, impl, reduction):
    h, w, b, t, tw = inputs(seed=len(setting))
    got = loss_of(impl, h, w, b, t, reduction, tw, **KNOBS[setting])
    want = by_hand(impl, h, w, b, t, reduction, tw, **KNOBS[setting])
    gout = torch.linspace(-1, 2, got.numel(), dtype=got.dtype).reshape(got.shape)  # non-uniform for "none"
    g_got = torch.autograd.grad(got, (h, w, b), grad_outputs=gout)
    g_want = torch.autograd.grad(want, (h, w, b), grad_outputs=gout)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-13)
    for a, c in zip(g_got, g_want):
        torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-12)


def test_fused_weighted_equals_reference_weighted_and_unit_weights_change_nothing():
    h, w, b, t, tw = inputs(shape=(2, 9, 5), seed=3)
    knobs = KNOBS["mixed"]
    fused = loss_of("fused", h, w, b, t, "mean", tw, **knobs)
    ref = loss_of("reference", h, w, b, t, "mean", tw, **knobs)
    torch.testing.assert_close(fused, ref, rtol=1e-12, atol=1e-13)
    for g1, g2 in zip(torch.autograd.grad(fused, (h, w, b)), torch.autograd.grad(ref, (h, w, b))):
        torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-12)
    ones = torch.ones_like(tw)
    for impl in ("fused", "reference"):
        torch.testing.assert_close(
            loss_of(impl, h, w, b, t, "mean", ones, **knobs), loss_of(impl, h, w, b, t, "mean", **knobs)
        )


def test_weights_at_ignored_positions_do_not_matter_and_the_stats_stay_unweighted():
    h, w, b, t, tw = inputs(seed=5)
    other = torch.where(t == -100, 1e6, tw)
    for impl in ("fused", "reference"):
        a = loss_of(impl, h, w, b, t, "mean", tw, **KNOBS["mixed"])
        c = loss_of(impl, h, w, b, t, "mean", other, **KNOBS["mixed"])
        torch.testing.assert_close(a, c, rtol=1e-12, atol=0)
    z = h @ w.T + b
    _, s_w = shaped_cross_entropy(z, t, token_weights=tw, return_stats=True, **KNOBS["mixed"])
    _, s_plain = shaped_cross_entropy(z, t, return_stats=True, **KNOBS["mixed"])
    assert all(torch.equal(s_w[k], s_plain[k]) for k in s_plain)


def test_bad_token_weights_are_refused_with_one_line():
    h, w, b, t, tw = inputs()
    z = h @ w.T + b
    for bad, match in (
        (tw[:, :-1], "token_weights shape"),
        (torch.ones_like(t), "floating-point"),
        (torch.full_like(tw, math.nan), "finite"),
    ):
        with pytest.raises(UserError, match=match):
            shaped_cross_entropy(z, t, token_weights=bad)
        with pytest.raises(UserError, match=match):
            fused_linear_shaped_cross_entropy(h, w, t, bias=b, token_weights=bad)


def test_token_stats_of_the_fused_path_are_per_token_entropy_and_top1():
    h, w, b, t, _ = inputs(seed=7)
    t[0, 0] = int((h[0, 0] @ w.T + b).argmax())  # at least one top-1 hit
    _, stats = fused_linear_shaped_cross_entropy(
        h, w, t, bias=b, return_stats=True, token_stats=True, chunk_size=5, **KNOBS["mixed"]
    )
    z = (h @ w.T + b).detach()
    valid = t != -100
    log_pi = F.log_softmax(z, -1)
    entropy = torch.where(valid, -(log_pi.exp() * log_pi).sum(-1), 0.0)
    top1 = torch.where(valid, (z.argmax(-1) == t).double(), 0.0)
    torch.testing.assert_close(stats["token_entropy"], entropy, rtol=1e-10, atol=1e-12)
    assert torch.equal(stats["token_is_top1"], top1) and top1.sum() >= 1
    torch.testing.assert_close(stats["entropy"].double(), entropy[valid].mean(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_dft_preset_is_minus_mean_of_stop_gradient_p_times_log_p(impl):
    h, w, b, t, _ = inputs(shape=(4, 13), seed=9)
    assert PRESETS["dft"].beta == math.inf and "dft" in PRESETS
    z = h @ w.T + b
    got = PRESETS["dft"](z, t) if impl == "reference" else PRESETS["dft"].fused(h, w, t, bias=b)
    valid = t != -100
    log_p = F.log_softmax(h @ w.T + b, -1).gather(-1, torch.where(valid, t, 0)[..., None]).squeeze(-1)[valid]
    want = -(log_p.detach().exp() * log_p).mean()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-13)
    for a, c in zip(torch.autograd.grad(got, (h, w, b)), torch.autograd.grad(want, (h, w, b))):
        torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-12)
