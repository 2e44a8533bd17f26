"""Score sampled completions with a task's verifier; the shared pieces of eval, RL and readiness.

    from shapedce.eval.scoring import score_task, length_stats, default_text_docs
    summary, groups, lengths, finished = score_task(task, completions, prompts, ks=[1, 8])

`score_task` grades every sample through `Task.grade_many` (code tasks run their sandboxes in
parallel) and summarises them (`metrics.summarize`) with each prompt's correct count and the
response lengths.
"""

from __future__ import annotations

import statistics


def length_stats(lengths: list[int], finished: list[bool]) -> dict:
    """Mean / median / max response length in tokens and the share that ended with EOS."""
    return {
        "mean": statistics.fmean(lengths),
        "median": statistics.median(lengths),
        "max": max(lengths),
        "finished": sum(finished) / len(finished),
    }


def grade_groups(task, completions, prompts) -> list[list[tuple[str | None, bool]]]:
    """Per prompt, its samples' (normalised answer, correct) pairs."""
    pairs = [(c.text, prompt) for prompt, samples in zip(prompts, completions) for c in samples]
    graded = task.grade_many(pairs)
    out, i = [], 0
    for samples in completions:
        out.append(graded[i : i + len(samples)])
        i += len(samples)
    return out


def summary_of(groups, lengths: list[int], finished: list[bool], ks) -> dict:
    """`metrics.summarize` of the groups, with each prompt's correct count and the response lengths."""
    from .metrics import summarize

    summary = summarize(groups, ks)
    summary["correct_per_prompt"] = [sum(ok for _, ok in g) for g in groups]
    summary["response_length"] = length_stats(lengths, finished)
    return summary


def score_task(task, completions, prompts, ks):
    """(summary, groups of (normalised answer, correct), lengths, finished) of one task."""
    groups = grade_groups(task, completions, prompts)
    lengths = [c.num_tokens for samples in completions for c in samples]
    finished = [c.finished for samples in completions for c in samples]
    return summary_of(groups, lengths, finished, ks), groups, lengths, finished


BUILTIN_TEXTS = {"builtin-v2": "pretrain-v2"}
"""Names `--text` accepts for the built-in held-out validation sample, and its corpus."""


def default_text_docs(n: int = 400, text: str = "builtin-v2") -> list[str]:
    """The built-in held-out validation text (`text`: a key of BUILTIN_TEXTS) for perplexity and entropy."""
    from ..data.corpus import builtin_corpus

    return builtin_corpus(BUILTIN_TEXTS[text], n, seed=0, split="val")
