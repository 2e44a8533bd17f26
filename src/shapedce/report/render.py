"""`shapedce report DIR`: DIR/report.md, DIR/verdicts.json, DIR/runs.csv (one row per run: the values
the checks pair) and the PNG figures, from the grid's files alone.

    shapedce report runs/reproduce          # also run at the end of `shapedce reproduce`
    shapedce report runs/reproduce --plan docs/rl-study/analysis-plan.yaml   # with a primary family
    from shapedce.report import write_report; write_report("runs/reproduce")

With an analysis plan (`--plan FILE`, or ROOT/analysis-plan.yaml) the primary family comes first, with
its own section of the design (`plan_lines`).

Sections: the grid's settings and the statistical design (`design_lines`); per model the figures, a
summary table per stage (mean and 95% interval over seeds of Avg@m, Cons@m, Pass@k on the RL task,
Avg@m of the other tasks, perplexity, entropy and tail mass on held-out text), and every finding
of docs/method/statistics.md with its checks: estimate, interval, p and Holm-adjusted p, margin,
MDE, seeds needed, verdict. Dense and MoE models get their own sections. verdicts.json holds the
same checks (schema in `verdicts.verdicts_json`).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

from ..rundir import TRAIN_STAGES, GridDir
from .checks import NULL_FRACTION, PASSK_MARGIN, PPL_MARGIN, Accuracy, Finding, passk_k, task_result
from .load import GridRecord, load_grid_dir
from .plan import AnalysisPlan, find_plan
from .plots import draw_all, effects_figure
from .spending import nominal_levels
from .stats import ALPHA, MIN_SEEDS, Check, mean_ci
from .tdist import seeds_text
from .verdicts import judged_findings, verdicts_json

KNOWLEDGE_NOTE = (
    " (knowledge asks facts the pre-training corpus states word for word: recall of facts seen in "
    "pre-training, not held out; the other tasks are held out)"
)


def _cell(values: list[float], fmt: str = "{:.3f}") -> str:
    if not values:
        return "-"
    mean, half = mean_ci(values)
    return fmt.format(mean) + ("" if half is None else " ± " + fmt.format(half))


def _get(data: dict | None, *keys: str) -> float | None:
    """data[k1][k2]... when every step is there and the end is a number, else None."""
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return float(data) if isinstance(data, (int, float)) and not isinstance(data, bool) else None


def summary_table(grid: GridRecord, model: str, stage: str) -> list[str]:
    task, m = grid.rl_task, int(grid.settings["eval_samples"])
    k = passk_k(m)
    others = [t for t in grid.eval_tasks if t != task]
    head = (
        f"| config | seeds | {task} Avg@{m} | Cons@{m} | Pass@{k} | "
        + "".join(f"{t} Avg@{m} | " for t in others)
        + "PPL | entropy | tail mass | response length |"
    )
    lines = [head, "|---|" + "---:|" * (8 + len(others))]
    for config in grid.configs:
        runs = [r for r in grid.select(model, config) if stage in r.evals]

        def cell(
            *keys: str, fmt: str = "{:.3f}", source: str = "task", t: str | None = task, runs: list = runs
        ) -> str:
            if source == "task":
                values = [_get(task_result(r, stage, t), *keys) for r in runs]
            else:
                values = [_get(r.evals[stage], "text", *keys) for r in runs]
            return _cell([v for v in values if v is not None], fmt)

        cells = [
            str(len(runs)),
            cell("avg_at_m"),
            cell("cons_at_m"),
            cell("pass_at_k", str(k)),
            *[cell("avg_at_m", t=t) for t in others],
            cell("ppl", source="text"),
            cell("entropy_mean", source="text"),
            cell("tail_mass", source="text", fmt="{:.4f}"),
            cell("response_length", "mean", fmt="{:.1f}"),
        ]
        lines.append(f"| {config} | " + " | ".join(cells) + " |")
    return lines


def _num(x: float | None, fmt: str = "{:+.3f}") -> str:
    return "-" if x is None else fmt.format(x)


def _p(x: float | None) -> str:
    return "-" if x is None else f"{x:.2g}" if x >= 0.001 else "<0.001"


def _tag(label: str | None) -> str:
    return f" *({label})*" if label else ""


def check_row(c: Check) -> str:
    level = f"{100 * c.extra.get('coverage', c.coverage):.4g}%"
    ci = (
        "-"
        if c.ci is None
        else f"[{c.ci[0]:+.3f}, {c.ci[1]:+.3f}] ({level if c.p is not None else 'indicative'})"
    )
    margin = (
        f"did_not_hold if < {c.margin:.4f}"
        if c.primary and c.margin is not None
        else f"absent if ± {c.null_margin:.4f}"
        if c.null_margin is not None
        else "-"
        if c.margin is None
        else ("< " if c.expect else "± ") + f"{c.margin:.3f}"
    )
    p = f"{_p(c.p)} / {_p(c.p_adjusted)}"
    if c.p_absent is not None:
        p += f"; absent {_p(c.p_absent)} / {_p(c.p_absent_adjusted)}"
    if c.p_outside is not None:
        p += f"; beyond {_p(c.p_outside)} / {_p(c.p_outside_adjusted)}"
    seeds = "-" if c.p is None else seeds_text(c.seeds_range)
    if c.primary and c.p is not None:
        seeds += f" (for {c.extra['effect']:g})"
    tag = " *(manipulation)*" if c.label else ""
    return (
        f"| {c.a} vs {c.b}: {c.metric}{tag} | {_num(c.a_mean, '{:.3f}')} | {_num(c.b_mean, '{:.3f}')} | "
        f"{_num(c.estimate)} | {ci} | {p} | {margin} | {_num(c.mde, '{:.3f}')} | "
        f"{seeds} | {c.verdict} |"
    )


def verdict_lines(found: list[Finding]) -> list[str]:
    lines = [
        "| finding / check (a vs b) | a | b | a - b | interval | p / Holm p | margin | MDE | seeds needed | "
        "verdict |",
        "|---|---:|---:|---:|---|---|---|---:|---:|---|",
    ]
    for f in found:
        tag = f" *({f.label})*" if f.label else ""
        note = f" ({f.note})" if f.note and f.verdict == "not_applicable" else ""
        lines.append(f"| **{f.claim}**{tag}{note} | | | | | | | | | **{f.verdict}** |")
        lines += [check_row(c) for c in f.checks]
    return lines


def _pretrain_only(grid: GridRecord) -> str:
    """How many of the seeds present stop after pre-training, as a clause: the seeds at or above the
    grid's `seeds` (the plan runs every stage on seeds 0..seeds-1 only). Counted from the runs, so a
    rerun with a smaller `pretrain_seeds` still names the ones already there."""
    full = grid.settings.get("seeds")
    n = len({r.seed for r in grid.runs if isinstance(full, int) and r.seed >= full})
    counts = Counter((r.model, r.config) for r in grid.runs)
    uneven = len(set(counts.values())) > 1
    per = "; ".join(
        f"{m}: " + ", ".join(f"{c} {k}" for (mm, c), k in counts.items() if mm == m) for m in grid.models
    )
    return (
        f" ({n} of them pre-training only: they enter the pre-training findings alone"
        + (f"; seeds per model and configuration: {per}" if uneven else "")
        + ")"
        if n
        else ""
    )


def design_lines(grid: GridRecord, found: list[Finding]) -> list[str]:
    """The report's preamble: how every finding is judged (docs/method/statistics.md)."""
    seeds = len({r.seed for r in grid.runs})
    n_dir = sum(c.kind == "direction" and c.p is not None and not c.primary for f in found for c in f.checks)
    n_abs = sum(c.p_absent is not None for f in found for c in f.checks)
    n_par = sum(c.kind == "parity" and c.p is not None for f in found for c in f.checks)
    lines = [
        "## How the findings are judged",
        "",
        f"Every check compares two configurations paired by seed (same init, data order, evaluation prompts) "
        f"on the per-seed difference d = a - b. This grid has {seeds} seed(s){_pretrain_only(grid)}.",
        "",
        f'- **Direction** ("a above b"): mean d, its 95% t-interval over seeds, and the two-sided paired '
        f"t-test; the p-values of all {n_dir} direction checks of this report (the secondary family, when "
        f"an analysis plan names a primary one), of its {n_abs} absence tests and of its {n_par} parity "
        "checks' did_not_hold claims are Holm-adjusted together; a check's direction and absence nulls "
        "cannot both be true, so "
        "each step counts the checks that still hold an unrejected null (Shaffer's refinement). held: "
        f"adjusted p < {ALPHA} with the claimed sign; did_not_hold: adjusted p < {ALPHA} with the other "
        "sign; else inconclusive. The interval shown is unadjusted.",
        "- **Absence** (pre-training entropy and tail mass): when the direction test is not significant, "
        f"the check did_not_hold if the effect is shown smaller than {NULL_FRACTION:.0%} of ce's own mean "
        "value (two one-sided t-tests, Holm-adjusted with the direction tests): the knob does not move it "
        "at this scale. 1% is a strict bar: the paper's entropy gaps are about 25% (1.8 vs 2.4 nats at "
        "4B), the perplexity margin 5%.",
        f'- **Parity** ("about the same", "not above"): equivalence by two one-sided tests at 5%, i.e. '
        "the 90% t-interval of d. held: the interval lies inside the margin (a finding held only when all "
        "its parity checks held: level 5% per finding); did_not_hold: d shown beyond the margin by the "
        "one-sided t-test, Holm-adjusted with the direction tests (so a finding's did_not_hold is "
        "multiplicity-controlled); else inconclusive. Margins: perplexity within 5%, judged on "
        f"log-perplexity, |d| < log 1.05 = {PPL_MARGIN:.3f} nats: an order of magnitude below the "
        "entropy gaps the reward knobs "
        'are meant to open (the paper: 1.8 vs 2.4 nats at 4B). "Higher entropy does not raise Pass@k" is '
        f"non-superiority, d < {PASSK_MARGIN} (a lower Pass@k also satisfies it): a raise under 1 point is "
        "below the smallest RL effect the paper reports as real (1-2 points of Avg@128).",
        "- **RL findings** are judged on the level after RL and on the RL gain (after RL minus after "
        "midtrain, "
        "minus ce's gain), each a check; response length on diversity's relative change minus ce's.",
        f"- **MDE**: the true difference the check's test detects with 80% power, from the measured seed "
        f"spread of d; for direction checks at level {ALPHA}/{max(1, n_dir + n_par)} (Holm's first step, "
        "so detected whatever the other checks show), for parity checks the smallest margin the test "
        "would establish at a true d of 0. **Seeds needed**: seeds at which the same test reaches a "
        "verdict on the observed difference with 80% power, as a range a-b: at the low and the high end "
        "of the 95% chi-square interval of the measured seed spread (a few seeds measure it poorly).",
        "- **Labels**: a *manipulation* check (a knob moving its own metric: entropy order, tail mass) "
        "tests the setup, not a claim of the paper; a check the world cannot exhibit is not_applicable, "
        "with the reason, and enters no verdict.",
        f"- With fewer than {MIN_SEEDS} seeds nothing is judged: every check is not_tested and its numbers "
        "are indicative only (with one seed, an interval over evaluation prompts covers evaluation noise, "
        "not seed-to-seed variation).",
        "- A finding held when all its checks held, did_not_hold when any did not hold, not_tested when any "
        "check lacked the runs or seeds, else inconclusive. Every check is in `verdicts.json` beside this "
        "file.",
    ]
    if seeds < MIN_SEEDS:
        lines += [
            "",
            f"**This grid has {seeds} seed(s) (< {MIN_SEEDS}): no finding is tested; the numbers below "
            "are indicative only.**",
        ]
    if grid.rl_task == "knowledge":
        lines += [
            "",
            "The RL task here is `knowledge`: recall of facts the pre-training corpus states word for "
            "word. Its evaluation facts were seen in pre-training (not held out): it measures memory.",
        ]
    return lines


