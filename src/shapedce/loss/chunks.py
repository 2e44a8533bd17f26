"""The chunk loop of the fused linear + shaped loss: per chunk of rows, the logits GEMM, the logit
transform, the row math that overwrites the chunk with its gradient, and the two backward GEMMs.

Not a public module: `shapedce.loss.fused` (its docstring derives the gradient) is the entry point.
Only row statistics and one [C, V] buffer (two with a softcap) exist at a time, never [N, V].
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor

from .config import LossConfig
from .rows import (
    add_stats,
    compute_dtype,
    empty_stats,
    grad_shift_rows,
    ground_truth_weight,
    negative_sum,
    negative_sums,
    stats_sums,
    top_k,
)

CHUNK_ELEMENTS = 1 << 23
"""Default chunk budget, in logits: C = CHUNK_ELEMENTS / V rows, rounded down to a power of two, at
least 128 (32-76 MiB of float32 logits). From the sweep of benchmarks/bench_loss.py --chunks on
2 CPU cores: at V=151936, 64 rows ran 1.3x slower than 128 (the lm-head weight is re-read per
chunk); beyond 256 rows at V=32768 time stayed flat while memory grew."""


def default_chunk_rows(n_rows: int, vocab: int) -> int:
    rows = max(128, 1 << max(0, (CHUNK_ELEMENTS // vocab).bit_length() - 1))
    return max(1, min(rows, n_rows))


XLOGX_ROWS = 32
"""Rows per block of `xlogx_row_sums`: a [32, V] temporary stays in cache, where one [C, V] result
(32 MiB at C = 1024, V = 8192) is written to memory and read back."""


def xlogx_row_sums(e: Tensor) -> Tensor:
    """sum_j xlogy(e_ij, e_ij) per row of e [C, V]: `torch.special.xlogy(e, e).sum(1)` bit for bit
    (each row's sum is the same reduction), XLOGX_ROWS rows at a time. ~2x faster at V = 8192."""
    rows = e.shape[0]
    out = torch.empty(rows, dtype=e.dtype, device=e.device)
    tmp = torch.empty(min(XLOGX_ROWS, rows), e.shape[1], dtype=e.dtype, device=e.device)
    for i in range(0, rows, XLOGX_ROWS):
        block, t = e[i : i + XLOGX_ROWS], tmp[: min(XLOGX_ROWS, rows - i)]
        torch.special.xlogy(block, block, out=t)
        torch.sum(t, 1, out=out[i : i + XLOGX_ROWS])
    return out


def chunk_rows(z: Tensor, x: Tensor, knobs: LossConfig, row_scale, want_grad: bool, want_stats: bool):
    """Loss rows, stats sums and per-row (entropy, is_top1) [C, 2] (both None without want_stats) of
    one chunk of logits z [C, V].

    Overwrites z with exp(z - max) and then, if want_grad, with dloss/dz * row_scale. The top-k
    set enters only through its C x k indices and values: its mass comes from the values, and
    the gradient's lam_j is applied by rescaling those k entries, so no [C, V] mask exists.
    """
    x1 = x.unsqueeze(1)
    z_x = z.gather(1, x1).squeeze(1)
    need_topk = knobs.uses_topk or want_stats
    top = top_k(z, knobs.k) if need_topk else None
    m = z.amax(1, keepdim=True)
    e = z.sub_(m).exp_()
    e_x = e.gather(1, x1)
    sum_neg = e.scatter_(1, x1, 0.0).sum(1)  # sum over negatives, exact even when pi_x ~ 1
    negatives = negative_sums(e, top, sum_neg) if want_stats else None
    e.scatter_(1, x1, e_x)
    sum_all = sum_neg + e_x.squeeze(1)
    log_sum = sum_all.log()
    log_p = z_x - m.squeeze(1) - log_sum  # log pi_x
    log_q = sum_neg.log() - log_sum  # log(1 - pi_x); -inf when pi_x == 1 in floating point
    p_x = log_p.exp()
    w64 = ground_truth_weight(log_p, log_q, cast(float, knobs.beta))  # a number here: auto is resolved
    w = w64.to(z.dtype)
    s = torch.zeros_like(w)
    if need_topk and top is None:  # k >= V: every token is in the top-k
        mass_top, x_in_top = torch.ones_like(w), torch.ones_like(w, dtype=torch.bool)
    elif need_topk:
        assert top is not None
        mass_top = (top.values - m).exp_().sum(1) / sum_all
        x_in_top = (top.indices == x1).any(1)
    if knobs.uses_topk:
        s = negative_sum(p_x, mass_top, x_in_top, knobs.lambda_top, knobs.lambda_tail)
    rows = -(w * log_p + s)

    sums = token = None
    if want_stats:
        entropy = log_sum - xlogx_row_sums(e) / sum_all
        assert negatives is not None
        top_sum, top_sq, tail_sum, tail_sq = negatives
        total = sum_all.double()
        # S again, from the negatives' own sums: exact to rounding even where pi_x ~ 1 (1 - mass_top is not)
        s_neg = (knobs.lambda_top * top_sum + knobs.lambda_tail * tail_sum) / total
        diff_sq, ce_sq = grad_shift_rows(
            log_p,
            log_q,
            w64,
            s_neg,
            top_sq / total.square(),
            tail_sq / total.square(),
            knobs.lambda_top,
            knobs.lambda_tail,
        )
        sums = stats_sums(log_p, entropy, mass_top, x_in_top, w64, diff_sq, ce_sq)
        top1 = (z_x >= m.squeeze(1)).to(entropy.dtype)  # the target is an arg max
        token = torch.stack([entropy, top1], 1)
    if want_grad:
        ws_ = w + s
        scale = (row_scale / sum_all).unsqueeze(1)
        if not knobs.uses_topk:
            e.mul_(ws_.unsqueeze(1) * scale)
        elif top is None:
            e.mul_((ws_ - knobs.lambda_top).unsqueeze(1) * scale)
        else:  # pi_j (w + S - lam_j): tail coefficient everywhere, then the k top entries
            e_top = e.gather(1, top.indices)
            e.mul_((ws_ - knobs.lambda_tail).unsqueeze(1) * scale)
            e.scatter_(1, top.indices, e_top * ((ws_ - knobs.lambda_top).unsqueeze(1) * scale))
        e.scatter_(1, x1, ((p_x * ws_ - w) * row_scale).unsqueeze(1))  # lam_x = 0
    return rows, sums, token


def transform(z: Tensor, logit_scale: float, softcap: float | None, dcap: Tensor | None) -> None:
    """In place: z <- softcap * tanh(logit_scale * z / softcap), or z * logit_scale without a cap.

    With a cap and `dcap` given, dcap <- 1 - tanh^2 (the cap's derivative, without logit_scale)."""
    if softcap is None:
        if logit_scale != 1.0:
            z.mul_(logit_scale)
        return
    z.mul_(logit_scale / softcap).tanh_()
    if dcap is not None:
        torch.mul(z, z, out=dcap).neg_().add_(1.0)
    z.mul_(softcap)


def run_chunks(
    h,
    weight,
    bias,
    x,
    knobs,
    chunk,
    *,
    row_scale,
    grad_h,
    grad_w,
    grad_b,
    want_stats,
    rows_out,
    token_out=None,
    logit_scale=1.0,
    softcap=None,
):
    """Loop over row chunks: logits GEMM, logit transform, row math, and (when grads are given) the
    two grad GEMMs."""
    n, vocab = h.shape[0], weight.shape[0]
    cd = compute_dtype(h.dtype)
    want_grad = grad_h is not None or grad_w is not None or grad_b is not None
    stats = empty_stats(h.device) if want_stats else None
    if n == 0:
        return stats
    buf = torch.empty(min(chunk, n), vocab, dtype=cd, device=h.device)  # reused: no fresh pages per chunk
    dbuf = torch.empty_like(buf) if softcap is not None and want_grad else None
    for start in range(0, n, chunk):
        end = min(start + chunk, n)
        c, hc = end - start, h[start:end]
        if h.dtype == cd and bias is None:
            torch.mm(hc, weight.t(), out=buf[:c])
        elif h.dtype == cd:
            torch.addmm(bias, hc, weight.t(), out=buf[:c])
        else:  # low precision GEMM, float32 softmax
            buf[:c].copy_(torch.nn.functional.linear(hc, weight, bias))
        dcap = None if dbuf is None else dbuf[:c]
        transform(buf[:c], logit_scale, softcap, dcap)
        scale = row_scale[start:end] if isinstance(row_scale, Tensor) else row_scale
        if logit_scale != 1.0:
            scale = scale * logit_scale
        rows, sums, token = chunk_rows(buf[:c], x[start:end], knobs, scale, want_grad, want_stats)
        if token_out is not None:
            token_out[start:end] = token
        if dcap is not None:
            buf[:c].mul_(dcap)
        if rows_out is not None:
            rows_out[start:end] = rows
        if sums is not None:
            add_stats(stats, sums)
        if want_grad:
            head_grads(buf[:c].to(weight.dtype), weight, hc, start, grad_h, grad_w, grad_b)
    return stats


def head_grads(g: Tensor, weight: Tensor, hc: Tensor, start: int, grad_h, grad_w, grad_b) -> None:
    """One chunk's share of the head's gradients from its dloss/dlogits g [C, V]: grad_h's rows
    start..start+C written, grad_w and grad_b accumulated (float32 accumulators for low precision)."""
    if grad_h is not None:
        torch.mm(g, weight, out=grad_h[start : start + g.shape[0]])
    if grad_w is not None and grad_w.dtype == g.dtype:
        grad_w.addmm_(g.t(), hc)
    elif grad_w is not None:
        grad_w.add_(g.t() @ hc)
    if grad_b is not None:
        grad_b.add_(g.sum(0))


def grad_buffers(h, weight, bias, needs, cd):
    need_h, need_w, need_b = needs
    acc = torch.float64 if cd == torch.float64 else torch.float32
    grad_h = torch.empty_like(h) if need_h else None
    grad_w = (
        torch.zeros(weight.shape, dtype=weight.dtype if weight.dtype == cd else acc, device=weight.device)
        if need_w
        else None
    )
    grad_b = torch.zeros(bias.shape, dtype=acc, device=bias.device) if need_b and bias is not None else None
    return grad_h, grad_w, grad_b
