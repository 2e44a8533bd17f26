"""Typed config of the RL stage (`shapedce rl`): one dataclass, YAML presets, `key=value` overrides.

    from shapedce.train.rl_config import load_rl_config
    cfg = load_rl_config("tiny", ["steps=50", "lr=3e-5"])     # presets: src/shapedce/presets/rl/*.yaml

Presets list only what differs from the defaults below, which are the `tiny` preset's (the default
grid's RL; `tiny.yaml` lists nothing): smoke, tiny, long, paper. Overrides parse
their value as YAML; unknown keys, wrong types and values out of range fail with one line.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..config import build_config, check_ranges, load_run_config, preset_names, read_preset, report_backends
from ..errors import SEED_RANGE, TEMPERATURE_MIN, UserError, finite, seed_ok, temperature_ok

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets" / "rl"


@dataclass(kw_only=True, slots=True)
class RLConfig:
    task: str = "arith-small"
    """Task(s) of `shapedce.tasks` (comma-separated: prompts mixed) giving prompts and the binary
    verifier reward. arith-small: three one-digit numbers added or subtracted, held out of both
    built-in corpora (splits: train 198 prompts, val 95, test 180; solutions run ~25 tokens)."""
    train_prompts: int = 192
    """Distinct prompts drawn from the task's TRAIN split for the RL dataset (arith-small has 198)."""
    prompts_per_step: int = 8
    """Groups (prompts) per generation batch (paper: 128). Dynamic sampling keeps this many groups."""
    group_size: int = 8
    """Completions sampled per prompt, G (paper: 16). Must be >= 2."""
    micro_batch: int = 16
    """Completions per forward/backward; prompts_per_step * group_size must divide by
    micro_batch * mini_batches (* world size under torchrun)."""
    mini_batches: int = 4
    """Optimizer steps per generation batch, each on its own 1 / mini_batches of the batch's groups
    (DAPO: 512 / 32 = 16; here 4 of 2 prompts x 8 samples). pi_old is the sampling policy, so the
    ratio leaves 1 after the first step and clip-higher acts; 1 = fully on-policy (ratio exactly 1,
    nothing clips)."""
    rollout_batch: int = 64
    """Sequences per forward pass of the rollout sampler; changes speed and memory, never the samples."""
    steps: int = 256
    """Optimizer steps, mini_batches of them per generation batch: 256 / 4 = 64 generation batches,
    the data of the former 64 one-step batches."""
    lr: float = 1e-5
    """Constant learning rate after warm-up (paper: 1e-6 at 4B). Tuned on the val split for 4 steps
    per batch, one rule for every configuration (docs/rl-study/design.md): of 3e-6, 1e-5 and 3e-5
    from the five paper configurations' seed-0 bases, 1e-5 had the highest mean val Avg@8 at the
    end (0.325 against 0.310 and 0.305). The former 3e-5 was chosen with one step per batch on
    test prompts."""
    warmup_steps: int = 8
    """Linear warm-up optimizer steps before the constant lr (8 = the first 2 generation batches)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Global gradient-norm clip (0 disables)."""
    epsilon_low: float = 0.2
    """Lower clip: ratio >= 1 - epsilon_low (DAPO 0.2)."""
    epsilon_high: float = 0.28
    """Upper clip, clip-higher: ratio <= 1 + epsilon_high (DAPO 0.28)."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts (paper 1.0)."""
    top_p: float = 1.0
    """Nucleus (top-p) sampling of the rollouts; 1 samples the whole distribution (paper: 1)."""
    max_completion_length: int = 32
    """Response length cap in tokens (paper: 8192, then 16384); truncated responses are masked out."""
    mask_truncated: bool = True
    """Leave completions that hit max_completion_length (no EOS) out of the loss (DAPO's overlong filter)."""
    dynamic_sampling: bool = True
    """Drop groups whose rewards are all equal and sample new prompts until the batch is full."""
    max_sampling_rounds: int = 16
    """Generation rounds per step before dynamic sampling gives up with an error."""
    eval_every: int = 64
    """Held-out Avg@k / Cons@k / Pass@k every this many optimizer steps (and at the start and end);
    0 = start and end only. 64 = every 16 generation batches."""
    eval_split: str = "val"
    """Split of the held-out evaluation during RL: "val" (tuning looks here, never at the prompts the
    final evaluation scores) or "test" (the evaluation's own prompts, as runs before val existed did)."""
    eval_problems: int = 64
    """Held-out prompts of `eval_split` per task (arith-small's val split has 95)."""
    eval_samples: int = 8
    """Samples per held-out prompt (k of Avg@k)."""
    eval_temperature: float = 1.0
    """Sampling temperature of the held-out evaluation."""
    eval_max_new_tokens: int = 32
    """Response length cap of the held-out evaluation, in tokens."""
    eval_seed: int = 0
    """Seed of the held-out prompts and of the counter-based sampling noise (fixed across the run)."""
    save_steps: int = 64
    """Checkpoint (for --resume) at the end of the generation batch whose optimizer steps reach a
    multiple of this."""
    save_total_limit: int = 2
    """Checkpoints kept; older ones are deleted."""
    seed: int = 0
    """Seed of the trainer (data order, sampling)."""
    rollout_backend: str = "torch"
    """Rollout sampler: "torch" (our KV-cache sampler, counter-based noise) or "vllm" (a colocated vLLM
    engine per GPU, `shapedce.train.rl_vllm`; needs vLLM and CUDA, not run here)."""
    vllm_gpu_memory: float = 0.3
    """Fraction of each GPU's memory the colocated vLLM engine may take (rollout_backend=vllm)."""
    device: str = "auto"
    """"auto" (cuda if available), "cpu" or "cuda"."""
    parallel: str = "auto"
    """Under torchrun: "ddp" (full replicas), "fsdp" (FSDP2: parameters, gradients and optimizer state
    sharded; rollouts sample from an unsharded copy), or "auto" (fsdp on CUDA, ddp on CPU)."""
    precision: str = "auto"
    """"auto": float32 on CPU, bf16 on GPU; or "fp32" / "bf16" (as `train.precision` of pre-training).
    bf16 under parallel=fsdp is FSDP2's MixedPrecisionPolicy (bf16 weights all-gathered per layer,
    float32 gradient reduction and sharded master weights), and the rollout copy the sampler reads is
    bf16 (half the bytes of the float32 one, its KV cache bf16 too); one process and ddp use autocast."""
    report_to: str = "auto"
    """Metrics backends besides RUN/metrics.jsonl, as `train.report_to` of pre-training: tensorboard,
    trackio, wandb (comma-separated), "none", or "auto" = tensorboard when installed."""
    activation_checkpointing: bool = False
    """Recompute decoder activations in the backward pass (as `train.activation_checkpointing` of
    pre-training): same gradients, a fraction of the activation memory of long completions."""

    def validate(self) -> RLConfig:
        checks = [
            ("train_prompts", self.train_prompts >= 1, ">= 1"),
            ("prompts_per_step", self.prompts_per_step >= 1, ">= 1"),
            (
                "group_size",
                self.group_size >= 2,
                ">= 2 (GRPO needs at least 2 samples per prompt for an advantage)",
            ),
            ("micro_batch", self.micro_batch >= 1, ">= 1"),
            ("mini_batches", self.mini_batches >= 1, ">= 1"),
            ("rollout_batch", self.rollout_batch >= 1, ">= 1"),
            ("steps", self.steps >= 1, ">= 1"),
            ("lr", self.lr > 0 and math.isfinite(self.lr), "a finite number > 0"),
            ("warmup_steps", self.warmup_steps >= 0, ">= 0"),
            ("weight_decay", finite(self.weight_decay) and self.weight_decay >= 0, "a finite number >= 0"),
            (
                "grad_clip",
                finite(self.grad_clip) and self.grad_clip >= 0,
                "a finite number >= 0 (0 disables)",
            ),
            ("epsilon_low", 0 <= self.epsilon_low < 1, "in [0, 1)"),
            (
                "epsilon_high",
                finite(self.epsilon_high) and 0 <= self.epsilon_high <= 10,
                "a finite number in [0, 10]",
            ),
            ("temperature", temperature_ok(self.temperature), f"a finite number >= {TEMPERATURE_MIN}"),
            ("top_p", 0 < self.top_p <= 1, "in (0, 1]"),
            ("max_completion_length", self.max_completion_length >= 1, ">= 1"),
            ("max_sampling_rounds", self.max_sampling_rounds >= 1, ">= 1"),
            ("eval_every", self.eval_every >= 0, ">= 0"),
            ("eval_split", self.eval_split in ("val", "test"), "one of val, test"),
            ("eval_problems", self.eval_problems >= 1, ">= 1"),
            ("eval_samples", self.eval_samples >= 1, ">= 1"),
            (
                "eval_temperature",
                temperature_ok(self.eval_temperature, greedy=True),
                f"0 (greedy) or a finite number >= {TEMPERATURE_MIN}",
            ),
            ("eval_max_new_tokens", self.eval_max_new_tokens >= 1, ">= 1"),
            ("eval_seed", seed_ok(self.eval_seed), SEED_RANGE),
            ("save_steps", self.save_steps >= 1, ">= 1"),
            ("save_total_limit", self.save_total_limit >= 1, ">= 1"),
            ("seed", seed_ok(self.seed), SEED_RANGE),
            ("device", self.device in ("auto", "cpu", "cuda"), "one of auto, cpu, cuda"),
            ("parallel", self.parallel in ("auto", "ddp", "fsdp"), "one of auto, ddp, fsdp"),
            ("precision", self.precision in ("auto", "fp32", "bf16"), "one of auto, fp32, bf16"),
            ("rollout_backend", self.rollout_backend in ("torch", "vllm"), "one of torch, vllm"),
            ("vllm_gpu_memory", 0 < self.vllm_gpu_memory < 1, "in (0, 1)"),
        ]
        check_ranges(self, checks)
        report_backends(self.report_to, "report_to")
        rows, per = self.prompts_per_step * self.group_size, self.micro_batch * self.mini_batches
        if rows % per:
            fits = [m for m in range(1, rows + 1) if rows % (m * self.mini_batches) == 0]
            raise UserError(
                f"prompts_per_step * group_size ({self.prompts_per_step} * {self.group_size} = {rows}) "
                f"must divide by "
                f"micro_batch * mini_batches ({self.micro_batch} * {self.mini_batches} = {per}); "
                f"micro_batch values that fit: {', '.join(map(str, fits))}"
            )
        from ..tasks import get_tasks

        try:
            get_tasks(self.task)
        except UserError as err:
            raise UserError(f"task: {err}") from None
        return self

    @property
    def grad_accum(self) -> int:
        """Micro-batches per optimizer step."""
        return self.prompts_per_step * self.group_size // (self.micro_batch * self.mini_batches)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def rl_preset_names() -> list[str]:
    return preset_names(PRESET_DIR)


def load_rl_config(preset: str, overrides: list[str] = ()) -> RLConfig:
    """An RL preset, then each `key=value` override in order, validated."""
    return build_config(read_preset(preset, PRESET_DIR, "rl preset"), overrides, RLConfig)


def load_rl_run_config(path: str | Path, overrides: list[str] = ()) -> RLConfig:
    """The config an RL run saved (RUN/config.yaml), plus overrides."""
    return load_run_config(path, overrides, RLConfig, "RL run config")
