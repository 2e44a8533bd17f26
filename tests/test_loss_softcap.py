"""The fused loss with logit_scale and softcap (Gemma / Granite / Cohere logit transforms) against the
reference `shaped_cross_entropy` on explicitly computed logits z = c * tanh(s * (h W^T + b) / c).

    PYTHONPATH=src python -m pytest -q tests/test_loss_softcap.py        # CPU, a few seconds
"""

from __future__ import annotations

import math

import pytest
import torch

from conftest import reference_loss
from shapedce.loss import PRESETS, fused_linear_shaped_cross_entropy, shaped_cross_entropy

KNOBS = {name: {k: v for k, v in PRESETS[name].knobs().items() if k != "ignore_index"} for name in PRESETS}
KNOBS["mixed"] = dict(beta=-0.25, lambda_top=0.1, lambda_tail=-0.1, k=5)
KNOBS["k_ge_V"] = dict(beta=0.5, lambda_top=0.2, lambda_tail=-0.3, k=5000)
CAPS = [(0.125, None), (2.5, None), (1.0, 30.0), (1.0, 2.0), (0.5, 4.0), (0.3, 1.5)]  # no exact ties at k


def make_inputs(
    shape=(3, 37), hidden=24, vocab=1013, dtype=torch.float64, seed=0, ignore_frac=0.2, scale=3.0
):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(*shape, hidden, generator=g, dtype=torch.float64)
    w = torch.randn(vocab, hidden, generator=g, dtype=torch.float64) / math.sqrt(hidden) * scale
    b = torch.randn(vocab, generator=g, dtype=torch.float64)
    t = torch.randint(0, vocab, shape, generator=g)
    t[torch.rand(shape, generator=g) < ignore_frac] = -100
    return (*(x.to(dtype).requires_grad_() for x in (h, w, b)), t)


def capped_logits(h, w, b, logit_scale, softcap):
    z = (h @ w.T + b) * logit_scale
    return z if softcap is None else softcap * torch.tanh(z / softcap)


def value_and_grads(loss, leaves, reduction):
    gout = None
    if reduction == "none":  # a non-uniform upstream gradient exercises the recompute path
        gout = torch.linspace(-1, 2, loss.numel(), dtype=loss.dtype).reshape(loss.shape)
    return loss, torch.autograd.grad(loss, leaves, grad_outputs=gout)


def fused(h, w, b, t, reduction, cap, chunk=16, **knobs):
    loss = fused_linear_shaped_cross_entropy(
        h, w, t, bias=b, reduction=reduction, chunk_size=chunk, logit_scale=cap[0], softcap=cap[1], **knobs
    )
    return value_and_grads(loss, (h, w, b), reduction)


def reference(h, w, b, t, reduction, cap, spec=False, **knobs):
    """float64 reference on explicit logits (the library's reference, or docs/method/loss.md transcribed)."""
    hd, wd, bd = (x.double() for x in (h, w, b))
    z = capped_logits(hd, wd, bd, *cap)
    loss = (reference_loss if spec else shaped_cross_entropy)(z, t, reduction=reduction, **knobs)
    return value_and_grads(loss, (h, w, b), reduction)


