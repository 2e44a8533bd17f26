"""Both loss implementations against the float64 reference of docs/method/loss.md (tests/conftest.py)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import reference_loss
from shapedce.loss import PRESETS, ShapedLoss, fused_linear_shaped_cross_entropy, shaped_cross_entropy
from shapedce.loss import chunks as chunks_module
from shapedce.loss.rows import ground_truth_weight

SETTINGS = {
    **{name: PRESETS[name].knobs() for name in PRESETS},
    "mixed": dict(beta=-0.25, lambda_top=0.1, lambda_tail=-0.1, k=5),
    "mixed_flip": dict(beta=0.5, lambda_top=-0.05, lambda_tail=0.2, k=3),
    "beta_-1": dict(beta=-1.0, lambda_tail=-0.1, k=10),
    "dft": dict(beta=math.inf),
    "k1": dict(beta=-0.25, lambda_top=0.3, lambda_tail=-0.2, k=1),
    "k_ge_V": dict(lambda_top=0.2, lambda_tail=-0.3, k=5000),
}
for s in SETTINGS.values():
    s.pop("ignore_index", None)


def make_inputs(
    shape=(3, 37), hidden=24, vocab=1013, dtype=torch.float64, seed=0, ignore_frac=0.2, bias=True
):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(*shape, hidden, generator=g, dtype=torch.float64)
    w = torch.randn(vocab, hidden, generator=g, dtype=torch.float64) / math.sqrt(hidden) * 3
    b = torch.randn(vocab, generator=g, dtype=torch.float64) if bias else None
    t = torch.randint(0, vocab, shape, generator=g)
    t[torch.rand(shape, generator=g) < ignore_frac] = -100
    leaves = [x.to(dtype).requires_grad_() if x is not None else None for x in (h, w, b)]
    return (*leaves, t)


def logits_of(h, w, b):
    z = h @ w.T
    return z if b is None else z + b


def grads(loss, tensors, reduction):
    gout = None
    if reduction == "none":  # a non-uniform upstream gradient exercises the recompute path
        gout = torch.linspace(-1, 2, loss.numel(), dtype=loss.dtype).reshape(loss.shape)
    live = [t for t in tensors if t is not None]
    return torch.autograd.grad(loss, live, grad_outputs=gout)


def run(impl, h, w, b, t, reduction, **knobs):
    """Loss and grads of one implementation, as functions of (hidden, weight, bias)."""
    if impl == "fused":
        loss = fused_linear_shaped_cross_entropy(h, w, t, bias=b, reduction=reduction, chunk_size=16, **knobs)
    elif impl == "reference":
        loss = shaped_cross_entropy(logits_of(h, w, b), t, reduction=reduction, **knobs)
    else:
        hd, wd, bd = (None if x is None else x.double() for x in (h, w, b))
        loss = reference_loss(logits_of(hd, wd, bd), t, reduction=reduction, **knobs)
    return loss, grads(loss, (h, w, b), reduction)


def assert_close(got, want, rtol, atol):
    loss_g, grads_g = got
    loss_w, grads_w = want
    torch.testing.assert_close(loss_g.double(), loss_w.double(), rtol=rtol, atol=atol)
    for a, b in zip(grads_g, grads_w):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a.double(), b.double(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("impl", ["reference", "fused"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_float64_matches_spec_reference(setting, impl, reduction):
    h, w, b, t = make_inputs()
    got = run(impl, h, w, b, t, reduction, **SETTINGS[setting])
    want = run("spec", h, w, b, t, reduction, **SETTINGS[setting])
    assert_close(got, want, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_float32_matches_spec_reference(setting, impl):
    h, w, b, t = make_inputs(dtype=torch.float32, seed=1)
    got = run(impl, h, w, b, t, "mean", **SETTINGS[setting])
    want = run("spec", h, w, b, t, "mean", **SETTINGS[setting])
    assert_close(got, want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_default_knobs_equal_torch_cross_entropy(impl):
    h, w, b, t = make_inputs(dtype=torch.float32, seed=2)
    want_loss = F.cross_entropy(logits_of(h, w, b).reshape(-1, w.shape[0]), t.reshape(-1), ignore_index=-100)
    want = (want_loss, torch.autograd.grad(want_loss, (h, w, b)))
    assert_close(run(impl, h, w, b, t, "mean"), want, rtol=1e-5, atol=1e-6)


def test_three_dim_inputs_and_no_bias():
    h, w, _, t = make_inputs(shape=(2, 3, 11), vocab=257, bias=False, seed=3)
    for impl in ("reference", "fused"):
        got = run(impl, h, w, None, t, "none", beta=-0.25, lambda_tail=-0.1, k=7)
        assert got[0].shape == (2, 3, 11)
        assert_close(got, run("spec", h, w, None, t, "none", beta=-0.25, lambda_tail=-0.1, k=7), 1e-9, 1e-11)


@pytest.mark.parametrize("chunk", [1, 7, 64, None])
def test_fused_chunk_size_does_not_change_the_result(chunk):
    h, w, b, t = make_inputs(seed=4)
    knobs = SETTINGS["mixed"]
    loss = fused_linear_shaped_cross_entropy(h, w, t, bias=b, chunk_size=chunk, **knobs)
    want = run("spec", h, w, b, t, "mean", **knobs)
    assert_close((loss, torch.autograd.grad(loss, (h, w, b))), want, 1e-9, 1e-11)


@pytest.mark.parametrize("impl", ["reference", "fused"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_ignored_batch_gives_zero_loss_and_zero_grads(impl, reduction):
    h, w, b, t = make_inputs(dtype=torch.float32)
    t = torch.full_like(t, -100)
    loss, gs = run(impl, h, w, b, t, reduction, **SETTINGS["mixed"])
    assert torch.count_nonzero(loss) == 0
    for g in gs:
        assert torch.isfinite(g).all() and torch.count_nonzero(g) == 0


@pytest.mark.parametrize("shift", [60.0, -60.0, 200.0, -200.0])
@pytest.mark.parametrize(
    "setting", ["ce", "precision", "diversity", "tail", "head", "beta_-1", "dft", "mixed"]
)
@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_extreme_logits_stay_finite_and_exact(shift, setting, impl):
    """Target logit +-shift around the rest; +-200 makes pi_x exactly 1 or 0 in float32."""
    g = torch.Generator().manual_seed(5)
    vocab = 301
    z = torch.randn(40, vocab, generator=g)
    t = torch.randint(0, vocab, (40,), generator=g)
    z.scatter_add_(1, t[:, None], torch.full((40, 1), shift))
    eye = torch.eye(vocab, requires_grad=True)  # fused: logits = hidden @ I.T = hidden
    h = z.clone().requires_grad_()
    got = run(impl, h, eye, None, t, "mean", **SETTINGS[setting])
    want = run("spec", h, eye, None, t, "mean", **SETTINGS[setting])
    assert torch.isfinite(got[0]) and all(torch.isfinite(x).all() for x in got[1])
    assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_bf16_inputs_compute_in_float32_and_return_bf16_grads(impl):
    h, w, b, t = make_inputs(dtype=torch.bfloat16, seed=6, vocab=211)
    got = run(impl, h, w, b, t, "mean", **SETTINGS["mixed"])
    assert got[0].dtype == torch.float32
    assert all(x.dtype == torch.bfloat16 for x in got[1])
    want = run("spec", h, w, b, t, "mean", **SETTINGS["mixed"])
    assert_close(got, want, rtol=3e-2, atol=3e-3)


def test_fused_under_cpu_autocast_returns_float32_grads_for_float32_params():
    h, w, b, t = make_inputs(dtype=torch.float32, seed=7, vocab=211)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = fused_linear_shaped_cross_entropy(h, w, t, bias=b, beta=-0.25)
    gs = torch.autograd.grad(loss, (h, w, b))
    assert all(g.dtype == torch.float32 for g in gs)
    assert_close((loss, gs), run("spec", h, w, b, t, "mean", beta=-0.25), rtol=3e-2, atol=3e-3)


@pytest.mark.parametrize("knobs", [{}, dict(lambda_top=0.2, lambda_tail=-0.3, k=3)])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradcheck_float64(knobs, reduction):
    """With beta = 0 the surrogate's value has exactly the gradient of docs/method/loss.md (lam is
    piecewise constant)."""
    h, w, b, t = make_inputs(shape=(6,), hidden=3, vocab=7, seed=8, ignore_frac=0.3)

    def fused(h, w, b):
        return fused_linear_shaped_cross_entropy(h, w, t, bias=b, reduction=reduction, chunk_size=4, **knobs)

    def reference(h, w, b):
        return shaped_cross_entropy(logits_of(h, w, b), t, reduction=reduction, **knobs)

    assert torch.autograd.gradcheck(fused, (h, w, b))
    assert torch.autograd.gradcheck(reference, (h, w, b))


@pytest.mark.parametrize("setting", ["precision", "diversity", "dft", "mixed", "mixed_flip"])
def test_gradient_is_the_spec_closed_form(setting):
    """dloss/dz_j = -(w (1[j=x] - pi_j) + lam_j pi_j - pi_j S), written out by hand."""
    knobs = SETTINGS[setting]
    g = torch.Generator().manual_seed(9)
    z = torch.randn(13, 29, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 29, (13,), generator=g)
    (grad,) = torch.autograd.grad(shaped_cross_entropy(z, t, reduction="sum", **knobs), z)
    pi = torch.softmax(z.detach(), -1)
    pi_x = pi.gather(1, t[:, None])
    beta = knobs.get("beta", 0.0)
    w = pi_x if beta == math.inf else pi_x ** (1 - (1 - pi_x) ** beta)
    kth = torch.topk(z.detach(), min(knobs.get("k", 100), 29), -1).values[:, -1:]
    top, tail = (
        torch.tensor(knobs.get(name, 0.0), dtype=torch.float64) for name in ("lambda_top", "lambda_tail")
    )
    lam = torch.where(z.detach() >= kth, top, tail)
    lam.scatter_(1, t[:, None], 0.0)
    s = (lam * pi).sum(-1, keepdim=True)
    onehot = F.one_hot(t, 29).double()
    torch.testing.assert_close(grad, -(w * (onehot - pi) + lam * pi - pi * s), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_stats_are_the_paper_diagnostics(impl):
    h, w, b, t = make_inputs(seed=10, vocab=211)
    k = 9
    if impl == "fused":
        _, stats = fused_linear_shaped_cross_entropy(h, w, t, bias=b, k=k, beta=-0.25, return_stats=True)
    else:
        _, stats = shaped_cross_entropy(logits_of(h, w, b), t, k=k, beta=-0.25, return_stats=True)
    z = logits_of(h, w, b).detach().reshape(-1, 211)
    x = t.reshape(-1)
    z, x = z[x != -100], x[x != -100]
    pi = torch.softmax(z, -1)
    in_top = z >= torch.topk(z, k, -1).values[:, -1:]
    want = {
        "ce": F.cross_entropy(z, x),
        "entropy": -(pi * pi.log()).sum(-1).mean(),
        "topk_mass": (pi * in_top).sum(-1).mean(),
        "tail_mass": (pi * ~in_top).sum(-1).mean(),
        "target_in_topk": in_top.gather(1, x[:, None]).double().mean(),
    }
    for name, value in want.items():
        torch.testing.assert_close(stats[name].double(), value.double(), rtol=1e-5, atol=1e-6)
    assert int(stats["tokens"]) == x.numel()


def test_no_topk_work_when_both_lambdas_are_zero(monkeypatch):
    calls = []
    real = chunks_module.top_k
    monkeypatch.setattr(chunks_module, "top_k", lambda z, k: calls.append(k) or real(z, k))
    h, w, b, t = make_inputs(dtype=torch.float32)
    for name in ("ce", "precision", "diversity"):
        fused_linear_shaped_cross_entropy(h, w, t, bias=b, **SETTINGS[name]).backward()
    assert calls == []
    fused_linear_shaped_cross_entropy(h, w, t, bias=b, **SETTINGS["tail"]).backward()
    assert calls, "the negative channel needs the top-k threshold"


def test_upstream_gradient_scales_fused_grads():
    h, w, b, t = make_inputs(seed=11)
    knobs = SETTINGS["mixed"]
    g1 = torch.autograd.grad(fused_linear_shaped_cross_entropy(h, w, t, bias=b, **knobs), (h, w, b))
    g3 = torch.autograd.grad(3.0 * fused_linear_shaped_cross_entropy(h, w, t, bias=b, **knobs), (h, w, b))
    for a, c in zip(g1, g3):
        torch.testing.assert_close(3.0 * a, c)


def test_frozen_weight_gets_no_grad_and_hidden_still_does():
    h, w, b, t = make_inputs(seed=12)
    w = w.detach()
    loss = fused_linear_shaped_cross_entropy(h, w, t, bias=b, beta=0.5)
    gh, gb = torch.autograd.grad(loss, (h, b))
    want = run("spec", h, w.requires_grad_(), b, t, "mean", beta=0.5)[1]
    torch.testing.assert_close(gh, want[0])
    torch.testing.assert_close(gb, want[2])


def test_ground_truth_weight_properties():
    p = torch.tensor([1e-30, 1e-6, 0.01, 0.3, 0.5, 0.9, 1 - 1e-6, 1 - 1e-12], dtype=torch.float64)
    log_p, log_q = p.log(), torch.log1p(-p)
    assert torch.equal(ground_truth_weight(log_p, log_q, 0.0), torch.ones_like(p))
    assert (ground_truth_weight(log_p, log_q, -0.25) >= 1).all()  # precision amplifies
    assert (ground_truth_weight(log_p, log_q, 0.5) <= 1).all()  # diversity attenuates
    torch.testing.assert_close(ground_truth_weight(log_p, log_q, math.inf), p)
    w = ground_truth_weight(log_p, log_q, -1.0)
    assert (w <= math.e + 1e-12).all() and w[-1] > 2.7  # bounded by e, reached as pi_x -> 1
    torch.testing.assert_close(w, p ** (1 - 1 / (1 - p)))
    limits = ground_truth_weight(torch.zeros(1), torch.full((1,), -math.inf), -0.5)
    assert (
        limits.item() == 1.0
        and ground_truth_weight(torch.zeros(1), torch.full((1,), -math.inf), -1.0).item() == math.e
    )


def test_shaped_loss_dataclass_calls_both_paths():
    h, w, b, t = make_inputs(dtype=torch.float64, seed=13)
    cfg = ShapedLoss.named("tail")
    assert cfg.uses_topk and not cfg.is_cross_entropy and ShapedLoss.named("ce").is_cross_entropy
    torch.testing.assert_close(cfg(logits_of(h, w, b), t), cfg.fused(h, w, t, bias=b))
    assert ShapedLoss.named("precision").beta == -0.25 and ShapedLoss.named("head").lambda_top == 0.1
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.beta = 1.0  # frozen
