"""The experiment grid of `shapedce reproduce`: its typed config, presets, and the plan of runs.

    from shapedce.reproduce.grid import load_grid, plan
    grid = load_grid("tiny", ["seeds=3", "configs=ce,precision"])    # presets: presets/reproduce/*.yaml
    for run in plan(grid, root):                                       # one Run per (model, config, seed)
        print(run.name, [s.name for s in run.stages()])

A run is one reward configuration (a named setting of `shapedce.loss.SETTINGS`) on one model
flavor with one seed, through six stages: pretrain, eval of the pre-trained model, midtrain, its
eval, RL, its eval (a run of a `pretrain_seeds` seed: the first two). Every stage writes into
RUN/<stage>/ and is done when its output exists, so a rerun skips finished stages. The seed sets
model init, data order and RL sampling; the data world and the evaluation prompts and sampling
noise stay fixed, so configurations compare paired.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..config import RunConfig, build_config, check_ranges, load_config, load_run_config, read_preset
from ..errors import UserError
from ..loss import SETTINGS
from ..models import FLAVORS
from ..rundir import STAGES as STAGES  # re-exported: `from shapedce.reproduce.grid import STAGES`
from ..rundir import GridDir, RunDir

PRETRAIN_ONLY = STAGES[:2]
"""The stages of a `pretrain_seeds` run: pretrain and eval-pretrain."""
PRESET_DIR = Path(__file__).resolve().parent.parent / "presets" / "reproduce"


@dataclass(kw_only=True, slots=True)
class GridConfig:
    configs: str = "ce,precision,diversity,tail,head"
    """Comma-separated reward configurations: names of `shapedce losses` (ce, precision, diversity, tail,
    head) or auto (beta set online towards a target entropy, `shapedce.loss.control`)."""
    auto_target_entropy: float = 0.0
    """Target entropy (nats per token) of the `auto` configuration; 0 = the setting's default
    (`shapedce.loss.config.AUTO_TARGET_ENTROPY`, chosen for the tiny grid)."""
    models: str = "tiny"
    """Comma-separated model flavors of `shapedce models` (e.g. tiny,tiny-moe)."""
    seeds: int = 1
    """Seeds per (model, config): 0 .. seeds-1. Intervals in the report need >= 2."""
    pretrain_seeds: int = 0
    """Further seeds (seeds .. seeds + pretrain_seeds - 1) that run only pre-training and its
    evaluation: power for the pre-training findings (perplexity parity, entropy order, tail mass) at
    about 40% of a full run's cost. The RL findings use the first `seeds` seeds."""
    pretrain_configs: str = ""
    """Comma-separated subset of `configs` that the pre-training-only seeds run; empty = all of them
    (e.g. "ce,precision" adds power to precision's checks alone: every check pairs with ce)."""
    pretrain_models: str = ""
    """Comma-separated subset of `models` that the pre-training-only seeds run; empty = all of them."""
    first_look_seeds: int = 0
    """Seeds at which this grid's findings were first read, before it grew (0: read once). The report
    judges every check with more seeds than this as a second look, at level 0.025 instead of 0.05.
    Once set in a folder it stays: a rerun that leaves it out keeps it, another value is refused."""
    jobs: int = 0
    """Runs trained at the same time, each in its own process; 0 = auto (1 on GPU, one per CPU core)."""
    pretrain_preset: str = "tiny"
    """Preset of `shapedce pretrain` (smoke | tiny | small | paper)."""
    pretrain_overrides: str = ""
    """Space-separated key=value overrides of the pre-training config, e.g. "train.steps=200"."""
    midtrain_overrides: str = ""
    """Space-separated key=value overrides of the derived mid-training config."""
    rl_preset: str = "tiny"
    """Preset of `shapedce rl` (smoke | tiny | long | paper)."""
    rl_overrides: str = ""
    """Space-separated key=value overrides of the RL config, e.g. "steps=20 lr=5e-5"."""
    eval_tasks: str = "knowledge,arith-compare"
    """Tasks scored after every stage: knowledge (recall) and reasoning (the RL task)."""
    eval_problems: int = 64
    """Held-out prompts per eval task."""
    eval_samples: int = 8
    """Samples per prompt, m of Avg@m / Cons@m (paper: 128)."""
    eval_temperature: float = 0.7
    eval_top_p: float = 0.95
    eval_max_new_tokens: int = 128
    eval_text_tokens: int = 20000
    """Held-out text tokens for perplexity, entropy and tail mass."""
    eval_batch_size: int = 64
    """Sequences per sampling forward pass: bounds the KV cache (`shapedce plan` shows it)."""

    def validate(self) -> GridConfig:
        check_ranges(
            self,
            [
                ("seeds", self.seeds >= 1, ">= 1"),
                ("pretrain_seeds", self.pretrain_seeds >= 0, ">= 0"),
                ("first_look_seeds", self.first_look_seeds >= 0, ">= 0 (0 = read once)"),
                (
                    "auto_target_entropy",
                    self.auto_target_entropy >= 0,
                    ">= 0 (0 = the auto setting's default)",
                ),
                ("jobs", self.jobs >= 0, ">= 0 (0 = auto)"),
                ("eval_problems", self.eval_problems >= 1, ">= 1"),
                ("eval_samples", self.eval_samples >= 1, ">= 1"),
                ("eval_temperature", self.eval_temperature >= 0, ">= 0"),
                ("eval_top_p", 0 < self.eval_top_p <= 1, "in (0, 1]"),
                ("eval_max_new_tokens", self.eval_max_new_tokens >= 1, ">= 1"),
                ("eval_text_tokens", self.eval_text_tokens >= 1, ">= 1"),
                ("eval_batch_size", self.eval_batch_size >= 1, ">= 1"),
            ],
        )
        for name in self.config_names:
            if name not in SETTINGS:
                raise UserError(f"configs: unknown configuration {name!r}; choose from {', '.join(SETTINGS)}")
        for name in self.model_names:
            if name not in FLAVORS:
                raise UserError(f"models: unknown flavor {name!r}; choose from {', '.join(FLAVORS)}")
        for key, allowed in (("pretrain_configs", self.config_names), ("pretrain_models", self.model_names)):
            extra = [n for n in _names(getattr(self, key)) if n not in allowed]
            if extra:
                raise UserError(
                    f"{key}: {', '.join(extra)} not in {key.split('_')[1]} ({', '.join(allowed)})"
                )
        for key in ("pretrain_overrides", "midtrain_overrides", "rl_overrides"):
            try:
                shlex.split(getattr(self, key))
            except ValueError as err:
                raise UserError(f"{key}: {err}") from None
        return self

    @property
    def config_names(self) -> list[str]:
        names = _names(self.configs)
        if not names or len(set(names)) != len(names):
            raise UserError(
                f"configs must name distinct configurations, e.g. ce,precision; got {self.configs!r}"
            )
        return names

    @property
    def model_names(self) -> list[str]:
        names = _names(self.models)
        if not names or len(set(names)) != len(names):
            raise UserError(f"models must name distinct flavors, e.g. tiny,tiny-moe; got {self.models!r}")
        return names

    def runs_pretrain_only(self, model: str, config: str) -> bool:
        """Whether (model, config) runs the pre-training-only seeds."""
        configs, models = _names(self.pretrain_configs), _names(self.pretrain_models)
        return (not configs or config in configs) and (not models or model in models)

    def overrides(self, stage: str) -> list[str]:
        return shlex.split(getattr(self, f"{stage}_overrides"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def load_grid(preset: str, overrides: list[str] = ()) -> GridConfig:
    """A reproduce preset, then `key=value` overrides, validated."""
    return build_config(read_preset(preset, PRESET_DIR, "reproduce preset"), overrides, GridConfig)


def load_grid_file(path: str | Path, overrides: list[str] = ()) -> GridConfig:
    """The grid a reproduce directory saved (DIR/grid.yaml), plus overrides."""
    return load_run_config(path, overrides, GridConfig, "reproduce grid")


@dataclass(frozen=True)
class Run:
    """One (model, config, seed) cell of the grid and its directory ROOT/runs/MODEL/CONFIG/sSEED."""

    model: str
    config: str
    seed: int
    dir: Path
    stages: tuple[str, ...] = STAGES
    """The stages this run goes through: all of them, or pretrain and its eval (`pretrain_seeds`)."""

    @property
    def name(self) -> str:
        return f"{self.model}/{self.config}/s{self.seed}"

    @property
    def files(self) -> RunDir:
        """The run's folder layout (`shapedce.rundir`)."""
        return RunDir(self.dir)

    def stage_dir(self, stage: str) -> Path:
        """pretrain / midtrain / rl, and eval-X -> X/eval (where `shapedce eval` writes)."""
        sd = self.files.stage(stage)
        return sd.eval_dir if stage.startswith("eval-") else sd.path

    def is_done(self, stage: str) -> bool:
        return self.files.is_done(stage)

    def next_stage(self) -> str | None:
        return self.files.next_stage(self.stages)


def plan(grid: GridConfig, root: Path) -> list[Run]:
    """Every run of the grid, seed-major so that early results cover all configurations; the
    pre-training-only seeds come last (on `pretrain_models` x `pretrain_configs`)."""
    layout = GridDir(root)
    return [
        Run(m, c, s, layout.run_dir(m, c, s).path, STAGES if s < grid.seeds else PRETRAIN_ONLY)
        for m in grid.model_names
        for s in range(grid.seeds + grid.pretrain_seeds)
        for c in grid.config_names
        if s < grid.seeds or grid.runs_pretrain_only(m, c)
    ]


def pretrain_config(grid: GridConfig, run: Run) -> RunConfig:
    target = (
        [f"loss.target_entropy={grid.auto_target_entropy}"]
        if run.config == "auto" and grid.auto_target_entropy
        else []
    )
    return load_config(
        grid.pretrain_preset,
        [
            f"loss={run.config}",
            *target,
            f"model.flavor={run.model}",
            f"train.seed={run.seed}",
            *grid.overrides("pretrain"),
        ],
    )


def rl_config(grid: GridConfig, run: Run):
    from ..train.rl_config import load_rl_config

    return load_rl_config(grid.rl_preset, [f"seed={run.seed}", *grid.overrides("rl")])


def eval_settings(grid: GridConfig):
    """How every stage of every run is evaluated; the held-out text is that of the pre-training world."""
    from ..eval.run import EvalSettings
    from ..eval.scoring import BUILTIN_TEXTS

    corpus = load_config(grid.pretrain_preset, grid.overrides("pretrain")).data.corpus
    return EvalSettings(
        text=corpus if corpus in BUILTIN_TEXTS else "",
        tasks=grid.eval_tasks,
        samples=grid.eval_samples,
        problems=grid.eval_problems,
        temperature=grid.eval_temperature,
        top_p=grid.eval_top_p,
        max_new_tokens=grid.eval_max_new_tokens,
        text_tokens=grid.eval_text_tokens,
        batch_size=grid.eval_batch_size,
        seed=0,
    ).validate()


def check_grid(grid: GridConfig, root: Path) -> list[Run]:
    """Validate every stage's config of every run without training (one-line errors); the plan."""
    from ..tasks import get_tasks
    from ..train.lm import midtrain_config

    runs = plan(grid, root)
    get_tasks(grid.eval_tasks)
    eval_settings(grid)
    for run in runs:
        pre = pretrain_config(grid, run)
        midtrain_config(pre, run.stage_dir("pretrain"), grid.overrides("midtrain"))
        rl_config(grid, run)
    return runs


def describe(grid: GridConfig, runs: list[Run], preset: str) -> str:
    """The plan as text: per model its sizes and the tokens / steps of every stage (for --dry-run)."""
    from ..models import param_counts
    from ..train.lm import midtrain_config

    lines = [
        f"reproduce --preset {preset}: {len(runs)} runs = {len(grid.model_names)} model(s) x "
        f"{len(grid.config_names)} configs ({grid.configs}) x {grid.seeds} seed(s)"
        + (f" + {grid.pretrain_seeds} pre-training-only seed(s)" if grid.pretrain_seeds else "")
        + (
            f" on {grid.pretrain_models or 'every model'} x {grid.pretrain_configs or 'every config'}"
            if grid.pretrain_seeds and (grid.pretrain_models or grid.pretrain_configs)
            else ""
        )
        + "; every config validated."
    ]
    for model in grid.model_names:
        run = next(r for r in runs if r.model == model)
        pre = pretrain_config(grid, run)
        mid = midtrain_config(pre, run.stage_dir("pretrain"), grid.overrides("midtrain"))
        rl = rl_config(grid, run)
        total, active = param_counts(pre.model.flavor)
        pre_tok, mid_tok = (
            pre.train.steps * pre.train.global_batch_tokens,
            mid.train.steps * mid.train.global_batch_tokens,
        )
        flops = 6 * active * (pre_tok + mid_tok)
        lines += [
            f"\n{model}: {total / 1e6:,.1f}M params ({active / 1e6:,.1f}M active)",
            f"  pretrain  {pre.train.steps:,} steps x {pre.train.global_batch_tokens:,} tokens "
            f"= {pre_tok:,} tokens, "
            f"seq {pre.data.seq_len}, lr {pre.optim.lr:g}, RoPE {pre.model.rope_theta:g}",
            f"  midtrain  {mid.train.steps:,} steps x {mid.train.global_batch_tokens:,} tokens "
            f"= {mid_tok:,} tokens, "
            f"seq {mid.data.seq_len}, lr {pre.optim.lr:g} -> {pre.optim.lr * mid.optim.final_lr_ratio:g}, "
            f"RoPE {mid.model.rope_theta:g}",
            f"  rl        {rl.steps:,} steps x {rl.prompts_per_step} prompts x {rl.group_size} samples "
            f"on {rl.task}, "
            f"lr {rl.lr:g}, responses <= {rl.max_completion_length} tokens",
            f"  eval      {grid.eval_tasks}: {grid.eval_problems} prompts x {grid.eval_samples} samples "
            "after every stage",
            f"  compute   ~{flops:.2e} training FLOPs per run (6 x active params x tokens, pre + mid)",
        ]
    return "\n".join(lines)
