"""Fused, chunked linear + reward-shaped cross-entropy: the N x V logits never exist at once.

    from shapedce.loss import fused_linear_shaped_cross_entropy
    loss = fused_linear_shaped_cross_entropy(hidden, lm_head.weight, targets, beta=-0.25)
    loss.backward()

Same value and gradients as `shaped_cross_entropy(hidden @ weight.T + bias, targets, ...)`.
Design (the shape of Liger-Kernel's fused linear cross-entropy, written anew):
- Ignored positions are dropped first; the rest is processed in row chunks of [C, V] logits
  in reusable buffers. Per chunk, from one max / exp / sum pass, only row statistics are kept:
  log pi_x, log(1 - pi_x) (the sum over the negatives is taken with the target zeroed, so it is
  exact when pi_x ~ 1), and the C x k top-k values and indices when the negative channel or
  the stats need them.
- The gradient is produced during the forward pass. With S = sum_a lam_a pi_a,
      dloss/dz_j = pi_j * (w + S - lam_j) - w * 1[j = x]
  overwrites the chunk's buffer in place and goes straight into the two backward GEMMs
  (grad_hidden = g @ W, grad_W += g.T @ h). Backward only rescales by the incoming gradient.
  Three GEMMs in all, the same as an unfused linear + cross-entropy.
- reduction="none" cannot pre-reduce grad_W (each row has its own incoming gradient), so the
  forward only computes values and the backward recomputes the chunks with those scales.
- With lambda_top = lambda_tail = 0 and no stats, no top-k is computed at all.
- Logit transforms of some model families: z = softcap * tanh(s * (h W^T + b) / softcap)
  (Gemma 2/3 final-logit softcapping), or z = s * (h W^T + b) without a cap (`logit_scale` s:
  Cohere's logit_scale, Granite's 1 / logits_scaling). They are applied to each chunk right after
  its GEMM; the chain rule dz/d(hW^T+b) = s * (1 - tanh^2) multiplies the chunk's gradient before
  the backward GEMMs (s alone is folded into the row scale). With a softcap the factor 1 - tanh^2
  is kept in a second chunk buffer: twice the chunk memory, still never [N, V].
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor

from ..errors import UserError, check_int, check_real
from .config import LossConfig, check_reduction
from .rows import (
    add_stats,
    check_float,
    check_targets,
    compute_dtype,
    empty_stats,
    grad_shift_rows,
    ground_truth_weight,
    negative_sum,
    negative_sums,
    stats_dict,
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


def _chunk_rows(z: Tensor, x: Tensor, knobs: LossConfig, row_scale, want_grad: bool, want_stats: bool):
    """Loss rows (and stats sums) of one chunk of logits z [C, V].

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

    sums = None
    if want_stats:
        entropy = log_sum - torch.special.xlogy(e, e).sum(1) / sum_all
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
    return rows, sums


def _transform(z: Tensor, logit_scale: float, softcap: float | None, dcap: Tensor | None) -> None:
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


def _run_chunks(
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
        _transform(buf[:c], logit_scale, softcap, dcap)
        scale = row_scale[start:end] if isinstance(row_scale, Tensor) else row_scale
        if logit_scale != 1.0:
            scale = scale * logit_scale
        rows, sums = _chunk_rows(buf[:c], x[start:end], knobs, scale, want_grad, want_stats)
        if dcap is not None:
            buf[:c].mul_(dcap)
        if rows_out is not None:
            rows_out[start:end] = rows
        if sums is not None:
            add_stats(stats, sums)
        if want_grad:
            g = buf[:c].to(weight.dtype)
            if grad_h is not None:
                torch.mm(g, weight, out=grad_h[start:end])
            if grad_w is not None and grad_w.dtype == g.dtype:
                grad_w.addmm_(g.t(), hc)
            elif grad_w is not None:  # float32 accumulator for low-precision weights
                grad_w.add_(g.t() @ hc)
            if grad_b is not None:
                grad_b.add_(g.sum(0))
    return stats


def _grad_buffers(h, weight, bias, needs, cd):
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


class _FusedLinearShapedCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, knobs, reduction, chunk, want_stats, cap):
        n_all = hidden.shape[0]
        valid = (targets != knobs.ignore_index).nonzero().squeeze(1)
        n = valid.numel()
        h, x = (
            (hidden, targets)
            if n == n_all
            else (hidden.index_select(0, valid), targets.index_select(0, valid))
        )
        cd = compute_dtype(hidden.dtype)
        grads_now = reduction != "none" and any(ctx.needs_input_grad[:3])
        needs = ctx.needs_input_grad[:3] if grads_now else (False, False, False)
        grad_h, grad_w, grad_b = _grad_buffers(h, weight, bias, needs, cd)
        scale = 1.0 / max(n, 1) if reduction == "mean" else 1.0
        rows = torch.empty(n, dtype=cd, device=hidden.device)
        stats = _run_chunks(
            h,
            weight,
            bias,
            x,
            knobs,
            chunk,
            row_scale=scale,
            grad_h=grad_h,
            grad_w=grad_w,
            grad_b=grad_b,
            want_stats=want_stats,
            rows_out=rows,
            logit_scale=cap[0],
            softcap=cap[1],
        )
        ctx.cap = cap
        ctx.knobs, ctx.reduction, ctx.chunk, ctx.n_all, ctx.dtypes = (
            knobs,
            reduction,
            chunk,
            n_all,
            (hidden.dtype, weight.dtype),
        )
        if reduction == "none":
            ctx.save_for_backward(h, weight, bias, x, valid)
            loss = rows.new_zeros(n_all).index_copy_(0, valid, rows)
        else:
            ctx.save_for_backward(grad_h, grad_w, grad_b, valid)
            loss = rows.sum() * scale
        stats = stats if stats is not None else rows.new_zeros(0)
        ctx.mark_non_differentiable(stats)
        return loss, stats

    @staticmethod
    def backward(ctx, grad_loss, _grad_stats):
        if ctx.reduction == "none":
            h, weight, bias, x, valid = ctx.saved_tensors
            grad_h, grad_w, grad_b = _grad_buffers(
                h, weight, bias, ctx.needs_input_grad[:3], compute_dtype(h.dtype)
            )
            row_scale = grad_loss.index_select(0, valid).to(compute_dtype(h.dtype))
            _run_chunks(
                h,
                weight,
                bias,
                x,
                ctx.knobs,
                ctx.chunk,
                row_scale=row_scale,
                grad_h=grad_h,
                grad_w=grad_w,
                grad_b=grad_b,
                want_stats=False,
                rows_out=None,
                logit_scale=ctx.cap[0],
                softcap=ctx.cap[1],
            )
        else:
            grad_h, grad_w, grad_b, valid = ctx.saved_tensors
            if not bool(grad_loss == 1):
                grad_h, grad_w, grad_b = (
                    None if g is None else g * grad_loss.to(g.dtype) for g in (grad_h, grad_w, grad_b)
                )
        if grad_h is not None and valid.numel() != ctx.n_all:
            grad_h = grad_h.new_zeros(ctx.n_all, grad_h.shape[1]).index_copy_(0, valid, grad_h)
        hid_dtype, w_dtype = ctx.dtypes
        grad_h = None if grad_h is None else grad_h.to(hid_dtype)
        grad_w = None if grad_w is None else grad_w.to(w_dtype)
        grad_b = None if grad_b is None else grad_b.to(w_dtype)
        return grad_h, grad_w, grad_b, None, None, None, None, None, None