def _stages_line(s: dict) -> str:
    """The stages' settings: the grid's sections (grid.yaml holds every field), or in older folders
    the preset names and override strings."""
    pre, rl = s.get("pretrain"), s.get("rl")
    if isinstance(pre, dict) and isinstance(rl, dict):
        train, mid, data = pre.get("train") or {}, pre.get("midtrain") or {}, pre.get("data") or {}
        return (
            f"- pretrain {train.get('steps')} steps x {train.get('global_batch_tokens')} tokens on "
            f"`{data.get('corpus')}`; midtrain {mid.get('steps')} steps; RL {rl.get('steps')} steps on "
            f"{rl.get('task')} at lr {rl.get('lr')} (every setting: grid.yaml)"
        )
    return (
        f"- pretrain preset `{s.get('pretrain_preset')}` {s.get('pretrain_overrides', '')}; midtrain "
        f"{s.get('midtrain_overrides') or '(preset)'}; RL preset `{s.get('rl_preset')}` "
        f"{s.get('rl_overrides', '')}"
    )


def _settings_lines(grid: GridRecord) -> list[str]:
    s = grid.settings
    seeds = sorted({r.seed for r in grid.runs})
    secs: dict[str, float] = {}
    for run in grid.runs:
        for stage, t in run.timings.items():
            secs[stage] = secs.get(stage, 0.0) + t
    lines = [
        f"- configurations: {', '.join(grid.configs)}; models: {', '.join(grid.models)}; seeds: "
        f"{', '.join(map(str, seeds))}{_pretrain_only(grid)} ({len(grid.runs)} runs)",
        _stages_line(s),
        f"- evaluation after every stage: {s.get('eval_tasks')}, {s.get('eval_problems')} prompts x "
        f"{s.get('eval_samples')} samples, T={s.get('eval_temperature')}, top-p={s.get('eval_top_p')}"
        f"{KNOWLEDGE_NOTE if 'knowledge' in grid.eval_tasks else ''}; "
        f"text statistics on {s.get('eval_text_tokens')} held-out tokens (tail mass: probability outside "
        "the top 100)",
    ]
    if secs:
        lines.append(
            "- wall time summed over runs: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in secs.items())
        )
    return lines


