"""Evaluation: pass@k, avg@m and cons@m over m samples per prompt (docs/method/evaluation.md).

    from shapedce.eval import pass_at_k, summarize
    summarize([[("7", True), ("8", False)], [(None, False), ("3", True)]])   # avg@2, cons@2, pass@1, pass@2

Tasks (prompts, answer extraction, verifiers) live in shapedce.tasks; `Task.grade` gives the
(answer, correct) pairs that `summarize` takes.
"""

from .metrics import avg_at_k, cons_at_k, majority_answer, pass_at_k, pass_at_k_curve, summarize

__all__ = ["avg_at_k", "cons_at_k", "majority_answer", "pass_at_k", "pass_at_k_curve", "summarize"]
