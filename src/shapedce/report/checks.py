"""The building blocks of the report's verdicts: seed-paired a - b values per check, accuracy read
from the evaluations, margins and the Finding record. `shapedce.report.verdicts` assembles the
findings from them.

    from shapedce.report.checks import seed_pairs, make_check
    pairs = seed_pairs(grid, "tiny", "precision", "ce", lambda r: r.last("pretrain", "val", "entropy"))
    check = make_check("direction", "final validation entropy (nats)", "precision", "ce", pairs, expect=-1)

No torch: `shapedce report` runs from the files alone.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..eval.metrics import pass_at_k
from .load import GridRecord, RunRecord
from .stats import NOT_APPLICABLE, Check, combine, direction, parity, t975

PPL_MARGIN = math.log(1.05)
"""Parity margin on final log-perplexity (nats per token): |log(PPL_a / PPL_ce)| < log 1.05, perplexities
within 5%. 0.049 nats is an order of magnitude below the entropy gaps the reward knobs are meant to open
(the paper's 1.8 vs 2.4 nats at 4B): 'about the same' perplexity with 'different entropy' is a sharp claim."""
PASSK_MARGIN = 0.01
"""Non-superiority margin on Pass@k (a fraction): a raise below 1 point is smaller than the smallest RL
effect the paper reports as real (1-2 points of Avg@128), so it does not count as 'higher'."""
NULL_FRACTION = 0.01
"""Smallest effect of interest of the pre-training mechanism checks (entropy, tail mass), as a fraction
of ce's own mean value: a shift under 1% of ce's entropy or tail mass counts as no effect. The paper's
entropy gaps are about 25% (1.8 vs 2.4 nats at 4B) and the perplexity parity margin is 5%, so 1% is a
strict bar for calling an effect absent. Relative, so one rule serves any vocabulary, k and corpus."""
SCHEMA_VERSION = 1


@dataclass
class Finding:
    id: str
    model: str
    claim: str
    checks: list[Check] = field(default_factory=list)
    note: str = ""
    label: str | None = None
    """MANIPULATION when the finding is a knob moving its own metric (a check of the setup)."""

    def label_checks(self, label: str) -> Finding:
        """Give the finding and each of its checks `label`."""
        self.label = label
        for c in self.checks:
            c.label = label
        return self

    def not_applicable(self, reason: str) -> Finding:
        """Mark every check not_applicable: the world cannot exhibit it (`reason` in each check's test)."""
        for c in self.checks:
            c.verdict, c.test, c.p = NOT_APPLICABLE, f"not applicable: {reason}", None
        self.note = reason
        return self

    @property
    def verdict(self) -> str:
        return combine([c.verdict for c in self.checks])


def window_mean(rows: list[dict], key: str, first: bool) -> float | None:
    """Mean of `key` over the first (or last) quarter of the rows, at least one row."""
    values = [float(r[key]) for r in rows if isinstance(r.get(key), (int, float))]
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


def task_label(task: str | None) -> str:
    """How the report names a task: `knowledge` is recall of facts the pre-training corpus states."""
    return "knowledge (recall of facts seen in pre-training)" if task == "knowledge" else str(task)


Value = Callable[[RunRecord], "float | None"]


def seed_pairs(
    grid: GridRecord, model: str, a: str, b: str, fn: Value
) -> list[tuple[RunRecord, RunRecord, float, float]]:
    """Seed-paired (run a, run b, fn(a), fn(b)) for seeds where both have a value."""
    rb = {r.seed: r for r in grid.select(model, b)}
    out = []
    for ra in grid.select(model, a):
        if ra.seed in rb:
            va, vb = fn(ra), fn(rb[ra.seed])
            if va is not None and vb is not None:
                out.append((ra, rb[ra.seed], va, vb))
    return out


def make_check(
    kind: str, metric: str, a: str, b: str, pairs, null_fraction: float | None = None, **kw
) -> Check:
    """A check from seed pairs; a direction check with `null_fraction` gets null_margin = that fraction
    of |mean of b| (see NULL_FRACTION), when b's mean is not 0."""
    diffs = [x - y for _, _, x, y in pairs]
    means: dict[str, Any] = (
        dict(a_mean=statistics.fmean(p[2] for p in pairs), b_mean=statistics.fmean(p[3] for p in pairs))
        if pairs
        else {}
    )
    if null_fraction is not None and means.get("b_mean"):
        kw["null_margin"] = null_fraction * abs(means["b_mean"])
    return (direction if kind == "direction" else parity)(metric, a, b, diffs, **means, **kw)


class Accuracy:
    """Accuracy of the grid's RL task: Avg@m ("avg") or Pass@k ("pass") after a stage, and per prompt."""

    def __init__(self, grid: GridRecord):
        self.task, self.m = grid.rl_task, int(grid.settings["eval_samples"])
        self.k = passk_k(self.m)

    def name(self, metric: str) -> str:
        return f"Avg@{self.m}" if metric == "avg" else f"Pass@{self.k}"

    def value(self, run: RunRecord, stage: str, metric: str) -> float | None:
        r = task_result(run, stage, self.task) or {}
        v = r.get("avg_at_m") if metric == "avg" else (r.get("pass_at_k") or {}).get(str(self.k))
        return float(v) if isinstance(v, (int, float)) else None

    def gain(self, run: RunRecord, metric: str) -> float | None:
        after, before = self.value(run, "rl", metric), self.value(run, "midtrain", metric)
        return None if after is None or before is None else after - before

    def prompts(self, run: RunRecord, stage: str, metric: str) -> list[float] | None:
        r = task_result(run, stage, self.task) or {}
        counts, m = r.get("correct_per_prompt"), r.get("samples")
        if not isinstance(counts, list) or not isinstance(m, int) or self.k > m:
            return None
        return [c / m if metric == "avg" else pass_at_k(m, c, self.k) for c in counts]


def prompt_ci(per_prompt: list[list[float] | None], signs: list[int]) -> tuple[float, float] | None:
    """95% t-interval over prompts of sum(sign * value) per prompt (one seed: evaluation noise only)."""
    known = [p for p in per_prompt if p is not None]
    if len(known) < len(per_prompt) or len({len(p) for p in known}) != 1 or len(known[0]) < 2:
        return None
    d = [sum(s * p[i] for s, p in zip(signs, known)) for i in range(len(known[0]))]
    mean, sd = statistics.fmean(d), statistics.stdev(d)
    half = t975(len(d) - 1) * sd / math.sqrt(len(d))
    return mean - half, mean + half


def accuracy_checks(grid: GridRecord, model: str, a: str, b: str, metric: str, expect: int) -> list[Check]:
    """a vs b on the RL task: the level after RL and the RL gain, each a direction check."""
    acc = Accuracy(grid)
    level = seed_pairs(grid, model, a, b, lambda r: acc.value(r, "rl", metric))
    gain = seed_pairs(grid, model, a, b, lambda r: acc.gain(r, metric))
    kw_level: dict[str, Any] = {}
    kw_gain: dict[str, Any] = {}
    if len(level) == 1:
        ra, rb = level[0][:2]
        kw_level["prompt_ci"] = prompt_ci(
            [acc.prompts(ra, "rl", metric), acc.prompts(rb, "rl", metric)], [1, -1]
        )
    if len(gain) == 1:
        ra, rb = gain[0][:2]
        kw_gain["prompt_ci"] = prompt_ci(
            [acc.prompts(r, s, metric) for r in (ra, rb) for s in ("rl", "midtrain")], [1, -1, -1, 1]
        )
    name = acc.name(metric)
    return [
        make_check("direction", f"{name} after RL", a, b, level, expect=expect, **kw_level),
        make_check(
            "direction", f"{name} RL gain (after RL - after midtrain)", a, b, gain, expect=expect, **kw_gain
        ),
    ]
