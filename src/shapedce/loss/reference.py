"""The reward-shaped cross-entropy on given logits: the readable implementation.

    from shapedce.loss import shaped_cross_entropy
    loss = shaped_cross_entropy(logits, targets, beta=-0.25)               # "precision"
    loss, stats = shaped_cross_entropy(logits, targets, lambda_tail=-0.1, k=100, return_stats=True)

Per non-ignored position t with target x (docs/method/loss.md), everything in brackets detached:

    w      = [pi_x ** (1 - (1 - pi_x) ** beta)]
    lam_a  = [lambda_top if a in TopK(z, k) else lambda_tail],  lam_x = 0
    loss_t = -( w * log pi_x + sum_a lam_a * pi_a )

Autograd then yields the gradient of docs/method/loss.md -(w (1[j=x] - pi_j) + lam_j pi_j - pi_j S). This path
holds [N, V] float32 copies of the logits; use `fused_linear_shaped_cross_entropy` to avoid that.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError
from .config import check_knobs, check_reduction
from .rows import (
    check_float,
    check_targets,
    check_token_weights,
    compute_dtype,
    ground_truth_weight,
    stats_dict,
    stats_sums,
    top_k_mask,
)


def reduce_rows(rows: Tensor, n_valid: int, reduction: str) -> Tensor:
    if reduction == "none":
        return rows
    total = rows.sum()
    return total / max(n_valid, 1) if reduction == "mean" else total


def shaped_cross_entropy(
    logits: Tensor,
    targets: Tensor,
    *,
    beta: float = 0.0,
    lambda_top: float = 0.0,
    lambda_tail: float = 0.0,
    k: int = 100,
    ignore_index: int = -100,
    reduction: str = "mean",
    return_stats: bool = False,
    token_weights: Tensor | None = None,
):
    """Reward-shaped next-token loss on logits [..., V] and targets [...].

    `token_weights` ([...], float, finite; constants: no gradient reaches them) multiplies each
    position's loss: "mean" is then sum_t w_t * loss_t / (number of non-ignored positions), "sum" the
    weighted sum, "none" the weighted rows. The statistics stay unweighted (they describe pi).
    Returns the loss (a scalar, or [...] for reduction="none"; ignored positions give 0), or
    `(loss, stats)` with `return_stats=True`: per-token means of ce (-log pi_x), entropy,
    topk_mass, tail_mass, target_in_topk, w_mean and of the squared logit-gradient norms
    grad_diff_sq = ||g_shaped - g_ce||^2 and grad_ce_sq = ||g_ce||^2; w_max; grad_shift =
    sqrt(sum grad_diff_sq / sum grad_ce_sq) over the non-ignored rows; the token count "tokens".
    """
    check_knobs(beta, lambda_top, lambda_tail, k)
    check_reduction(reduction)
    check_float(logits, "logits")
    if logits.dim() < 1 or logits.shape[-1] < 1:
        raise UserError(f"logits must have shape [..., V] with V >= 1; got {tuple(logits.shape)}")
    vocab = logits.shape[-1]
    check_targets(targets, logits.shape[:-1], vocab, ignore_index, "logits")
    check_token_weights(token_weights, targets)

    z = logits.reshape(-1, vocab).to(compute_dtype(logits.dtype))
    x = targets.reshape(-1)
    valid = x != ignore_index
    x = torch.where(valid, x, 0).unsqueeze(1)

    log_pi = F.log_softmax(z, dim=-1)
    log_p = log_pi.gather(1, x).squeeze(1)  # log pi_x
    others = z.detach().scatter(1, x, float("-inf"))
    log_q = torch.logsumexp(others, -1) - torch.logsumexp(z.detach(), -1)  # log(1 - pi_x)
    w = ground_truth_weight(log_p.detach(), log_q, beta).to(z.dtype)
    rows = -w * log_p

    need_topk = lambda_top != 0 or lambda_tail != 0 or return_stats
    if need_topk:
        pi = log_pi.exp()
        in_top = top_k_mask(z.detach(), k)
        lam = (in_top.to(z.dtype) * (lambda_top - lambda_tail) + lambda_tail).scatter(1, x, 0.0)
        if lambda_top != 0 or lambda_tail != 0:
            rows = rows - (lam * pi).sum(-1)
    if token_weights is not None:
        rows = rows * token_weights.detach().reshape(-1).to(rows.dtype)
    rows = torch.where(valid, rows, 0.0)
    loss = reduce_rows(rows.reshape(targets.shape), int(valid.sum()), reduction)
    if not return_stats:
        return loss

    with torch.no_grad():
        v = valid
        pi = pi.detach()
        entropy = -(pi * log_pi.detach()).sum(-1)
        mass_top = (pi * in_top).sum(-1)
        x_in_top = in_top.gather(1, x).squeeze(1)
        # the two logit gradients written out over [N, V] (the fused pass uses row statistics)
        onehot = torch.zeros_like(pi).scatter_(1, x, 1.0)
        s = (lam * pi).sum(-1, keepdim=True)
        g_ce = pi - onehot
        g_shaped = pi * (w.unsqueeze(1) + s - lam) - w.unsqueeze(1) * onehot
        diff_sq, ce_sq = (g_shaped - g_ce).square().sum(-1), g_ce.square().sum(-1)
        sums = stats_sums(log_p.detach()[v], entropy[v], mass_top[v], x_in_top[v], w[v], diff_sq[v], ce_sq[v])
    return loss, stats_dict(sums, int(v.sum()))
