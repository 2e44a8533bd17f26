"""The experiment grid of `shapedce reproduce`: its typed config, presets, and the plan of runs.

    from shapedce.reproduce.grid import load_grid, plan
    grid = load_grid("tiny", ["seeds=3", "configs=ce,precision", "rl.steps=32"])  # presets/reproduce/*.yaml
    for run in plan(grid, root):                                       # one Run per (model, config, seed)
        print(run.name, run.stages)

Stage settings are typed sections: `pretrain` (a `shapedce.config.RunConfig`; its `midtrain` section
shapes mid-training), `rl` (a `shapedce.train.rl_config.RLConfig`), `eval` (`EvalSection`). Overrides
reach any nested field (`pretrain.train.steps=50`, `rl.lr=1e-5`); `pretrain.preset=NAME` (or `rl.`)
starts a section from a stage preset. The output folder's grid.yaml holds the resolved sections.

A run is one reward configuration (a named setting of `shapedce.loss.SETTINGS`) on one model
flavor with one seed, through six stages: pretrain, eval of the pre-trained model, midtrain, its
eval, RL, its eval (a run of a `pretrain_seeds` seed: the first two). Every stage writes into
RUN/<stage>/ and is done when its output exists, so a rerun skips finished stages. The seed sets
model init, data order and RL sampling; the data world and the evaluation prompts and sampling
noise stay fixed, so configurations compare paired.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..config import PRESET_DIR as PRETRAIN_PRESET_DIR
from ..config import (
    RunConfig,
    build_config,
    check_ranges,
    from_dict,
    merge,
    parse_override,
    read_preset,
)
from ..errors import TEMPERATURE_MIN, UserError, temperature_ok
from ..loss import SETTINGS
from ..models import FLAVORS
from ..rundir import STAGES as STAGES  # re-exported: `from shapedce.reproduce.grid import STAGES`
from ..rundir import GridDir, RunDir
from ..train.rl_config import PRESET_DIR as RL_PRESET_DIR
from ..train.rl_config import RLConfig

PRETRAIN_ONLY = STAGES[:2]
"""The stages of a `pretrain_seeds` run: pretrain and eval-pretrain."""
PRESET_DIR = Path(__file__).resolve().parent.parent / "presets" / "reproduce"
PER_RUN = {"pretrain": ("stage", "loss", "model.flavor", "train.seed"), "rl": ("seed",)}
"""Section fields the grid sets per run (from configs, auto_target_entropy, models and the seed)."""
SECTION_PRESETS = {"pretrain": PRETRAIN_PRESET_DIR, "rl": RL_PRESET_DIR}


@dataclass(kw_only=True, slots=True)
class EvalSection:
    """`shapedce eval` after every stage; the held-out text is the built-in world's (builtin-v2)."""

    tasks: str = "knowledge,arith-small"
    """Tasks scored after every stage: knowledge (recall of the corpus's facts) and the RL task."""
    problems: int = 128
    """Held-out prompts per task."""
    samples: int = 8
    """Samples per prompt, m of Avg@m / Cons@m (paper: 128)."""
    temperature: float = 0.7
    """Sampling temperature (paper: 0.7)."""
    top_p: float = 0.95
    """Nucleus (top-p) sampling of the evaluation (paper: 0.95)."""
    max_new_tokens: int = 48
    """Length cap per sample in tokens."""
    text_tokens: int = 20000
    """Held-out text tokens for perplexity, entropy and tail mass."""
    batch_size: int = 64
    """Sequences per sampling forward pass: bounds the KV cache (`shapedce plan` shows it)."""
    dtype: str = "auto"
    """Weights' dtype of the evaluation: "auto" (bf16 on CUDA, float32 on CPU), "bf16" or "fp32"."""

    def validate(self) -> EvalSection:
        check_ranges(
            self,
            [
                ("problems", self.problems >= 1, ">= 1"),
                ("samples", self.samples >= 1, ">= 1"),
                (
                    "temperature",
                    temperature_ok(self.temperature, greedy=True),
                    f"0 (greedy) or a finite number >= {TEMPERATURE_MIN}",
                ),
                ("top_p", 0 < self.top_p <= 1, "in (0, 1]"),
                ("max_new_tokens", self.max_new_tokens >= 1, ">= 1"),
                ("text_tokens", self.text_tokens >= 1, ">= 1"),
                ("batch_size", self.batch_size >= 1, ">= 1"),
                ("dtype", self.dtype in ("auto", "bf16", "fp32"), "one of auto, bf16, fp32"),
            ],
        )
        from ..tasks import get_tasks

        try:
            get_tasks(self.tasks)
        except UserError as err:
            raise UserError(f"tasks: {err}") from None
        return self


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
    """Seeds per (model, config): first_seed .. first_seed + seeds - 1. Intervals in the report need >= 2."""
    first_seed: int = 0
    """The first seed: a study that continues on another machine starts its new folder at the next seed
    its ledger lacks (scripts/rl_study.py); a seed's numbers do not depend on it."""
    pretrain_seeds: int = 0
    """Further seeds (the pretrain_seeds after the full ones) that run only pre-training and its
    evaluation: power for the pre-training findings (perplexity parity, entropy order, tail mass) at
    about 40% of a full run's cost. The RL findings use the first `seeds` seeds."""
    pretrain_configs: str = ""
    """Comma-separated subset of `configs` that the pre-training-only seeds run; empty = all of them
    (e.g. "ce,precision" adds power to precision's checks alone: every check pairs with ce)."""
    pretrain_models: str = ""
    """Comma-separated subset of `models` that the pre-training-only seeds run; empty = all of them."""
    first_look_seeds: int = 0
    """Seeds at which this grid's findings were first read, before it grew (0: read once). The report
    refuses a grid that records one unless its analysis plan names that look in its alpha-spending
    schedule (docs/method/statistics.md). Once set in a folder it stays: a rerun that leaves it out
    keeps it, another value is refused."""
    jobs: int = 0
    """Runs trained at the same time, each in its own process; 0 = auto (1 on GPU, one per CPU core)."""
    pretrain: RunConfig = field(default_factory=RunConfig)
    """The pre-training config of every run (`shapedce.config`; default: the `tiny` preset), and in
    its `midtrain` section how mid-training derives from it. `pretrain: {preset: NAME, ...}` starts
    from another preset. The grid sets stage, loss, model.flavor and train.seed per run."""
    rl: RLConfig = field(default_factory=RLConfig)
    """The RL config of every run (`shapedce.train.rl_config`; default: the `tiny` RL preset);
    `rl: {preset: NAME, ...}` starts from another. The grid sets seed per run."""
    eval: EvalSection = field(default_factory=EvalSection)
    """How every stage of every run is evaluated."""

    def validate(self) -> GridConfig:
        check_ranges(
            self,
            [
                ("seeds", 1 <= self.seeds <= 1000, "in [1, 1000]"),
                ("first_seed", 0 <= self.first_seed <= 1_000_000, "in [0, 1000000]"),
                ("pretrain_seeds", 0 <= self.pretrain_seeds <= 1000, "in [0, 1000]"),
                ("first_look_seeds", self.first_look_seeds >= 0, ">= 0 (0 = read once)"),
                (
                    "auto_target_entropy",
                    self.auto_target_entropy >= 0,
                    ">= 0 (0 = the auto setting's default)",
                ),
                ("jobs", self.jobs >= 0, ">= 0 (0 = auto)"),
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
        for name in ("pretrain", "rl", "eval"):
            section = getattr(self, name)
            try:
                section.validate()
            except UserError as err:  # name the field in the grid: "rl.steps must be >= 1"
                head = re.match(r"\w*", str(err)).group()
                sep = "." if head in {f.name for f in fields(section)} else ": "
                raise UserError(f"{name}{sep}{err}") from None
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

    def to_dict(self) -> dict[str, Any]:
        """Every setting, nested; the fields set per run left out (they are no setting of the grid)."""
        data = dataclasses.asdict(self)
        for section, keys in PER_RUN.items():
            for key in keys:
                *parents, last = key.split(".")
                node = data[section]
                for part in parents:
                    node = node[part]
                node.pop(last, None)
        return data

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def build_grid(data: dict[str, Any], overrides: list[str] = ()) -> GridConfig:
    """GridConfig from a nested dict plus `a.b=value` overrides (`rl.steps=5`), validated: a section's
    `preset` key starts it from that stage preset, its other keys go on top."""
    for text in overrides:
        data = merge(data, parse_override(text))
    data = dict(data)
    for key in (f"{name}.{key}" for name, keys in PER_RUN.items() for key in keys):
        node: Any = data
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            raise UserError(
                f"{key} is set per run (from configs, models and the seed); leave it out of the grid"
            )
    for name, preset_dir in SECTION_PRESETS.items():
        section = data.get(name)
        if isinstance(section, dict) and "preset" in section:
            section = dict(section)
            base = read_preset(str(section.pop("preset")), preset_dir, f"{name}.preset")
            data[name] = merge(base, section)
    return from_dict(GridConfig, data).validate()


def load_grid(preset: str, overrides: list[str] = ()) -> GridConfig:
    """A reproduce preset, then `key=value` overrides, validated."""
    return build_grid(read_preset(preset, PRESET_DIR, "reproduce preset"), overrides)


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
    layout, first, full = GridDir(root), grid.first_seed, grid.first_seed + grid.seeds
    return [
        Run(m, c, s, layout.run_dir(m, c, s).path, STAGES if s < full else PRETRAIN_ONLY)
        for m in grid.model_names
        for s in range(first, full + grid.pretrain_seeds)
        for c in grid.config_names
        if s < full or grid.runs_pretrain_only(m, c)
    ]


def pretrain_config(grid: GridConfig, run: Run) -> RunConfig:
    target = (
        [f"loss.target_entropy={grid.auto_target_entropy}"]
        if run.config == "auto" and grid.auto_target_entropy
        else []
    )
    return build_config(
        grid.pretrain.to_dict(),
        [f"loss={run.config}", *target, f"model.flavor={run.model}", f"train.seed={run.seed}"],
    )


def midtrain_config(grid: GridConfig, run: Run) -> RunConfig:
    """The run's mid-training config, derived from its pre-training one as `shapedce midtrain` does."""
    from ..train.lm import midtrain_config as derive

    return derive(pretrain_config(grid, run), run.stage_dir("pretrain"))


def rl_config(grid: GridConfig, run: Run) -> RLConfig:
    return build_config(grid.rl.to_dict(), [f"seed={run.seed}"], RLConfig)


def eval_settings(grid: GridConfig):
    """How every stage of every run is evaluated; the held-out text is the built-in world's."""
    from ..eval.run import EvalSettings

    return EvalSettings(**dataclasses.asdict(grid.eval), seed=0).validate()


def check_grid(grid: GridConfig, root: Path) -> list[Run]:
    """Validate every stage's config of every run without training (one-line errors); the plan."""
    runs = plan(grid, root)
    eval_settings(grid)
    for run in runs:
        midtrain_config(grid, run)
        rl_config(grid, run)
    return runs


def describe(grid: GridConfig, runs: list[Run], preset: str) -> str:
    """The plan as text: per model its sizes and the tokens / steps of every stage (for --dry-run)."""
    from ..models import param_counts

    lines = [
        f"reproduce --preset {preset}: {len(runs)} runs = {len(grid.model_names)} model(s) x "
        f"{len(grid.config_names)} configs ({grid.configs}) x {grid.seeds} seed(s)"
        + (f" from seed {grid.first_seed}" if grid.first_seed else "")
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
        pre, mid, rl = pretrain_config(grid, run), midtrain_config(grid, run), rl_config(grid, run)
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
            f"  rl        {-(-rl.steps // rl.mini_batches):,} batches x {rl.prompts_per_step} prompts x "
            f"{rl.group_size} samples, {rl.mini_batches} optimizer steps each, on {rl.task}, "
            f"lr {rl.lr:g}, responses <= {rl.max_completion_length} tokens",
            f"  eval      {grid.eval.tasks}: {grid.eval.problems} prompts x {grid.eval.samples} samples "
            "after every stage",
            f"  compute   ~{flops:.2e} training FLOPs per run (6 x active params x tokens, pre + mid)",
        ]
    return "\n".join(lines)
