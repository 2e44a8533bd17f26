"""RLVR stage: DAPO-style GRPO in a compact loop of our own (no TRL), one process or many.

    shapedce rl --from runs/ce-mid --out runs/ce-rl --preset smoke           # seconds on a CPU
    shapedce rl --from runs/ce-mid --out runs/ce-rl --preset tiny            # a run dir or any HF model dir
    shapedce rl --from runs/ce-mid --out runs/ce-rl --resume                 # from the last checkpoint
    torchrun --standalone --nproc-per-node 8 -m shapedce rl --from ... --out ... --preset paper
    torchrun --standalone --nproc-per-node 8 -m shapedce rl --from ... --out ... parallel=fsdp   # sharded

How our GRPO departs from textbook GRPO (Shao et al. 2024), as the paper runs it (docs/method/pipeline.md):
  - no KL term and no reference model;
  - clip-higher: ratio clipped to [1 - 0.2, 1 + 0.28] (`epsilon_low`, `epsilon_high`, DAPO);
  - token-level loss: sum over every completion token of a mini-batch, divided by the mini-batch's
    token count (all processes), not a per-sequence mean (`shapedce.train.grpo.clipped_loss`);
  - several optimizer steps per generation batch (`mini_batches`, DAPO: 16): pi_old is the policy
    that sampled, so the ratio leaves 1 after the first step and the clip acts;
  - dynamic sampling: groups whose rewards are all equal are dropped and new prompts sampled until
    the batch holds `prompts_per_step` groups, at most `max_sampling_rounds` rounds, then a
    one-line error (`shapedce.train.rl_rollout`);
  - binary verifier reward (1 iff the task's verifier says exactly correct, `shapedce.tasks`);
  - truncated completions (no EOS within `max_completion_length`) are masked out of the loss
    (`mask_truncated`);
  - lr: AdamW, linear warm-up over `warmup_steps` ((s + 1) / (warmup_steps + 1)), then constant.
Advantage A_i = (r_i - mean_group(r)) / (std_group(r) + 1e-4), std with Bessel's correction.

Distributed (torchrun, gloo on CPU / nccl on GPU; `parallel`: DDP, or FSDP2 sharding parameters,
gradients and optimizer state): rollouts are split by whole groups; every rank then holds the whole
batch and trains on its share of each mini-batch (contiguous rows), so the update equals the
one-process update. The held-out evaluation is split over the ranks (same samples as one process).
Rank 0 writes metrics, evaluation rows and final/; checkpoints are sharded (every rank writes its
part) and resume at any world size that divides the batch (`shapedce.train.checkpoint`).
The loop itself is `shapedce.train.rl_trainer.RLTrainer` (Ctrl-C saves a checkpoint and exits 130;
a non-finite loss, gradient or weight stops the run with one line and no final/). Rank 0 holds
OUT/.lock for the run's whole life: a second process on the folder stops at once with one line.
Rollouts: our KV-cache sampler, or a colocated vLLM engine per GPU (`rollout_backend=vllm`,
`shapedce.train.rl_vllm`, not run here).

Outputs in OUT/: config.yaml, metrics.jsonl (stage "rl"; train rows per optimizer step: the trained
batch's reward, response_length, frac_truncated, entropy, and the same over all sampling rounds
(`*_all_rounds`), frac_groups_dropped, frac_reward_zero_std (all-equal groups seen, also with
dynamic sampling off), sampling_rounds, loss, clip_frac, clip_frac_low, clip_frac_high, lr,
grad_norm, mini_batch; val rows: held-out avg_at_k, cons_at_k, pass_at_k through
`shapedce.eval.run.score_task` on the task's `eval_split` (prompts_split; val by default, so tuning
never sees the prompts the final evaluation scores) with fixed seeds), checkpoints/step_N
(as pre-training's: weights as safetensors or sharded dcp/, trainer_state.pt read weights-only), final/.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..eval.loading import resolve_model_dir
from ..eval.metrics import summarize
from ..eval.sample import SamplingConfig, sample
from ..eval.scoring import score_task
from ..rundir import StageDir, prepare_out
from ..tasks import get_task, get_tasks
from . import dist as dist_
from .checkpoint import Checkpointer, lock_stage
from .metrics import MetricsLog
from .rl_config import RLConfig
from .rl_rollout import DynamicSamplingError
from .rl_trainer import RLTrainer

__all__ = ["DynamicSamplingError", "run_rl", "heldout_eval"]
RESUME_FIXED = ("task", "train_prompts", "prompts_per_step", "group_size", "max_completion_length", "seed")
"""Settings a `--resume` override may not change (they fix the prompts and the batch's shape)."""
_ONE_PROCESS = dist_.Dist()  # the default `d` of heldout_eval: a single process, no torch.distributed


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def heldout_eval(model, tokenizer, cfg: RLConfig, d: dist_.Dist = _ONE_PROCESS) -> dict[str, Any]:
    """Avg@k, Cons@k, Pass@k (k = eval_samples) on `eval_problems` prompts of `eval_split` per task,
    fixed seeds.
    Under torchrun rank r samples prompts r, r + world, ... (keyed by their index, so the samples are
    the one-process ones) and every rank gets the whole result."""
    k = cfg.eval_samples
    scfg = SamplingConfig(
        temperature=cfg.eval_temperature,
        top_p=1.0,
        max_new_tokens=cfg.eval_max_new_tokens,
        samples=k,
        seed=cfg.eval_seed,
        batch_size=cfg.rollout_batch,  # the KV cache of rollout_batch rows is what the memory plan counts
    )
    groups, lengths = [], []
    for task in get_tasks(cfg.task):
        prompts = task.prompts(cfg.eval_split, cfg.eval_problems, seed=cfg.eval_seed)
        mine = list(range(d.rank, len(prompts), d.world))
        local: dict[int, tuple] = {}
        if mine:
            texts = [prompts[i].text for i in mine]
            completions = sample(model, tokenizer, texts, scfg, backend="torch", prompt_keys=mine)
            _, g, _, _ = score_task(task, completions, [prompts[i] for i in mine], [k])
            local = {i: (g[j], [c.num_tokens for c in completions[j]]) for j, i in enumerate(mine)}
        merged: dict[int, tuple] = {}
        for part in dist_.gather_objects(d, local):
            merged.update(part)
        groups += [merged[i][0] for i in range(len(prompts))]
        lengths += [n for i in range(len(prompts)) for n in merged[i][1]]
    s = summarize(groups)
    return {
        "avg_at_k": s["avg_at_m"],
        "cons_at_k": s["cons_at_m"],
        "pass_at_k": s["pass_at_k"][str(k)],
        "pass_at_k_curve": s["pass_at_k"],
        "k": k,
        "problems": s["prompts"],
        "prompts_split": cfg.eval_split,
        "response_length": sum(lengths) / len(lengths),
    }


# ----------------------------------------------------------------------------- run


def _reward(prompt, text: str) -> float:
    return get_task(prompt.task).reward(text, prompt)


def train_prompts(cfg: RLConfig) -> list:
    tasks = get_tasks(cfg.task)
    return [
        p
        for i, t in enumerate(tasks)
        for p in t.prompts(
            "train", cfg.train_prompts // len(tasks) + (i < cfg.train_prompts % len(tasks)), seed=cfg.seed
        )
    ]


def run_rl(
    cfg: RLConfig,
    from_dir: str | Path,
    out: str | Path,
    resume: bool = False,
    *,
    reward=_reward,
    prompts: list | None = None,
) -> Path:
    """GRPO from the model in FROM (a run dir's final/ or any HF model dir) into OUT; returns OUT/final.
    Under torchrun every rank calls this. `reward` / `prompts` replace the task's (tests)."""
    cfg.validate()
    d = dist_.detect()
    if cfg.rollout_backend == "vllm":
        from .rl_vllm import check_vllm

        check_vllm()
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA device is available")
    device = torch.device("cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu")
    rows = cfg.prompts_per_step * cfg.group_size
    if rows % (cfg.mini_batches * d.world * cfg.micro_batch):
        raise UserError(
            f"prompts_per_step * group_size ({rows}) must divide by mini_batches * world size * "
            f"micro_batch ({cfg.mini_batches} * {d.world} * {cfg.micro_batch}); lower micro_batch"
        )
    parallel = dist_.resolve_parallel(cfg.parallel, device)
    model_dir = resolve_model_dir(from_dir)
    stage = StageDir(out)
    prepare_out(stage.path)  # every rank: a bad --out fails everywhere before the process group forms
    device = dist_.device_for(d, device)
    dist_.init(d, device)
    lock = None
    try:
        lock = lock_stage(stage, d)
        resume_from = _claim_folder(cfg, stage, resume, d)
        dist_.barrier(d)  # every rank has read `out` before rank 0 writes to it
        prompts = train_prompts(cfg) if prompts is None else prompts
        trainer = RLTrainer(cfg, stage, model_dir, d, device, parallel, resume_from, reward, prompts)
        log = None
        if d.main:
            cfg.save(stage.config)
            (stage.path / "from.txt").write_text(str(model_dir) + "\n")
            log = MetricsLog(
                stage.path,
                truncate_after=trainer.step if resume_from is not None else None,
                report_to=cfg.report_to,
                config=cfg.to_dict(),
            )

        def evaluate(at: int) -> None:
            model, was_training = trainer.sampler, trainer.sampler.training
            model.eval()
            row = heldout_eval(model, trainer.tokenizer, cfg, d)
            model.train(was_training)
            if log is not None:
                log.write("rl", at, trainer.tokens, "val", row)

        try:
            trainer.fit(log, evaluate)
        finally:
            if log is not None:
                log.close()
        return trainer.write_final()
    except UserError:
        if d.on and not d.main:  # every rank fails alike (shared decisions); rank 0 alone prints the line,
            time.sleep(3)  # and exits first, so torchrun does not stop it before it has printed
            raise SystemExit(2) from None
        raise
    finally:
        if lock is not None:
            lock.release()
        dist_.teardown(d)


def _claim_folder(cfg: RLConfig, stage: StageDir, resume: bool, d: dist_.Dist) -> Path | None:
    """The checkpoint to resume from, or None for a fresh start (`Checkpointer.claim`); a fresh start
    drops an earlier start's metrics."""
    outcome = Checkpointer(stage, d, cfg.save_total_limit).claim(resume, cfg.to_dict(), RESUME_FIXED)
    if outcome is None and d.main and stage.metrics.exists():  # rows of a start that saved no checkpoint
        stage.metrics.unlink()
    return outcome
