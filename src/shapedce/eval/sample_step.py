"""One sampling step, with noise that depends only on (seed, prompt, sample, step, token id).

    from shapedce.eval.sample_step import counter_uniform, pick_tokens
    tokens, entropy, width = pick_tokens(logits, cfg, row_keys, step)   # cfg: temperature, top_p

Counter-based randomness (splitmix64 finalizer on int64 tensors) instead of a stateful generator:
a sequence's samples do not depend on batch composition, padding or device, so evaluation and RL
draw the same completions however prompts are split across calls or processes. `pick_tokens` does
temperature, nucleus (top-p) and Gumbel-max with that noise. Used by `shapedce.eval.sample`.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch


class StepSettings(Protocol):
    """What one step reads of a `shapedce.eval.sample.SamplingConfig`."""

    temperature: float
    top_p: float


# ----------------------------------------------------------------------------- counter-based RNG


def _s64(x: int) -> int:
    """A Python int as the signed int64 with the same low 64 bits."""
    x &= (1 << 64) - 1
    return x - (1 << 64) if x >= 1 << 63 else x


_GOLDEN = _s64(0x9E3779B97F4A7C15)
_MIX1 = _s64(0xBF58476D1CE4E5B9)
_MIX2 = _s64(0x94D049BB133111EB)


def _mix(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's finalizer, in place on a fresh int64 tensor (multiplication wraps mod 2**64).

    torch's >> is arithmetic, so each shift masks off the copied sign bits (a logical shift). In-place
    ops: out-of-place int64 ops on [B, V] cost ~2.5x more here (allocation of each temporary).
    """
    tmp = torch.empty_like(z)
    for shift, mult in ((30, _MIX1), (27, _MIX2), (31, None)):
        torch.bitwise_right_shift(z, shift, out=tmp).bitwise_and_((1 << (64 - shift)) - 1)
        z.bitwise_xor_(tmp)
        if mult is not None:
            z.mul_(mult)
    return z


def _row_keys(seed: int, prompt_idx: torch.Tensor, sample_idx: torch.Tensor) -> torch.Tensor:
    """[B] int64 key per sequence: a hash of (seed, prompt index, sample index)."""
    z = _mix(torch.full_like(prompt_idx, _s64(seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019)))
    z = _mix(z + prompt_idx * _GOLDEN)
    return _mix(z + sample_idx * _GOLDEN)


def counter_uniform(row_keys: torch.Tensor, step: int, token_ids: torch.Tensor) -> torch.Tensor:
    """u in (0, 1), float32 [B, K]: a hash of (row key, step, token id); token_ids is [K] or [B, K]."""
    step_key = _mix(row_keys + _s64((step + 1) * 0x9E3779B97F4A7C15))  # [B]
    z = _mix(step_key[:, None] + token_ids * _GOLDEN)
    top24 = z.bitwise_right_shift_(40).bitwise_and_((1 << 24) - 1)  # the best-mixed bits
    return top24.add_(1).to(torch.float32).div_(float((1 << 24) + 1))


# ----------------------------------------------------------------------------- one step

NUCLEUS_GUESS = 256
"""First try the nucleus inside the top-256 tokens (torch.topk); sort the whole row only for the rows
whose nucleus is wider. Sorting [64, 151936] costs ~25x a top-256 on CPU."""


def _cut(vals: torch.Tensor, idx: torch.Tensor, lse: torch.Tensor, top_p: float):
    """(ids, scores with -inf outside the nucleus, kept count per row, the rows' total mass) of rows
    sorted largest first."""
    probs = (vals - lse).exp()
    cum = probs.cumsum(-1)
    keep = (cum - probs) < top_p  # mass before the token; the top token always stays
    return idx, vals.masked_fill(~keep, -math.inf), keep.sum(-1), cum[:, -1]


