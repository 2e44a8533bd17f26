"""The memory check every training command runs before it starts (`shapedce.train.plan` against the device).

    from shapedce.train.preflight import check_lm, check_rl
    check_lm(cfg, force=False, device_gib=None)     # one-line UserError when a stage will not fit

The budget is the device's memory: CUDA's total memory of this process's GPU, on CPU the RAM
available now (MemAvailable), or `--device-gib G`. The world size is torchrun's WORLD_SIZE. A plan
over budget stops with one line naming the stage, its peak and the term that overflows (the largest
term of the peak phase) with the setting that shrinks it; `--force` runs it anyway.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..config import RunConfig
from ..errors import UserError
from ..rundir import resolve_model_dir
from .plan import GIB, Shape, StagePlan, lm_parallel, plan_lm, plan_rl, run_shape
from .rl_config import RLConfig

HINTS = {
    "activations": "set {p}activation_checkpointing=true or lower {m}",
    "loss_head": "lower {m}",
    "logprob_head": "lower {m}",
    "attention_mask": "lower {m}",
    "kv_cache": "lower the sampling batch (rollout_batch / eval batch size) or the token limits",
    "sampler_logits": "lower the sampling batch",
    "text_head": "lower the text batch",
    "autocast_weights": "under torchrun set {p}parallel=fsdp (bf16 is then FSDP2's mixed-precision policy)",
    "rollout_weights": "use more devices, or precision=bf16 (a bf16 rollout copy)",
}
STATE_HINT = "shard it (train.parallel=fsdp / RL parallel=fsdp) or use more devices"


def device_of(setting: str) -> str:
    return "cuda" if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()) else "cpu"


def available_gib(device: str) -> tuple[float, str]:
    """(GiB, where it was read) of the memory this process may use on `device`."""
    if device == "cuda":
        index = int(os.environ.get("LOCAL_RANK", "0"))
        return torch.cuda.get_device_properties(index).total_memory / GIB, f"cuda:{index} total memory"
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024 / GIB, "available RAM"
    except (OSError, KeyError, ValueError):
        return float("inf"), "RAM (unknown)"


def world_size() -> int:
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def check(plan: StagePlan, budget_gib: float, where: str, force: bool, prefix: str, micro: str) -> None:
    """Raise the one-line UserError when the plan's peak exceeds the budget (unless forced)."""
    if force or plan.peak <= budget_gib * GIB:
        return
    term = max(plan.peak_terms, key=lambda k: plan.terms.get(k, 0.0))
    hint = HINTS.get(term, STATE_HINT).format(p=prefix, m=micro)
    raise UserError(
        f"{plan.stage} will not fit: planned peak {plan.peak / GIB:.1f} GiB per device > "
        f"{budget_gib:.1f} GiB ({where}); largest term {term} = {plan.terms[term] / GIB:.1f} GiB: {hint} "
        f"(`shapedce plan` shows every term; --force runs it anyway)"
    )


def budget_of(device: str, device_gib: float | None) -> tuple[float, str]:
    return (device_gib, "--device-gib") if device_gib is not None else available_gib(device)


def check_lm(
    cfg: RunConfig, *, force: bool = False, device_gib: float | None = None, shape: Shape | None = None
):
    """Pre- or mid-training: the plan of `cfg` on this process's device."""
    if force:
        return
    device = device_of(cfg.train.device)
    plan = plan_lm(cfg, shape or run_shape(cfg), world_size(), device, lm_parallel(cfg, device))
    check(plan, *budget_of(device, device_gib), force, "train.", "train.micro_batch")


def model_shape(model_dir: str | Path) -> Shape:
    """The shape of the model in a run directory (its final/) or an HF model directory: config.json only."""
    from ..data.pretrained import load_auto_config

    return Shape.of(load_auto_config(resolve_model_dir(model_dir)))


def check_rl(cfg: RLConfig, from_dir, *, force: bool = False, device_gib: float | None = None) -> None:
    if force:
        return
    device = device_of(cfg.device)
    try:
        shape = model_shape(from_dir)
    except Exception:  # noqa: BLE001 - not a readable model dir: run_rl says so in its own words
        return
    plan = plan_rl(cfg, shape, world_size(), device)
    check(plan, *budget_of(device, device_gib), force, "", "micro_batch")
