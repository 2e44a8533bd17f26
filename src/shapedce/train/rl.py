"""RLVR stage: DAPO-style GRPO in a compact loop of our own (no TRL), one process or many.

    shapedce rl --from runs/ce-mid --out runs/ce-rl --preset smoke           # seconds on a CPU
    shapedce rl --from runs/ce-mid --out runs/ce-rl --preset tiny            # a run dir or any HF model dir
    shapedce rl --from runs/ce-mid --out runs/ce-rl --resume                 # from the last checkpoint
    torchrun --standalone --nproc-per-node 8 -m shapedce rl --from ... --out ... --preset paper

How our GRPO departs from textbook GRPO (Shao et al. 2024), as the paper runs it (SPEC section 3):
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

Distributed (torchrun, gloo on CPU / nccl on GPU, DDP): rollouts are split by whole groups; every
rank then holds the whole batch and trains on its share of each mini-batch (contiguous rows), so
the update equals the one-process update. The held-out evaluation is split over the ranks
(same samples as one process). Rank 0 alone writes metrics, evaluation rows,
checkpoints and final/. A checkpoint holds no per-rank state (resume tested on 1 and 2 processes).
Rollouts: our KV-cache sampler, or a colocated vLLM engine per GPU (`rollout_backend=vllm`,
`shapedce.train.rl_vllm`, not run here).

Outputs in OUT/: config.yaml, metrics.jsonl (stage "rl"; train rows per optimizer step: the trained
batch's reward, response_length, frac_truncated, entropy, and the same over all sampling rounds
(`*_all_rounds`), frac_groups_dropped, frac_reward_zero_std (all-equal groups seen, also with
dynamic sampling off), sampling_rounds, loss, clip_frac, clip_frac_low,
clip_frac_high, lr, grad_norm; val rows: held-out avg_at_k, cons_at_k, pass_at_k through
`shapedce.eval.run.score_task` on the task's TEST split with fixed seeds), checkpoints/checkpoint-N
(weights as safetensors, optimizer.pt read with weights_only=True, rl_state.json), final/.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..eval.loading import load_model, resolve_model_dir
from ..eval.metrics import summarize
from ..eval.sample import SamplingConfig, sample
from ..eval.scoring import score_task
from ..models import check_finite_weights
from ..rundir import CONFIG, FINAL, StageDir, prepare_out
from ..tasks import get_task, get_tasks
from . import dist as dist_
from .checkpoint import write_model_dir
from .grpo import clipped_loss, group_advantages, token_logps
from .memory import set_activation_checkpointing
from .metrics import MetricsLog
from .rl_config import RLConfig
from .rl_rollout import Batch, DynamicSamplingError, PromptStream, collect_batch

__all__ = ["DynamicSamplingError", "run_rl", "train_on_batch", "heldout_eval"]
CKPT = "checkpoint-"
STATE_JSON = "rl_state.json"
OPTIM = "optimizer.pt"
_ONE_PROCESS = dist_.Dist()  # the default `d` of heldout_eval: a single process, no torch.distributed


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def heldout_eval(model, tokenizer, cfg: RLConfig, d: dist_.Dist = _ONE_PROCESS) -> dict[str, Any]:
    """Avg@k, Cons@k, Pass@k (k = eval_samples) on `eval_problems` TEST prompts per task, fixed seeds.
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
        prompts = task.prompts("test", cfg.eval_problems, seed=cfg.eval_seed)
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
        "response_length": sum(lengths) / len(lengths),
    }


# ----------------------------------------------------------------------------- one generation batch


def _rows(batch: Batch, mask_truncated: bool = True) -> list[tuple[list[int], list[int], float, bool]]:
    """(prompt ids, completion ids, advantage, in the loss) per completion, in batch order."""
    adv = group_advantages(torch.tensor([g.rewards for g in batch.groups], dtype=torch.float64))
    return [
        (g.prompt_ids, c, float(adv[i, s]), f or not mask_truncated)
        for i, g in enumerate(batch.groups)
        for s, (c, f) in enumerate(zip(g.completion_ids, g.finished))
    ]


def _logps(module, rows, pad: int, temperature: float, amp: bool):
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        return token_logps(module, [r[0] for r in rows], [r[1] for r in rows], pad, temperature)


