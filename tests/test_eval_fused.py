"""Evaluation statistics through the fused per-token head (`eval.text`, `readiness.signals`) against
the unfused computation on full logits, on a tiny float64 model with a character tokenizer.

    PYTHONPATH=src OMP_NUM_THREADS=1 python -m pytest -q tests/test_eval_fused.py
"""

from __future__ import annotations

import torch

from shapedce.eval.text import token_entropies
from shapedce.readiness.signals import FORKING_THRESHOLD, solution_coverage
from shapedce.tasks import Prompt
from test_hf_families import build


class CharTokenizer:
    """Bytes 32..126 -> ids 1..95; 0 is padding."""

    pad_token_id = 0

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [min(max(ord(c) - 31, 1), 95) for c in text]}


def full_logits_stats(model, ids, mask, tail_k):
    """The unfused reference: full logits, log_softmax, gather (what eval.text did before)."""
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    logp = torch.log_softmax(logits, -1)
    keep = mask[:, 1:].bool()
    ce = -logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    p = logp.exp()
    ent = -(p * logp).sum(-1)
    tail = (1.0 - p.topk(tail_k, dim=-1).values.sum(-1)).clamp_min(0.0)
    return ce[keep], ent[keep], tail[keep]


def test_token_entropies_match_full_logits():
    model = build("qwen3")
    docs = ["hello world, a test", "short", "x", "another document of another length!"]
    ce, ent, tail = token_entropies(model, CharTokenizer(), docs, batch_size=3, tail_k=5)
    tok = CharTokenizer()
    encoded = [tok(d)["input_ids"] for d in docs if len(d) >= 2]
    parts = []
    for start in range(0, len(encoded), 3):
        chunk = encoded[start : start + 3]
        width = max(map(len, chunk))
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(chunk):
            ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
        with torch.no_grad():
            parts.append(full_logits_stats(model, ids, mask, 5))
    for got, i in ((ce, 0), (ent, 1), (tail, 2)):
        want = torch.cat([p[i] for p in parts]).double()
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)


def test_solution_coverage_matches_full_logits():
    model = build("qwen3")
    tok = CharTokenizer()
    prompts = [
        Prompt(task="t", text="2+2=", answer="4", uid="a", meta={"solution": " 2+2 is 4"}),
        Prompt(task="t", text="capital?", answer="Paris", uid="b"),
        Prompt(task="t", text="q", answer="yes", uid="c", meta={"solution": ""}),
    ]
    got = solution_coverage(model, tok, prompts, ks=(1, 5, 20), batch_size=2)
    hits, nll, ent, fork, count = {1: 0, 5: 0, 20: 0}, 0.0, 0.0, 0, 0
    for p in prompts:
        h = tok(p.text)["input_ids"]
        t = tok(p.meta.get("solution") or " " + p.answer, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            z = model(input_ids=torch.tensor([h + t])).logits[0, len(h) - 1 : len(h) + len(t) - 1]
        x = torch.tensor(t)
        above = (z > z.gather(1, x[:, None])).sum(1)
        for k in hits:
            hits[k] += int((above < k).sum())
        logp = torch.log_softmax(z, -1)
        h_tok = -(logp.exp() * logp).sum(-1)
        nll += float(-logp.gather(1, x[:, None]).sum())
        ent += float(h_tok.sum())
        fork += int((h_tok > FORKING_THRESHOLD).sum())
        count += len(t)
    assert got["tokens"] == count
    assert got["coverage"] == {str(k): v / count for k, v in hits.items()}
    assert abs(got["nll"] - nll / count) < 1e-9 and abs(got["entropy"] - ent / count) < 1e-9
    assert got["forking_share"] == fork / count
