"""Typed run configuration: dataclasses with documented fields, YAML presets, `a.b=1` overrides.

    from shapedce.config import load_config
    cfg = load_config("tiny", ["loss=precision", "train.steps=50"])   # preset + overrides
    cfg.save("runs/x/config.yaml")

Presets live in `src/shapedce/presets/<name>.yaml` and only list what differs from the defaults
below, which are the `tiny` preset's (the default run: `tiny.yaml` lists nothing). An override
`a.b=value` parses `value` as YAML (so `1e-3`, `true`, `[1, 2]` work); `loss=NAME` selects a named
loss setting (the paper's five, `dft`) or `auto` (automatic beta, `shapedce.loss.control`). Unknown keys,
wrong types and values out of range fail with one line that names the key.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .dataclass_io import check_ranges, from_dict, merge, parse_value, parse_yaml
from .errors import DOCS_MAX, LENGTH_MAX, SEED_RANGE, VOCAB_MAX, UserError, finite, seed_ok
from .loss.config import SETTINGS as LOSS_SETTINGS
from .loss.config import LossConfig

PRESET_DIR = Path(__file__).parent / "presets"
WORLD_V1_GONE = "builtin-v2 (the built-in world; 'builtin', world v1, was removed) or a local data path"


@dataclass(kw_only=True, slots=True)
class ModelConfig:
    flavor: str = "tiny"
    """Key of `shapedce.models.FLAVORS` (tiny, tiny-moe, small, small-moe, 1b, 4b, moe-...)."""
    rope_theta: float = 1e4
    """RoPE base (paper: 1e4 in pre-training, 1e6 from mid-training on)."""
    max_position_embeddings: int = 2048
    """Longest sequence the model accepts; 0 keeps the flavor's value."""
    vocab_size: int = 8192
    """Vocabulary size V of the model and of the BPE trained on the corpus; 0 keeps the flavor's
    value (tiny: 2048). 8192: 93% of the built-in world's general-text words are one token. A new
    run only: mid-training and resumes keep the source model's."""


@dataclass(kw_only=True, slots=True)
class DataConfig:
    corpus: str = "builtin-v2"
    """"builtin-v2" (the built-in world, generated offline: general text with real entropy beside
    facts and worked arithmetic, the mix pretrain-v2 of `shapedce.data.corpus`, or midtrain-v2 in the
    midtrain stage) or a local .txt / .jsonl / .parquet file or directory."""
    text_field: str = "text"
    """Field holding the text in jsonl / parquet files."""
    n_docs: int = 20000
    """Documents generated for the built-in corpus."""
    val_docs: int = 400
    """Documents held out for validation (built-in: generated with another seed; user data: the last ones)."""
    tokenizer: str = ""
    """"" trains a byte-level BPE on the corpus; otherwise a local tokenizer directory."""
    seq_len: int = 128
    """Tokens per training sequence (paper: 4096 in pre-training, 4x in mid-training)."""
    seed: int = 0
    """Seed of the built-in corpus."""


@dataclass(kw_only=True, slots=True)
class OptimConfig:
    lr: float = 3e-3
    """Peak learning rate (paper: 3e-4 at 1B-20B; small models take larger ones)."""
    weight_decay: float = 0.1
    """AdamW weight decay, applied to matrices only (not norms or biases)."""
    beta1: float = 0.9
    """AdamW decay rate of the gradient's running mean."""
    beta2: float = 0.95
    """AdamW decay rate of the squared gradient's running mean."""
    eps: float = 1e-8
    """AdamW term added to the denominator for numerical stability."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 disables)."""
    warmup_steps: int = 20
    """Linear warm-up from 0 to the peak lr (paper: 2000)."""
    decay_fraction: float = 0.0
    """Warmup-stable-decay: the last fraction of steps decays linearly. The paper keeps
    pre-training stable and decays during mid-training, hence 0 here."""
    final_lr_ratio: float = 0.1
    """lr at the end of the decay, as a fraction of the peak (paper: 3e-4 -> 3e-5)."""


