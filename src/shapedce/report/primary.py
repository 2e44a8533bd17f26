"""The primary family of an analysis plan: each primary configuration's RL gain on held-out Avg@m minus
the baseline's, paired by seed, judged by two one-sided claims under Holm across the family and the
plan's alpha spending over its looks (docs/method/statistics.md).

    from shapedce.report.primary import primary_finding, look_pvalues, family_rejections
    finding = primary_finding(grid, plan)      # a Finding whose checks carry primary=True and the margin
    look_pvalues([0.02, 0.01, 0.03], (3,), margin=0.01)          # [(p above 0, p below the margin)]
    family_rejections([[(0.001, 0.9)], [(0.4, 0.01)]], 0.025, (3,), "obrien-fleming")

Per check, d_i = gain_config - gain_baseline on seed i (gain = Avg@m after RL - after mid-training), at
each planned look on the first n_k seeds (by seed order; seeds past the plan's last look are unused;
a relative margin is measured at each look on that look's seeds):
  held          H0: true d <= 0 rejected by the one-sided paired t-test (the config gains more);
  did_not_hold  H0: true d >= margin rejected (the gain difference is shown below the margin);
  else inconclusive (at an interim look: the study continues to its next look).
Both claims of every check form one family at the plan's one-sided level alpha. A check's two nulls
cannot both be true (margin > 0), so Holm's step counts the checks that still hold an unrejected null
(Shaffer's refinement): with g such checks each null is tested at alpha / g, at every look reached,
against the look's nominal level of the spending boundaries for alpha / g (`spending.nominal_levels`),
and the step repeats while it rejects. That is the graphical Holm procedure for group-sequential
tests (Maurer & Bretz 2013); benchmarks/verdict_error_rates.py measures both claims' family error.
p_adjusted (p_absent_adjusted): the smallest family level at which the claim would be made.
When both nulls are rejected (0 < d < margin shown), the check is held and its test says so.
"""

from __future__ import annotations

import math
import statistics

from ..errors import UserError
from . import tdist
from .checks import Accuracy, Finding, seed_pairs
from .load import GridRecord
from .plan import AnalysisPlan
from .spending import nominal_levels
from .stats import HELD, INCONCLUSIVE, NOT_HELD, NOT_TESTED, Check, holm

LookP = tuple[float, float]
"""(p of "true d <= 0", p of "true d >= margin") at one look."""


def look_pvalues(diffs: list[float], looks: tuple[int, ...], margin: float | list[float]) -> list[LookP]:
    """One-sided paired t-test p-values at every planned look the diffs reach (first n_k of them);
    `margin`: one for every look, or one per look (a relative margin, measured at each look)."""
    out = []
    for i, n in enumerate(k for k in looks if k <= len(diffs)):
        d, margin_k = diffs[:n], margin[i] if isinstance(margin, list) else margin
        mean, se = statistics.fmean(d), statistics.stdev(d) / math.sqrt(n)
        if se == 0:
            out.append((0.0 if mean > 0 else 1.0, 0.0 if mean < margin_k else 1.0))
        else:
            out.append((tdist.t_sf(mean / se, n - 1), tdist.t_cdf((mean - margin_k) / se, n - 1)))
    return out


def family_rejections(
    pvals: list[list[LookP]], alpha: float, looks: tuple[int, ...], kind: str
) -> set[tuple[int, int]]:
    """(check, 0 held / 1 absent) nulls rejected at family level alpha: Holm-Shaffer over the checks,
    each null at alpha / g against the spending plan's nominal level at every look reached."""
    rejected: set[tuple[int, int]] = set()
    while True:
        left = [i for i in range(len(pvals)) if not {(i, 0), (i, 1)} <= rejected]
        if not left:
            return rejected
        nominal = nominal_levels(looks, alpha / len(left), kind)
        new = {
            (i, h)
            for i in left
            for h in (0, 1)
            if (i, h) not in rejected and any(p[h] < nominal[k] for k, p in enumerate(pvals[i]))
        }
        if not new:
            return rejected
        rejected |= new


def adjusted_p(pvals: list[list[LookP]], looks: tuple[int, ...], kind: str) -> list[LookP]:
    """Per check, the smallest family level at which each of its two claims is made (1.0: none below
    0.5). One look: Holm-Shaffer's adjusted p-values; several: by bisection on the level."""
    if len(looks) == 1:
        flat = [p[-1][h] for p in pvals for h in (0, 1)]
        adj = holm(flat, [i for i in range(len(pvals)) for _ in (0, 1)])
        return [(adj[2 * i], adj[2 * i + 1]) for i in range(len(pvals))]
    out = []
    for i in range(len(pvals)):
        pair = []
        for h in (0, 1):
            if (i, h) not in family_rejections(pvals, 0.4999, looks, kind):
                pair.append(1.0)
                continue
            lo, hi = math.log(1e-9), math.log(0.4999)
            for _ in range(24):
                mid = (lo + hi) / 2
                lo, hi = (
                    (lo, mid) if (i, h) in family_rejections(pvals, math.exp(mid), looks, kind) else (mid, hi)
                )
            pair.append(math.exp(hi))
        out.append((pair[0], pair[1]))
    return out


