"""Read a `shapedce reproduce` directory back from its files: grid.yaml, and per run metrics.jsonl of
every stage, the eval results.json after every stage, and timings.json. Nothing is recomputed.

    from shapedce.report.load import load_grid_dir
    grid = load_grid_dir("runs/reproduce")
    grid.runs[0].stage_metrics("pretrain", "val")     # rows of pretrain/metrics.jsonl
    grid.runs[0].evals["rl"]["tasks"]["arith-compare"]["avg_at_m"]
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..train.metrics import read_metrics
from ..errors import UserError

TRAIN_STAGES = ("pretrain", "midtrain", "rl")


@dataclass
class RunRecord:
    """Everything one run (model, config, seed) wrote."""

    model: str
    config: str
    seed: int
    dir: Path
    metrics: dict[str, list[dict]] = field(default_factory=dict)
    """stage -> rows of RUN/<stage>/metrics.jsonl."""
    evals: dict[str, dict] = field(default_factory=dict)
    """stage -> RUN/<stage>/eval/results.json."""
    timings: dict[str, float] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)
    """Training stages whose final/ model exists; `last` reads only these (a partial curve is not a result)."""

    def stage_metrics(self, stage: str, split: str) -> list[dict]:
        return [r for r in self.metrics.get(stage, []) if r.get("split") == split]

    def last(self, stage: str, split: str, key: str) -> float | None:
        if stage not in self.finished:
            return None
        rows = [r for r in self.stage_metrics(stage, split) if key in r]
        return float(rows[-1][key]) if rows else None


@dataclass
class GridRecord:
    root: Path
    settings: dict[str, Any]
    runs: list[RunRecord]

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(r.model for r in self.runs))

    @property
    def configs(self) -> list[str]:
        return list(dict.fromkeys(r.config for r in self.runs))

    def select(self, model: str, config: str) -> list[RunRecord]:
        """Runs of one (model, config), ordered by seed."""
        return sorted((r for r in self.runs if r.model == model and r.config == config), key=lambda r: r.seed)

    @property
    def eval_tasks(self) -> list[str]:
        return [t.strip() for t in str(self.settings.get("eval_tasks", "")).split(",") if t.strip()]

    @property
    def rl_task(self) -> str | None:
        """The task the findings are judged on: the RL stage's task when the evaluation scores it
        (read from a run's rl/config.yaml), else the first evaluated task other than knowledge."""
        for run in self.runs:
            try:
                task = (yaml.safe_load((run.dir / "rl" / "config.yaml").read_text()) or {}).get("task")
            except (OSError, yaml.YAMLError):
                continue
            if task in self.eval_tasks:
                return task
        return next((t for t in self.eval_tasks if t != "knowledge"), self.eval_tasks[0] if self.eval_tasks else None)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def load_run(model: str, config: str, seed_dir: Path) -> RunRecord:
    run = RunRecord(model, config, int(seed_dir.name[1:]), seed_dir)
    for stage in TRAIN_STAGES:
        if (seed_dir / stage / "final" / "config.json").is_file():
            run.finished.add(stage)
        if (seed_dir / stage / "metrics.jsonl").is_file():
            run.metrics[stage] = read_metrics(seed_dir / stage / "metrics.jsonl")
        results = _read_json(seed_dir / stage / "eval" / "results.json")
        if results is not None:
            run.evals[stage] = results
    run.timings = _read_json(seed_dir / "timings.json") or {}
    return run


def load_grid_dir(root: str | Path) -> GridRecord:
    """The grid in ROOT (runs in the order of grid.yaml's configs and models, then seed)."""
    root = Path(root)
    if not (root / "grid.yaml").is_file():
        raise UserError(f"{root} is not a reproduce directory (no grid.yaml in it)")
    settings = yaml.safe_load((root / "grid.yaml").read_text()) or {}
    models = [m for m in str(settings.get("models", "")).split(",") if m]
    configs = [c for c in str(settings.get("configs", "")).split(",") if c]
    runs = []
    for model in models:
        for config in configs:
            cdir = root / "runs" / model / config
            seeds = sorted(cdir.glob("s[0-9]*"), key=lambda p: int(p.name[1:])) if cdir.is_dir() else []
            runs += [load_run(model, config, d) for d in seeds if d.name[1:].isdigit()]
    if not runs:
        raise UserError(f"{root} holds no runs yet (expected {root}/runs/MODEL/CONFIG/sSEED)")
    return GridRecord(root, settings, runs)
