"""The RL (GRPO) loop of one rank: `RLTrainer`, mirroring the pre-training `LMTrainer`.

    from shapedce.train.rl_trainer import RLTrainer     # built by shapedce.train.rl.run_rl
    trainer = RLTrainer(cfg, StageDir(out), model_dir, d, device, parallel, resume_from, reward, prompts)
    trainer.fit(log, evaluate); trainer.write_final()

`RLTrainer` owns the policy, AdamW, the prompt stream and the counters. `state_dict()` is what a
checkpoint holds beside the weights (`shapedce.train.checkpoint`: one process writes weights +
optimizer, a distributed run writes both sharded into dcp/, loadable at any world size that divides
the batch); `train_step(batch, lrs)` is one generation batch's optimizer steps; `fit()` the loop
with logging, evaluation, checkpoints and Ctrl-C (a checkpoint is saved at the end of the current
generation batch, then KeyboardInterrupt: `shapedce rl` exits 130; `--resume` continues bit-exactly).

Faults: a non-finite loss or gradient norm stops the run before that update, and non-finite weights
after an update (a huge lr, weight_decay) stop it too; one line (`NonFiniteError`), the last good
checkpoint stays, no final/ is written.

Parallelism (torchrun): "ddp" replicates the policy; "fsdp" shards parameters, gradients and
optimizer state with FSDP2 (`shapedce.train.dist.wrap`). Rollouts are split by groups, so ranks
run different numbers of forwards; under FSDP they therefore sample from an unsharded copy of the
weights refreshed (all-gathered one parameter at a time) after every generation batch, as the vLLM
backend does. Precision (`precision`, "auto" = bf16 on CUDA, float32 on CPU): bf16 under FSDP is
FSDP2's MixedPrecisionPolicy and a bf16 rollout copy; one process and DDP use bf16 autocast
(`shapedce.train.dist.autocast_dtype`). Under FSDP the policy goes from CPU memory straight into its
shards: no device ever holds the whole float32 model.
"""

from __future__ import annotations

import copy
import math
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..data.tokenizer import check_special_tokens, load_tokenizer
from ..eval.loading import load_model
from ..models import cast_weights
from ..rundir import StageDir
from . import dist as dist_
from .checkpoint import Checkpointer, set_rng_state
from .grpo import clipped_loss, group_advantages, token_logps
from .lm_trainer import NonFiniteError
from .memory import set_activation_checkpointing
from .metrics import MetricsLog
from .rl_config import RLConfig
from .rl_rollout import Batch, PromptStream, collect_batch


def _rows(batch: Batch, mask_truncated: bool = True) -> list[tuple[list[int], list[int], float, bool]]:
    """(prompt ids, completion ids, advantage, in the loss) per completion, in batch order."""
    adv = group_advantages(torch.tensor([g.rewards for g in batch.groups], dtype=torch.float64))
    return [
        (g.prompt_ids, c, float(adv[i, s]), f or not mask_truncated)
        for i, g in enumerate(batch.groups)
        for s, (c, f) in enumerate(zip(g.completion_ids, g.finished))
    ]


def _logps(module, rows, pad: int, temperature: float, autocast: torch.dtype | None, device_type: str):
    with torch.autocast(device_type, dtype=autocast or torch.float32, enabled=autocast is not None):
        return token_logps(module, [r[0] for r in rows], [r[1] for r in rows], pad, temperature)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 for `precision` "bf16", or "auto" on CUDA; None (float32) otherwise."""
    return torch.bfloat16 if precision == "bf16" or (precision == "auto" and device.type == "cuda") else None


def rollout_copy(model: torch.nn.Module, dtype: torch.dtype | None, device: torch.device) -> torch.nn.Module:
    """The unsharded sampling copy of the policy, in eval mode: bf16 parameters when `dtype` is (half
    the bytes of the float32 weights; its KV cache is bf16 too; buffers such as RoPE's inv_freq stay
    float32), else float32. Cast before it moves to `device`."""
    copy_ = copy.deepcopy(model)
    return (cast_weights(copy_, dtype) if dtype is not None else copy_).to(device).eval()


@torch.no_grad()
def refresh_weights(target: torch.nn.Module, module: torch.nn.Module) -> None:
    """Copy the (FSDP2-sharded) `module`'s parameters into `target`, cast to its dtype: one all-gather
    per parameter (collective; the same order on every rank), so the transient is one full float32
    parameter, never the whole float32 model."""
    dest = dict(target.named_parameters())
    for name, p in module.named_parameters():
        dest[name].copy_(p.full_tensor() if hasattr(p, "full_tensor") else p)


def non_finite_weights(module: torch.nn.Module) -> bool:
    """True when any of this rank's parameters (its shards under FSDP) holds NaN or inf."""
    for p in module.parameters():
        local = p.to_local() if hasattr(p, "to_local") else p
        if local.is_floating_point() and not bool(torch.isfinite(local).all()):
            return True
    return False


