"""The variance pilot's analysis: the RL gain's variance components and the seeds and core-hours each
design needs (used by scripts/variance_pilot.py; re-run alone on a finished pilot).

    python scripts/pilot_design.py runs/pilot                       # reads pilot.csv and costs.csv

Model of one run's gain, per configuration c: g = mu_c + B (base) + R (RL seed) + E (evaluation
sampling, the same eval seed scoring the mid-trained and the RL model). Estimated per configuration
from the nested layout (bases x RL seeds x eval seeds) by the method of moments, then averaged over
the configurations (each has the same degrees of freedom):
  eval  s_e^2 = mean over (base, RL seed) of the variance across eval seeds;
  RL    s_r^2 = mean over bases of the variance across RL seeds of the eval-averaged gains - s_e^2 / E;
  base  s_b^2 = variance across bases of the base means - s_r^2 / R - s_e^2 / (R E);
a negative estimate is reported as it is and counted as 0 in the designs.

A design is R RL seeds per base, each scored once with m' samples (eval noise scales as m / m').
A confirmatory seed is one base per configuration; its paired difference of gains (config - ce,
RL seeds averaged) has variance 2 (s_b^2 + (s_r^2 + s_e^2 m / m') / R) when the two bases of a seed
share nothing; the seeds needed for 80% power come from `shapedce.report.tdist.seeds_range` at the
planning level (two-sided 0.025, i.e. one-sided 0.0125: the first Holm step of a two-check family
at one-sided 0.025), as a range over the 95% interval of the SD.
"""

from __future__ import annotations

import csv
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from shapedce.report.tdist import seeds_range, seeds_text

PLAN_ALPHA = 0.025
"""Two-sided level of the planning power calculation (one-sided 0.0125)."""


def _var(values: list[float]) -> float:
    return statistics.variance(values) if len(values) > 1 else 0.0


def components(rows: list[dict]) -> dict:
    """Variance components of the gain (pooled over configurations) and the layout's sizes."""
    per_config = []
    for config in sorted({r["config"] for r in rows}):
        cell: dict[tuple, list[float]] = defaultdict(list)
        mids: dict[int, list[float]] = defaultdict(list)
        for r in rows:
            if r["config"] == config:
                cell[(int(r["base"]), int(r["rl_seed"]))].append(float(r["gain"]))
                mids[int(r["base"])].append(float(r["midtrain_avg"]))
        bases = sorted({b for b, _ in cell})
        n_e = min(len(v) for v in cell.values())
        n_r = min(sum(1 for (b2, _) in cell if b2 == b) for b in bases)
        s_e = statistics.fmean(_var(v) for v in cell.values())
        means = {k: statistics.fmean(v) for k, v in cell.items()}
        s_r = (
            statistics.fmean(_var([m for (b2, _), m in means.items() if b2 == b]) for b in bases) - s_e / n_e
        )
        base_means = [statistics.fmean([m for (b2, _), m in means.items() if b2 == b]) for b in bases]
        s_b = _var(base_means) - s_r / n_r - s_e / (n_r * n_e)
        mid_means = [statistics.fmean(mids[b]) for b in bases]
        per_config.append(
            {
                "config": config,
                "bases": len(bases),
                "rl_seeds": n_r,
                "eval_seeds": n_e,
                "eval": s_e,
                "rl": s_r,
                "base": s_b,
                "mean_gain": statistics.fmean(base_means),
                "mid_avgs": mid_means,
                "base_gains": base_means,
            }
        )
    pooled = {k: statistics.fmean(c[k] for c in per_config) for k in ("eval", "rl", "base")}
    # degrees of freedom of each pooled component (for the SD interval of a design's difference)
    df = {
        "eval": sum(c["bases"] * c["rl_seeds"] * (c["eval_seeds"] - 1) for c in per_config),
        "rl": sum(c["bases"] * (c["rl_seeds"] - 1) for c in per_config),
        "base": sum(c["bases"] - 1 for c in per_config),
    }
    return {"pooled": pooled, "df": df, "per_config": per_config}


def read_costs(path: Path) -> dict[str, float]:
    """Mean core-seconds of a base (pretrain + midtrain), an RL run and one evaluation."""
    steps: dict[str, list[float]] = defaultdict(list)
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            steps[r["step"]].append(float(r["core_s"]))
    mean = {k: statistics.fmean(v) for k, v in steps.items()}
    return {"base": mean["pretrain"] + mean["midtrain"], "rl": mean["rl"], "eval": mean["eval"]}


def design_var(comp: dict, rl_seeds: int, sample_ratio: float) -> float:
    """Variance of one seed's paired difference of gains (config - ce) under a design."""
    p = {k: max(0.0, v) for k, v in comp["pooled"].items()}
    return 2 * (p["base"] + (p["rl"] + p["eval"] / sample_ratio) / rl_seeds)


def design_df(comp: dict, rl_seeds: int, sample_ratio: float) -> int:
    """Satterthwaite's degrees of freedom of design_var's estimate (its SD interval's df)."""
    p, df = comp["pooled"], comp["df"]
    terms = {
        "base": max(0.0, p["base"]),
        "rl": max(0.0, p["rl"]) / rl_seeds,
        "eval": max(0.0, p["eval"]) / (rl_seeds * sample_ratio),
    }
    denom = sum(t * t / df[k] for k, t in terms.items() if df[k] > 0 and t > 0)
    return max(2, int(sum(terms.values()) ** 2 / denom)) if denom else 2


def design_table(
    comp: dict,
    costs: Path,
    n_configs: int = 3,
    effects=(0.02, 0.03, 0.05),
    samples=(32, 128),
    pilot_m: int = 32,
) -> str:
    """Markdown: per design (RL seeds per base, eval samples) the SD of the paired difference, the seeds
    needed at each effect (range over the SD's 95% interval) and core-hours per planned seed."""
    cost = read_costs(costs) if costs.is_file() else None
    head = "| RL seeds per base | eval samples | SD of the paired difference | "
    head += " | ".join(f"seeds for {e:.2f}" for e in effects) + " | core-h per seed |"
    lines = [head, "|---:|---:|---:|" + "---:|" * (len(effects) + 1)]
    for r in (1, 2, 3, 4):
        for m in samples:
            ratio = m / pilot_m
            sd = math.sqrt(design_var(comp, r, ratio))
            n_sd = design_df(comp, r, ratio) + 1  # seeds_range takes the sample size (df + 1)
            need = [seeds_text(seeds_range(e, sd, n_sd, PLAN_ALPHA)) for e in effects]
            per_seed = "-"
            if cost:
                core_s = cost["base"] + cost["eval"] * ratio + r * (cost["rl"] + cost["eval"] * ratio)
                per_seed = f"{n_configs * core_s / 3600:.2f}"
            lines.append(f"| {r} | {m} | {sd:.4f} | " + " | ".join(need) + f" | {per_seed} |")
    return "\n".join(lines)


def main() -> None:
    import json

    root = Path(sys.argv[1])
    with (root / "pilot.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    comp = components(rows)
    print(json.dumps(comp, indent=1))
    print(design_table(comp, root / "costs.csv"))


if __name__ == "__main__":
    main()