def fused_linear_shaped_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    bias: Tensor | None = None,
    beta: float = 0.0,
    lambda_top: float = 0.0,
    lambda_tail: float = 0.0,
    k: int = 100,
    ignore_index: int = -100,
    reduction: str = "mean",
    return_stats: bool = False,
    chunk_size: int | None = None,
    logit_scale: float = 1.0,
    softcap: float | None = None,
):
    """Reward-shaped loss of the logits of `hidden @ weight.T + bias` ([..., H] x [V, H]) against targets.

    The logits are z = softcap * tanh(logit_scale * (hidden @ weight.T + bias) / softcap), or
    logit_scale * (hidden @ weight.T + bias) when softcap is None (both must be finite and > 0).
    Knobs, reduction and stats as in `shaped_cross_entropy` on z. `chunk_size` is the number of rows
    whose [rows, V] logits are held at once (default: about 2**23 logits per chunk).
    """
    knobs = LossConfig(
        beta=beta, lambda_top=lambda_top, lambda_tail=lambda_tail, k=k, ignore_index=ignore_index
    )
    check_reduction(reduction)
    check_real("logit_scale", logit_scale, 0.0, lo_open=True)
    if softcap is not None:
        check_real("softcap", softcap, 0.0, lo_open=True)
    check_float(hidden, "hidden")
    check_float(weight, "weight")
    if weight.dim() != 2 or hidden.dim() < 1 or hidden.shape[-1] != weight.shape[1]:
        raise UserError(
            f"weight must be [V, H] with H = hidden.shape[-1]; "
            f"got hidden {tuple(hidden.shape)}, weight {tuple(weight.shape)}"
        )
    vocab = weight.shape[0]
    if bias is not None and tuple(bias.shape) != (vocab,):
        raise UserError(f"bias must have shape ({vocab},); got {tuple(bias.shape)}")
    check_targets(targets, hidden.shape[:-1], vocab, ignore_index, "hidden")
    if chunk_size is not None:
        check_int("chunk_size", chunk_size, 1)

    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):  # the GEMMs run in the autocast dtype, the softmax in float32
        dt = torch.get_autocast_dtype(device_type)
        hidden, weight = hidden.to(dt), weight.to(dt)
        bias = None if bias is None else bias.to(dt)
    dt = torch.promote_types(hidden.dtype, weight.dtype)
    if bias is not None:
        dt = torch.promote_types(dt, bias.dtype)
    hidden, weight = hidden.to(dt), weight.to(dt)
    bias = None if bias is None else bias.to(dt)

    h2 = hidden.reshape(-1, hidden.shape[-1])
    x = targets.reshape(-1)
    chunk = chunk_size or default_chunk_rows(h2.shape[0], vocab)
    with torch.autocast(device_type, enabled=False):
        loss, stats = _FusedLinearShapedCE.apply(
            h2,
            weight,
            bias,
            x,
            knobs,
            reduction,
            chunk,
            return_stats,
            (float(logit_scale), None if softcap is None else float(softcap)),
        )
    if reduction == "none":
        loss = loss.reshape(targets.shape)
    if not return_stats:
        return loss
    return loss, stats_dict(stats, int((x != ignore_index).sum()))
