"""The fused per-token head (`shapedce.loss.token_head`) against full logits, in float64.

    PYTHONPATH=src python -m pytest -q tests/test_token_head.py      # CPU, a few seconds

Values and gradients (per-token upstream gradients for log pi and entropy) across temperature,
softcap and logit scale, bias, ignored positions, odd shapes and chunk sizes, extreme logits; the
evaluation extras (tail mass, rank); autocast; errors.
"""

from __future__ import annotations

import pytest
import torch

from shapedce.errors import UserError
from shapedce.loss import token_head, token_head_reference

D = torch.float64


def transformed(h, w, b, logit_scale, softcap):
    z = h @ w.T + (0 if b is None else b)
    if softcap is None:
        return z * logit_scale
    return softcap * torch.tanh(z * logit_scale / softcap)


def make(n, hdim, vocab, seed=0, spread=1.0, bias=False):
    g = torch.Generator().manual_seed(seed)
    h = (torch.randn(n, hdim, generator=g, dtype=D) * spread).requires_grad_()
    w = (torch.randn(vocab, hdim, generator=g, dtype=D) * spread).requires_grad_()
    b = torch.randn(vocab, generator=g, dtype=D).requires_grad_() if bias else None
    t = torch.randint(0, vocab, (n,), generator=g)
    return h, w, b, t


def both(h, w, b, t, *, temperature=1.0, logit_scale=1.0, softcap=None, chunk=3, ignore=-100, tail_k=None):
    fused = token_head(
        h,
        w,
        t,
        bias=b,
        temperature=temperature,
        logit_scale=logit_scale,
        softcap=softcap,
        chunk_size=chunk,
        ignore_index=ignore,
        tail_k=tail_k,
        want_rank=True,
    )
    ref = token_head_reference(
        transformed(h, w, b, logit_scale, softcap),
        t,
        temperature=temperature,
        ignore_index=ignore,
        tail_k=tail_k,
    )
    return fused, ref


def grads(out, params, g_l, g_e):
    loss = (out.logp * g_l).sum() + (out.entropy * g_e).sum()
    return torch.autograd.grad(loss, [p for p in params if p is not None], retain_graph=True)


CASES = [
    dict(),
    dict(temperature=0.7),
    dict(temperature=1.3, logit_scale=0.5),
    dict(softcap=3.0),
    dict(softcap=2.0, logit_scale=1.7, temperature=0.6),
]


@pytest.mark.parametrize("shape", CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_values_and_gradients_match_full_logits(shape, bias):
    h, w, b, t = make(11, 5, 13, seed=1, bias=bias)
    t[[2, 7]] = -100  # ignored positions
    fused, ref = both(h, w, b, t, tail_k=4, **shape)
    for name in ("logp", "entropy", "tail_mass", "rank"):
        torch.testing.assert_close(getattr(fused, name), getattr(ref, name), rtol=1e-10, atol=1e-12)
    assert fused.logp[2] == 0 and fused.entropy[7] == 0
    g = torch.Generator().manual_seed(5)
    g_l, g_e = torch.randn(11, generator=g, dtype=D), torch.randn(11, generator=g, dtype=D)
    for a, r in zip(grads(fused, (h, w, b), g_l, g_e), grads(ref, (h, w, b), g_l, g_e)):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-11)
    gh = grads(fused, (h,), g_l, g_e)[0]
    assert gh[2].abs().max() == 0 and gh[7].abs().max() == 0  # ignored rows get no gradient


@pytest.mark.parametrize("chunk", [1, 4, 64, None])
def test_odd_shapes_and_chunks(chunk):
    g = torch.Generator().manual_seed(3)
    h = torch.randn(2, 7, 6, generator=g, dtype=D, requires_grad=True)  # [B, T, H]
    w = torch.randn(17, 6, generator=g, dtype=D, requires_grad=True)
    t = torch.randint(0, 17, (2, 7), generator=g)
    t[1, 5:] = -1
    fused = token_head(h, w, t, chunk_size=chunk, ignore_index=-1, temperature=0.9)
    ref = token_head_reference(h @ w.T, t, ignore_index=-1, temperature=0.9)
    assert fused.logp.shape == (2, 7) and fused.tail_mass is None and fused.rank is None
    torch.testing.assert_close(fused.logp, ref.logp, rtol=1e-10, atol=1e-12)
    g_l = torch.randn(2, 7, generator=g, dtype=D)
    for a, r in zip(grads(fused, (h, w), g_l, 0 * g_l), grads(ref, (h, w), g_l, 0 * g_l)):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-11)


def test_gradcheck_both_outputs():
    h, w, b, t = make(5, 3, 7, seed=4, bias=True)
    t[1] = -100

    def f(h, w, b):
        out = token_head(h, w, t, bias=b, temperature=0.8, softcap=2.5, logit_scale=1.2, chunk_size=2)
        return out.logp, out.entropy

    assert torch.autograd.gradcheck(f, (h, w, b))


def test_extreme_logits_stay_finite_and_exact():
    """Logits spread by 1e3: pi_x is 0 or 1 in floating point; logp, entropy and gradients stay exact."""
    h, w, _, t = make(9, 4, 11, seed=7, spread=30.0)
    fused, ref = both(h, w, None, t, chunk=4)
    assert torch.isfinite(fused.logp).all() and torch.isfinite(fused.entropy).all()
    torch.testing.assert_close(fused.logp, ref.logp, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(fused.entropy, ref.entropy, rtol=1e-8, atol=1e-10)
    ones = torch.ones(9, dtype=D)
    for a, r in zip(grads(fused, (h, w), ones, ones), grads(ref, (h, w), ones, ones)):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, r, rtol=1e-8, atol=1e-8)


def test_float32_close_to_float64_and_no_grad_path():
    h, w, _, t = make(33, 8, 257, seed=2)
    fused64 = token_head(h, w, t, tail_k=10)
    with torch.no_grad():
        fused32 = token_head(h.float(), w.float(), t, tail_k=10, chunk_size=8)
    assert fused32.logp.dtype == torch.float32 and not fused32.logp.requires_grad
    torch.testing.assert_close(fused32.logp.double(), fused64.logp.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused32.tail_mass.double(), fused64.tail_mass, rtol=1e-5, atol=1e-6)


def test_autocast_bf16_gemm_float32_statistics():
    h, w, _, t = make(16, 8, 64, seed=9)
    h32, w32 = h.detach().float().requires_grad_(), w.detach().float().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = token_head(h32, w32, t)
    assert out.logp.dtype == torch.float32
    ref = token_head_reference((h32.bfloat16() @ w32.bfloat16().T).float(), t)
    torch.testing.assert_close(out.logp, ref.logp, rtol=1e-4, atol=1e-4)
    out.logp.sum().backward()
    assert w32.grad is not None and w32.grad.dtype == torch.float32 and torch.isfinite(w32.grad).all()


def test_tail_k_at_least_vocab_and_errors():
    h, w, _, t = make(4, 3, 5, seed=0)
    out = token_head(h, w, t, tail_k=5)
    assert torch.equal(out.tail_mass, torch.zeros(4, dtype=D))
    with pytest.raises(UserError, match="temperature"):
        token_head(h, w, t, temperature=0.0)
    with pytest.raises(UserError, match="targets"):
        token_head(h, w, t[:3])
    with pytest.raises(UserError, match="weight must be"):
        token_head(h, w[:, :2], t)
    empty = token_head(h, w, torch.full((4,), -100))
    assert torch.equal(empty.logp, torch.zeros(4, dtype=D))
    empty.logp.sum().backward()
    assert h.grad.abs().max() == 0