def runs_rows(grid: GridRecord) -> list[dict]:
    """One row per run: the per-seed values the checks pair (final validation perplexity, entropy and
    tail mass of pre-training; Avg@m and Pass@k of the RL task after midtrain and after RL), and
    mid-training's final validation perplexity (how well the RL base was trained). Empty cells: the
    stage did not finish."""
    acc = Accuracy(grid)
    rows = []
    for r in sorted(grid.runs, key=lambda r: (r.model, r.config, r.seed)):
        row = {"model": r.model, "config": r.config, "seed": r.seed}
        for key in ("ppl", "entropy", "tail_mass"):
            row[f"pretrain_{key}"] = r.last("pretrain", "val", key)
        row["midtrain_ppl"] = r.last("midtrain", "val", "ppl")
        for stage in ("midtrain", "rl"):
            row[f"{stage}_avg_at_m"] = acc.value(r, stage, "avg")
            row[f"{stage}_pass_at_{acc.k}"] = acc.value(r, stage, "pass")
        rows.append(row)
    return rows


def write_runs_csv(grid: GridRecord, path: Path) -> Path:
    rows = runs_rows(grid)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["model", "config", "seed"])
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return path


PRETRAIN_FINDINGS = ("ppl_parity", "entropy_order", "tail_mass")
"""The findings drawn in effects-MODEL.png: pre-training's, where pre-training-only seeds add power."""


