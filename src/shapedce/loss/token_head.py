"""Fused per-token head: log pi(target) and the entropy of pi per position, chunk by chunk; no N x V logits.

    from shapedce.loss import token_head
    out = token_head(hidden, lm_head.weight, targets, temperature=1.0)   # hidden [..., H], targets [...]
    out.logp, out.entropy                        # [...] each, differentiable (RL, entropy bonus)
    out = token_head(hidden, w, targets, tail_k=100, want_rank=True)      # evaluation extras, no grad
    out.tail_mass, out.rank

The logits are those of `shapedce.hf.heads.HeadSpec`, divided by the sampling temperature:
    z = softcap * tanh(logit_scale * (hidden @ W.T + b) / softcap) / temperature
(or logit_scale * (hidden @ W.T + b) / temperature without a cap). Per position, with pi = softmax(z):
    logp    = log pi_x = z_x - logsumexp(z)
    entropy = H(pi) = -sum_j pi_j log pi_j
    tail    = 1 - (mass of the `tail_k` largest pi_j)           (evaluation, no gradient)
    rank    = #{j : z_j > z_x}, tokens strictly more likely than the target (no gradient)
Positions whose target is `ignore_index` give 0 everywhere and get no gradient.

Backward takes one upstream gradient per position for logp (g) and for entropy (e) and recomputes
each chunk's logits (the row log-sum-exp and entropy are kept from the forward, [N] each):
    dL/dz_j = g (1[j = x] - pi_j) - e pi_j (log pi_j + H)
then the chain rule of the transform (1 / temperature, logit_scale, the cap's 1 - tanh^2, as in
`loss/fused.py`) and the two GEMMs grad_hidden = G @ W, grad_W += G.T @ hidden. Memory: one to
three [C, V] chunk buffers (C from `default_chunk_rows`), never [N, V]. Same chunking, dtype rules
(float32 softmax, float64 kept for tests; GEMMs in the autocast dtype) and logit transform as the
fused shaped loss. Tests: `PYTHONPATH=src python -m pytest -q tests/test_token_head.py`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..errors import check_int, check_real
from .chunks import default_chunk_rows, head_grads, xlogx_row_sums
from .chunks import transform as _transform
from .rows import check_head, compute_dtype


class TokenHeadOutput(NamedTuple):
    """Per-position outputs of `token_head`, shaped like the targets."""

    logp: Tensor
    """log pi(target), differentiable; 0 at ignored positions."""
    entropy: Tensor
    """H(pi) in nats, differentiable; 0 at ignored positions."""
    tail_mass: Tensor | None
    """Probability outside the top `tail_k` tokens (None unless `tail_k` is given); no gradient."""
    rank: Tensor | None
    """Count of tokens with a strictly larger logit than the target (None unless `want_rank`); no gradient."""


def _logits(h, weight, bias, cd, out, temperature, logit_scale, softcap, dcap):
    """out <- z of the chunk (see the module docstring); dcap <- 1 - tanh^2 when a cap and dcap are given."""
    if h.dtype == cd and bias is None:
        torch.mm(h, weight.t(), out=out)
    elif h.dtype == cd:
        torch.addmm(bias, h, weight.t(), out=out)
    else:  # low-precision GEMM, float32 softmax
        out.copy_(torch.nn.functional.linear(h, weight, bias))
    _transform(out, logit_scale, softcap, dcap)
    if temperature != 1.0:
        out.div_(temperature)


def _forward_chunk(z: Tensor, x: Tensor, tail_k: int | None, want_rank: bool):
    """Row statistics of one chunk of logits z [C, V] (z is overwritten)."""
    x1 = x.unsqueeze(1)
    z_x = z.gather(1, x1).squeeze(1)
    rank = (z > z_x.unsqueeze(1)).sum(1) if want_rank else None
    top = None
    if tail_k is not None and tail_k < z.shape[1]:
        top = torch.topk(z, tail_k, dim=1, sorted=False).values
    m = z.amax(1, keepdim=True)
    e = z.sub_(m).exp_()  # z - m is gone: log e_j = z_j - m below
    total = e.sum(1)
    log_total = total.log()
    lse = m.squeeze(1) + log_total
    entropy = log_total - xlogx_row_sums(e) / total  # xlogy(e, e).sum(1) bit for bit, in blocks
    tail = None
    if tail_k is not None:
        tail = (
            torch.zeros_like(total) if top is None else (1.0 - (top - m).exp_().sum(1) / total).clamp_min(0)
        )
    return z_x - lse, entropy, lse, tail, rank


def _chunks(n: int, chunk: int):
    for start in range(0, n, chunk):
        yield start, min(start + chunk, n)


class _TokenHead(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, shape, ignore_index, chunk, tail_k, want_rank):
        temperature, logit_scale, softcap = shape
        n_all = hidden.shape[0]
        valid = (targets != ignore_index).nonzero().squeeze(1)
        n = valid.numel()
        h, x = (
            (hidden, targets)
            if n == n_all
            else (hidden.index_select(0, valid), targets.index_select(0, valid))
        )
        cd = compute_dtype(hidden.dtype)
        logp, ent, lse = (torch.empty(n, dtype=cd, device=hidden.device) for _ in range(3))
        tail = torch.empty(n, dtype=cd, device=hidden.device) if tail_k is not None else None
        rank = torch.empty(n, dtype=torch.long, device=hidden.device) if want_rank else None
        if n:
            buf = torch.empty(min(chunk, n), weight.shape[0], dtype=cd, device=hidden.device)
            for start, end in _chunks(n, chunk):
                z = buf[: end - start]
                _logits(h[start:end], weight, bias, cd, z, temperature, logit_scale, softcap, None)
                parts = _forward_chunk(z, x[start:end], tail_k, want_rank)
                for out, part in zip((logp, ent, lse, tail, rank), parts):
                    if out is not None:
                        out[start:end] = part
            del buf
        ctx.save_for_backward(h, weight, bias, x, valid, lse, ent)
        ctx.shape, ctx.chunk, ctx.n_all = shape, chunk, n_all
        ctx.dtypes = (hidden.dtype, weight.dtype)

        def scatter(values, fill=0):
            if values is None:
                return torch.empty(0, dtype=cd, device=hidden.device)
            if n == n_all:
                return values
            return values.new_full((n_all,), fill).index_copy_(0, valid, values)

        outs = (scatter(logp), scatter(ent), scatter(tail), scatter(rank))
        ctx.mark_non_differentiable(outs[2], outs[3])
        return outs

    @staticmethod
    def backward(ctx, grad_logp, grad_ent, _grad_tail, _grad_rank):
        h, weight, bias, x, valid, lse, ent = ctx.saved_tensors
        temperature, logit_scale, softcap = ctx.shape
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        cd = compute_dtype(h.dtype)
        n = h.shape[0]
        if valid.numel() != ctx.n_all:
            grad_logp = grad_logp.index_select(0, valid)
            grad_ent = grad_ent.index_select(0, valid)
        g_l, g_e = grad_logp.to(cd), grad_ent.to(cd)
        with_entropy = bool(g_e.ne(0).any())
        acc = torch.float64 if cd == torch.float64 else torch.float32
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        grad_b = (
            torch.zeros(bias.shape, dtype=acc, device=bias.device) if need_b and bias is not None else None
        )
        if n and (need_h or need_w or need_b):
            rows = min(ctx.chunk, n)
            buf = torch.empty(rows, weight.shape[0], dtype=cd, device=h.device)
            pbuf = torch.empty_like(buf) if with_entropy else None
            dbuf = torch.empty_like(buf) if softcap is not None else None
            # d z / d (h W^T + b): 1 / temperature * logit_scale (* (1 - tanh^2) with a cap)
            factor = logit_scale / temperature
            for start, end in _chunks(n, ctx.chunk):
                c = end - start
                z, dcap = buf[:c], None if dbuf is None else dbuf[:c]
                _logits(h[start:end], weight, bias, cd, z, temperature, logit_scale, softcap, dcap)
                t = z.sub_(lse[start:end].unsqueeze(1))  # log pi
                gl, ge = g_l[start:end].unsqueeze(1), g_e[start:end].unsqueeze(1)
                if with_entropy:
                    p = torch.exp(t, out=pbuf[:c])
                    # G = -pi (g + e (log pi + H)), then + g at the target
                    t.add_(ent[start:end].unsqueeze(1)).mul_(ge).add_(gl).mul_(p).neg_()
                else:
                    t.exp_().mul_(gl).neg_()
                t.scatter_add_(1, x[start:end].unsqueeze(1), gl)
                t.mul_(factor)
                if dcap is not None:
                    t.mul_(dcap)
                head_grads(t.to(weight.dtype), weight, h[start:end], start, grad_h, grad_w, grad_b)
        if grad_h is not None and valid.numel() != ctx.n_all:
            grad_h = grad_h.new_zeros(ctx.n_all, grad_h.shape[1]).index_copy_(0, valid, grad_h)
        hid_dtype, w_dtype = ctx.dtypes
        grad_h = None if grad_h is None else grad_h.to(hid_dtype)
        grad_w = None if grad_w is None else grad_w.to(w_dtype)
        grad_b = None if grad_b is None else grad_b.to(w_dtype)
        return grad_h, grad_w, grad_b, None, None, None, None, None, None


def token_head(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    bias: Tensor | None = None,
    temperature: float = 1.0,
    logit_scale: float = 1.0,
    softcap: float | None = None,
    ignore_index: int = -100,
    tail_k: int | None = None,
    want_rank: bool = False,
    chunk_size: int | None = None,
) -> TokenHeadOutput:
    """Per-position log pi(target) and entropy of the logits of `hidden @ weight.T + bias` (see the module
    docstring for the transform), chunk by chunk; `tail_k` / `want_rank` add the evaluation extras."""
    check_real("temperature", temperature, 0.0, lo_open=True)
    check_real("logit_scale", logit_scale, 0.0, lo_open=True)
    if softcap is not None:
        check_real("softcap", softcap, 0.0, lo_open=True)
    if tail_k is not None:
        check_int("tail_k", tail_k, 1)
    if chunk_size is not None:
        check_int("chunk_size", chunk_size, 1)
    vocab = check_head(hidden, weight, bias, targets, ignore_index)
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):  # GEMMs in the autocast dtype, the softmax in float32
        dt = torch.get_autocast_dtype(device_type)
        hidden, weight = hidden.to(dt), weight.to(dt)
        bias = None if bias is None else bias.to(dt)
    dt = torch.promote_types(hidden.dtype, weight.dtype)
    if bias is not None:
        dt = torch.promote_types(dt, bias.dtype)
    hidden, weight = hidden.to(dt), weight.to(dt)
    bias = None if bias is None else bias.to(dt)
    h2, x = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
    chunk = chunk_size or default_chunk_rows(h2.shape[0], vocab)
    shape = (float(temperature), float(logit_scale), None if softcap is None else float(softcap))
    with torch.autocast(device_type, enabled=False):
        logp, ent, tail, rank = _TokenHead.apply(
            h2, weight, bias, x, shape, ignore_index, chunk, tail_k, want_rank
        )
    out_shape = targets.shape
    return TokenHeadOutput(
        logp.reshape(out_shape),
        ent.reshape(out_shape),
        tail.reshape(out_shape) if tail_k is not None else None,
        rank.reshape(out_shape) if want_rank else None,
    )


def token_head_reference(
    logits: Tensor,
    targets: Tensor,
    *,
    temperature: float = 1.0,
    ignore_index: int = -100,
    tail_k: int | None = None,
) -> TokenHeadOutput:
    """The same outputs from full [..., V] logits (already transformed, before the temperature): the
    readable definition the fused head is tested against."""
    z = logits / temperature
    logp_all = torch.log_softmax(z, -1)
    keep = targets != ignore_index
    x = torch.where(keep, targets, 0)
    logp = logp_all.gather(-1, x.unsqueeze(-1)).squeeze(-1)
    p = logp_all.exp()
    ent = -(p * logp_all).sum(-1)
    tail = None
    if tail_k is not None:
        tail = (1.0 - p.topk(min(tail_k, p.shape[-1]), dim=-1).values.sum(-1)).clamp_min(0.0)
        tail = torch.where(keep, tail, 0.0).detach()
    rank = torch.where(keep, (z > z.gather(-1, x.unsqueeze(-1))).sum(-1), 0)
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    return TokenHeadOutput(torch.where(keep, logp, zero), torch.where(keep, ent, zero), tail, rank)
