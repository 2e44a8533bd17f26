"""Per-row pieces shared by the reference and the fused loss: input checks, the top-k set, the
ground-truth weight w, the negative-channel sum S and the statistics vector.

Everything here works on row statistics (one value per position), or on one chunk's [C, V]
buffer (`negative_sums`), never on [N, V] logits, which is what lets the fused path stay chunked.
Not a public module: use `shapedce.loss`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import UserError

STAT_NAMES = (
    "ce",
    "entropy",
    "topk_mass",
    "tail_mass",
    "target_in_topk",
    "w_mean",
    "grad_diff_sq",
    "grad_ce_sq",
)
"""Per-token means returned with `return_stats=True` (merged across micro-batches by token weight),
beside "w_max", "grad_shift" (see `grad_shift_rows`) and "tokens" (the count they average)."""

MAX_STAT_NAMES = ("w_max",)
"""Statistics that are maxima over the non-ignored rows (0 for an empty batch; w > 0 always)."""


def check_targets(
    targets: Tensor, expected_shape: torch.Size, vocab: int, ignore_index: int, what: str
) -> None:
    """One-line ValueErrors for the target tensor (shape, dtype, range)."""
    if targets.dtype.is_floating_point or targets.dtype == torch.bool or targets.is_complex():
        raise UserError(f"targets must be an integer tensor; got dtype {targets.dtype}")
    if targets.shape != expected_shape:
        raise UserError(
            f"targets shape {tuple(targets.shape)} must equal {what} shape "
            f"without its last dim {tuple(expected_shape)}"
        )
    bad = ((targets < 0) | (targets >= vocab)) & (targets != ignore_index)
    if bool(bad.any()):
        value = int(targets[bad].flatten()[0])
        raise UserError(f"targets must lie in [0, {vocab}) or equal ignore_index={ignore_index}; got {value}")


def check_token_weights(token_weights: Tensor | None, targets: Tensor) -> None:
    """One-line UserErrors unless token_weights is None or a finite float tensor of targets' shape."""
    if token_weights is None:
        return
    if not isinstance(token_weights, Tensor) or not token_weights.is_floating_point():
        kind = getattr(token_weights, "dtype", type(token_weights).__name__)
        raise UserError(f"token_weights must be a floating-point tensor; got {kind}")
    if token_weights.shape != targets.shape:
        raise UserError(
            f"token_weights shape {tuple(token_weights.shape)} must equal "
            f"targets shape {tuple(targets.shape)}"
        )
    if not bool(torch.isfinite(token_weights).all()):
        raise UserError("token_weights must be finite (no NaN or inf)")


def check_head(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, ignore_index: int
) -> int:
    """The fused paths' inputs: float hidden [..., H], weight [V, H], bias [V] or None, targets of
    hidden's leading shape in [0, V) or ignore_index. Returns V; one-line UserError otherwise."""
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
    return vocab


def check_float(t: Tensor, name: str) -> None:
    if not t.is_floating_point():
        raise UserError(f"{name} must be a floating-point tensor; got dtype {t.dtype}")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64 (gradcheck); everything else is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def top_k(z: Tensor, k: int) -> torch.return_types.topk | None:
    """Values and indices of each row's k largest logits, or None when k >= V (all are "top").

    K_t is exactly the k indices torch.topk returns (ties at the k-th value go either way, as
    docs/method/loss.md allows). Unsorted torch.topk is the cheapest exact way on CPU we measured: about 3-4
    exp() passes over the row, where torch.kthvalue costs ~16 (benchmarks/bench_loss.py --topk).
    """
    if k >= z.shape[-1]:
        return None
    return torch.topk(z, k, dim=-1, sorted=False)


def top_k_mask(z: Tensor, k: int) -> Tensor:
    """Boolean [N, V] membership of K_t (see `top_k`)."""
    top = top_k(z, k)
    if top is None:
        return torch.ones_like(z, dtype=torch.bool)
    return torch.zeros_like(z, dtype=torch.bool).scatter_(-1, top.indices, True)


