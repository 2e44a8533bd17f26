"""A plain re-check of the primary verdicts from runs.csv alone: per primary configuration the seed-paired
RL gain difference, one-sided paired t-tests, Holm over the family, and whether verdicts.json agrees.

    shapedce report --recheck docs/rl-study/runs.csv --plan docs/rl-study/analysis-plan.yaml
    from shapedce.report.recheck import recheck
    lines, agree = recheck("runs.csv", plan, "verdicts.json")   # agree: every primary verdict matches

runs.csv needs the columns model, config, seed, midtrain_avg_at_m and rl_avg_at_m (what `shapedce
report` writes). The model: the plan's, else that of verdicts.json's primary checks, else the first
model in runs.csv. Written apart from `shapedce.report.primary` on purpose, from the rule as
docs/method/statistics.md states it: gain = rl_avg_at_m - midtrain_avg_at_m; d = gain(config) -
gain(baseline) on each seed both have, in seed order, cut to the plan's largest look reached (a relative
margin measured on each look's seeds); held when
"d <= 0" is rejected, did_not_hold when "d >= margin" is, each null at alpha / g (g: checks with a null
not yet rejected), repeated while something is rejected. With interim looks each null is tested at
every look reached against the look's nominal level (`spending.nominal_levels`, the plan's only shared
piece).
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

from ..errors import UserError
from .plan import AnalysisPlan
from .spending import nominal_levels
from .tdist import t_cdf

COLUMNS = ("model", "config", "seed", "midtrain_avg_at_m", "rl_avg_at_m")


def read_gains(path: str | Path) -> dict[tuple[str, str], dict[int, float]]:
    """(model, config) -> seed -> RL gain on Avg@m, from runs.csv (rows with both numbers)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{path} lacks the column(s) {', '.join(missing)}")
        out: dict[tuple[str, str], dict[int, float]] = {}
        for row in reader:
            try:
                gain = float(row["rl_avg_at_m"]) - float(row["midtrain_avg_at_m"])
                seed = int(row["seed"])
            except ValueError:
                continue  # an unfinished stage leaves its cell empty
            out.setdefault((row["model"], row["config"]), {})[seed] = gain
    return out


def _one_sided_p(d: list[float], shift: float) -> tuple[float, float]:
    """(p of "true d <= 0", p of "true d >= shift") by one-sided paired t-tests."""
    n, mean = len(d), sum(d) / len(d)
    se = statistics.stdev(d) / math.sqrt(n)
    if se == 0:
        return (0.0 if mean > 0 else 1.0), (0.0 if mean < shift else 1.0)
    return 1 - t_cdf(mean / se, n - 1), t_cdf((mean - shift) / se, n - 1)


def primary_verdicts(
    gains: dict[tuple[str, str], dict[int, float]], plan: AnalysisPlan, model: str
) -> list[dict]:
    """Per primary configuration: seeds used, mean d, margin, p-values at the last look, verdict."""
    looks, base = plan.looks_seeds, gains.get((model, plan.baseline), {})
    rows: list[dict] = []
    pvals: list[list[tuple[float, float]]] = []
    for config in plan.configs:
        mine = gains.get((model, config), {})
        seeds = sorted(set(mine) & set(base))
        reached = [n for n in looks if n <= len(seeds)]
        row: dict = {
            "config": config,
            "seeds": reached[-1] if reached else len(seeds),
            "verdict": "not_tested",
        }
        rows.append(row)
        if not reached:
            pvals.append([])
            continue
        margins = [plan.margin_for(statistics.fmean(base[s] for s in seeds[:n])) for n in reached]
        row.update(
            estimate=statistics.fmean(mine[s] - base[s] for s in seeds[: reached[-1]]), margin=margins[-1]
        )
        pvals.append(
            [_one_sided_p([mine[s] - base[s] for s in seeds[:n]], m) for n, m in zip(reached, margins)]
        )
        row["p_above_0"], row["p_below_margin"] = pvals[-1][-1]
    rejected: set[tuple[int, int]] = set()
    while True:
        open_checks = [i for i, p in enumerate(pvals) if p and not {(i, 0), (i, 1)} <= rejected]
        if not open_checks:
            break
        level = nominal_levels(looks, plan.alpha / len(open_checks), plan.spending)
        new = {
            (i, claim)
            for i in open_checks
            for claim in (0, 1)
            if any(p[claim] < level[k] for k, p in enumerate(pvals[i]))
        } - rejected
        if not new:
            break
        rejected |= new
    for i, row in enumerate(rows):
        if pvals[i]:
            row["verdict"] = (
                "held" if (i, 0) in rejected else "did_not_hold" if (i, 1) in rejected else "inconclusive"
            )
    return rows


def recheck(
    runs_csv: str | Path, plan: AnalysisPlan, verdicts: str | Path | None = None
) -> tuple[list[str], bool]:
    """Lines to print and whether every primary verdict agrees with verdicts.json (True without one)."""
    gains = read_gains(runs_csv)
    doc = None
    if verdicts is not None:
        try:
            doc = json.loads(Path(verdicts).read_text())
        except (OSError, ValueError) as err:
            raise UserError(
                f"{verdicts}: not a readable verdicts.json ({str(err).splitlines()[0]})"
            ) from None
    found = [
        (f.get("model"), c)
        for f in (doc or {}).get("findings", [])
        for c in f.get("checks", [])
        if c.get("primary")
    ]
    model = plan.model or (found[0][0] if found else next(iter(gains), ("", ""))[0])
    lines = [f"plain re-check of {runs_csv}: model {model}, family level {plan.alpha:g} one-sided"]
    agree = True
    for row in primary_verdicts(gains, plan, model):
        text = f"{row['config']} - {plan.baseline}: {row['seeds']} seeds"
        if "estimate" in row:
            text += (
                f", d = {row['estimate']:+.4f}, margin {row['margin']:.4f}, p(d <= 0) = "
                f"{row['p_above_0']:.3g}, p(d >= margin) = {row['p_below_margin']:.3g}"
            )
        text += f": {row['verdict']}"
        if doc is not None:
            theirs = next(
                (c["verdict"] for m, c in found if m == model and c.get("a") == row["config"]), None
            )
            same = theirs == row["verdict"]
            agree &= same
            text += f"; verdicts.json: {theirs} ({'agrees' if same else 'DISAGREES'})"
        lines.append(text)
    if doc is not None:
        lines.append("every primary verdict agrees" if agree else "the re-check DISAGREES with verdicts.json")
    return lines, agree
