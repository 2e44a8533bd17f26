"""The paper's findings as seed-paired checks on a grid's own numbers (docs/method/statistics.md).

    from shapedce.report.verdicts import judged_findings, verdicts_json
    found = judged_findings(grid_record)          # every model's findings, Holm over all direction checks
    found = judged_findings(grid_record, plan)    # with an AnalysisPlan: its primary family first
    for f in found: print(f.model, f.claim, f.verdict, [c.verdict for c in f.checks])
    verdicts_json(grid_record, found, plan)       # the OUT/verdicts.json document (schema_version 1)

With an analysis plan (`shapedce.report.plan`) the plan's primary family is a finding of its own
(`shapedce.report.primary`), judged apart; every check below is secondary, Holm-adjusted in a family of
its own (the primary checks' duplicates leave it). Labels: entropy_order and tail_mass are
manipulation checks (a knob moving its own metric); rl_length is not_applicable when response length
never varies (every logged RL step of every run the same: a fixed answer template), and so is every
finding the plan names in not_applicable.

Checks per model (a - b per seed; the rules are in `shapedce.report.stats`):
  ppl_parity         every configuration vs ce: final validation log-perplexity, parity within
                     PPL_MARGIN nats (a perplexity ratio within 5%).
  entropy_order      precision < ce and diversity > ce: final validation entropy (direction; absent
                     when within NULL_FRACTION of ce's entropy, see `shapedce.report.stats`).
  tail_mass          tail < ce: final validation tail mass beyond the top-k (direction, with the same
                     absence test). A check of the mechanism (lambda_tail pushes mass out of the
                     tail), not a claim of the paper.
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

import functools
import math
from typing import Any

from ..errors import UserError
from .checks import (
    NULL_FRACTION,
    PASSK_MARGIN,
    PPL_MARGIN,
    SCHEMA_VERSION,
    Accuracy,
    Finding,
    accuracy_checks,
    make_check,
    prompt_ci,
    seed_pairs,
    task_label,
    window_mean,
)
from .load import GridRecord, RunRecord
from .plan import AnalysisPlan
from .primary import primary_finding
from .stats import ALPHA, MANIPULATION, MIN_SEEDS, judge


def pretrain_ppl(grid: GridRecord, model: str) -> Finding:
    def logppl(r: RunRecord):
        v = r.last("pretrain", "val", "ppl")
        return math.log(v) if v is not None and v > 0 else None

    checks = [
        make_check(
            "parity",
            "final validation log-perplexity (nats)",
            c,
            "ce",
            seed_pairs(grid, model, c, "ce", logppl),
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
        make_check(
            "direction",
            "final validation entropy (nats)",
            c,
            "ce",
            seed_pairs(grid, model, c, "ce", lambda r: r.last("pretrain", "val", "entropy")),
            expect=e,
            null_fraction=NULL_FRACTION,
        )
        for c, e in (("precision", -1), ("diversity", 1))
    ]
    return Finding(
        f"{model}:entropy_order",
        model,
        "Pre-training entropy is ordered precision (beta=-0.25) < ce < diversity (beta=0.5)",
        checks,
    ).label_checks(MANIPULATION)


def pretrain_tail_mass(grid: GridRecord, model: str) -> Finding:
    pairs = seed_pairs(grid, model, "tail", "ce", lambda r: r.last("pretrain", "val", "tail_mass"))
    return Finding(
        f"{model}:tail_mass",
        model,
        "Mechanism: tail suppression (lambda_tail=-0.1) lowers the pre-training tail mass beyond the top-k",
        [
            make_check(
                "direction",
                "final validation tail mass",
                "tail",
                "ce",
                pairs,
                expect=-1,
                null_fraction=NULL_FRACTION,
            )
        ],
    ).label_checks(MANIPULATION)


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
        make_check(
            "direction",
            "RL policy entropy, first quarter of steps",
            "diversity",
            "ce",
            seed_pairs(grid, model, "diversity", "ce", start),
            expect=1,
        ),
        make_check(
            "direction",
            "relative RL entropy drop, first to last quarter",
            "diversity",
            "ce",
            seed_pairs(grid, model, "diversity", "ce", drop),
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
        make_check(
            "direction",
            "relative change of response length over RL, first to last quarter",
            "diversity",
            "ce",
            seed_pairs(grid, model, "diversity", "ce", change),
            expect=-1,
        )
    ]
    found = Finding(
        f"{model}:rl_length",
        model,
        "With diversity's entropy collapse its response length shrinks over RL, more than ce's",
        checks,
    )
    lengths = {
        float(row["response_length"])
        for r in grid.runs
        if r.model == model
        for row in (_rl_rows(r) or [])
        if isinstance(row.get("response_length"), (int, float))
    }
    if len(lengths) == 1:
        found.not_applicable(
            f"response length is {lengths.pop():g} tokens at every logged RL step of every run: the "
            "task's answer template fixes it, so no configuration can shrink it"
        )
    return found


def passk_entropy(grid: GridRecord, model: str) -> Finding:
    acc = Accuracy(grid)
    checks = []
    for stage in ("midtrain", "rl"):
        passk = functools.partial(acc.value, stage=stage, metric="pass")
        pairs = seed_pairs(grid, model, "diversity", "ce", passk)
        kw: dict[str, Any] = {}
        if len(pairs) == 1:
            kw["prompt_ci"] = prompt_ci([acc.prompts(r, stage, "pass") for r in pairs[0][:2]], [1, -1])
        checks.append(
            make_check(
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
    acc = Accuracy(grid)
    checks = []
    for cfg in ("precision", "tail"):
        for label, fn in (
            (f"Avg@{acc.m} after RL", lambda r: acc.value(r, "rl", "avg")),
            (f"Avg@{acc.m} RL gain", lambda r: acc.gain(r, "avg")),
        ):
            per = {
                m: {ra.seed: x - y for ra, _, x, y in seed_pairs(grid, m, cfg, "ce", fn)}
                for m in (dense, moe)
            }
            seeds = sorted(set(per[dense]) & set(per[moe]))
            pairs = [(None, None, per[moe][s], per[dense][s]) for s in seeds]
            checks.append(make_check("direction", f"{cfg} - ce, {label}", moe, dense, pairs, expect=1))
    return Finding(
        f"{moe}:moe_gains", moe, "RL gains over ce are larger on the MoE model than on the dense one", checks
    )


def judged_findings(grid: GridRecord, plan: AnalysisPlan | None = None) -> list[Finding]:
    """Every model's findings (the MoE comparison once, with the first dense and first MoE model), with
    Holm's adjustment over all their direction checks together; with a plan, its primary finding first,
    judged on its own, and the rest a secondary family."""
    check_looks(grid, plan)
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
    if plan is not None:
        for f in found:
            if f.id.split(":")[1] in plan.inapplicable:
                f.not_applicable(plan.not_applicable_reason)
        primary = primary_finding(grid, plan)
        same = {(primary.model, c.a, c.b, c.metric) for c in primary.checks}
        for f in found:
            f.checks = [c for c in f.checks if (f.model, c.a, c.b, c.metric) not in same]
        found.insert(0, primary)
    judge([c for f in found for c in f.checks if not c.primary])
    return found


def check_looks(grid: GridRecord, plan: AnalysisPlan | None) -> None:
    """Refuse a look the plan does not name: grid.yaml's `first_look_seeds` (a study read at that many
    seeds, then grown) must be one of the plan's looks; without a plan there is no spending, so none."""
    n = grid.settings.get("first_look_seeds") or 0
    if isinstance(n, int) and n > 0 and (plan is None or n not in plan.looks_seeds):
        looks = "no analysis plan" if plan is None else f"the plan's looks are {list(plan.looks_seeds)}"
        raise UserError(
            f"grid.yaml records a look at first_look_seeds={n} that no spending plan names ({looks}); "
            "interim looks need an analysis plan (docs/method/statistics.md)"
        )


def verdicts_json(grid: GridRecord, found: list[Finding], plan: AnalysisPlan | None = None) -> dict:
    """The OUT/verdicts.json document."""
    return {
        "schema_version": SCHEMA_VERSION,
        "seeds": len({r.seed for r in grid.runs}),
        "correction": "holm",
        "alpha": ALPHA,
        "min_seeds": MIN_SEEDS,
        "ppl_margin": PPL_MARGIN,
        "passk_margin": PASSK_MARGIN,
        "null_fraction": NULL_FRACTION,
        "first_look_seeds": grid.settings.get("first_look_seeds") or 0,
        "plan": None if plan is None else plan.as_dict(),
        "findings": [
            {
                "id": f.id,
                "model": f.model,
                "claim": f.claim,
                "verdict": f.verdict,
                "primary": any(c.primary for c in f.checks),
                "label": f.label,
                "note": f.note,
                "checks": [c.as_dict() for c in f.checks],
            }
            for f in found
        ],
    }
