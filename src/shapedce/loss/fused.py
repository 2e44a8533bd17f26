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
- Under torch.no_grad / inference_mode (validation, evaluation) no gradient is made: one GEMM per
  chunk instead of three, the same values and stats bit for bit.
- token_weights w_t (one number per row) multiply each row's value and its row scale, so they enter
  the same in-place gradient; no [N, V] work or memory is added. The chunk loop is `chunks.py`.
- Logit transforms of some model families: z = softcap * tanh(s * (h W^T + b) / softcap)
  (Gemma 2/3 final-logit softcapping), or z = s * (h W^T + b) without a cap (`logit_scale` s:
  Cohere's logit_scale, Granite's 1 / logits_scaling). They are applied to each chunk right after
  its GEMM; the chain rule dz/d(hW^T+b) = s * (1 - tanh^2) multiplies the chunk's gradient before
  the backward GEMMs (s alone is folded into the row scale). With a softcap the factor 1 - tanh^2
  is kept in a second chunk buffer: twice the chunk memory, still never [N, V].
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import check_int, check_real
from .chunks import CHUNK_ELEMENTS, default_chunk_rows, grad_buffers, run_chunks
from .config import LossConfig, check_reduction
from .rows import check_head, check_token_weights, compute_dtype, stats_dict

__all__ = ["CHUNK_ELEMENTS", "default_chunk_rows", "fused_linear_shaped_cross_entropy"]


class _FusedLinearShapedCE(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, hidden, weight, bias, targets, token_weights, knobs, reduction, chunk, want_stats, cap, grad_on
    ):
        n_all = hidden.shape[0]
        valid = (targets != knobs.ignore_index).nonzero().squeeze(1)
        n = valid.numel()
        h, x = (
            (hidden, targets)
            if n == n_all
            else (hidden.index_select(0, valid), targets.index_select(0, valid))
        )
        cd = compute_dtype(hidden.dtype)
        tw = None if token_weights is None else token_weights.index_select(0, valid).to(cd)
        # grad_on: grad mode at the call (always off inside forward); under no_grad / inference_mode
        # (validation, evaluation) no gradient is made, and the values are the same bit for bit
        grads_now = grad_on and reduction != "none" and any(ctx.needs_input_grad[:3])
        needs = ctx.needs_input_grad[:3] if grads_now else (False, False, False)
        grad_h, grad_w, grad_b = grad_buffers(h, weight, bias, needs, cd)
        scale = 1.0 / max(n, 1) if reduction == "mean" else 1.0
        rows = torch.empty(n, dtype=cd, device=hidden.device)
        token = torch.empty(n, 2, dtype=cd, device=hidden.device) if want_stats else None
        stats = run_chunks(
            h,
            weight,
            bias,
            x,
            knobs,
            chunk,
            row_scale=scale if tw is None else tw * scale,  # w_t scales row t's gradient
            grad_h=grad_h,
            grad_w=grad_w,
            grad_b=grad_b,
            want_stats=want_stats,
            rows_out=rows,
            token_out=token,
            logit_scale=cap[0],
            softcap=cap[1],
        )
        if tw is not None:
            rows.mul_(tw)
        ctx.cap = cap
        ctx.knobs, ctx.reduction, ctx.chunk, ctx.n_all, ctx.dtypes = (
            knobs,
            reduction,
            chunk,
            n_all,
            (hidden.dtype, weight.dtype),
        )
        if reduction == "none":
            ctx.save_for_backward(h, weight, bias, x, valid, tw)
            loss = rows.new_zeros(n_all).index_copy_(0, valid, rows)
        else:
            ctx.save_for_backward(grad_h, grad_w, grad_b, valid)
            loss = rows.sum() * scale
        stats = stats if stats is not None else rows.new_zeros(0)
        if token is not None:
            token = rows.new_zeros(n_all, 2).index_copy_(0, valid, token)
        token = token if token is not None else rows.new_zeros(0, 2)
        ctx.mark_non_differentiable(stats, token)
        return loss, stats, token

    @staticmethod
    def backward(ctx, grad_loss, _grad_stats, _grad_token):
        if ctx.reduction == "none":
            h, weight, bias, x, valid, tw = ctx.saved_tensors
            grad_h, grad_w, grad_b = grad_buffers(
                h, weight, bias, ctx.needs_input_grad[:3], compute_dtype(h.dtype)
            )
            row_scale = grad_loss.index_select(0, valid).to(compute_dtype(h.dtype))
            run_chunks(
                h,
                weight,
                bias,
                x,
                ctx.knobs,
                ctx.chunk,
                row_scale=row_scale if tw is None else row_scale * tw,
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
        return grad_h, grad_w, grad_b, None, None, None, None, None, None, None, None


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
    token_weights: Tensor | None = None,
    token_stats: bool = False,
):
    """Reward-shaped loss of the logits of `hidden @ weight.T + bias` ([..., H] x [V, H]) against targets.

    The logits are z = softcap * tanh(logit_scale * (hidden @ weight.T + bias) / softcap), or
    logit_scale * (hidden @ weight.T + bias) when softcap is None (both must be finite and > 0).
    Knobs, reduction, token_weights and stats as in `shaped_cross_entropy` on z; the weights scale each
    row's gradient inside the chunk loop (one number per row, no extra [N, V] memory). `chunk_size` is
    the number of rows whose [rows, V] logits are held at once (default: about 2**23 logits per chunk).
    With `return_stats` and `token_stats=True` the stats also hold per-token `token_entropy` and
    `token_is_top1` (1.0 where the target has the largest logit), targets' shape, 0 at ignored positions.
    """
    knobs = LossConfig(
        beta=beta, lambda_top=lambda_top, lambda_tail=lambda_tail, k=k, ignore_index=ignore_index
    )
    check_reduction(reduction)
    check_real("logit_scale", logit_scale, 0.0, lo_open=True)
    if softcap is not None:
        check_real("softcap", softcap, 0.0, lo_open=True)
    vocab = check_head(hidden, weight, bias, targets, ignore_index)
    if chunk_size is not None:
        check_int("chunk_size", chunk_size, 1)
    check_token_weights(token_weights, targets)

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
        loss, stats, token = _FusedLinearShapedCE.apply(
            h2,
            weight,
            bias,
            x,
            None if token_weights is None else token_weights.detach().reshape(-1),
            knobs,
            reduction,
            chunk,
            return_stats,
            (float(logit_scale), None if softcap is None else float(softcap)),
            torch.is_grad_enabled(),
        )
    if reduction == "none":
        loss = loss.reshape(targets.shape)
    if not return_stats:
        return loss
    out = stats_dict(stats, int((x != ignore_index).sum()))
    if token_stats:
        out["token_entropy"], out["token_is_top1"] = (t.reshape(targets.shape) for t in token.unbind(1))
    return loss, out