def plan_lines(plan: AnalysisPlan, found: list[Finding]) -> list[str]:
    """The primary family's design: what the plan fixed, and how its checks are decided."""
    looks = plan.looks_seeds
    margin = (
        f"{plan.margin:g} in Avg@m as a fraction ({100 * plan.margin:g} on a 0-100 scale)"
        if plan.margin_kind == "absolute"
        else f"{plan.margin:.0%} of {plan.baseline}'s mean RL gain"
    )
    spend = (
        f"interim looks at {', '.join(map(str, looks[:-1]))} seeds, final at {looks[-1]}, "
        f"{plan.spending} alpha spending (one-sided nominal levels at alpha/{len(plan.configs)}: "
        + ", ".join(f"{p:.4g}" for p in nominal_levels(looks, plan.alpha / len(plan.configs), plan.spending))
        + ")"
        if len(looks) > 1
        else f"one look, at {looks[-1]} seeds"
    )
    return [
        "## The primary family (named in the analysis plan)",
        "",
        f"- Checks: {', '.join(f'{c} - {plan.baseline}' for c in plan.configs)}: RL gain on held-out Avg@m "
        f"(after RL minus after midtrain), minus {plan.baseline}'s, paired by seed.",
        f"- Family level {plan.alpha:g} one-sided, over both claims of every check and every look "
        "(Holm-Shaffer). held: the gain difference is shown above 0; did_not_hold: it is shown below "
        f"the absence margin, {margin}; else inconclusive.",
        f"- Seeds planned: {plan.seeds}; {spend}. Seeds past the plan are not used here.",
        f"- Seeds needed: for the plan's effect {plan.effect:g} with 80% power at Holm's first step, as a "
        "range over the 95% interval of the measured seed spread.",
        "- Everything else below is the secondary family, Holm-adjusted on its own.",
        "",
    ]


