"""Reference runs for the readiness report: their cached signals, their RL gains, and correlations.

    from shapedce.readiness.compare import reference_runs, correlate
    refs = reference_runs("runs/reproduce", settings)        # computes RUN/midtrain/readiness.json once
    table = correlate(refs, task="knowledge")                 # per signal: Pearson r, Spearman rho, p, n

A reference run is one (model, config, seed) of a `shapedce reproduce` directory whose midtrain
final/ model exists. Its RL gain is what RL later added on the grid's RL task: Avg@m after RL
minus Avg@m after midtrain, from the grid's own eval results (runs without both are left out of
the correlations). Signals are cached in RUN/midtrain/readiness.json (or under --cache-dir) with
the settings they were computed with, and recomputed when the settings differ.

p-values are exact permutation tests (all n! pairings for n <= 8, else 20000 random ones): with
n = 5, |rho| = 1 is the only Spearman value with p < 0.05 (p = 2/120), and |r| must exceed
about 0.88 for Pearson's.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import UserError
from ..report.load import GridRecord, RunRecord, load_grid_dir
from ..rundir import RunDir
from .signals import ReadinessSettings, compute_signals, flatten

STAGE = "midtrain"
CACHE_FILE = "readiness.json"


@dataclass
class Reference:
    model: str
    config: str
    seed: int
    signals: dict
    rl_gain: float | None
    """Avg@m on the RL task after RL minus after midtrain; None when either eval is missing."""
    gain_se: float | None = None
    """Standard error of rl_gain over the evaluation's prompts (paired: the same prompts both times)."""


def rl_gain(run: RunRecord, task: str) -> tuple[float | None, float | None]:
    """(gain, its standard error over prompts or None) of one run on `task`."""
    before = run.evals.get(STAGE, {}).get("tasks", {}).get(task)
    after = run.evals.get("rl", {}).get("tasks", {}).get(task)
    if before is None or after is None:
        return None, None
    gain, se = after["avg_at_m"] - before["avg_at_m"], None
    a, b, m = after.get("correct_per_prompt"), before.get("correct_per_prompt"), after.get("samples")
    if a and b and m and len(a) == len(b) > 1:
        se = statistics.stdev((x - y) / m for x, y in zip(a, b)) / math.sqrt(len(a))
    return gain, se


def cached_signals(model_dir: Path, cache: Path, settings: ReadinessSettings) -> dict:
    """The signals of model_dir, from `cache` when it was written with the same settings."""
    try:
        data = json.loads(cache.read_text())
        if data.get("settings") == asdict(settings):
            return data
    except (OSError, ValueError, RecursionError):
        pass
    data = compute_signals(model_dir, settings)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(cache)
    return data


def reference_runs(
    root: str | Path, settings: ReadinessSettings, cache_dir: Path | None = None, log=print
) -> tuple[GridRecord, list[Reference]]:
    """Every reference run with a midtrain model: its signals (cached) and its RL gain."""
    grid = load_grid_dir(root)
    task = grid.rl_task
    if task not in [t.strip() for t in settings.tasks.split(",")]:
        raise UserError(f"--tasks must include the reference grid's RL task {task!r}; got {settings.tasks!r}")
    refs = []
    for run in grid.runs:
        files = RunDir(run.dir).stage(STAGE)
        if not files.finished():
            continue
        model_dir = files.final
        where = (cache_dir / run.model / run.config / f"s{run.seed}") if cache_dir else files.path
        log(f"readiness: reference {run.model}/{run.config}/s{run.seed}")
        refs.append(
            Reference(
                run.model,
                run.config,
                run.seed,
                cached_signals(model_dir, where / CACHE_FILE, settings),
                *rl_gain(run, task),
            )
        )
    if not refs:
        raise UserError(f"--reference {root}: no run has a midtrain model yet (RUN/{STAGE}/final)")
    return grid, refs


def ranks(values: list[float]) -> list[float]:
    """Ranks 1..n, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for t in range(i, j + 1):
            out[order[t]] = (i + j) / 2 + 1
        i = j + 1
    return out


def pearson(x: list[float], y: list[float]) -> float | None:
    """Pearson's r; None when either side is constant or n < 3."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    mx, my = statistics.fmean(x), statistics.fmean(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    return sxy / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))


def spearman(x: list[float], y: list[float]) -> float | None:
    return pearson(ranks(x), ranks(y))


def permutation_p(stat, x: list[float], y: list[float], seed: int = 0) -> float | None:
    """Two-sided permutation p-value of |stat(x, y)| (exact for n <= 8)."""
    observed = stat(x, y)
    if observed is None:
        return None
    if len(y) <= 8:
        perms = itertools.permutations(y)
    else:
        rng = random.Random(seed)
        perms = (rng.sample(y, len(y)) for _ in range(20000))
    hits = total = 0
    for perm in perms:
        value = stat(x, list(perm))
        hits += value is not None and abs(value) >= abs(observed) - 1e-12
        total += 1
    return hits / total


def verdict(r: float | None, rho: float | None, p: float | None) -> str:
    """Words for one signal's correlation with the RL gain (see the module docstring for n)."""
    if r is None or rho is None:
        return "constant across references: cannot tell"
    agree = (r > 0) == (rho > 0) and abs(rho) >= 0.6
    if p is not None and p <= 0.05 and agree:
        return "predicted (p <= 0.05)"
    if p is not None and p <= 0.2 and agree:
        return "weak lead (p <= 0.2)"
    return "did not predict"


def correlate(refs: list[Reference], task: str) -> list[dict]:
    """Per signal: n, Pearson r, Spearman rho, permutation p of r, verdict; strongest |r| first."""
    usable = [r for r in refs if r.rl_gain is not None]
    flats = [flatten(r.signals, task) for r in usable]
    gains = [r.rl_gain for r in usable]
    rows = []
    for name in flats[0] if flats else {}:
        xs = [f[name] for f in flats]
        r, rho = pearson(xs, gains), spearman(xs, gains)
        p = permutation_p(pearson, xs, gains)
        rows.append(
            {
                "signal": name,
                "n": len(xs),
                "pearson": r,
                "spearman": rho,
                "p": p,
                "verdict": verdict(r, rho, p),
            }
        )
    return sorted(rows, key=lambda row: -abs(row["pearson"] or 0.0))


def nearest_config(
    model_flat: dict[str, float], refs: list[Reference], task: str
) -> tuple[str, float] | None:
    """The reference configuration whose mean signals are closest to the model's (z-scored by the
    references' spread; signals constant across references are skipped), and that distance."""
    per_config: dict[str, list[dict[str, float]]] = {}
    for ref in refs:
        per_config.setdefault(ref.config, []).append(flatten(ref.signals, task))
    all_flats = [f for fs in per_config.values() for f in fs]
    spread = {k: statistics.pstdev([f[k] for f in all_flats]) for k in model_flat}
    keys = [k for k, s in spread.items() if s > 0]
    if not keys:
        return None
    dist = {
        c: math.sqrt(
            sum(((model_flat[k] - statistics.fmean(f[k] for f in fs)) / spread[k]) ** 2 for k in keys)
        )
        for c, fs in per_config.items()
    }
    best = min(dist, key=dist.get)
    return best, dist[best]