def assert_close(got, want, rtol, atol):
    torch.testing.assert_close(got[0].double(), want[0].double(), rtol=rtol, atol=atol)
    for a, b in zip(got[1], want[1]):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a.double(), b.double(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("cap", CAPS)
@pytest.mark.parametrize("setting", list(KNOBS))
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_float64_matches_reference_on_capped_logits(cap, setting, reduction):
    h, w, b, t = make_inputs()
    got = fused(h, w, b, t, reduction, cap, **KNOBS[setting])
    assert_close(got, reference(h, w, b, t, reduction, cap, **KNOBS[setting]), rtol=1e-9, atol=1e-11)
    assert_close(
        got, reference(h, w, b, t, reduction, cap, spec=True, **KNOBS[setting]), rtol=1e-9, atol=1e-11
    )


@pytest.mark.parametrize("cap", [(1.0, 3.0), (0.25, None)])
def test_sum_reduction_odd_shapes_and_chunks(cap):
    h, w, b, t = make_inputs(shape=(2, 5, 7), hidden=5, vocab=97, seed=1)
    for chunk in (1, 3, None):
        got = fused(h, w, b, t, "sum", cap, chunk=chunk, **KNOBS["mixed"])
        assert_close(got, reference(h, w, b, t, "sum", cap, **KNOBS["mixed"]), rtol=1e-9, atol=1e-11)


def test_the_cap_actually_changes_the_loss_and_default_is_plain_logits():
    h, w, b, t = make_inputs(seed=2, scale=20.0)  # large logits: tanh saturates
    plain = fused(h, w, b, t, "mean", (1.0, None), **KNOBS["tail"])
    assert_close(plain, reference(h, w, b, t, "mean", (1.0, None), **KNOBS["tail"]), rtol=1e-9, atol=1e-11)
    capped = fused(h, w, b, t, "mean", (1.0, 5.0), **KNOBS["tail"])
    assert abs(float(capped[0].detach()) - float(plain[0].detach())) > 0.1
    default = fused_linear_shaped_cross_entropy(h, w, t, bias=b, lambda_tail=-0.1, k=100)
    assert torch.equal(default, plain[0])


@pytest.mark.parametrize("setting", ["ce", "precision", "diversity", "tail", "head", "mixed"])
@pytest.mark.parametrize("shift", [60.0, -200.0, 1e4])
def test_extreme_logits_float32(setting, shift):
    """Target logit shifted by +-shift: tanh saturates, pi_x is 0 or 1 in float32; no NaN, still exact."""
    g = torch.Generator().manual_seed(5)
    vocab = 301
    z = torch.randn(40, vocab, generator=g)
    t = torch.randint(0, vocab, (40,), generator=g)
    t[::7] = -100
    z.scatter_add_(1, t.clamp_min(0)[:, None], torch.full((40, 1), shift))
    eye = torch.eye(vocab, requires_grad=True)
    h = z.clone().requires_grad_()
    b = torch.zeros(vocab, requires_grad=True)
    for cap in [(1.0, 30.0), (0.01, 50.0), (1.0, None)]:
        got = fused(h, eye, b, t, "mean", cap, **KNOBS[setting])
        assert torch.isfinite(got[0])
        assert_close(
            got, reference(h, eye, b, t, "mean", cap, spec=True, **KNOBS[setting]), rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("setting", ["precision", "mixed"])
def test_bf16_and_autocast_tolerance(setting):
    cap = (0.5, 10.0)
    h, w, b, t = make_inputs(dtype=torch.bfloat16, seed=6, vocab=211)
    got = fused(h, w, b, t, "mean", cap, **KNOBS[setting])
    assert got[0].dtype == torch.float32 and all(g.dtype == torch.bfloat16 for g in got[1])
    assert_close(got, reference(h, w, b, t, "mean", cap, **KNOBS[setting]), rtol=3e-2, atol=3e-3)
    h, w, b, t = make_inputs(dtype=torch.float32, seed=7, vocab=211)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = fused_linear_shaped_cross_entropy(
            h, w, t, bias=b, logit_scale=0.5, softcap=10.0, **KNOBS[setting]
        )
    got = value_and_grads(loss, (h, w, b), "mean")
    assert all(g.dtype == torch.float32 for g in got[1])
    assert_close(got, reference(h, w, b, t, "mean", cap, **KNOBS[setting]), rtol=3e-2, atol=3e-3)


def test_stats_are_those_of_the_capped_logits():
    h, w, b, t = make_inputs(seed=8, vocab=211)
    cap = (2.0, 3.0)
    _, got = fused_linear_shaped_cross_entropy(
        h, w, t, bias=b, k=9, logit_scale=2.0, softcap=3.0, return_stats=True
    )
    _, want = shaped_cross_entropy(capped_logits(h, w, b, *cap), t, k=9, return_stats=True)
    for name, value in want.items():
        torch.testing.assert_close(got[name].double(), value.double(), rtol=1e-6, atol=1e-8)


def test_gradcheck_with_softcap():
    h, w, b, t = make_inputs(shape=(6,), hidden=3, vocab=7, seed=9, ignore_frac=0.3)

    def f(h, w, b):
        return fused_linear_shaped_cross_entropy(
            h, w, t, bias=b, chunk_size=4, lambda_top=0.2, lambda_tail=-0.3, k=3, logit_scale=1.7, softcap=2.0
        )

    assert torch.autograd.gradcheck(f, (h, w, b))


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(logit_scale=0.0), "logit_scale must be a finite number > 0"),
        (dict(logit_scale=-1.0), "logit_scale must be a finite number > 0"),
        (dict(logit_scale=math.nan), "logit_scale must be a finite number > 0"),
        (dict(logit_scale=math.inf), "logit_scale must be a finite number > 0"),
        (dict(logit_scale=True), "logit_scale must be a finite number > 0"),
        (dict(softcap=0.0), "softcap must be a finite number > 0"),
        (dict(softcap=-30.0), "softcap must be a finite number > 0"),
        (dict(softcap=math.inf), "softcap must be a finite number > 0"),
        (dict(softcap="30"), "softcap must be a finite number > 0"),
    ],
)
def test_bad_transform_arguments_fail_with_one_line(kwargs, needle):
    h, w, b, t = make_inputs(shape=(4,), hidden=3, vocab=7)
    with pytest.raises(ValueError) as excinfo:
        fused_linear_shaped_cross_entropy(h, w, t, bias=b, **kwargs)
    assert needle in str(excinfo.value) and "\n" not in str(excinfo.value)