def decide_primary(checks: list[Check], plan: AnalysisPlan) -> list[Check]:
    """Judge the primary checks (diffs in seed order; the baseline's gains in extra["b_values"])."""
    looks, kind, m = plan.looks_seeds, plan.spending, len(checks)
    tested, pvals = [], []
    for c in checks:
        reached = [n for n in looks if n <= c.n]
        base = c.extra["b_values"]
        margins = [plan.margin_for(statistics.fmean(base[:n])) for n in reached]  # one per look reached
        if not reached:
            c.verdict = NOT_TESTED
            c.test = f"not tested: {c.n} seeds, before the plan's first look at {looks[0]}"
            c.margin = plan.margin_for(statistics.fmean(base)) if base else None
            continue
        n = reached[-1]
        c.diffs, base = c.diffs[:n], base[:n]
        c.margin = margins[-1]
        c.a_mean = statistics.fmean(d + b for d, b in zip(c.diffs, base))
        c.b_mean, c.estimate = statistics.fmean(base), statistics.fmean(c.diffs)
        tested.append(c)
        pvals.append(look_pvalues(c.diffs, looks, margins))
    rejected = family_rejections(pvals, plan.alpha, looks, kind)
    adjusted = adjusted_p(pvals, looks, kind) if tested else []
    for i, c in enumerate(tested):
        assert c.estimate is not None and c.margin is not None
        k = len(pvals[i])
        nominal = nominal_levels(looks, plan.alpha / m, kind)[k - 1]
        sd = c.sd
        half = tdist.t_ppf(1 - nominal, c.n - 1) * sd / math.sqrt(c.n)
        c.ci, c.extra["coverage"] = (c.estimate - half, c.estimate + half), 1 - 2 * nominal
        c.p, c.p_absent = pvals[i][-1]
        c.p_adjusted, c.p_absent_adjusted = adjusted[i]
        look = f"look {k} of {len(looks)} at {c.n} seeds" + ("" if k > 1 or len(looks) == 1 else " (interim)")
        c.test = (
            f"primary: one-sided paired t-tests over {c.n} seeds, d > 0 (held) and d < margin "
            f"{c.margin:.4f} (did_not_hold), Holm-Shaffer over {m} checks at family level {plan.alpha:g}"
            + (
                f", {plan.spending} spending over looks at {', '.join(map(str, looks))} seeds"
                if m > 0 and len(looks) > 1
                else ""
            )
            + f"; {look}"
        )
        if (i, 0) in rejected:
            c.verdict = HELD
            if (i, 1) in rejected:
                c.test += "; also shown below the margin: positive but smaller than the margin"
        elif (i, 1) in rejected:
            c.verdict = NOT_HELD
        else:
            c.verdict = INCONCLUSIVE
            if k < len(looks):
                c.test += f"; continue to the next look at {looks[k]} seeds"
        level = 2 * plan.alpha / m  # one-sided alpha / m as a two-sided level: Holm's first step
        c.mde = tdist.mde_direction(sd, c.n, level) if sd > 0 else 0.0
        c.seeds_needed = tdist.seeds_direction(plan.effect, sd, level) if sd > 0 else None
        c.seeds_range = tdist.seeds_range(plan.effect, sd, c.n, level) if sd > 0 else None
        c.extra["effect"] = plan.effect
    return checks


def primary_model(grid: GridRecord, plan: AnalysisPlan) -> str:
    """The plan's model, or the grid's first dense model (its first model when all are MoE)."""
    if plan.model:
        if plan.model not in grid.models:
            raise UserError(f"analysis plan model {plan.model!r} has no runs here; models: {grid.models}")
        return plan.model
    return next((m for m in grid.models if not grid.is_moe(m)), grid.models[0])


def primary_finding(grid: GridRecord, plan: AnalysisPlan) -> Finding:
    """The plan's primary family on the grid's runs, judged (`decide_primary`)."""
    model, acc = primary_model(grid, plan), Accuracy(grid)
    missing = [c for c in (*plan.configs, plan.baseline) if c not in grid.configs]
    if missing:
        raise UserError(f"analysis plan names configurations without runs here: {', '.join(missing)}")
    checks = []
    for cfg in plan.configs:
        pairs = seed_pairs(grid, model, cfg, plan.baseline, lambda r: acc.gain(r, "avg"))
        checks.append(
            Check(
                f"{acc.name('avg')} RL gain (after RL - after midtrain)",
                cfg,
                plan.baseline,
                "direction",
                [x - y for _, _, x, y in pairs],
                expect=1,
                level=plan.alpha,
                primary=True,
                extra={"b_values": [y for *_, y in pairs]},
            )
        )
    decide_primary(checks, plan)
    names = " and ".join(plan.configs)
    claim = (
        f"Primary (named in the analysis plan): {names} gain more from RL than {plan.baseline} on held-out "
        f"{acc.name('avg')} of {acc.task}"
    )
    return Finding(f"{model}:primary", model, claim, checks)
