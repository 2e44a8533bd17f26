"""Held-out text statistics of a causal LM: perplexity and the per-token entropy distribution.

    from shapedce.eval.text import text_stats
    stats = text_stats(model, tokenizer, docs, max_tokens=20000)
    stats["ppl"], stats["entropy_mean"], stats["forking_share"], stats["entropy_hist"]

Each document is scored on its own (BOS-free, as the training data is packed), in batches of
right-padded sequences. Per position: CE = -log pi(x_t) and the entropy H(pi(. | x_<t)) of the
whole next-token distribution. "Forking" tokens are the high-entropy ones (entropy above
`forking_threshold` nats, default 1.0): the positions where a sampled continuation can branch,
which the paper's exploration argument is about. The histogram has fixed edges so runs compare.
`tail_mass` is the probability outside each position's top-`tail_k` tokens (k = 100 as in the
paper's rank-aware reward), the mass the tail-suppression setting pushes down. All three come from
the fused per-token head (`shapedce.hf.tokens`): no [batch, T, V] logits are held.
"""

from __future__ import annotations

import math

import torch

from ..errors import UserError
from ..hf.tokens import lm_token_head

HIST_EDGES = [0.0, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0]
"""Entropy histogram bin edges in nats (the last bin is open-ended)."""


@torch.inference_mode()
def token_entropies(
    model,
    tokenizer,
    docs: list[str],
    *,
    max_tokens: int = 20000,
    batch_size: int = 8,
    max_len: int = 512,
    tail_k: int = 100,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ce, entropy, tail mass beyond the top `tail_k`) per scored token, float64 1-d tensors, over
    the first `max_tokens` tokens."""
    model.eval()
    device = next(model.parameters()).device
    ces, ents, tails, total = [], [], [], 0
    encoded = [tokenizer(d, add_special_tokens=False)["input_ids"][:max_len] for d in docs]
    encoded = [ids for ids in encoded if len(ids) >= 2]
    for start in range(0, len(encoded), batch_size):
        if total >= max_tokens:
            break
        chunk = encoded[start : start + batch_size]
        width = max(len(ids) for ids in chunk)
        ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, row in enumerate(chunk):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        ids, mask = ids.to(device), mask.to(device)
        keep = mask[:, 1:].bool()
        target = ids[:, 1:].masked_fill(~keep, -100)
        target = torch.nn.functional.pad(target, (0, 1), value=-100)  # the last position predicts nothing
        out = lm_token_head(model, ids, mask, target, tail_k=tail_k)
        ce, ent, tail = (-out.logp[:, :-1], out.entropy[:, :-1], out.tail_mass[:, :-1])
        ces.append(ce[keep].double().cpu())
        ents.append(ent[keep].double().cpu())
        tails.append(tail[keep].double().cpu())
        total += int(keep.sum())
    if not ces:
        raise UserError("text_stats: no document has 2 or more tokens to score")
    return tuple(torch.cat(parts)[:max_tokens] for parts in (ces, ents, tails))


def text_stats(
    model,
    tokenizer,
    docs: list[str],
    *,
    max_tokens: int = 20000,
    forking_threshold: float = 1.0,
    batch_size: int = 8,
    tail_k: int = 100,
) -> dict:
    """Perplexity, entropy mean / percentiles / histogram, the forking-token share and the tail mass."""
    ce, ent, tail = token_entropies(
        model, tokenizer, docs, max_tokens=max_tokens, batch_size=batch_size, tail_k=tail_k
    )
    bins = torch.bucketize(ent, torch.tensor(HIST_EDGES[1:], dtype=torch.float64), right=True)
    counts = torch.bincount(bins, minlength=len(HIST_EDGES))  # bin i: [edge i, edge i+1), the last open
    q = torch.quantile(ent, torch.tensor([0.5, 0.8, 0.95], dtype=torch.float64)).tolist()
    return {
        "tokens": int(ce.numel()),
        "ce": float(ce.mean()),
        "ppl": float(math.exp(min(float(ce.mean()), 50.0))),
        "entropy_mean": float(ent.mean()),
        "entropy_p50": q[0],
        "entropy_p80": q[1],
        "entropy_p95": q[2],
        "forking_threshold": forking_threshold,
        "forking_share": float((ent > forking_threshold).double().mean()),
        "tail_k": tail_k,
        "tail_mass": float(tail.mean()),
        "entropy_hist": {"edges": HIST_EDGES, "counts": [int(c) for c in counts.tolist()]},
    }