def ground_truth_weight(log_p: Tensor, log_q: Tensor, beta: float) -> Tensor:
    """w = pi_x ** (1 - (1 - pi_x) ** beta), given log pi_x and log(1 - pi_x); float64 result.

    Written as log w = s * expm1(beta * log_q) with s = -log pi_x, which is exact at both ends:
    - pi_x -> 0 (log_q -> 0): w -> 1, no 0 * inf.
    - pi_x -> 1 (log_q -> -inf): for beta < 0 the factor (1 - pi_x) ** beta blows up while s
      vanishes; the product is taken in log space, log w = exp(log s + beta * log_q) - s, with
      log s ~ log_q when pi_x is that close to 1. At pi_x == 1 exactly the limit is used:
      w = e for beta == -1, else w = 1.
    """
    log_p = log_p.double()
    log_q = log_q.double()
    if beta == 0:
        return torch.ones_like(log_p)
    if beta == float("inf"):  # DFT: w = pi_x
        return log_p.exp()
    near_one = log_q < -0.6931  # pi_x > 1/2: take s from log_q, where it is exact
    s = torch.where(near_one, -torch.log1p(-log_q.exp()), -log_p).clamp_min(0)
    log_s = torch.where(log_q < -30, log_q, s.log())  # s = q + q^2/2 + ...; log s -> log q
    t = beta * log_q
    safe_t = torch.where(t > 30, 0.0, t)  # keep expm1 finite where the other branch is taken
    log_w = torch.where(t > 30, (log_s + t).exp() - s, s * torch.expm1(safe_t))
    limit = 1.0 if beta == -1 else 0.0
    log_w = torch.where(torch.isneginf(log_q), limit, log_w)
    return log_w.exp()


def negative_sum(
    p_x: Tensor, mass_top: Tensor, x_in_top: Tensor, lambda_top: float, lambda_tail: float
) -> Tensor:
    """S = sum_a lam_a pi_a over the negatives a != x, from the top-k mass and the target's place."""
    top_neg = mass_top - torch.where(x_in_top, p_x, 0.0)
    tail_neg = (1.0 - mass_top) - torch.where(x_in_top, 0.0, p_x)
    return lambda_top * top_neg + lambda_tail * tail_neg