@dataclass(kw_only=True, slots=True)
class TrainConfig:
    steps: int = 200
    """Optimizer steps."""
    global_batch_tokens: int = 4096
    """Tokens per optimizer step; reached by gradient accumulation (paper: 16M)."""
    micro_batch: int = 16
    """Sequences per forward/backward; global_batch_tokens must divide by micro_batch * seq_len."""
    log_every: int = 5
    """Write a train row to metrics.jsonl every this many steps (and at the last step). Steps without
    a row skip the loss's statistics (~1.3x faster at tiny, the same update): 5 makes a tiny run's
    training ~15% cheaper and changes no trained number, only how densely the curves are drawn
    (docs/guides/performance.md). beta=auto measures its entropy every step regardless."""
    val_every: int = 25
    """Validate on the fixed held-out set every this many steps (and at the end)."""
    val_sequences: int = 64
    """Held-out sequences scored at each validation (at most what the val docs hold)."""
    ckpt_every: int = 50
    """Write a resumable checkpoint every this many steps (and at the end)."""
    keep_last: int = 2
    """Checkpoints kept; older ones are deleted."""
    seed: int = 0
    """Seed of the model initialisation and the data order."""
    device: str = "auto"
    """"auto" (cuda if available), "cpu" or "cuda"."""
    precision: str = "auto"
    """"auto": float32 on CPU, bf16 on GPU; or "fp32" / "bf16". bf16 under torchrun with
    train.parallel=fsdp is FSDP2's MixedPrecisionPolicy (bf16 weights all-gathered per layer and freed,
    float32 gradient reduction, float32 sharded master weights and AdamW state); one process and ddp
    use bf16 autocast (docs/guides/scaling.md)."""
    parallel: str = "auto"
    """Under torchrun: "ddp" (full replicas), "fsdp" (FSDP2 fully_shard per decoder layer: sharded
    parameters, gradients, optimizer state) or "auto" = fsdp on CUDA, ddp on CPU. One process ignores it."""
    report_to: str = "auto"
    """Where the metrics rows go besides RUN/metrics.jsonl (always written), as Hugging Face's
    `report_to`: a comma-separated subset of tensorboard, trackio, wandb; "none"; or "auto" =
    tensorboard when installed. A named backend that is not installed is a one-line error."""
    activation_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward pass instead of keeping them
    (Hugging Face gradient checkpointing, non-reentrant, so it composes with FSDP2): about one more
    forward per step for a fraction of the activation memory. Same losses; `shapedce plan` shows
    the saving."""


@dataclass(kw_only=True, slots=True)
class MidtrainConfig:
    """How `shapedce midtrain` derives its run from a pre-training run (docs/method/pipeline.md)."""

    steps: int = 320
    """Mid-training optimizer steps (the compute of 160 x 4,096 tokens in 320 steps of 2,048: twice
    the updates)."""
    seq_len_multiplier: int = 4
    """Mid-training sequence length = pre-training seq_len times this (paper: 4096 -> 16384)."""
    rope_theta: float = 1e6
    """RoPE base raised for long context (paper: 1e4 -> 1e6)."""
    final_lr_ratio: float = 0.1
    """lr decays linearly from the pre-training peak to this fraction of it (paper: 0.1)."""
    warmup_steps: int = 10
    """Linear warm-up to the peak lr first: mid-training starts a fresh AdamW state, whose first
    steps at the full peak lr spike the loss."""
    global_batch_tokens: int = 2048
    """Tokens per mid-training optimizer step; 0 keeps pre-training's `train.global_batch_tokens`.
    2048 halves the default's: with twice the steps, the same compute and twice the updates."""
    corpus: str = "builtin-v2"
    """"builtin-v2" (the built-in world's reasoning-heavy mix midtrain-v2, every problem worked) or a
    local data path."""
    n_docs: int = 12000
    """Documents generated for the built-in mid-training corpus."""


