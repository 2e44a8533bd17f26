"""RL-readiness signals of one causal LM: what its sampling and its next-token distributions offer RL.

    from shapedce.readiness.signals import ReadinessSettings, compute_signals
    sig = compute_signals("runs/ce-mid", ReadinessSettings(tasks="knowledge,arith-small"))
    sig["tasks"]["knowledge"]["pass_at_k"], sig["tasks"]["knowledge"]["coverage"]["5"]
    sig["text"]["forking_share"]

Per task, on `problems` held-out test prompts (shapedce.tasks):
  - the Pass@k curve and Avg@m of `samples` completions at temperature 1.0, top-p 1.0 (what
    on-policy RL samples from, docs/method/pipeline.md), through shapedce.eval's sampler and verifiers;
  - teacher-forced on the reference continuation (the worked solution, meta["solution"], where
    the task has one, else " " + answer): top-k coverage = share of its tokens inside the model's
    top-k at their position (k = 1, 5, 20; ties at the k-th logit count as inside), their mean
    negative log-likelihood, mean entropy and forking share (entropy > 1 nat).
On held-out text (the built-in validation documents, or `text`): shapedce.eval.text's perplexity, entropy
distribution, forking-token share and tail mass.
Works on any Hugging Face causal LM directory with a fast tokenizer that has a pad token.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from ..errors import UserError
from ..eval.loading import load_model, resolve_model_dir
from ..eval.sample import SamplingConfig, sample
from ..eval.scoring import BUILTIN_TEXTS, default_text_docs, score_task
from ..eval.text import text_stats
from ..hf.tokens import lm_token_head
from ..tasks import Prompt, get_tasks
from .settings import ReadinessSettings as ReadinessSettings  # re-exported

COVERAGE_KS = (1, 5, 20)
FORKING_THRESHOLD = 1.0
"""Entropy (nats) above which a token counts as a "forking" token, as in shapedce.eval.text."""


def reference_continuation(prompt: Prompt) -> str:
    """The text a correct answer continues the prompt with: the worked solution, else the answer."""
    solution = prompt.meta.get("solution")
    return solution if solution else " " + prompt.answer


@torch.inference_mode()
def solution_coverage(model, tokenizer, prompts: list[Prompt], ks=COVERAGE_KS, batch_size: int = 16) -> dict:
    """Teacher-forced statistics of the reference continuations' tokens (pooled over prompts)."""
    device = next(model.parameters()).device
    pairs = []
    for p in prompts:
        head = tokenizer(p.text)["input_ids"]
        tail = tokenizer(reference_continuation(p), add_special_tokens=False)["input_ids"]
        if head and tail:
            pairs.append((head, tail))
    if not pairs:
        raise UserError("no prompt has a reference continuation that encodes to tokens")
    hits = {k: 0 for k in ks}
    nll, ent, forking, count = 0.0, 0.0, 0, 0
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        width = max(len(h) + len(t) for h, t in chunk)
        ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, (h, t) in enumerate(chunk):
            ids[i, : len(h) + len(t)] = torch.tensor(h + t)
            mask[i, : len(h) + len(t)] = 1
        target = torch.full_like(ids, -100)
        for i, (h, t) in enumerate(chunk):  # position len(h) - 1 + j predicts continuation token j
            target[i, len(h) - 1 : len(h) + len(t) - 1] = torch.tensor(t)
        out = lm_token_head(model, ids.to(device), mask.to(device), target.to(device), want_rank=True)
        keep = target != -100
        rank, logp, h_tok = (v.cpu()[keep] for v in (out.rank, out.logp, out.entropy))
        for k in ks:  # rank = tokens strictly more likely than the reference one
            hits[k] += int((rank < k).sum())
        nll += float(-logp.double().sum())
        ent += float(h_tok.double().sum())
        forking += int((h_tok > FORKING_THRESHOLD).sum())
        count += int(keep.sum())
    return {
        "tokens": count,
        "coverage": {str(k): hits[k] / count for k in ks},
        "nll": nll / count,
        "entropy": ent / count,
        "forking_share": forking / count,
    }


def text_docs(text: str) -> list[str]:
    """The held-out documents of `ReadinessSettings.text`: the built-in sample, or a local file's."""
    if text in BUILTIN_TEXTS:
        return default_text_docs(text=text)
    from ..data.packing import read_texts

    return read_texts(text)


def compute_signals(path: str | Path, settings: ReadinessSettings, device: str = "auto") -> dict:
    """Every readiness signal of the model at `path` (a run directory with final/, or a model dir)."""
    settings.validate()
    tasks = get_tasks(settings.tasks)
    model_dir = resolve_model_dir(path)
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    model, tokenizer = load_model(model_dir, dev)
    cfg = SamplingConfig(
        temperature=settings.temperature,
        top_p=1.0,
        max_new_tokens=settings.max_new_tokens,
        samples=settings.samples,
        seed=settings.seed,
    )
    out = {"model": str(model_dir), "settings": asdict(settings), "tasks": {}}
    for task in tasks:
        prompts = task.prompts("test", settings.problems, seed=settings.seed)
        completions = sample(model, tokenizer, [p.text for p in prompts], cfg)
        summary = score_task(task, completions, prompts, None)[0]
        out["tasks"][task.name] = {
            "avg_at_m": summary["avg_at_m"],
            "pass_at_k": summary["pass_at_k"],
            **solution_coverage(model, tokenizer, prompts),
        }
    out["text"] = text_stats(
        model,
        tokenizer,
        text_docs(settings.text),
        max_tokens=settings.text_tokens,
        forking_threshold=FORKING_THRESHOLD,
    )
    return out


def flatten(signals: dict, task: str) -> dict[str, float]:
    """The scalar signals compared across models: those of `task` and of the held-out text."""
    t = signals["tasks"][task]
    curve = t["pass_at_k"]
    m = max(curve, key=int)
    flat = {"pass@1": curve["1"], f"pass@{m}": curve[m], "pass@k headroom": curve[m] - curve["1"]}
    flat.update({f"top-{k} coverage": t["coverage"][str(k)] for k in COVERAGE_KS})
    flat.update(
        {
            "solution NLL": t["nll"],
            "solution entropy": t["entropy"],
            "solution forking share": t["forking_share"],
            "text entropy": signals["text"]["entropy_mean"],
            "text forking share": signals["text"]["forking_share"],
        }
    )
    return flat
