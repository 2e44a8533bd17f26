"""Sample-based evaluation metrics (docs/method/evaluation.md): pass@k, avg@m, cons@m, and their summary.

    from shapedce.eval.metrics import pass_at_k, pass_at_k_curve, summarize
    pass_at_k(n=16, c=3, k=4)              # unbiased: 1 - C(n-c, k) / C(n, k) = 0.6071...
    pass_at_k_curve(16, 3)                 # {1: 0.1875, 2: ..., 4: ..., 8: ..., 16: 1.0}
    summarize(groups)                      # groups: per prompt, m (answer, correct) pairs (Task.grade)

For each prompt draw m samples, c of them correct:
  avg@m    mean correctness over all samples (= pass@1 averaged over prompts).
  cons@m   the majority answer (normalised; None does not vote; ties go to the answer seen first)
           is correct, i.e. every sample giving it was verified correct.
  pass@k   chance that at least one of k samples drawn without replacement from the m is correct,
           1 - prod_{i=m-c+1..m} (1 - k / i): the product form of 1 - C(m-c, k) / C(m, k), no
           huge binomials; exactly 1 when m - c < k.
Pure Python, no torch. Averages over prompts weigh every prompt equally.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from ..errors import UserError, check_int


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021, product form)."""
    check_int("n", n, 1)
    check_int("c", c, 0, n)
    check_int("k", k, 1, n)
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def pass_at_k_curve(n: int, c: int) -> dict[int, float]:
    """pass@k for k = 1, 2, 4, ... up to n, and k = n itself when n is not a power of two."""
    check_int("n", n, 1)
    ks = [2**i for i in range(n.bit_length()) if 2**i <= n]
    return {k: pass_at_k(n, c, k) for k in (ks if ks[-1] == n else [*ks, n])}


def avg_at_k(rewards: Sequence[float | bool]) -> float:
    """Mean correctness (or reward) over the samples."""
    if len(rewards) == 0:
        raise UserError("rewards must be a non-empty sequence of numbers; got an empty one")
    return sum(float(r) for r in rewards) / len(rewards)


def majority_answer(
    answers: Sequence[str | None], normalize: Callable[[str], str] | None = None
) -> str | None:
    """The most frequent (normalised) answer; None answers do not vote; ties go to the first seen."""
    counts: dict[str, int] = {}
    for answer in answers:
        if answer is not None:
            key = normalize(answer) if normalize else answer
            counts[key] = counts.get(key, 0) + 1
    return max(counts, key=counts.__getitem__) if counts else None  # max keeps the first of equals


def cons_at_k(
    answers: Sequence[str | None], is_correct: Sequence[bool], normalize: Callable[[str], str] | None = None
) -> bool:
    """True iff the majority answer exists and every sample giving it is correct.

    `answers` are normalised already (`Task.grade` does it) unless `normalize` is given.
    """
    if len(answers) != len(is_correct) or len(answers) == 0:
        raise UserError(
            f"answers and is_correct must be non-empty and of equal length; "
            f"got {len(answers)} and {len(is_correct)}"
        )
    winner = majority_answer(answers, normalize)
    if winner is None:
        return False
    keys = [None if a is None else (normalize(a) if normalize else a) for a in answers]
    return all(bool(ok) for key, ok in zip(keys, is_correct) if key == winner)


def summarize(groups: Sequence[Sequence[tuple[str | None, bool]]], ks: Sequence[int] | None = None) -> dict:
    """Metrics averaged over prompts from m (answer, correct) samples per prompt.

    Returns {"prompts": P, "samples": m, "avg_at_m": ..., "cons_at_m": ..., "pass_at_k": {"1": ...,
    "2": ..., ..., "m": ...}}: the Pass@k curve at `ks`, by default k as in `pass_at_k_curve`.
    """
    if len(groups) == 0:
        raise UserError("groups must hold at least one prompt's samples; got none")
    m = len(groups[0])
    if m == 0 or any(len(g) != m for g in groups):
        raise UserError(
            f"groups must all hold the same number m >= 1 of samples; got sizes "
            f"{sorted({len(g) for g in groups})}"
        )
    ks = list(ks) if ks else list(pass_at_k_curve(m, 0))
    avg = cons = 0.0
    curve = dict.fromkeys(ks, 0.0)
    for group in groups:
        answers, correct = [a for a, _ in group], [bool(ok) for _, ok in group]
        avg += avg_at_k(correct)
        cons += cons_at_k(answers, correct)
        for k in ks:
            curve[k] += pass_at_k(m, sum(correct), k)
    p = len(groups)
    return {
        "prompts": p,
        "samples": m,
        "avg_at_m": avg / p,
        "cons_at_m": cons / p,
        "pass_at_k": {str(k): value / p for k, value in curve.items()},
    }
