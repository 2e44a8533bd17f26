"""The paper's findings (SPEC section 5) checked against a grid's own numbers, one model at a time.

    from shapedce.report.verdicts import findings
    for f in findings(grid_record, "tiny"):
        print(f.title, f.verdict, [c.evidence() for c in f.checks])

Every finding is split into directional checks judged by `shapedce.report.stats` (intervals over
seeds; with one seed an interval over the evaluation's prompts for accuracy metrics, else a stated
threshold). A finding held when all its checks held, did not hold when any did not, and is
"inconclusive at this scale" otherwise; "not run" when the grid lacks the runs it needs.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from ..eval.metrics import pass_at_k
from .load import GridRecord, RunRecord
from .stats import HELD, NOT_HELD, NOT_RUN, Comparison, combine, compare, compare_not_above, paired_se

PPL_MARGIN = 0.05
"""'About the same perplexity': every configuration within 5% of CE's."""
ENTROPY_TOL = 0.01
"""One-seed threshold on entropy differences, relative to CE's entropy."""
LENGTH_TOL = 0.02
"""One-seed threshold on the relative change of response length over RL."""
PASSK_TOL = 0.01
"""One-seed threshold on Pass@k differences when no per-prompt counts exist."""


@dataclass
class Finding:
    title: str
    checks: list[Comparison] = field(default_factory=list)
    note: str = ""
    verdict: str = NOT_RUN


def _pairs(grid: GridRecord, model: str, a: str, b: str, fn: Callable[[RunRecord], float | None]):
    """Seed-paired values of fn on configs a and b of `model` (seeds where both have a value)."""
    ra = {r.seed: r for r in grid.select(model, a)}
    rb = {r.seed: r for r in grid.select(model, b)}
    seeds = [s for s in sorted(set(ra) & set(rb)) if fn(ra[s]) is not None and fn(rb[s]) is not None]
    return [fn(ra[s]) for s in seeds], [fn(rb[s]) for s in seeds], [(ra[s], rb[s]) for s in seeds]