def write_report(root: str | Path, plan_path: str | Path | None = None) -> Path:
    """Render ROOT/report.md, ROOT/verdicts.json and ROOT/<figure>-<model>.png; returns the report's path.
    The analysis plan: `plan_path`, else ROOT/analysis-plan.yaml when there, else none."""
    root = Path(root)
    grid = load_grid_dir(root)
    plan = find_plan(root, plan_path)
    found = judged_findings(grid, plan)
    lines = [
        "# shapedce reproduce: report",
        "",
        f"Directory `{root}`. Regenerate with `shapedce report {root}`.",
        "",
        *_settings_lines(grid),
        "",
        *design_lines(grid, found),
        "",
        *(plan_lines(plan, found) if plan is not None else []),
        "## Verdicts",
        "",
        *[f"- {f.model}: {f.claim}{_tag(f.label)}: **{f.verdict}**" for f in found],
        "",
        "Summary tables: means over seeds (± the 95% t half-width).",
    ]
    for model in grid.models:
        figs = draw_all(grid, model, root)
        pretrain = [
            c for f in found if f.model == model and f.id.split(":")[1] in PRETRAIN_FINDINGS for c in f.checks
        ]
        figs["effects"] = effects_figure(pretrain, model, root / f"effects-{model}.png")
        lines += ["", f"## {model} ({'MoE' if grid.is_moe(model) else 'dense'})", ""]
        lines += [f"![{name}]({path.name})" for name, path in figs.items()]
        for stage in TRAIN_STAGES:
            lines += ["", f"### After {stage}", "", *summary_table(grid, model, stage)]
        lines += [
            "",
            f"### Findings of the paper, checked on {model}",
            "",
            *verdict_lines([f for f in found if f.model == model]),
        ]
    layout = GridDir(root)
    layout.verdicts.write_text(json.dumps(verdicts_json(grid, found, plan), indent=1) + "\n")
    write_runs_csv(grid, layout.runs_csv)
    path = layout.report
    path.write_text("\n".join(lines) + "\n")
    return path
