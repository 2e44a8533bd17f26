"""The paper's findings (SPEC section 5) as seed-paired checks on a grid's own numbers (SPEC section 6).

    from shapedce.report.verdicts import judged_findings, verdicts_json
    found = judged_findings(grid_record)          # every model's findings, Holm over all direction checks
    for f in found: print(f.model, f.claim, f.verdict, [c.verdict for c in f.checks])
    verdicts_json(grid_record, found)             # the OUT/verdicts.json document (schema_version 1)

Checks per model (a - b per seed; the rules are in `shapedce.report.stats`):
  ppl_parity         every configuration vs ce: final validation log-perplexity, parity within
                     PPL_MARGIN nats (a perplexity ratio within 5%).
  entropy_order      precision < ce and diversity > ce: final validation entropy (direction).
  tail_mass          tail < ce: final validation tail mass beyond the top-k (direction). A check of
                     the mechanism (lambda_tail pushes mass out of the tail), not a claim of the paper.
  rl_precision_tail  precision > ce and tail > ce on Avg@m and Pass@k of the RL task: the level after
                     RL, and the RL gain (after RL minus after midtrain, minus ce's) (direction).
  rl_diversity_entropy  diversity > ce: RL policy entropy over the first quarter of steps, and its
                     relative drop from the first to the last quarter (direction).
  rl_length          diversity's relative change of response length over RL minus ce's < 0 (direction).
  passk_entropy      diversity's Pass@k not above ce's after midtrain and after RL: non-superiority
                     within PASSK_MARGIN (parity).
  moe_gains          (with a dense and an MoE model) precision/tail minus ce on the MoE model minus the
                     same on the dense one > 0, level after RL and RL gain (direction).
A finding is held when all its checks held, did_not_hold when any did not hold, not_tested when any
was not tested, else inconclusive.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from ..eval.metrics import pass_at_k
from .load import GridRecord, RunRecord
from .stats import ALPHA, MIN_SEEDS, Check, combine, direction, judge, parity, t975

PPL_MARGIN = math.log(1.05)
"""Parity margin on final log-perplexity (nats per token): |log(PPL_a / PPL_ce)| < log 1.05, perplexities
within 5%. 0.049 nats is an order of magnitude below the entropy gaps the reward knobs are meant to open
(the paper's 1.8 vs 2.4 nats at 4B): 'about the same' perplexity with 'different entropy' is a sharp claim."""
PASSK_MARGIN = 0.01
"""Non-superiority margin on Pass@k (a fraction): a raise below 1 point is smaller than the smallest RL
effect the paper reports as real (1-2 points of Avg@128), so it does not count as 'higher'."""
SCHEMA_VERSION = 1


@dataclass
class Finding:
    id: str
    model: str
    claim: str
    checks: list[Check] = field(default_factory=list)
    note: str = ""

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


def _pairs(
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


def _check(kind: str, metric: str, a: str, b: str, pairs, **kw) -> Check:
    diffs = [x - y for _, _, x, y in pairs]
    means = (
        dict(a_mean=statistics.fmean(p[2] for p in pairs), b_mean=statistics.fmean(p[3] for p in pairs))
        if pairs
        else {}
    )
    return (direction if kind == "direction" else parity)(metric, a, b, diffs, **means, **kw)


class _Acc:
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


def _prompt_ci(per_prompt: list[list[float] | None], signs: list[int]) -> tuple[float, float] | None:
    """95% t-interval over prompts of sum(sign * value) per prompt (one seed: evaluation noise only)."""
    if any(p is None for p in per_prompt) or len({len(p) for p in per_prompt}) != 1 or len(per_prompt[0]) < 2:
        return None
    d = [sum(s * p[i] for s, p in zip(signs, per_prompt)) for i in range(len(per_prompt[0]))]
    mean, sd = statistics.fmean(d), statistics.stdev(d)
    half = t975(len(d) - 1) * sd / math.sqrt(len(d))
    return mean - half, mean + half


def accuracy_checks(grid: GridRecord, model: str, a: str, b: str, metric: str, expect: int) -> list[Check]:
    """a vs b on the RL task: the level after RL and the RL gain, each a direction check."""
    acc = _Acc(grid)
    level = _pairs(grid, model, a, b, lambda r: acc.value(r, "rl", metric))
    gain = _pairs(grid, model, a, b, lambda r: acc.gain(r, metric))
    kw_level, kw_gain = {}, {}
    if len(level) == 1:
        ra, rb = level[0][:2]
        kw_level["prompt_ci"] = _prompt_ci(
            [acc.prompts(ra, "rl", metric), acc.prompts(rb, "rl", metric)], [1, -1]
        )
    if len(gain) == 1:
        ra, rb = gain[0][:2]
        kw_gain["prompt_ci"] = _prompt_ci(
            [acc.prompts(r, s, metric) for r in (ra, rb) for s in ("rl", "midtrain")], [1, -1, -1, 1]
        )
    name = acc.name(metric)
    return [
        _check("direction", f"{name} after RL", a, b, level, expect=expect, **kw_level),
        _check(
            "direction", f"{name} RL gain (after RL - after midtrain)", a, b, gain, expect=expect, **kw_gain
        ),
    ]


def pretrain_ppl(grid: GridRecord, model: str) -> Finding:
    def logppl(r: RunRecord):
        v = r.last("pretrain", "val", "ppl")
        return math.log(v) if v is not None and v > 0 else None

    checks = [
        _check(
            "parity",
            "final validation log-perplexity (nats)",
            c,
            "ce",
            _pairs(grid, model, c, "ce", logppl),
            margin=PPL_MARGIN,
        )
        for c in grid.configs
        if c != "ce"
    ]
    return Finding(
        f"{model}:ppl_parity",
        model,
        "Pre-training perplexity converges to about the same value for every configuration",
        checks,
    )


def pretrain_entropy(grid: GridRecord, model: str) -> Finding:
    checks = [
        _check(
            "direction",
            "final validation entropy (nats)",
            c,
            "ce",
            _pairs(grid, model, c, "ce", lambda r: r.last("pretrain", "val", "entropy")),
            expect=e,
        )
        for c, e in (("precision", -1), ("diversity", 1))
    ]
    return Finding(
        f"{model}:entropy_order",
        model,
        "Pre-training entropy is ordered precision (beta=-0.25) < ce < diversity (beta=0.5)",
        checks,
    )


def pretrain_tail_mass(grid: GridRecord, model: str) -> Finding:
    pairs = _pairs(grid, model, "tail", "ce", lambda r: r.last("pretrain", "val", "tail_mass"))
    return Finding(
        f"{model}:tail_mass",
        model,
        "Mechanism: tail suppression (lambda_tail=-0.1) lowers the pre-training tail mass beyond the top-k",
        [_check("direction", "final validation tail mass", "tail", "ce", pairs, expect=-1)],
    )


def rl_precision_tail(grid: GridRecord, model: str) -> Finding:
    checks = [
        c
        for cfg in ("precision", "tail")
        for metric in ("avg", "pass")
        for c in accuracy_checks(grid, model, cfg, "ce", metric, 1)
    ]
    return Finding(
        f"{model}:rl_precision_tail",
        model,
        "After RL, precision (beta=-0.25) and tail suppression give "
        f"higher Avg@m and Pass@k than ce on {task_label(grid.rl_task)}",
        checks,
    )


def _rl_rows(r: RunRecord) -> list[dict] | None:
    return r.stage_metrics("rl", "train") if "rl" in r.finished else None


def rl_diversity_entropy(grid: GridRecord, model: str) -> Finding:
    def start(r):
        rows = _rl_rows(r)
        return None if rows is None else window_mean(rows, "entropy", first=True)

    def drop(r):
        s, rows = start(r), _rl_rows(r)
        e = None if rows is None else window_mean(rows, "entropy", first=False)
        return None if s is None or e is None or s <= 0 else (s - e) / s

    checks = [
        _check(
            "direction",
            "RL policy entropy, first quarter of steps",
            "diversity",
            "ce",
            _pairs(grid, model, "diversity", "ce", start),
            expect=1,
        ),
        _check(
            "direction",
            "relative RL entropy drop, first to last quarter",
            "diversity",
            "ce",
            _pairs(grid, model, "diversity", "ce", drop),
            expect=1,
        ),
    ]
    return Finding(
        f"{model}:rl_diversity_entropy",
        model,
        "diversity (beta=0.5) starts RL with higher entropy, which collapses faster than ce's",
        checks,
    )


def rl_length(grid: GridRecord, model: str) -> Finding:
    def change(r):
        rows = _rl_rows(r)
        s = None if rows is None else window_mean(rows, "response_length", True)
        e = None if rows is None else window_mean(rows, "response_length", False)
        return None if s is None or e is None or s <= 0 else (e - s) / s

    checks = [
        _check(
            "direction",
            "relative change of response length over RL, first to last quarter",
            "diversity",
            "ce",
            _pairs(grid, model, "diversity", "ce", change),
            expect=-1,
        )
    ]
    return Finding(
        f"{model}:rl_length",
        model,
        "With diversity's entropy collapse its response length shrinks over RL, more than ce's",
        checks,
    )


def passk_entropy(grid: GridRecord, model: str) -> Finding:
    acc = _Acc(grid)
    checks = []
    for stage in ("midtrain", "rl"):
        pairs = _pairs(grid, model, "diversity", "ce", lambda r, s=stage: acc.value(r, s, "pass"))
        kw = {}
        if len(pairs) == 1:
            kw["prompt_ci"] = _prompt_ci([acc.prompts(r, stage, "pass") for r in pairs[0][:2]], [1, -1])
        checks.append(
            _check(
                "parity",
                f"{acc.name('pass')} after {stage.replace('rl', 'RL')}",
                "diversity",
                "ce",
                pairs,
                margin=PASSK_MARGIN,
                upper_only=True,
                **kw,
            )
        )
    return Finding(
        f"{model}:passk_entropy",
        model,
        "Higher global entropy (diversity) does not give higher Pass@k than ce",
        checks,
    )


def moe_gains(grid: GridRecord, dense: str, moe: str) -> Finding:
    acc = _Acc(grid)
    checks = []
    for cfg in ("precision", "tail"):
        for label, fn in (
            (f"Avg@{acc.m} after RL", lambda r: acc.value(r, "rl", "avg")),
            (f"Avg@{acc.m} RL gain", lambda r: acc.gain(r, "avg")),
        ):
            per = {
                m: {ra.seed: x - y for ra, _, x, y in _pairs(grid, m, cfg, "ce", fn)} for m in (dense, moe)
            }
            seeds = sorted(set(per[dense]) & set(per[moe]))
            pairs = [(None, None, per[moe][s], per[dense][s]) for s in seeds]
            checks.append(_check("direction", f"{cfg} - ce, {label}", moe, dense, pairs, expect=1))
    return Finding(
        f"{moe}:moe_gains", moe, "RL gains over ce are larger on the MoE model than on the dense one", checks
    )


def judged_findings(grid: GridRecord) -> list[Finding]:
    """Every model's findings (the MoE comparison once, with the first dense and first MoE model), with
    Holm's adjustment over all their direction checks together."""
    dense = next((m for m in grid.models if not grid.is_moe(m)), None)
    moe = next((m for m in grid.models if grid.is_moe(m)), None)
    found = []
    for model in grid.models:
        found += [
            f(grid, model)
            for f in (
                pretrain_ppl,
                pretrain_entropy,
                pretrain_tail_mass,
                rl_precision_tail,
                rl_diversity_entropy,
                rl_length,
                passk_entropy,
            )
        ]
        if model == moe and dense is not None:
            found.append(moe_gains(grid, dense, moe))
    judge([c for f in found for c in f.checks])
    return found


def verdicts_json(grid: GridRecord, found: list[Finding]) -> dict:
    """The OUT/verdicts.json document."""
    return {
        "schema_version": SCHEMA_VERSION,
        "seeds": len({r.seed for r in grid.runs}),
        "correction": "holm",
        "alpha": ALPHA,
        "min_seeds": MIN_SEEDS,
        "ppl_margin": PPL_MARGIN,
        "passk_margin": PASSK_MARGIN,
        "findings": [
            {
                "id": f.id,
                "model": f.model,
                "claim": f.claim,
                "verdict": f.verdict,
                "checks": [c.as_dict() for c in f.checks],
            }
            for f in found
        ],
    }