def _nucleus(
    z: torch.Tensor, top_p: float, guess: int, lse: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(token ids [B, K], scores [B, K] with -inf outside the nucleus) of scaled logits z [B, V].

    The nucleus keeps the most likely tokens whose probability mass before them is < top_p (at
    least one). K is the widest nucleus of the batch; the kept (id, score) pairs do not depend on
    `guess` (up to exact ties in z at a nucleus' edge, which either order may keep). Rows whose
    nucleus reaches past the top `guess` are sorted whole, the others keep their top-k. `lse`: the
    rows' logsumexp, when the caller has it.
    """
    vocab = z.shape[-1]
    lse = torch.logsumexp(z, -1, keepdim=True) if lse is None else lse
    if guess >= vocab:
        vals, idx = torch.sort(z, dim=-1, descending=True)
        idx, scores, kept, _ = _cut(vals, idx, lse, top_p)
        width = int(kept.max())
        return idx[:, :width], scores[:, :width]
    vals, idx = torch.topk(z, guess, dim=-1)  # largest first
    idx, scores, kept, mass = _cut(vals, idx, lse, top_p)
    wide = mass < top_p  # the nucleus may reach past the top `guess`: only these rows are sorted
    width = int(kept.max())
    if not bool(wide.any()):
        return idx[:, :width], scores[:, :width]
    rows = wide.nonzero().squeeze(1)
    s_vals, s_idx = torch.sort(z[rows], dim=-1, descending=True)
    s_idx, s_scores, s_kept, _ = _cut(s_vals, s_idx, lse[rows], top_p)
    width = max(width, int(s_kept.max()))
    return _merge(idx, scores, min(width, guess), rows, s_idx[:, :width], s_scores[:, :width], width)


def _merge(idx, scores, narrow: int, rows, r_idx, r_scores, width: int):
    """[B, width] ids and scores: the first `narrow` columns of (idx, scores), then rows `rows`
    replaced by (r_idx, r_scores) (at most `width` wide; -inf beyond)."""
    out_idx = torch.zeros(idx.shape[0], width, dtype=idx.dtype, device=idx.device)  # ids under -inf: unused
    out_scores = torch.full((idx.shape[0], width), -math.inf, dtype=scores.dtype, device=scores.device)
    out_idx[:, :narrow], out_scores[:, :narrow] = idx[:, :narrow], scores[:, :narrow]
    r_width = r_idx.shape[1]
    out_idx[rows, :r_width], out_scores[rows, :r_width] = r_idx, r_scores
    out_scores[rows, r_width:] = -math.inf
    return out_idx, out_scores


NUCLEUS_FIRST = 32
"""`_nucleus_first_try` takes the top 32 first: torch.topk of 32 of 8192 costs ~1/4 of 256 (a
tiny model's evaluation nuclei are mostly 1-10 tokens wide); its rows that need more go the plain way."""


def _nucleus_first_try(
    z: torch.Tensor, top_p: float, guess: int, first: int = NUCLEUS_FIRST
) -> tuple[torch.Tensor, torch.Tensor]:
    """`_nucleus(z, top_p, guess)` bit for bit, trying the top `first` tokens before.

    A row's try stands when its nucleus ends inside the top `first` and the last kept value differs
    from the next one: then its kept set is every token with a logit >= that value, which any sort
    or top-k keeps alike, with the same cumulative sums (the values, largest first, are the same
    sequence). The other rows (wider, or a tie at the edge that another top-k may break otherwise)
    go through `_nucleus(.., guess)` itself; the width K comes out the same as its own."""
    vocab = z.shape[-1]
    if first >= min(guess, vocab):
        return _nucleus(z, top_p, guess)
    lse = torch.logsumexp(z, -1, keepdim=True)
    vals, idx = torch.topk(z, first, dim=-1)  # largest first
    idx, scores, kept, mass = _cut(vals, idx, lse, top_p)
    inside = kept < first
    last = vals.gather(1, (kept - 1)[:, None]).squeeze(1)
    after = vals.gather(1, kept.clamp(max=first - 1)[:, None]).squeeze(1)
    redo = (mass < top_p) | ~inside | (after == last)
    if not bool(redo.any()):
        width = int(kept.max())
        return idx[:, :width], scores[:, :width]
    rows = redo.nonzero().squeeze(1)
    r_idx, r_scores = _nucleus(z[rows], top_p, guess, lse[rows])
    stays = kept[~redo]
    width = max(r_idx.shape[1], int(stays.max()) if stays.numel() else 1)
    return _merge(idx, scores, min(width, first), rows, r_idx, r_scores, width)


def pick_tokens(
    logits: torch.Tensor,
    cfg: StepSettings,
    row_keys: torch.Tensor,
    step: int,
    guess: int = NUCLEUS_GUESS,
    first: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(tokens [B], entropy [B], nucleus width) from raw float32 logits [B, V]: temperature, top-p,
    Gumbel-max with counter-based noise. `guess` (top tokens tried before a sort) and `first` (try
    the top NUCLEUS_FIRST before that) change speed only."""
    entropy = torch.special.entr(torch.softmax(logits, -1)).sum(-1)
    if cfg.temperature == 0:
        return logits.argmax(-1), entropy, 1
    z = logits / cfg.temperature
    if cfg.top_p < 1:
        cand, z = _nucleus_first_try(z, cfg.top_p, guess) if first else _nucleus(z, cfg.top_p, guess)
    else:
        cand = torch.arange(z.shape[-1], device=z.device)
    gumbel = counter_uniform(row_keys, step, cand).log_().neg_().log_().neg_()  # -log(-log u)
    best = (z + gumbel).argmax(-1)
    tokens = cand.expand_as(z).gather(1, best[:, None]).squeeze(1)
    return tokens, entropy, z.shape[-1]
