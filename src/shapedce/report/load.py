"""Read a `shapedce reproduce` directory back from its files: grid.yaml, and per run metrics.jsonl of
every stage, the eval results.json after every stage, and timings.json. Nothing is recomputed, and
nothing here imports torch (the report runs where only the files are).

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

from ..errors import UserError
from ..rundir import TRAIN_STAGES, GridDir, RunDir

GRID_KEYS = ("configs", "models", "eval_tasks", "eval_samples")
"""grid.yaml keys the report needs (every `shapedce reproduce` writes them)."""


MOE_KEYS = ("num_experts", "num_local_experts", "n_routed_experts")
"""config.json keys of an expert count: Qwen3-MoE in current transformers writes num_local_experts,
older versions num_experts, DeepSeek-style configs n_routed_experts."""


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
    """Training stages whose final/ model exists; `last` reads only these (a partial curve is no result)."""
    moe: bool = False
    """A finished stage's final/config.json names experts (num_experts > 0)."""

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

    def is_moe(self, model: str) -> bool:
        """Whether any run of `model` saved a mixture-of-experts config."""
        return any(r.moe for r in self.runs if r.model == model)

    @property
    def eval_tasks(self) -> list[str]:
        return [t.strip() for t in str(self.settings.get("eval_tasks", "")).split(",") if t.strip()]

    @property
    def rl_task(self) -> str | None:
        """The task the findings are judged on: the RL stage's task when the evaluation scores it
        (read from a run's rl/config.yaml), else the first evaluated task other than knowledge."""
        for run in self.runs:
            try:
                task = (yaml.safe_load((RunDir(run.dir).stage("rl").config).read_text()) or {}).get("task")
            except (OSError, yaml.YAMLError):
                continue
            if task in self.eval_tasks:
                return task
        return next(
            (t for t in self.eval_tasks if t != "knowledge"), self.eval_tasks[0] if self.eval_tasks else None
        )