def negative_sums(e: Tensor, top, sum_neg: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For e whose target entry is zeroed: per row, the sums of e_j and of e_j^2 over the top-k set
    and over the rest (the tail). Float64 [C] each; for the statistics only.

    The top-k entries are zeroed for the tail's pass and put back (exact), so the tail's sums are
    taken directly, not as differences of nearly equal sums. Rows whose negatives are tiny
    (sum_neg < 2**-20, i.e. pi_x > 1 - 1e-6) would square into float32 denormals: those rows are
    redone on a copy scaled by a power of two (exact) and the sums scaled back."""
    top_i = None if top is None else top.indices
    out = _sums(e, top_i)
    tiny = (sum_neg < 2.0**-20).nonzero().squeeze(1)
    if tiny.numel():
        exp2 = torch.floor(-torch.log2(sum_neg[tiny])).clamp(max=126.0)
        scaled = e.index_select(0, tiny) * torch.exp2(exp2).unsqueeze(1)
        fix = torch.exp2(-exp2.double())
        redone = _sums(scaled, None if top_i is None else top_i.index_select(0, tiny))
        a0, a1, a2, a3 = (a.index_copy(0, tiny, b * f) for a, b, f in zip(out, redone, (fix, fix * fix) * 2))
        out = (a0, a1, a2, a3)
    return out


def _sums(e: Tensor, top_indices: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if top_indices is None:  # k >= V: everything is "top"
        sq = torch.linalg.vector_norm(e, dim=1).double().square()
        zero = torch.zeros_like(sq)
        return e.sum(1).double(), sq, zero, zero
    e_top = e.gather(1, top_indices)
    e.scatter_(1, top_indices, 0.0)
    tail, tail_sq = e.sum(1).double(), torch.linalg.vector_norm(e, dim=1).double().square()
    e.scatter_(1, top_indices, e_top)
    e_top = e_top.double()
    return e_top.sum(1), e_top.square().sum(1), tail, tail_sq


def grad_shift_rows(
    log_p: Tensor,
    log_q: Tensor,
    w: Tensor,
    s: Tensor,
    sq_top: Tensor,
    sq_tail: Tensor,
    lambda_top: float,
    lambda_tail: float,
) -> tuple[Tensor, Tensor]:
    """Per row, ||g_shaped - g_ce||^2 and ||g_ce||^2 of the logit gradients, float64, from row statistics.

    g_ce_j = pi_j - 1[j=x] is cross-entropy's gradient, g_shaped_j = pi_j (w + S - lam_j) - w 1[j=x]
    the shaped loss's (docs/method/loss.md, lam_x = 0). Their difference is
        j = x:        (w - 1)(pi_x - 1) + pi_x S    = -(w - 1) q + pi_x S      (q = 1 - pi_x)
        j in K, != x: pi_j (w + S - 1 - lambda_top) = pi_j a_top
        j not in K:   pi_j (w + S - 1 - lambda_tail) = pi_j a_tail
    so with P_top = sum_{j in K, j != x} pi_j^2 and P_tail = sum_{j not in K, j != x} pi_j^2 (inputs
    `sq_top`, `sq_tail`):
        ||g_shaped - g_ce||^2 = (pi_x S - (w - 1) q)^2 + a_top^2 P_top + a_tail^2 P_tail
        ||g_ce||^2            = q^2 + P_top + P_tail
    Five numbers per row, no [N, V] work. q comes from log(1 - pi_x) (exact as pi_x -> 1); with the
    knobs at zero every difference term is exactly 0.
    """
    p_x, q = log_p.double().exp(), log_q.double().exp()
    w, s = w.double(), s.double()
    sq_top, sq_tail = sq_top.double(), sq_tail.double()
    a_top, a_tail = w + s - 1.0 - lambda_top, w + s - 1.0 - lambda_tail
    diff = (p_x * s - (w - 1.0) * q).square() + a_top.square() * sq_top + a_tail.square() * sq_tail
    return diff, q.square() + sq_top + sq_tail


def stats_sums(
    log_p: Tensor,
    entropy: Tensor,
    mass_top: Tensor,
    x_in_top: Tensor,
    w: Tensor,
    diff_sq: Tensor,
    ce_sq: Tensor,
) -> Tensor:
    """Sums over rows of the STAT_NAMES quantities, then the MAX_STAT_NAMES maxima: float64 [9]."""
    mass_top, w = mass_top.double(), w.double()
    w_max = w.max() if w.numel() else w.new_zeros(())
    return torch.stack(
        [
            -log_p.double().sum(),
            entropy.double().sum(),
            mass_top.sum(),
            (1.0 - mass_top).sum(),
            x_in_top.double().sum(),
            w.sum(),
            diff_sq.double().sum(),
            ce_sq.double().sum(),
            w_max,
        ]
    )


def empty_stats(device) -> Tensor:
    return torch.zeros(len(STAT_NAMES) + len(MAX_STAT_NAMES), dtype=torch.float64, device=device)


def add_stats(acc: Tensor, part: Tensor) -> None:
    """In place: acc <- acc + part for the sums, max(acc, part) for the maxima."""
    n = len(STAT_NAMES)
    acc[:n] += part[:n]
    torch.maximum(acc[n:], part[n:], out=acc[n:])


def stats_dict(sums: Tensor, tokens: int) -> dict[str, Tensor]:
    """Per-token means (0 for an empty batch), the maxima, grad_shift = sqrt(sum ||g_shaped - g_ce||^2 /
    sum ||g_ce||^2) (0 when the CE gradient is 0) and the token count, as detached 0-d tensors."""
    n = len(STAT_NAMES)
    means = sums[:n] / max(tokens, 1)
    wide = ("grad_diff_sq", "grad_ce_sq")  # squared norms can be ~1e-40: kept in float64
    out = {name: means[i] if name in wide else means[i].float() for i, name in enumerate(STAT_NAMES)}
    out.update({name: sums[n + i].float() for i, name in enumerate(MAX_STAT_NAMES)})
    diff, ce = sums[STAT_NAMES.index("grad_diff_sq")], sums[STAT_NAMES.index("grad_ce_sq")]
    out["grad_shift"] = torch.where(ce > 0, diff / ce.clamp_min(1e-300), 0.0).sqrt().float()
    out["tokens"] = torch.tensor(tokens, device=sums.device)
    return out