def window_mean(rows: list[dict], key: str, first: bool) -> float | None:
    """Mean of `key` over the first (or last) quarter of the rows, at least one row."""
    values = [float(r[key]) for r in rows if key in r]
    if not values:
        return None
    w = max(1, len(values) // 4)
    return statistics.fmean(values[:w] if first else values[-w:])


def task_result(run: RunRecord, stage: str, task: str | None) -> dict | None:
    return run.evals.get(stage, {}).get("tasks", {}).get(task) if task else None


def passk_k(samples: int) -> int:
    """The paper's Pass@64 of 128 samples: the largest power of 2 <= samples / 2 (at least 1)."""
    k = 1
    while k * 2 <= max(1, samples // 2):
        k *= 2
    return k


def _per_prompt(result: dict, metric: str, k: int) -> list[float] | None:
    counts, m = result.get("correct_per_prompt"), result["samples"]
    if counts is None:
        return None
    return [c / m if metric == "avg" else pass_at_k(m, c, k) for c in counts]


def accuracy_check(grid: GridRecord, model: str, a: str, b: str, stage: str, metric: str, expect: int | None) -> Comparison:
    """a vs b on the reasoning task after `stage`: Avg@m (metric "avg") or Pass@k (metric "pass")."""
    task = grid.rl_task
    m = int(grid.settings.get("eval_samples", 1))
    k = passk_k(m)

    def value(run: RunRecord) -> float | None:
        r = task_result(run, stage, task)
        return None if r is None else (r["avg_at_m"] if metric == "avg" else r["pass_at_k"].get(str(k)))

    va, vb, runs = _pairs(grid, model, a, b, value)
    se = None
    if len(runs) == 1:
        pa, pb = (_per_prompt(task_result(r, stage, task), metric, k) for r in runs[0])
        se = paired_se(pa, pb) if pa and pb and len(pa) == len(pb) and len(pa) >= 2 else None
    name = f"Avg@{m}" if metric == "avg" else f"Pass@{k}"
    claim = f"{a} {'>' if expect == 1 else '<' if expect == -1 else 'not above'} {b}: {name} after {stage}"
    if expect is None:
        return compare_not_above(claim, va, vb, tolerance=PASSK_TOL, prompt_se=se)
    return compare(claim, va, vb, expect=expect, tolerance=PASSK_TOL, prompt_se=se)


def _finding(title: str, checks: list[Comparison], note: str = "") -> Finding:
    return Finding(title, checks, note, combine([c.verdict for c in checks]))


def pretrain_ppl(grid: GridRecord, model: str) -> Finding:
    title = "Pre-training perplexity converges to about the same value for every configuration"
    checks = []
    for config in grid.configs:
        if config == "ce":
            continue
        va, vb, _ = _pairs(grid, model, config, "ce", lambda r: r.last("pretrain", "val", "ppl"))
        c = compare(f"{config} vs ce: final val PPL", va, vb, expect=1, tolerance=0.0)
        if c.verdict != NOT_RUN:
            rel = abs(c.diff) / statistics.fmean(vb)
            c.verdict = HELD if rel <= PPL_MARGIN else NOT_HELD
            c.basis = f"abs(d) = {rel:.1%} of CE's, margin {PPL_MARGIN:.0%}"
        checks.append(c)
    return _finding(title, checks or [compare("no configuration besides ce", [], [], expect=1, tolerance=0)])


def pretrain_entropy(grid: GridRecord, model: str) -> Finding:
    title = "Pre-training entropy is ordered precision (beta=-0.25) < ce < diversity (beta=0.5)"
    checks = []
    for config, expect in (("precision", -1), ("diversity", 1)):
        va, vb, _ = _pairs(grid, model, config, "ce", lambda r: r.last("pretrain", "val", "entropy"))
        tol = ENTROPY_TOL * statistics.fmean(vb) if vb else 0.0
        checks.append(compare(f"{config} {'<' if expect < 0 else '>'} ce: final val entropy", va, vb, expect=expect, tolerance=tol))
    return _finding(title, checks)


def rl_precision_tail(grid: GridRecord, model: str) -> Finding:
    title = "After RL, precision (beta=-0.25) and tail suppression give higher Avg@m and Pass@k than ce"
    checks = [accuracy_check(grid, model, c, "ce", "rl", metric, 1) for c in ("precision", "tail") for metric in ("avg", "pass")]
    return _finding(title, checks)


def rl_diversity_entropy(grid: GridRecord, model: str) -> Finding:
    title = "diversity (beta=0.5) starts RL with higher entropy, which collapses faster than ce's"

    def start(r):
        return window_mean(r.stage_metrics("rl", "train"), "entropy", first=True) if "rl" in r.finished else None

    def drop(r):
        s, e = start(r), window_mean(r.stage_metrics("rl", "train"), "entropy", first=False)
        return None if s is None or e is None or s <= 0 else (s - e) / s

    va, vb, _ = _pairs(grid, model, "diversity", "ce", start)
    tol = ENTROPY_TOL * statistics.fmean(vb) if vb else 0.0
    checks = [compare("diversity > ce: RL entropy, first quarter of steps", va, vb, expect=1, tolerance=tol)]
    va, vb, _ = _pairs(grid, model, "diversity", "ce", drop)
    checks.append(compare("diversity > ce: relative entropy drop, first to last quarter", va, vb, expect=1, tolerance=ENTROPY_TOL))
    return _finding(title, checks)


def rl_length(grid: GridRecord, model: str) -> Finding:
    title = "With diversity's entropy collapse, its response length shrinks over RL"

    def change(r):
        if "rl" not in r.finished:
            return None
        rows = r.stage_metrics("rl", "train")
        s, e = window_mean(rows, "response_length", True), window_mean(rows, "response_length", False)
        return None if s is None or e is None or s <= 0 else (e - s) / s

    runs = [r for r in grid.select(model, "diversity") if change(r) is not None]
    va = [change(r) for r in runs]
    return _finding(title, [compare("diversity: relative change of response length, first to last quarter < 0",
                                    va, [0.0] * len(va), expect=-1, tolerance=LENGTH_TOL)])


def moe_gains(grid: GridRecord, dense: str | None, moe: str | None) -> Finding:
    title = "RL gains over ce are larger on the MoE model than on the dense one"
    if dense is None or moe is None:
        return Finding(title, note="needs a dense and an MoE model (--models tiny,tiny-moe)")
    checks = []
    for config in ("precision", "tail"):
        gains = {}
        for model in (dense, moe):
            va, vb, runs = _pairs(grid, model, config, "ce", lambda r: (task_result(r, "rl", grid.rl_task) or {}).get("avg_at_m"))
            gains[model] = {a_run.seed: x - y for (a_run, _), x, y in zip(runs, va, vb)}
        seeds = sorted(set(gains[dense]) & set(gains[moe]))
        checks.append(compare(f"{config} - ce Avg@m after RL: {moe} > {dense}", [gains[moe][s] for s in seeds],
                              [gains[dense][s] for s in seeds], expect=1, tolerance=PASSK_TOL))
    return _finding(title, checks)


def passk_entropy(grid: GridRecord, model: str) -> Finding:
    title = "Higher global entropy (diversity) does not give higher Pass@k than ce"
    checks = [accuracy_check(grid, model, "diversity", "ce", stage, "pass", None) for stage in ("midtrain", "rl")]
    return _finding(title, checks)


def findings(grid: GridRecord, model: str, dense: str | None = None, moe: str | None = None) -> list[Finding]:
    """The SPEC section 5 findings for `model` (the MoE comparison once, given a dense and an MoE model)."""
    out = [pretrain_ppl(grid, model), pretrain_entropy(grid, model), rl_precision_tail(grid, model),
           rl_diversity_entropy(grid, model), rl_length(grid, model), passk_entropy(grid, model)]
    if dense is not None or moe is not None:
        out.append(moe_gains(grid, dense, moe))
    return out


__all__ = ["Finding", "findings", "HELD", "NOT_HELD", "NOT_RUN"]