def _read_object(path: Path, needs: str | None = None) -> dict | None:
    """The JSON object in PATH, None when the file is absent; a one-line UserError when it is not a JSON
    object (holding the key `needs` as an object, when given)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as err:
        raise UserError(
            f"{path} is not valid JSON ({str(err).splitlines()[0]}); rerun that stage or delete the file"
        ) from None
    if not isinstance(data, dict) or (needs is not None and not isinstance(data.get(needs), dict)):
        what = f"a JSON object with a {needs!r} object" if needs else "a JSON object"
        raise UserError(
            f"{path} holds {type(data).__name__} {str(data)[:40]!r}, not {what}; rerun that stage "
            "or delete the file"
        )
    return data


def load_run(model: str, config: str, seed_dir: Path) -> RunRecord:
    run = RunRecord(model, config, int(seed_dir.name[1:]), seed_dir)
    layout = RunDir(seed_dir)
    for stage in TRAIN_STAGES:
        files = layout.stage(stage)
        if files.finished():
            run.finished.add(stage)
        if files.metrics.is_file():
            run.metrics[stage] = files.rows()
        results = _read_object(files.results, needs="tasks")
        if results is not None:
            if not all(isinstance(t, dict) for t in results["tasks"].values()):
                raise UserError(f"{files.results}: every task entry must be an object")
            run.evals[stage] = results
        model_config = _read_object(files.final / "config.json") if stage in run.finished else None
        run.moe = run.moe or any((model_config or {}).get(key) for key in MOE_KEYS)
    run.timings = _read_object(layout.timings) or {}
    return run


def load_grid_dir(root: str | Path) -> GridRecord:
    """The grid in ROOT (runs in the order of grid.yaml's configs and models, then seed)."""
    root = Path(root)
    layout = GridDir(root)
    if not layout.grid_file.is_file():
        raise UserError(f"{root} is not a reproduce directory (no grid.yaml in it)")
    try:
        settings = yaml.safe_load(layout.grid_file.read_text())
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise UserError(
            f"{root}/grid.yaml is not valid YAML{at} (truncated?); rerun `shapedce reproduce` to rewrite it"
        ) from None
    if not isinstance(settings, dict):
        raise UserError(
            f"{root}/grid.yaml holds {type(settings).__name__}, not the grid's settings (truncated?)"
        )
    if isinstance(settings.get("eval"), dict):  # the grid's eval section; flat eval_* in older folders
        settings = {**{f"eval_{k}": v for k, v in settings["eval"].items()}, **settings}
    missing = [k for k in GRID_KEYS if not str(settings.get(k) or "").strip()]
    if missing:
        raise UserError(
            f"{root}/grid.yaml lacks {', '.join(missing)} (truncated?); rerun `shapedce reproduce` to rewrite"
        )
    if not str(settings["eval_samples"]).isdigit() or int(settings["eval_samples"]) < 1:
        raise UserError(
            f"{root}/grid.yaml: eval_samples must be an integer >= 1; got {settings['eval_samples']!r}"
        )
    models = [m for m in str(settings.get("models", "")).split(",") if m]
    configs = [c for c in str(settings.get("configs", "")).split(",") if c]
    runs = []
    for model in models:
        for config in configs:
            runs += [load_run(model, config, r.path) for r in layout.seed_dirs(model, config)]
    if not runs:
        raise UserError(f"{root} holds no runs yet (expected {root}/runs/MODEL/CONFIG/sSEED)")
    return GridRecord(root, settings, runs)


LEDGER_STAGE_KEYS = {"pretrain": ("ppl", "entropy", "tail_mass"), "midtrain": ("ppl",)}
"""runs.csv columns STAGE_KEY that stand for the last validation row of a stage's metrics.jsonl."""


def grid_from_runs_csv(path: str | Path, task: str, samples: int) -> GridRecord:
    """A GridRecord from runs.csv alone (the columns `shapedce report` writes; a study's ledger that
    spans machines, whose run folders are gone): per run the pre-training validation values,
    mid-training perplexity, and the RL task's Avg@m and Pass@k after mid-training and after RL.
    Enough for the primary family and the pre-training checks; nothing that needs a curve."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in ("model", "config", "seed") if rows and c not in rows[0]]
    if not rows or missing:
        raise UserError(f"{path} holds no runs" + (f" (lacks {', '.join(missing)})" if missing else ""))

    def number(row: dict, key: str) -> float | None:
        text = (row.get(key) or "").strip()
        try:
            return float(text) if text else None
        except ValueError:
            raise UserError(f"{path}: {key} must be a number; got {text!r}") from None

    runs = []
    for row in rows:
        try:
            seed = int(row["seed"])
        except ValueError:
            raise UserError(f"{path}: seed must be an integer; got {row['seed']!r}") from None
        run = RunRecord(
            row["model"], row["config"], seed, path.parent / row["model"] / row["config"] / f"s{seed}"
        )
        for stage, keys in LEDGER_STAGE_KEYS.items():
            values = {k: number(row, f"{stage}_{k}") for k in keys}
            if any(v is not None for v in values.values()):
                run.metrics[stage] = [{"split": "val", **{k: v for k, v in values.items() if v is not None}}]
                run.finished.add(stage)
        for stage in ("midtrain", "rl"):
            avg = number(row, f"{stage}_avg_at_m")
            if avg is None:
                continue
            result: dict[str, Any] = {"avg_at_m": avg, "samples": samples, "pass_at_k": {}}
            for key in row:
                if key.startswith(f"{stage}_pass_at_") and (value := number(row, key)) is not None:
                    result["pass_at_k"][key.rsplit("_", 1)[1]] = value
            run.evals[stage] = {"tasks": {task: result}}
            run.finished.add(stage)
        runs.append(run)
    settings = {
        "configs": ",".join(dict.fromkeys(r.config for r in runs)),
        "models": ",".join(dict.fromkeys(r.model for r in runs)),
        "eval_tasks": task,
        "eval_samples": samples,
    }
    return GridRecord(path.parent, settings, runs)