class RLTrainer:
    """One RL stage of one rank: policy, optimizer, prompt stream and the GRPO loop."""

    def __init__(
        self,
        cfg: RLConfig,
        stage: StageDir,
        model_dir: Path,
        d: dist_.Dist,
        device: torch.device,
        parallel: str,
        resume_from: Path | None,
        reward: Callable[[Any, str], float],
        prompts: list,
    ):
        self.cfg, self.stage, self.d, self.device = cfg, stage, d, device
        self.reward, self.prompts = reward, prompts
        self.ckpt = Checkpointer(stage, d, cfg.save_total_limit)
        self.source = resume_from or model_dir
        if resume_from is None:
            model, self.tokenizer = load_model(model_dir, torch.device("cpu"))  # refuses non-finite weights
        else:  # the checkpoint holds the tokenizer; its integrity was checked when it was chosen
            self.tokenizer = load_tokenizer(resume_from)
            check_special_tokens(self.tokenizer)
            model = self.ckpt.start_model(resume_from)
        self.sharded = d.on and parallel == "fsdp"
        self.amp = resolve_precision(cfg.precision, device)
        self.autocast = dist_.autocast_dtype(d, parallel, self.amp)  # None under FSDP2's bf16 policy
        self.pad = self.tokenizer.pad_token_id
        self._rollout = rollout_copy(model, self.amp, device) if self.sharded else None
        # under FSDP2 `fully_shard` moves each layer to the device as it shards it
        self.model = (model if self.sharded else model.to(device)).train()
        set_activation_checkpointing(self.model, cfg.activation_checkpointing)
        full_optim = (
            self.ckpt.full_optimizer(resume_from, self.model, self._optimizer) if resume_from else None
        )
        self.module = dist_.wrap(self.model, d, parallel, device, self.amp)
        self.opt = self._optimizer(self.module)
        self.stream = PromptStream(len(prompts), cfg.seed)
        self.step = self.tokens = 0
        self.resumed = resume_from is not None
        if resume_from is not None:
            self.load_state_dict(self.ckpt.load(resume_from, self.module, self.opt, full_optim))
        self.refresh_rollout()

    def _optimizer(self, module: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(  # foreach: bit-identical to the per-parameter loop, fewer kernels
            module.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay, foreach=True
        )

    @property
    def sampler(self) -> torch.nn.Module:
        """The model rollouts and evaluation sample from: the policy, or its unsharded copy (FSDP)."""
        return self._rollout if self._rollout is not None else dist_.unwrap(self.module)

    def refresh_rollout(self) -> None:
        """FSDP: all-gather the trained weights into the rollout copy (collective); else nothing."""
        if self._rollout is not None:
            refresh_weights(self._rollout, self.module)

    # ------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything but the weights and the optimizer (the checkpointer writes those, sharded under
        torchrun) that resuming needs; the checkpointer adds the step and each rank's RNG."""
        return {"tokens": self.tokens, "stream": self.stream.state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "optimizer" in state:
            self.opt.load_state_dict(state["optimizer"])
        self.step, self.tokens = int(state["step"]), int(state["tokens"])
        self.stream = PromptStream(len(self.prompts), self.cfg.seed, state["stream"])
        by_rank = state.get("rng_by_rank") or [state["rng"]]
        set_rng_state(by_rank[self.d.rank] if self.d.rank < len(by_rank) else state["rng"])

    def save_checkpoint(self) -> Path:
        """Collective: RUN/checkpoints/step_N (pruned to save_total_limit)."""
        return self.ckpt.save(self.step, self.module, self.opt, self.tokenizer, self.state_dict(), self.cfg)

    def write_final(self) -> Path:
        return self.ckpt.write_final(self.module, self.tokenizer, self.cfg)

    # ------------------------------------------------------------------------------ one batch
    def lrs(self) -> list[float]:
        """The learning rates of the next generation batch's steps (warm-up, then constant)."""
        cfg = self.cfg
        return [
            cfg.lr * min(1.0, (s + 1) / (cfg.warmup_steps + 1))
            for s in range(self.step, min(self.step + cfg.mini_batches, cfg.steps))
        ]

    def train_step(self, batch: Batch, lrs: list[float]) -> list[dict[str, float]]:
        """One optimizer step per mini-batch, at the learning rates `lrs` (a run's last batch may stop
        early); one stats dict per step; `self.step` advances by len(lrs).

        Mini-batch m is rows [m R/M, (m+1) R/M) of the batch; rank r trains the r-th contiguous part
        of it, in micro-batches of `cfg.micro_batch`. pi_old: the sampling policy's log-probs, taken
        before the first step for mini-batches 1.. (mini-batch 0 trains the sampling policy itself, so
        its own forward's detached log-probs are pi_old: ratio exactly 1, no extra forward)."""
        cfg, d, module, pad = self.cfg, self.d, self.module, self.pad
        amp = (self.autocast, self.device.type)
        rows = _rows(batch, cfg.mask_truncated)
        M, W = cfg.mini_batches, d.world
        per_mini, per_rank = len(rows) // M, len(rows) // (M * W)
        mine = [
            rows[m * per_mini + d.rank * per_rank : m * per_mini + (d.rank + 1) * per_rank] for m in range(M)
        ]
        micro = cfg.micro_batch
        chunks = [[part[i : i + micro] for i in range(0, per_rank, micro)] for part in mine]
        old: list[list[torch.Tensor]] = [[]]  # pi_old = the sampling policy, frozen before the first update
        with torch.no_grad():
            old += [[_logps(module, c, pad, cfg.temperature, *amp)[0] for c in part] for part in chunks[1:]]
        out = []
        for m, lr in enumerate(lrs[:M]):
            for group in self.opt.param_groups:
                group["lr"] = lr
            tokens = sum(len(r[1]) for r in rows[m * per_mini : (m + 1) * per_mini] if r[3])
            sums = {"loss": 0.0, "tokens": 0.0, "clipped_low": 0.0, "clipped_high": 0.0}
            for i, c in enumerate(chunks[m]):
                with dist_.grad_sync(module, i == len(chunks[m]) - 1):
                    logp, mask = _logps(module, c, pad, cfg.temperature, *amp)
                    mask = mask * torch.tensor([float(r[3]) for r in c], device=mask.device)[:, None]
                    adv = torch.tensor([r[2] for r in c], device=logp.device)
                    ref = old[m][i] if m > 0 else logp.detach()
                    loss, st = clipped_loss(logp, ref, adv, mask, cfg.epsilon_low, cfg.epsilon_high, tokens)
                    (loss * W).backward()  # DDP / FSDP average over ranks; the sum over ranks is the loss
                sums["loss"] += float(loss.detach())
                for key in ("tokens", "clipped_low", "clipped_high"):
                    sums[key] += st[key]
            grad_norm = dist_.clip_grad_norm(module, cfg.grad_clip)
            loss_sum, n, low, high = dist_.all_sum(
                d, [sums["loss"], sums["tokens"], sums["clipped_low"], sums["clipped_high"]]
            )
            if not (math.isfinite(loss_sum) and math.isfinite(grad_norm)):
                self.opt.zero_grad(set_to_none=True)
                what = "loss" if not math.isfinite(loss_sum) else "gradient norm"
                self._stop(f"non-finite {what} (loss {loss_sum:.4g}, grad norm {grad_norm:.4g})", "before")
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            self.step += 1
            if dist_.any_rank(d, non_finite_weights(module)):
                self._stop(f"non-finite weights after the update at lr {lr:.4g}", "after")
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

    def _stop(self, what: str, when: str) -> None:
        last = self.ckpt.last()
        keep = f"the last good checkpoint is {last}" if last else "no checkpoint was saved yet"
        step = self.step + 1 if when == "before" else self.step
        applied = "stopped before applying it" if when == "before" else "stopped"
        raise NonFiniteError(
            f"step {step}: {what}; {applied}, no final/ written; {keep}. "
            "Lower lr or weight_decay, or set grad_clip"
        )

    # ------------------------------------------------------------------------------ loop
    def fit(self, log: MetricsLog | None, evaluate: Callable[[int], None]) -> None:
        """Generation batches until `cfg.steps`; `evaluate(step)` is the held-out evaluation (collective).
        Ctrl-C on any rank: a checkpoint after the current batch, then KeyboardInterrupt."""
        cfg, d = self.cfg, self.d
        interrupted: list[bool] = []
        previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
        vllm = None
        if cfg.rollout_backend == "vllm":
            from .rl_vllm import VLLMRollout

            vllm = VLLMRollout(self.source, cfg.vllm_gpu_memory, cfg.seed, d.on)
            if self.resumed:
                vllm.push(self.sampler)
        try:
            if not self.resumed:
                evaluate(0)
            while self.step < cfg.steps:
                sampler = self.sampler if vllm is None else vllm.engine
                batch = collect_batch(sampler, self.tokenizer, self.prompts, self.reward, self.stream, cfg, d)
                gen_tokens = sum(
                    len(p.prompt_ids) * cfg.group_size + sum(map(len, p.completion_ids)) for p in batch.groups
                )
                start, self.tokens = self.step, self.tokens + gen_tokens
                for i, st in enumerate(self.train_step(batch, self.lrs())):
                    if log is not None:
                        log.write(
                            "rl", start + i + 1, self.tokens, "train", {**batch.stats, **st, "mini_batch": i}
                        )
                self.refresh_rollout()
                if vllm is not None:
                    vllm.push(self.sampler)
                step, stop = self.step, dist_.any_rank(d, bool(interrupted))
                if step // cfg.save_steps > start // cfg.save_steps or step == cfg.steps or stop:
                    self.save_checkpoint()
                if step == cfg.steps or (cfg.eval_every and step // cfg.eval_every > start // cfg.eval_every):
                    evaluate(step)
                dist_.barrier(d)
                if stop:
                    if d.main:
                        print(f"interrupted: checkpoint saved at step {step}; continue with --resume")
                    raise KeyboardInterrupt
        finally:
            signal.signal(signal.SIGINT, previous)