@dataclass(kw_only=True, slots=True)
class RunConfig:
    stage: str = "pretrain"
    """"pretrain" or "midtrain" (set by the command)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    midtrain: MidtrainConfig = field(default_factory=MidtrainConfig)

    def validate(self) -> RunConfig:
        checks = [
            ("stage", self.stage in ("pretrain", "midtrain"), "one of pretrain, midtrain"),
            (
                "model.rope_theta",
                finite(self.model.rope_theta) and self.model.rope_theta > 0,
                "a finite number > 0",
            ),
            (
                "model.max_position_embeddings",
                0 <= self.model.max_position_embeddings <= LENGTH_MAX,
                f"in [0, {LENGTH_MAX}] (0 keeps the flavor's)",
            ),
            (
                "model.vocab_size",
                0 <= self.model.vocab_size <= VOCAB_MAX,
                f"in [0, {VOCAB_MAX}] (0 keeps the flavor's)",
            ),
            ("data.n_docs", 1 <= self.data.n_docs <= DOCS_MAX, f"in [1, {DOCS_MAX}]"),
            ("data.val_docs", 1 <= self.data.val_docs <= DOCS_MAX, f"in [1, {DOCS_MAX}]"),
            ("midtrain.n_docs", 1 <= self.midtrain.n_docs <= DOCS_MAX, f"in [1, {DOCS_MAX}]"),
            ("data.seq_len", 2 <= self.data.seq_len <= LENGTH_MAX, f"in [2, {LENGTH_MAX}]"),
            ("data.seed", seed_ok(self.data.seed), SEED_RANGE),
            *(
                (f"{key}.corpus", section.corpus != "builtin", WORLD_V1_GONE)
                for key, section in (("data", self.data), ("midtrain", self.midtrain))
            ),
            ("optim.lr", self.optim.lr > 0 and math.isfinite(self.optim.lr), "a finite number > 0"),
            (
                "optim.weight_decay",
                finite(self.optim.weight_decay) and self.optim.weight_decay >= 0,
                "a finite number >= 0",
            ),
            ("optim.beta1", 0 <= self.optim.beta1 < 1, "in [0, 1)"),
            ("optim.beta2", 0 <= self.optim.beta2 < 1, "in [0, 1)"),
            ("optim.eps", finite(self.optim.eps) and self.optim.eps > 0, "a finite number > 0"),
            (
                "optim.grad_clip",
                finite(self.optim.grad_clip) and self.optim.grad_clip >= 0,
                "a finite number >= 0 (0 disables)",
            ),
            ("optim.warmup_steps", self.optim.warmup_steps >= 0, ">= 0"),
            ("optim.decay_fraction", 0 <= self.optim.decay_fraction <= 1, "in [0, 1]"),
            ("optim.final_lr_ratio", 0 <= self.optim.final_lr_ratio <= 1, "in [0, 1]"),
            ("train.steps", self.train.steps >= 1, ">= 1"),
            ("train.global_batch_tokens", self.train.global_batch_tokens >= 1, ">= 1"),
            ("train.micro_batch", self.train.micro_batch >= 1, ">= 1"),
            ("train.log_every", self.train.log_every >= 1, ">= 1"),
            ("train.val_every", self.train.val_every >= 1, ">= 1"),
            ("train.val_sequences", self.train.val_sequences >= 1, ">= 1"),
            ("train.ckpt_every", self.train.ckpt_every >= 1, ">= 1"),
            ("train.keep_last", self.train.keep_last >= 1, ">= 1"),
            ("train.seed", seed_ok(self.train.seed), SEED_RANGE),
            ("train.device", self.train.device in ("auto", "cpu", "cuda"), "one of auto, cpu, cuda"),
            ("train.precision", self.train.precision in ("auto", "fp32", "bf16"), "one of auto, fp32, bf16"),
            ("train.parallel", self.train.parallel in ("auto", "ddp", "fsdp"), "one of auto, ddp, fsdp"),
            ("midtrain.steps", self.midtrain.steps >= 1, ">= 1"),
            ("midtrain.seq_len_multiplier", 1 <= self.midtrain.seq_len_multiplier <= 64, "in [1, 64]"),
            (
                "midtrain.rope_theta",
                finite(self.midtrain.rope_theta) and self.midtrain.rope_theta > 0,
                "a finite number > 0",
            ),
            ("midtrain.final_lr_ratio", 0 <= self.midtrain.final_lr_ratio <= 1, "in [0, 1]"),
            (
                "midtrain.global_batch_tokens",
                self.midtrain.global_batch_tokens >= 0,
                ">= 0 (0 keeps pre-training's)",
            ),
            (
                "midtrain.warmup_steps",
                0 <= self.midtrain.warmup_steps < self.midtrain.steps,
                "in [0, midtrain.steps)",
            ),
        ]
        check_ranges(self, checks)
        report_backends(self.train.report_to, "train.report_to")
        per_micro = self.train.micro_batch * self.data.seq_len
        if self.train.global_batch_tokens % per_micro:
            raise UserError(
                f"train.global_batch_tokens ({self.train.global_batch_tokens}) must be a multiple of "
                f"train.micro_batch * data.seq_len ({self.train.micro_batch} * {self.data.seq_len} "
                f"= {per_micro})"
            )
        return self

    @property
    def grad_accum(self) -> int:
        return self.train.global_batch_tokens // (self.train.micro_batch * self.data.seq_len)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def parse_override(text: str) -> dict[str, Any]:
    """'a.b=1' -> {'a': {'b': 1}}; 'loss=precision' -> that loss setting's knobs."""
    if "=" not in text:
        raise UserError(f"override {text!r} must look like key=value (e.g. train.steps=100)")
    key, raw = text.split("=", 1)
    value = parse_value(raw, key) if raw.strip() else ""
    if key == "loss" and isinstance(value, str):
        if value not in LOSS_SETTINGS:
            raise UserError(f"unknown loss setting {value!r}; choose one of {', '.join(LOSS_SETTINGS)}")
        value = LOSS_SETTINGS[value].settings()
    out: dict[str, Any] = value
    for part in reversed(key.strip().split(".")):
        out = {part: out}
    return out


