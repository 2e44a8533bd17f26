"""RLVR stage: DAPO-style GRPO on TRL's `GRPOTrainer` (pinned: trl==1.16.0), plus dynamic sampling.

    shapedce rl --from runs/ce-mid --out runs/ce-rl --preset tiny            # a run dir or any HF model dir
    shapedce rl --from runs/ce-mid --out runs/ce-rl --preset smoke           # seconds on a CPU
    shapedce rl --from runs/ce-mid --out runs/ce-rl --resume                 # from the last TRL checkpoint

How our GRPO departs from textbook GRPO (Shao et al. 2024), as the paper runs it (SPEC section 3):
  - no KL term and no reference model (`beta=0.0`);
  - clip-higher: ratio clipped to [1 - 0.2, 1 + 0.28] (`epsilon=0.2`, `epsilon_high=0.28`, DAPO);
  - token-level loss (`loss_type="dapo"`): sum over every completion token of the generation batch,
    divided by the batch's token count, not a per-sequence mean;
  - dynamic sampling (this file; TRL lacks it, TRL issue #3708): groups whose rewards are all
    equal carry no advantage and are dropped; new prompts are generated until the batch holds
    `prompts_per_step` groups, at most `max_sampling_rounds` rounds, then a one-line error;
  - binary verifier reward (1 iff the task's verifier says exactly correct, `shapedce.tasks`);
  - truncated completions (no EOS within `max_completion_length`) are masked out of the loss.
Advantage A_i = (r_i - mean_group(r)) / (std_group(r) + 1e-4), TRL's form (std with Bessel's
correction). `mini_batches=1` is fully on-policy (ratio 1, nothing clips); > 1 splits the batch
into several optimizer steps, and only then clipping acts.

Outputs in RUN/: config.yaml, metrics.jsonl (stage "rl"; train rows: reward, frac_groups_dropped,
entropy, response_length, clip_frac, ...; val rows: held-out avg_at_k, cons_at_k, pass_at_k through
`shapedce.eval` on the task's TEST split with fixed seeds), tb/, checkpoints/checkpoint-N (TRL's,
resumable), final/ (model + tokenizer).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import get_last_checkpoint
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import nanstd

from ..eval.metrics import summarize
from ..eval.loading import load_model, resolve_model_dir
from ..eval.scoring import length_stats
from ..eval.sample import SamplingConfig, sample
from ..tasks import get_tasks, reward_fn
from .checkpoint import write_model_dir
from .metrics import MetricsLog
from .rl_config import RLConfig
from ..errors import UserError

TRL_VERSION = "1.16.0"
"""The TRL release `DynamicSamplingGRPOTrainer` was written and tested against (it overrides the
non-public `_generate_and_score_completions` and `_calculate_rewards`)."""
FINAL = "final"


class DynamicSamplingError(UserError):
    """Dynamic sampling hit `max_sampling_rounds` before the batch held enough informative groups."""


# ----------------------------------------------------------------------------- batch dicts

def _rows(batch: dict[str, Any]) -> int:
    return len(batch["completion_ids"])


def select_rows(batch: dict[str, Any], index: torch.Tensor) -> dict[str, Any]:
    """The rows `index` (bool mask or int indices) of every per-row entry; 0-d tensors are kept as is."""
    n = _rows(batch)
    idx = index.nonzero().flatten() if index.dtype == torch.bool else index
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.ndim > 0:
            if value.shape[0] != n:
                raise TypeError(f"dynamic sampling: batch entry {key!r} is not per-row (shape {tuple(value.shape)})")
            out[key] = value[idx.to(value.device)]
        elif isinstance(value, list):
            out[key] = [value[i] for i in idx.tolist()]
        else:  # None or a per-batch scalar
            out[key] = value
    return out


def concat_batches(parts: list[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """Concatenate per-round batches row-wise. 2-D entries are padded to the widest round: keys
    starting with "prompt" on the left (TRL left-pads prompts), all others (completion-aligned) on
    the right; ids pad with `pad_token_id`, `tool_mask` with 1, the rest with 0. Per-batch scalars
    must agree across rounds, except `num_items_in_batch`, which the caller recomputes."""
    out: dict[str, Any] = {}
    for key in parts[0]:
        values = [p[key] for p in parts]
        first = values[0]
        if first is None:
            out[key] = None
        elif isinstance(first, torch.Tensor) and first.ndim == 0:
            if key != "num_items_in_batch" and any(not torch.equal(v, first) for v in values):
                raise TypeError(f"dynamic sampling: per-batch scalar {key!r} differs between rounds")
            out[key] = first
        elif isinstance(first, torch.Tensor):
            if first.ndim >= 2:
                width = max(v.shape[1] for v in values)
                fill = pad_token_id if key.endswith("_ids") else (1 if key == "tool_mask" else 0)
                left = key.startswith("prompt")
                values = [torch.nn.functional.pad(v, (width - v.shape[1], 0) if left else (0, width - v.shape[1]),
                                                  value=fill) if v.shape[1] < width else v for v in values]
            out[key] = torch.cat(values)
        elif isinstance(first, list):
            out[key] = [x for v in values for x in v]
        else:
            raise TypeError(f"dynamic sampling: cannot merge batch entry {key!r} of type {type(first).__name__}")
    return out


# ----------------------------------------------------------------------------- trainer

class DynamicSamplingGRPOTrainer(GRPOTrainer):
    """`GRPOTrainer` with DAPO's dynamic sampling (training mode only).

    After TRL generates and scores a generation batch (`_generate_and_score_completions`: rows in
    input order, the `num_generations` completions of a prompt contiguous), every group whose
    rewards are all equal (TRL's own test: group std isclose 0, or NaN when fewer than 2 scorable)
    is dropped; prompts are then drawn from a seeded stream over the training set and generated
    until `len(inputs) // num_generations` groups are kept, and the batch is truncated to exactly
    that. Kept groups keep the advantages TRL computed for them (group scaling makes them
    independent of the other groups). `num_items_in_batch` (the token count the "dapo" loss
    divides by) is recomputed for the final batch. Logs `frac_groups_dropped` (dropped / generated
    groups this step) and `sampling_rounds`. One process only (groups span processes in TRL).
    """

    def __init__(self, *args: Any, dynamic_sampling: bool = True, max_sampling_rounds: int = 8, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.dynamic_sampling, self.max_sampling_rounds = dynamic_sampling, max_sampling_rounds
        if dynamic_sampling and self.accelerator.num_processes > 1:
            raise UserError("dynamic sampling runs on one process only; set dynamic_sampling=false for multi-process runs")
        if dynamic_sampling and self.scale_rewards == "batch":
            raise UserError("dynamic sampling needs per-group advantages; set scale_rewards to 'group' or 'none'")
        self._last_rewards: torch.Tensor | None = None
        self._refill = None

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._last_rewards = rewards_per_func  # [rows, reward funcs], gathered over processes
        return rewards_per_func

    def informative_groups(self, rewards_per_func: torch.Tensor) -> torch.Tensor:
        """[groups] bool: True where the group's (weighted) rewards are not all equal."""
        rewards = (rewards_per_func * self.reward_weights.to(rewards_per_func.device)).nansum(dim=1)
        rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
        std = nanstd(rewards.view(-1, self.num_generations), dim=1)
        return ~(torch.isclose(std, torch.zeros_like(std)) | torch.isnan(std))

    def _prompt_stream(self):
        gen = torch.Generator().manual_seed(self.args.seed + 1)
        while True:
            for i in torch.randperm(len(self.train_dataset), generator=gen).tolist():
                yield self.train_dataset[i]

    def draw_prompts(self, groups: int) -> list[dict[str, Any]]:
        """`groups` fresh prompts, each repeated `num_generations` times (as TRL's RepeatSampler does)."""
        if self._refill is None:
            self._refill = self._prompt_stream()
        rows = [next(self._refill) for _ in range(groups)]
        return [dict(row) for row in rows for _ in range(self.num_generations)]

    def _generate_and_score_completions(self, inputs):
        if not self.dynamic_sampling or not self.model.training:
            return super()._generate_and_score_completions(inputs)
        g = self.num_generations
        want = len(inputs) // g
        parts, have, generated, rounds, rewards_seen = [], 0, 0, 0, []
        batch = inputs
        while True:
            rounds += 1
            out = super()._generate_and_score_completions(batch)
            keep = self.informative_groups(self._last_rewards)
            rewards_seen.append(torch.nanmean(self._last_rewards.nansum(dim=1)).item())
            generated += keep.numel()
            if keep.any():
                parts.append(select_rows(out, keep.repeat_interleave(g)))
                have += int(keep.sum())
            if have >= want:
                break
            if rounds >= self.max_sampling_rounds:
                raise DynamicSamplingError(
                    f"dynamic sampling: after {rounds} rounds only {have} of {want} groups had non-equal rewards; "
                    f"the task is too easy or too hard for this model — mean reward {sum(rewards_seen) / len(rewards_seen):.3f}; "
                    f"pick a task at the edge of its competence, raise max_sampling_rounds, or set dynamic_sampling=false")
            need = want - have
            rate = have / generated
            batch = self.draw_prompts(want if rate == 0 else min(want, max(need, math.ceil(need / rate))))
        final = select_rows(concat_batches(parts, self._tokenizer.pad_token_id), torch.arange(want * g))
        mask = final["completion_mask"] if final.get("tool_mask") is None else final["completion_mask"] * final["tool_mask"]
        final["num_items_in_batch"] = self.accelerator.gather(mask.sum()).sum()
        self._metrics["train"]["frac_groups_dropped"].append(1.0 - have / generated if generated else 0.0)
        self._metrics["train"]["sampling_rounds"].append(float(rounds))
        return final


# ----------------------------------------------------------------------------- evaluation + metrics

@torch.no_grad()
def heldout_eval(model, tokenizer, cfg: RLConfig) -> dict[str, Any]:
    """Avg@k, Cons@k, Pass@k (k = eval_samples) on `eval_problems` TEST prompts per task, fixed seeds,
    through our torch sampler (`shapedce.eval.sample`, backend "torch") and `shapedce.eval.metrics`."""
    was_training = model.training
    model.eval()
    k = cfg.eval_samples
    scfg = SamplingConfig(temperature=cfg.eval_temperature, top_p=1.0, max_new_tokens=cfg.eval_max_new_tokens,
                          samples=k, seed=cfg.eval_seed)
    groups, lengths, finished = [], [], []
    try:
        for task in get_tasks(cfg.task):
            prompts = task.prompts("test", cfg.eval_problems, seed=cfg.eval_seed)
            completions = sample(model, tokenizer, [p.text for p in prompts], scfg, backend="torch")
            for prompt, samples in zip(prompts, completions):
                groups.append([task.grade(c.text, prompt) for c in samples])
                lengths += [c.num_tokens for c in samples]
                finished += [c.finished for c in samples]
    finally:
        model.train(was_training)
    s = summarize(groups)
    return {"avg_at_k": s["avg_at_m"], "cons_at_k": s["cons_at_m"], "pass_at_k": s["pass_at_k"][str(k)],
            "pass_at_k_curve": s["pass_at_k"], "k": k, "problems": s["prompts"],
            "response_length": length_stats(lengths, finished)["mean"]}


TRAIN_FIELDS = {  # our metrics.jsonl name <- TRL's log key
    "reward": "reward", "reward_std": "reward_std", "frac_groups_dropped": "frac_groups_dropped",
    "sampling_rounds": "sampling_rounds", "entropy": "entropy", "response_length": "completions/mean_length",
    "frac_truncated": "completions/clipped_ratio", "clip_frac": "clip_ratio/region_mean",
    "clip_frac_low": "clip_ratio/low_mean", "clip_frac_high": "clip_ratio/high_mean", "loss": "loss",
    "lr": "learning_rate", "grad_norm": "grad_norm", "frac_reward_zero_std": "frac_reward_zero_std",
}


class RLMetricsCallback(TrainerCallback):
    """Writes TRL's per-step logs as metrics.jsonl "train" rows and runs the held-out "val" rows."""

    def __init__(self, log: MetricsLog, cfg: RLConfig, tokenizer, eval_at_start: bool = True):
        self.log, self.cfg, self.tokenizer, self.eval_at_start = log, cfg, tokenizer, eval_at_start
        self.tokens = 0

    def _val(self, step: int, model) -> None:
        self.log.write("rl", step, self.tokens, "val", heldout_eval(model, self.tokenizer, self.cfg))

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.eval_at_start:
            self._val(state.global_step, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step, every = state.global_step, self.cfg.eval_every
        if (every and step % every == 0) or step == state.max_steps:
            self._val(step, model)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "reward" not in logs:
            return
        self.tokens = int(logs.get("num_tokens") or self.tokens)
        row = {ours: logs.get(theirs) for ours, theirs in TRAIN_FIELDS.items()}
        row["frac_groups_dropped"] = row["frac_groups_dropped"] or 0.0
        row["clip_frac"] = row["clip_frac"] or 0.0
        self.log.write("rl", state.global_step, self.tokens, "train", row)


# ----------------------------------------------------------------------------- run

def grpo_args(cfg: RLConfig, output_dir: Path, cpu: bool) -> GRPOConfig:
    """The GRPOConfig of SPEC section 3 from our config."""
    return GRPOConfig(
        output_dir=str(output_dir), per_device_train_batch_size=cfg.micro_batch,
        gradient_accumulation_steps=cfg.grad_accum, steps_per_generation=cfg.grad_accum * cfg.mini_batches,
        num_generations=cfg.group_size, max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature, top_p=cfg.top_p, beta=0.0, epsilon=cfg.epsilon_low,
        epsilon_high=cfg.epsilon_high, loss_type="dapo", scale_rewards="group", mask_truncated_completions=True,
        num_iterations=1, learning_rate=cfg.lr, lr_scheduler_type="constant_with_warmup",
        warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay, max_grad_norm=cfg.grad_clip,
        max_steps=cfg.steps, logging_steps=1, save_strategy="steps", save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit, report_to=[], seed=cfg.seed, use_cpu=cpu, bf16=not cpu,
        log_completions=False, disable_dropout=True,
    )


def _check_trl() -> None:
    import trl

    if trl.__version__ != TRL_VERSION:
        raise UserError(f"shapedce rl needs trl=={TRL_VERSION} (it overrides private GRPOTrainer methods); "
                         f"found {trl.__version__}")


def run_rl(cfg: RLConfig, from_dir: str | Path, out: str | Path, resume: bool = False) -> Path:
    """GRPO from the model in FROM (a run dir's final/ or any HF model dir) into OUT; returns OUT/final."""
    from datasets import Dataset

    _check_trl()
    cfg.validate()
    out, model_dir = Path(out), resolve_model_dir(from_dir)
    ckpt_dir = out / "checkpoints"
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    if resume and last is None:
        raise UserError(f"--resume: no TRL checkpoint in {ckpt_dir}")
    if not resume and (out / "config.yaml").exists():
        raise UserError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA device is available")
    cpu = cfg.device == "cpu" or not torch.cuda.is_available()
    model, tokenizer = load_model(model_dir, torch.device("cpu"))
    model.train()
    tasks = get_tasks(cfg.task)
    rows = [p.row() for i, t in enumerate(tasks)
            for p in t.prompts("train", cfg.train_prompts // len(tasks) + (i < cfg.train_prompts % len(tasks)), seed=cfg.seed)]
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.yaml")
    (out / "from.txt").write_text(str(model_dir) + "\n")
    start = int(Path(last).name.split("-")[-1]) if resume else None
    log = MetricsLog(out, truncate_after=start)
    trainer = DynamicSamplingGRPOTrainer(
        model=model, reward_funcs=reward_fn(None), args=grpo_args(cfg, ckpt_dir, cpu),
        train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
        callbacks=[RLMetricsCallback(log, cfg, tokenizer, eval_at_start=not resume)],
        dynamic_sampling=cfg.dynamic_sampling, max_sampling_rounds=cfg.max_sampling_rounds,
    )
    try:
        trainer.train(resume_from_checkpoint=last if resume else None)
    finally:
        log.close()
    return write_model_dir(out / FINAL, trainer.model, tokenizer, cfg)
