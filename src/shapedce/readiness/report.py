"""`shapedce readiness PATH --out DIR`: is this base model a good starting point for RL?

    shapedce readiness runs/reproduce/runs/tiny/ce/s0/midtrain --out readiness/ce
    shapedce readiness my_hf_model/ --out readiness/mine --reference runs/reproduce     # against our grid

PATH is any Hugging Face causal LM directory (or a run directory holding final/). Writes
OUT/readiness.md, OUT/readiness.json and PNG figures: the Pass@k curve at RL's temperature, the
entropy distribution of held-out text with its forking-token share, and the top-k coverage of
reference solutions (signals: shapedce.readiness.signals). With --reference (a `shapedce
reproduce` directory) the model is placed against the grid's midtrain models (CE, precision,
diversity, ... priors; their signals cached in RUN/midtrain/readiness.json, or under --cache-dir),
and every signal is correlated with the RL gain those runs went on to get (shapedce.readiness.compare).
Those correlations are over a handful of runs: the report states n and the permutation p-value.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import require

matplotlib = require("matplotlib", "pipeline")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..eval.loading import resolve_model_dir  # noqa: E402
from ..eval.text import HIST_EDGES  # noqa: E402
from ..report.stats import t975  # noqa: E402
from ..rundir import LOCK, FolderLock, prepare_out  # noqa: E402
from .compare import Reference, correlate, nearest_config, reference_runs  # noqa: E402
from .signals import COVERAGE_KS, ReadinessSettings, compute_signals, flatten  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _by_config(refs: list[Reference]) -> dict[str, list[Reference]]:
    out: dict[str, list[Reference]] = {}
    for ref in refs:
        out.setdefault(ref.config, []).append(ref)
    return out


def draw(signals: dict, refs: list[Reference], task: str, corr: list[dict], out: Path) -> dict[str, Path]:
    """passk.png, entropy.png, coverage.png and (with references) predictors.png in `out`."""
    figs = {}
    groups = _by_config(refs)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for config, rs in groups.items():
        for i, ref in enumerate(rs):
            curve = ref.signals["tasks"][task]["pass_at_k"]
            ax.plot(
                [int(k) for k in curve],
                list(curve.values()),
                "--",
                alpha=0.6,
                label=config if i == 0 else None,
            )
    curve = signals["tasks"][task]["pass_at_k"]
    ax.plot([int(k) for k in curve], list(curve.values()), "k-o", lw=2, label="this model")
    ax.set(
        xscale="log",
        xlabel="k",
        ylabel="Pass@k",
        title=f"Pass@k on {task} (T={signals['settings']['temperature']})",
    )
    ax.legend(fontsize=7)
    figs["passk"] = _save(fig, out / "passk.png")

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    labels = [f"{a:g}" for a in HIST_EDGES]
    for name, sig, style in [
        *[(c, rs[0].signals, "--") for c, rs in groups.items()],
        ("this model", signals, "k-"),
    ]:
        counts = sig["text"]["entropy_hist"]["counts"]
        total = max(1, sum(counts))
        ax.plot(
            range(len(counts)),
            [c / total for c in counts],
            style,
            lw=2 if name == "this model" else 1,
            label=name,
        )
    ax.axvline(HIST_EDGES.index(1.0), color="grey", lw=0.8)
    ax.set_xticks(range(len(labels)), labels, rotation=60, fontsize=7)
    ax.set(
        xlabel="token entropy (nats), bin start; forking tokens right of the grey line",
        ylabel="share of tokens",
        title="Entropy of held-out text",
    )
    ax.legend(fontsize=7)
    figs["entropy"] = _save(fig, out / "entropy.png")

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    names = ["this model", *groups]
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        sigs = [signals] if name == "this model" else [r.signals for r in groups[name]]
        vals = [sum(s["tasks"][task]["coverage"][str(k)] for s in sigs) / len(sigs) for k in COVERAGE_KS]
        ax.bar(
            [j + (i - (len(names) - 1) / 2) * width for j in range(len(COVERAGE_KS))], vals, width, label=name
        )
    ax.set_xticks(range(len(COVERAGE_KS)), [f"top-{k}" for k in COVERAGE_KS])
    ax.set(ylim=(0, 1), ylabel="share of solution tokens", title=f"Top-k coverage of {task} solutions")
    ax.legend(fontsize=7)
    figs["coverage"] = _save(fig, out / "coverage.png")

    usable = [r for r in refs if r.rl_gain is not None]
    if corr and usable:
        top = [row for row in corr if row["pearson"] is not None][:3]
        fig, axes = plt.subplots(1, max(1, len(top)), figsize=(4.2 * max(1, len(top)), 3.6), squeeze=False)
        mine = flatten(signals, task)
        for ax, row in zip(axes[0], top):
            for ref in usable:
                ax.scatter(flatten(ref.signals, task)[row["signal"]], ref.rl_gain)
                ax.annotate(
                    f"{ref.config}/s{ref.seed}",
                    (flatten(ref.signals, task)[row["signal"]], ref.rl_gain),
                    fontsize=7,
                )
            ax.axvline(mine[row["signal"]], color="k", lw=1, ls="--")
            ax.set(
                xlabel=row["signal"] + " (dashed: this model)",
                ylabel=f"RL gain, Avg@m on {task}",
                title=f"r={row['pearson']:.2f}, rho={row['spearman']:.2f}, n={row['n']}",
            )
        figs["predictors"] = _save(fig, out / "predictors.png")
    return figs


def _f(v: float | None, fmt: str = "{:.3f}") -> str:
    return "-" if v is None else fmt.format(v)


def markdown(
    signals: dict,
    refs: list[Reference],
    task: str,
    corr: list[dict],
    figs: dict[str, Path],
    reference: Path | None,
) -> str:
    s = signals["settings"]
    lines = [
        "# RL readiness",
        "",
        f"Model `{signals['model']}`. Held-out tasks {s['tasks']}: {s['problems']} test prompts "
        f"x {s['samples']} samples at T={s['temperature']} (RL's sampling), top-p 1; reference solutions "
        f"teacher-forced for top-k coverage; {signals['text']['tokens']} tokens of held-out text.",
        "",
    ]
    lines += [f"![{name}]({path.name})" for name, path in figs.items()]
    groups = _by_config(refs)
    mine = flatten(signals, task)
    head = "| signal | this model |" + "".join(f" {c} (mean of {len(rs)}) |" for c, rs in groups.items())
    lines += ["", f"## Signals on {task}", "", head, "|---|" + "---:|" * (1 + len(groups))]
    for name, value in mine.items():
        cells = [_f(sum(flatten(r.signals, task)[name] for r in rs) / len(rs)) for rs in groups.values()]
        lines.append(f"| {name} | {_f(value)} |" + "".join(f" {c} |" for c in cells))
    for other, t in signals["tasks"].items():
        if other != task:
            lines.append(
                f"\nAlso {other}: Avg@{s['samples']} {t['avg_at_m']:.3f}, Pass@{s['samples']} "
                f"{t['pass_at_k'][str(max(map(int, t['pass_at_k'])))]:.3f}, "
                f"top-5 coverage {t['coverage']['5']:.3f}."
            )
    if not refs:
        lines += ["", "No --reference given: nothing to compare with or to predict RL gains from."]
        return "\n".join(lines) + "\n"
    near = nearest_config(mine, refs, task)
    usable = [r for r in refs if r.rl_gain is not None]
    lines += ["", f"## Against the reference runs in `{reference}`", ""]
    if near:
        lines.append(
            "Closest reference prior over all signals (z-scored by the references' spread): "
            f"**{near[0]}** "
            f"(distance {near[1]:.2f})."
        )
    gains = ", ".join(
        f"{r.config}/s{r.seed} {r.rl_gain:+.3f}" + ("" if r.gain_se is None else f" (± {r.gain_se:.3f})")
        for r in usable
    )
    lines += [
        "",
        f"RL gain = Avg@m on {task} after RL minus after midtrain, from the grid's evaluations "
        "(± its standard "
        f"error over the evaluation's prompts): {gains or 'none yet'}.",
        "",
        "| signal | n | Pearson r | Spearman rho | permutation p (r) | verdict |",
        "|---|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {row['signal']} | {row['n']} | {_f(row['pearson'], '{:+.2f}')} | "
        f"{_f(row['spearman'], '{:+.2f}')} | "
        f"{_f(row['p'], '{:.3f}')} | {row['verdict']} |"
        for row in corr
    ]
    n = len(usable)
    named = {
        v: [row["signal"] for row in corr if row["verdict"].startswith(v)]
        for v in ("predicted", "weak lead", "did not")
    }
    lines += [
        "",
        f"Which signals predicted the RL gain: {', '.join(named['predicted']) or 'none at p <= 0.05'}; "
        f"weak leads (p <= 0.2): {', '.join(named['weak lead']) or 'none'}; "
        f"did not predict: {', '.join(named['did not']) or 'none'}.",
    ]
    ses = [r.gain_se for r in usable if r.gain_se is not None]
    if ses and n > 1:
        spread = max(r.rl_gain for r in usable) - min(r.rl_gain for r in usable)
        lines.append(
            f"The gains span {spread:.3f} across runs while each carries an evaluation standard error "
            "of about "
            f"{sum(ses) / len(ses):.3f}: "
            + (
                "differences between runs are within evaluation noise, so no signal "
                "can be expected to track them."
                if spread < 2 * sum(ses) / len(ses)
                else "the spread exceeds twice that noise."
            )
        )
    critical = ""
    if n > 2:  # the |r| a two-sided test at p < 0.05 needs with n points: t / sqrt(n - 2 + t^2)
        t = t975(n - 2)
        critical = f" At n = {n} only |r| > {t / math.sqrt(n - 2 + t * t):.2f} reaches p < 0.05, and"
    lines += [
        "",
        f"This rests on n = {n} runs ({len(groups)} configurations x their seeds) and {len(corr)} "
        f"signals tested at once: weak evidence.{critical} among {len(corr)} signals about "
        f"{0.05 * len(corr):.1f} would reach p < 0.05 by chance; read a 'predicted' here as a lead "
        "to test on more seeds.",
    ]
    return "\n".join(lines) + "\n"


def run_readiness(
    path: str | Path,
    out: str | Path,
    settings: ReadinessSettings,
    reference: str | Path | None = None,
    cache_dir: str | Path | None = None,
    log=print,
) -> Path:
    """Compute, compare and write the report; returns OUT/readiness.md. OUT/.lock is held throughout
    (one writer per folder: a second process stops at once with one line)."""
    out = Path(out)
    settings.validate()
    prepare_out(out)  # a bad --out fails now, not after the models are scored
    with FolderLock(out / LOCK, f"readiness folder {out}").acquire():
        return _run_readiness(path, out, settings, reference, cache_dir, log)


def _run_readiness(path, out: Path, settings: ReadinessSettings, reference, cache_dir, log) -> Path:
    model_dir = str(resolve_model_dir(path))  # a bad PATH fails before any reference model is scored
    refs: list[Reference] = []
    task = settings.tasks.split(",")[0].strip()
    if reference is not None:
        grid, refs = reference_runs(reference, settings, Path(cache_dir) if cache_dir else None, log=log)
        task = grid.rl_task
    log(f"readiness: {path}")
    same = [r.signals for r in refs if r.signals["model"] == model_dir]  # a reference model itself: reuse
    signals = same[0] if same else compute_signals(path, settings)
    corr = correlate(refs, task) if refs else []
    figs = draw(signals, refs, task, corr, out)
    (out / "readiness.json").write_text(
        json.dumps(
            {
                "signals": signals,
                "task": task,
                "correlations": corr,
                "references": [
                    {
                        "model": r.model,
                        "config": r.config,
                        "seed": r.seed,
                        "rl_gain": r.rl_gain,
                        "gain_se": r.gain_se,
                        "flat": flatten(r.signals, task),
                    }
                    for r in refs
                ],
            },
            indent=1,
        )
    )
    md = out / "readiness.md"
    md.write_text(markdown(signals, refs, task, corr, figs, Path(reference) if reference else None))
    return md