REPORT_BACKENDS = ("tensorboard", "trackio", "wandb")
"""Logging backends a `report_to` field may name (`shapedce.train.metrics.MetricsLog`)."""


def report_backends(value: str, key: str) -> tuple[str, ...]:
    """The backends of a `report_to` value ("auto": tensorboard if installed; "none": none), or a
    one-line UserError naming `key` for an unknown name or a backend that is not installed."""
    import importlib.util

    if value == "auto":
        return ("tensorboard",) if importlib.util.find_spec("tensorboard") is not None else ()
    names = tuple(dict.fromkeys(n.strip() for n in str(value).split(",") if n.strip()))
    if names == ("none",):
        return ()
    for name in names:
        if name not in REPORT_BACKENDS:
            raise UserError(
                f"{key} must be auto, none or a comma-separated subset of {', '.join(REPORT_BACKENDS)}; "
                f"got {value!r}"
            )
        if importlib.util.find_spec(name) is None:
            raise UserError(f"{key}={value}: {name} is not installed (pip install {name}, or leave it out)")
    return names


def preset_names(preset_dir: Path = PRESET_DIR) -> list[str]:
    return sorted(p.stem for p in preset_dir.glob("*.yaml"))


def read_preset(name: str, preset_dir: Path = PRESET_DIR, what: str = "preset") -> dict[str, Any]:
    path = preset_dir / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"unknown {what} {name!r}; choose one of {', '.join(preset_names(preset_dir))}")
    return yaml.safe_load(path.read_text()) or {}


def build_config(data: dict[str, Any], overrides: list[str] = (), cls: type = RunConfig) -> Any:
    """Dataclass `cls` from `data` plus each `key=value` override in order, validated."""
    for text in overrides:
        data = merge(data, parse_override(text))
    return from_dict(cls, data).validate()


def load_config(preset: str, overrides: list[str] = ()) -> RunConfig:
    """A preset, then each `a.b=value` override in order, validated."""
    return build_config(read_preset(preset), overrides)


def load_run_config(
    path: str | Path, overrides: list[str] = (), cls: type = RunConfig, what: str = "run config"
) -> Any:
    """The resolved config a run saved (its config.yaml), plus overrides."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no {what} at {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read {what} {path}: {err}") from None
    return build_config(parse_yaml(text, str(path)), overrides, cls)
