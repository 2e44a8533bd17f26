"""The report's figures (matplotlib, PNG), one set per model, drawn from a loaded grid only.

    from shapedce.report.load import load_grid_dir
    from shapedce.report.plots import draw_all
    paths = draw_all(load_grid_dir("runs/reproduce"), "tiny", out_dir)   # {figure name: PNG path}

Lines are the mean over seeds; the band spans the seeds' min..max when there are several.
Figures: pretrain (val perplexity and entropy against tokens), midtrain (Avg@m of every evaluated
task, e.g. knowledge and reasoning, after each stage), rl (train reward, evaluation Avg@k / Cons@k / Pass@k,
entropy, response length against step), passk (Pass@k against k after each stage), shaping (how
much each configuration's loss changes learning in pre-training: grad_shift = ||g_shaped - g_ce|| /
||g_ce|| of the logit gradient, and the mean and max of w, on the training batches). And
`effects_figure`: the pre-training checks' seed-paired differences, one dot per seed, with the mean,
its interval and the check's margin band (parity margin, or absence margin), titled by the verdict.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..errors import require

matplotlib = require("matplotlib", "pipeline")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import EngFormatter  # noqa: E402

from .load import GridRecord, RunRecord  # noqa: E402
from .stats import Check  # noqa: E402

STAGE_ORDER = ("pretrain", "midtrain", "rl")


def _series(runs: list[RunRecord], stage: str, split: str, key: str, x: str = "step"):
    """(xs, mean, lo, hi) of `key` over seeds, aligned on `x`."""
    by_x: dict[float, list[float]] = defaultdict(list)
    for run in runs:
        for row in run.stage_metrics(stage, split):
            if key in row and row[key] is not None:
                by_x[float(row[x])].append(float(row[key]))
    xs = sorted(by_x)
    return (
        xs,
        [statistics.fmean(by_x[v]) for v in xs],
        [min(by_x[v]) for v in xs],
        [max(by_x[v]) for v in xs],
    )


def _line(ax, runs, stage, split, key, label, x="step"):
    xs, mean, lo, hi = _series(runs, stage, split, key, x)
    if not xs:
        return
    (line,) = ax.plot(xs, mean, label=label, marker="o" if len(xs) <= 12 else None, markersize=3)
    if len(runs) > 1:
        ax.fill_between(xs, lo, hi, alpha=0.2, color=line.get_color())


def _finish(fig, axes, path: Path) -> Path:
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pretrain_figure(grid: GridRecord, model: str, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for config in grid.configs:
        runs = grid.select(model, config)
        _line(axes[0], runs, "pretrain", "val", "ppl", config, x="tokens")
        _line(axes[1], runs, "pretrain", "val", "entropy", config, x="tokens")
    for ax, title in zip(axes, ("validation perplexity", "validation entropy (nats)")):
        ax.set(title=f"{model} pre-training: {title}", xlabel="tokens")
        ax.xaxis.set_major_formatter(EngFormatter())
    axes[0].set_yscale("log")
    return _finish(fig, axes, path)


def shaping_figure(grid: GridRecord, model: str, path: Path) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for config in grid.configs:
        runs = grid.select(model, config)
        for ax, key in zip(axes, ("grad_shift", "w_mean", "w_max")):
            _line(ax, runs, "pretrain", "train", key, config, x="tokens")
    titles = ("logit-gradient shift ||g - g_ce|| / ||g_ce||", "mean w", "max w")
    for ax, title in zip(axes, titles):
        ax.set(title=f"{model} pre-training: {title}", xlabel="tokens")
        ax.xaxis.set_major_formatter(EngFormatter())
    return _finish(fig, axes, path)


def midtrain_figure(grid: GridRecord, model: str, path: Path) -> Path:
    tasks = grid.eval_tasks
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.8), squeeze=False)
    axes = axes[0]
    width = 0.8 / max(1, len(grid.configs))
    for ax, task in zip(axes, tasks):
        for i, config in enumerate(grid.configs):
            runs = grid.select(model, config)
            means, errs = [], []
            for stage in STAGE_ORDER:
                vals = [
                    v
                    for v in (
                        r.evals.get(stage, {}).get("tasks", {}).get(task, {}).get("avg_at_m") for r in runs
                    )
                    if isinstance(v, (int, float))
                ]
                means.append(statistics.fmean(vals) if vals else 0.0)
                errs.append((max(vals) - min(vals)) / 2 if len(vals) > 1 else 0.0)
            xs = [s + (i - (len(grid.configs) - 1) / 2) * width for s in range(len(STAGE_ORDER))]
            ax.bar(xs, means, width, yerr=errs, label=config)
        ax.set_xticks(range(len(STAGE_ORDER)), [f"after {s}" for s in STAGE_ORDER])
        m = grid.settings.get("eval_samples", "m")
        ax.set(title=f"{model}: {task} Avg@{m}", ylabel=f"Avg@{m}")
    return _finish(fig, list(axes), path)


def rl_figure(grid: GridRecord, model: str, path: Path) -> Path:
    panels = [
        ("train", "reward", "train reward"),
        ("val", "avg_at_k", "held-out Avg@k"),
        ("val", "cons_at_k", "held-out Cons@k"),
        ("val", "pass_at_k", "held-out Pass@k"),
        ("train", "entropy", "policy entropy (nats)"),
        ("train", "response_length", "response length (tokens)"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    axes = list(axes.flat)
    for config in grid.configs:
        runs = grid.select(model, config)
        for ax, (split, key, _) in zip(axes, panels):
            _line(ax, runs, "rl", split, key, config)
    for ax, (_, _, title) in zip(axes, panels):
        ax.set(title=f"{model} RL: {title}", xlabel="step")
    return _finish(fig, axes, path)


def passk_figure(grid: GridRecord, model: str, path: Path) -> Path:
    task = grid.rl_task
    fig, axes = plt.subplots(1, len(STAGE_ORDER), figsize=(13, 3.8), sharey=True)
    for ax, stage in zip(axes, STAGE_ORDER):
        for config in grid.configs:
            curves = [
                c
                for c in (
                    r.evals.get(stage, {}).get("tasks", {}).get(task, {}).get("pass_at_k")
                    for r in grid.select(model, config)
                )
                if isinstance(c, dict) and c
            ]
            if not curves:
                continue
            ks = sorted((k for k in curves[0] if k.isdigit() and all(k in c for c in curves)), key=int)
            ax.plot(
                [int(k) for k in ks],
                [statistics.fmean(c[k] for c in curves) for k in ks],
                marker="o",
                markersize=3,
                label=config,
            )
        ax.set_xscale("log", base=2)
        ax.set(title=f"{model}: {task} Pass@k after {stage}", xlabel="k")
    axes[0].set_ylabel("Pass@k")
    return _finish(fig, list(axes), path)


def effects_figure(checks: list[Check], model: str, path: Path) -> Path:
    """One panel per check: d = a - b per seed (dots), mean and interval (bar), margin band (shaded)."""
    fig, axes = plt.subplots(1, max(1, len(checks)), figsize=(3.2 * max(1, len(checks)), 3.6), squeeze=False)
    panels = list(axes[0])
    for ax, c in zip(panels, checks):
        band = c.null_margin if c.null_margin is not None else c.margin
        if band is not None:
            absence = c.null_margin is not None
            label = "absence margin (1% of b)" if absence else "parity margin"
            ax.axhspan(-band, band, color="#f3d9b1" if absence else "0.88", label=label)
        ax.axhline(0.0, color="0.4", linewidth=0.8)
        n = len(c.diffs)
        xs = [i / max(1, n - 1) - 0.5 for i in range(n)]
        ax.plot(xs, c.diffs, "o", markersize=4, alpha=0.7, label="one seed")
        if c.estimate is not None:
            lo, hi = c.ci if c.ci is not None else (c.estimate, c.estimate)
            ax.errorbar(
                [0.8],
                [c.estimate],
                yerr=[[c.estimate - lo], [hi - c.estimate]],
                fmt="s",
                color="k",
                capsize=4,
                label="mean and interval",
            )
        ax.set_xticks([])
        ax.set_xlim(-0.8, 1.1)
        ax.set_title(f"{c.a} - {c.b}\n{c.metric.split(' (')[0]}\n{c.verdict} ({n} seeds)", fontsize=8)
    panels[0].set_ylabel(f"{model}: a - b per seed")
    legend: dict[str, Any] = {}
    for ax in panels:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=len(legend), frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


FIGURES = {
    "pretrain": pretrain_figure,
    "shaping": shaping_figure,
    "midtrain": midtrain_figure,
    "rl": rl_figure,
    "passk": passk_figure,
}


def draw_all(grid: GridRecord, model: str, out_dir: Path) -> dict[str, Path]:
    """Every figure of `model` as OUT_DIR/<name>-<model>.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return {name: draw(grid, model, out_dir / f"{name}-{model}.png") for name, draw in FIGURES.items()}
