"""`shapedce report DIR`: DIR/report.md and its PNG figures, from the grid's metrics files alone.

    shapedce report runs/reproduce          # also run at the end of `shapedce reproduce`
    from shapedce.report import write_report; write_report("runs/reproduce")

Sections: the grid's settings; per model the figures, a summary table per stage (mean and 95%
interval over seeds of Avg@m, Cons@m, Pass@k on the RL task, Avg@m of the other tasks, held-out
perplexity, entropy and tail mass), and the verdict on each finding of SPEC section 5 with the
numbers it rests on. Dense and MoE models get their own sections.
"""

from __future__ import annotations

from pathlib import Path

from ..models import FLAVORS
from .load import GridRecord, RunRecord, load_grid_dir
from .plots import draw_all
from .stats import mean_ci
from .verdicts import findings, passk_k, task_result

STAGES = ("pretrain", "midtrain", "rl")


def _cell(values: list[float], fmt: str = "{:.3f}") -> str:
    if not values:
        return "-"
    mean, half = mean_ci(values)
    return fmt.format(mean) + ("" if half is None else " ± " + fmt.format(half))


def summary_table(grid: GridRecord, model: str, stage: str) -> list[str]:
    task, m = grid.rl_task, grid.settings.get("eval_samples", 1)
    k = passk_k(int(m))
    others = [t for t in grid.eval_tasks if t != task]
    head = (f"| config | seeds | {task} Avg@{m} | Cons@{m} | Pass@{k} | " + "".join(f"{t} Avg@{m} | " for t in others)
            + "PPL | entropy | tail mass | response length |")
    lines = [head, "|---|" + "---:|" * (8 + len(others))]
    for config in grid.configs:
        runs = [r for r in grid.select(model, config) if stage in r.evals]

        def col(fn) -> list[float]:
            return [v for v in (fn(r) for r in runs) if v is not None]

        def reasoning(key: str, r: RunRecord):
            res = task_result(r, stage, task)
            return None if res is None else (res["pass_at_k"].get(str(k)) if key == "pass" else res[key])

        cells = [str(len(runs)), _cell(col(lambda r: reasoning("avg_at_m", r))), _cell(col(lambda r: reasoning("cons_at_m", r))),
                 _cell(col(lambda r: reasoning("pass", r))),
                 *[_cell(col(lambda r, t=t: (task_result(r, stage, t) or {}).get("avg_at_m"))) for t in others],
                 _cell(col(lambda r: r.evals[stage]["text"]["ppl"])), _cell(col(lambda r: r.evals[stage]["text"]["entropy_mean"])),
                 _cell(col(lambda r: r.evals[stage]["text"]["tail_mass"]), "{:.4f}"),
                 _cell(col(lambda r: (task_result(r, stage, task) or {}).get("response_length", {}).get("mean")), "{:.1f}")]
        lines.append(f"| {config} | " + " | ".join(cells) + " |")
    return lines


def verdict_lines(grid: GridRecord, model: str, dense: str | None, moe: str | None) -> list[str]:
    lines = ["| finding | verdict | numbers (a vs b, difference d = a - b) |", "|---|---|---|"]
    for f in findings(grid, model, dense, moe):
        evidence = "; ".join(f"{c.claim} [{c.verdict}]: {c.evidence()}" for c in f.checks) or f.note
        lines.append(f"| {f.title} | **{f.verdict}** | {evidence} |")
    return lines


def _settings_lines(grid: GridRecord) -> list[str]:
    s = grid.settings
    seeds = sorted({r.seed for r in grid.runs})
    secs: dict[str, float] = {}
    for run in grid.runs:
        for stage, t in run.timings.items():
            secs[stage] = secs.get(stage, 0.0) + t
    lines = [f"- configurations: {', '.join(grid.configs)}; models: {', '.join(grid.models)}; seeds: "
             f"{', '.join(map(str, seeds))} ({len(grid.runs)} runs)",
             f"- pretrain preset `{s.get('pretrain_preset')}` {s.get('pretrain_overrides', '')}; midtrain "
             f"{s.get('midtrain_overrides') or '(preset)'}; RL preset `{s.get('rl_preset')}` {s.get('rl_overrides', '')}",
             f"- evaluation after every stage: {s.get('eval_tasks')}, {s.get('eval_problems')} held-out prompts x "
             f"{s.get('eval_samples')} samples, T={s.get('eval_temperature')}, top-p={s.get('eval_top_p')}; "
             f"text statistics on {s.get('eval_text_tokens')} held-out tokens (tail mass: probability outside the top 100)"]
    if secs:
        lines.append("- wall time summed over runs: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in secs.items()))
    return lines


def write_report(root: str | Path) -> Path:
    """Render ROOT/report.md and ROOT/<figure>-<model>.png; returns the report's path."""
    root = Path(root)
    grid = load_grid_dir(root)
    kinds = {m: ("MoE" if getattr(FLAVORS.get(m), "num_experts", None) else "dense") for m in grid.models}
    dense = next((m for m in grid.models if kinds[m] == "dense"), None)
    moe = next((m for m in grid.models if kinds[m] == "MoE"), None)
    both = dense is not None and moe is not None
    lines = ["# shapedce reproduce: report", "", f"Directory `{root}`. Regenerate with `shapedce report {root}`.", "",
             *_settings_lines(grid), "",
             "Verdicts: with several seeds a finding's check is judged on the 95% t-interval of the seed-paired "
             "difference; with one seed, accuracy checks use a 95% interval over the evaluation's prompts (paired, "
             "same prompts and sampling noise), which covers evaluation noise but not seed-to-seed variation, and "
             "the others a stated threshold. Numbers are means over seeds (± the 95% half-width)."]
    for model in grid.models:
        figs = draw_all(grid, model, root)
        lines += ["", f"## {model} ({kinds[model]})", ""]
        lines += [f"![{name}]({path.name})" for name, path in figs.items()]
        for stage in STAGES:
            lines += ["", f"### After {stage}", "", *summary_table(grid, model, stage)]
        lines += ["", f"### Findings of the paper, checked on {model}", "",
                  *verdict_lines(grid, model, dense if both and model == moe else None, moe if both and model == moe else None)]
    path = root / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