def train_on_batch(
    module,
    optimizer,
    batch: Batch,
    cfg: RLConfig,
    d: dist_.Dist,
    pad: int,
    lrs: list[float],
    amp: bool = False,
) -> list[dict[str, float]]:
    """One optimizer step per mini-batch, at the learning rates `lrs` (len(lrs) <= cfg.mini_batches
    steps: a run's last batch may stop early); one stats dict per step.

    Mini-batch m is rows [m R/M, (m+1) R/M) of the batch; rank r trains the r-th contiguous part of
    it, in micro-batches of `cfg.micro_batch`. pi_old: the log-probs before the first step."""
    rows = _rows(batch, cfg.mask_truncated)
    M, W = cfg.mini_batches, d.world
    per_mini, per_rank = len(rows) // M, len(rows) // (M * W)
    mine = [rows[m * per_mini + d.rank * per_rank : m * per_mini + (d.rank + 1) * per_rank] for m in range(M)]
    micro = cfg.micro_batch
    chunks = [[part[i : i + micro] for i in range(0, per_rank, micro)] for part in mine]
    old = None
    if M > 1:  # pi_old = the sampling policy, frozen before the first update
        with torch.no_grad():
            old = [[_logps(module, c, pad, cfg.temperature, amp)[0] for c in part] for part in chunks]
    out = []
    for m, lr in enumerate(lrs[:M]):
        for group in optimizer.param_groups:
            group["lr"] = lr
        tokens = sum(len(r[1]) for r in rows[m * per_mini : (m + 1) * per_mini] if r[3])
        sums = {"loss": 0.0, "tokens": 0.0, "clipped_low": 0.0, "clipped_high": 0.0}
        for i, c in enumerate(chunks[m]):
            with dist_.grad_sync(module, i == len(chunks[m]) - 1):
                logp, mask = _logps(module, c, pad, cfg.temperature, amp)
                mask = mask * torch.tensor([float(r[3]) for r in c], device=mask.device)[:, None]
                adv = torch.tensor([r[2] for r in c], device=logp.device)
                ref = old[m][i] if old is not None else logp.detach()
                loss, st = clipped_loss(logp, ref, adv, mask, cfg.epsilon_low, cfg.epsilon_high, tokens)
                (loss * W).backward()  # DDP averages over ranks; the sum over ranks is the loss
            sums["loss"] += float(loss.detach())
            for key in ("tokens", "clipped_low", "clipped_high"):
                sums[key] += st[key]
        grad_norm = dist_.clip_grad_norm(module, cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_sum, n, low, high = dist_.all_sum(
            d, [sums["loss"], sums["tokens"], sums["clipped_low"], sums["clipped_high"]]
        )
        out.append(
            {
                "loss": loss_sum,
                "clip_frac_low": low / max(n, 1.0),
                "clip_frac_high": high / max(n, 1.0),
                "clip_frac": (low + high) / max(n, 1.0),
                "grad_norm": grad_norm,
                "trained_tokens": n,
                "lr": lr,
            }
        )
    return out


# ----------------------------------------------------------------------------- checkpoints


def _save(out: Path, step: int, model, tokenizer, optimizer, state: dict[str, Any], cfg: RLConfig) -> Path:
    """OUT/checkpoints/checkpoint-STEP, written to a temporary sibling and renamed into place."""
    root = StageDir(out).checkpoints
    root.mkdir(parents=True, exist_ok=True)
    final, tmp = root / f"{CKPT}{step}", root / f".tmp-{CKPT}{step}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    torch.save(optimizer.state_dict(), tmp / OPTIM)
    (tmp / STATE_JSON).write_text(json.dumps({**state, "step": step}, indent=1))
    cfg.save(tmp / CONFIG)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in _checkpoints(root)[: -cfg.save_total_limit]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _checkpoints(root: Path) -> list[Path]:
    found = (
        [p for p in root.glob(f"{CKPT}*") if p.is_dir() and p.name[len(CKPT) :].isdigit()]
        if root.is_dir()
        else []
    )
    return sorted(found, key=lambda p: int(p.name[len(CKPT) :]))


def _load_state(ckpt: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(rl_state.json, optimizer state) of a checkpoint; never unpickles code (weights_only=True)."""
    if not (ckpt / STATE_JSON).is_file():
        raise UserError(
            f"{ckpt} has no {STATE_JSON} (written by the earlier TRL-based trainer?); "
            "it cannot be resumed: start the stage again"
        )
    try:
        state = json.loads((ckpt / STATE_JSON).read_text())
        optim = torch.load(ckpt / OPTIM, map_location="cpu", weights_only=True)
    except (OSError, ValueError, RuntimeError) as err:
        raise UserError(f"checkpoint {ckpt} is incomplete or corrupt: {type(err).__name__}") from None
    return state, optim


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
    device = dist_.device_for(d, device)
    dist_.init(d, device)
    try:
        return _run(cfg, Path(from_dir), Path(out), resume, d, device, reward, prompts)
    except UserError:
        if d.on and not d.main:  # every rank fails alike (shared decisions); rank 0 alone prints the line,
            time.sleep(3)  # and exits first, so torchrun does not stop it before it has printed
            raise SystemExit(2) from None
        raise
    finally:
        dist_.teardown(d)


def _run(
    cfg: RLConfig, from_dir: Path, out: Path, resume: bool, d: dist_.Dist, device, reward, prompts
) -> Path:
    model_dir = resolve_model_dir(from_dir)
    stage = StageDir(out)
    ckpts = _checkpoints(stage.checkpoints)
    if not resume and (ckpts or stage.finished()):
        raise UserError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if resume and not ckpts:  # stopped before its first checkpoint: a folder is never stuck
        if d.main:
            print(
                f"resume: no checkpoint in {stage.checkpoints}; starting the run from the beginning",
                file=sys.stderr,
            )
        resume = False
    if d.main:
        prepare_out(out)
        if not resume and stage.metrics.exists():  # rows of an earlier start that saved no checkpoint
            stage.metrics.unlink()
    source = ckpts[-1] if resume else model_dir
    state, optim_state = _load_state(source) if resume else ({"step": 0, "tokens": 0, "stream": None}, None)
    model, tokenizer = load_model(source, torch.device("cpu"))
    check_finite_weights(model, source)
    model.to(device).train()
    set_activation_checkpointing(model, cfg.activation_checkpointing)
    module = dist_.wrap(model, d, "ddp", device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if optim_state is not None:
        optimizer.load_state_dict(optim_state)
    prompts = train_prompts(cfg) if prompts is None else prompts
    stream = PromptStream(len(prompts), cfg.seed, state["stream"])
    step, tokens = int(state["step"]), int(state["tokens"])
    dist_.barrier(d)  # every rank has read `out` before rank 0 writes to it
    log = None
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(StageDir(out).config)
        (out / "from.txt").write_text(str(model_dir) + "\n")
        log = MetricsLog(out, truncate_after=step if resume else None)
    amp, pad = device.type == "cuda", tokenizer.pad_token_id
    vllm = None
    if cfg.rollout_backend == "vllm":
        from .rl_vllm import VLLMRollout

        vllm = VLLMRollout(source, cfg.vllm_gpu_memory, cfg.seed, d.on)
        if resume:
            vllm.push(model)

    def evaluate(at: int) -> None:
        model.eval()
        row = heldout_eval(model, tokenizer, cfg, d)
        model.train()
        if log is not None:
            log.write("rl", at, tokens, "val", row)

    try:
        if not resume:
            evaluate(0)
        while step < cfg.steps:
            sampler = model if vllm is None else vllm.engine
            batch = collect_batch(sampler, tokenizer, prompts, reward, stream, cfg, d)
            gen_tokens = sum(
                len(p.prompt_ids) * cfg.group_size + sum(map(len, p.completion_ids)) for p in batch.groups
            )
            start, tokens = step, tokens + gen_tokens
            lrs = [
                cfg.lr * min(1.0, (s + 1) / (cfg.warmup_steps + 1))
                for s in range(step, min(step + cfg.mini_batches, cfg.steps))
            ]
            for i, st in enumerate(train_on_batch(module, optimizer, batch, cfg, d, pad, lrs, amp)):
                step += 1
                if log is not None:
                    log.write("rl", step, tokens, "train", {**batch.stats, **st, "mini_batch": i})
            if vllm is not None:
                vllm.push(model)
            if d.main and (step // cfg.save_steps > start // cfg.save_steps or step == cfg.steps):
                _save(
                    out, step, model, tokenizer, optimizer, {"tokens": tokens, "stream": stream.state()}, cfg
                )
            if step == cfg.steps or (cfg.eval_every and step // cfg.eval_every > start // cfg.eval_every):
                evaluate(step)
            dist_.barrier(d)
    finally:
        if log is not None:
            log.close()
    if d.main:
        write_model_dir(out / FINAL, model, tokenizer, cfg)
    dist_.barrier(d)
    return out / FINAL
