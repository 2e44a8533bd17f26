"""The pre-/mid-training loop of one rank: `LMTrainer` and the pieces it is built from.

    from shapedce.train.lm_trainer import LMTrainer     # built by shapedce.train.lm.train_lm
    trainer = LMTrainer(cfg, StageDir(out), d, device, amp, parallel, per_rank, init_from, resume_from)
    trainer.fit(log); trainer.write_final()

`LMTrainer` owns the model, optimizer, warmup-stable-decay scheduler, batch stream and entropy
controller (beta=auto). `state_dict()` is what a checkpoint holds beside the weights (optimizer
included for one process; a distributed run writes it sharded into dcp/), `train_step()` is one
optimizer step over the step's micro-batches, `fit()` the loop with logging, validation,
checkpoints and Ctrl-C. A step whose loss or gradient norm is not finite is not applied: the run
stops with `NonFiniteError` (one line). Folder handling and entry points: `shapedce.train.lm`.
"""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..config import RunConfig
from ..data.pretrained import load_auto_config
from ..errors import UserError
from ..hf import patch_causal_lm, set_shaped_loss
from ..loss import EntropyController
from ..models import build_model, check_finite_weights, set_rope_theta
from ..rundir import StageDir
from . import dist as dist_
from .checkpoint import Checkpointer, list_checkpoints, load_weights, set_rng_state
from .dist import Dist
from .lm_data import BatchStream, prepare_data
from .memory import set_activation_checkpointing
from .metrics import MetricsLog, merge_stats

_ONE_PROCESS = Dist()  # the default `d` of evaluate_lm: a single process, no torch.distributed


def lr_factor(step: int, total: int, warmup: int, decay_fraction: float, final_ratio: float) -> float:
    """Warmup-stable-decay multiplier of the peak lr for optimizer step `step` (0-based)."""
    if step < warmup:
        return (step + 1) / warmup
    decay_start = total - int(round(decay_fraction * total))
    if step < decay_start:
        return 1.0
    done = (step - decay_start + 1) / max(1, total - decay_start)
    return 1.0 - (1.0 - final_ratio) * done


def make_optimizer(model, cfg: RunConfig):
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.optim.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    # foreach: one multi-tensor kernel per update op, the same numbers as the per-parameter loop
    # (torch's CPU default) bit for bit; docs/guides/performance.md
    opt = torch.optim.AdamW(
        groups, lr=cfg.optim.lr, betas=(cfg.optim.beta1, cfg.optim.beta2), eps=cfg.optim.eps, foreach=True
    )
    o = cfg.optim
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, cfg.train.steps, o.warmup_steps, o.decay_fraction, o.final_lr_ratio)
    )
    return opt, sched


def resolve_device(cfg: RunConfig) -> tuple[torch.device, torch.dtype | None]:
    """The device and the bf16 dtype when `train.precision` asks for it (None: float32). How bf16 is
    applied (autocast, or FSDP2's MixedPrecisionPolicy) is `shapedce.train.dist.autocast_dtype`."""
    want = cfg.train.device
    if want == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device=cuda but no CUDA device is available")
    dev = torch.device("cuda" if want == "cuda" or (want == "auto" and torch.cuda.is_available()) else "cpu")
    prec = cfg.train.precision
    amp = torch.bfloat16 if prec == "bf16" or (prec == "auto" and dev.type == "cuda") else None
    return dev, amp


def _start_model(cfg: RunConfig, vocab: int, init_from: Path | None):
    max_pos = cfg.model.max_position_embeddings or None
    if init_from is None:
        return build_model(
            cfg.model.flavor,
            vocab_size=vocab,
            rope_theta=cfg.model.rope_theta,
            max_position_embeddings=max_pos,
            seed=cfg.train.seed,
        )
    config = load_auto_config(init_from)  # edit before construction: RoPE caches inv_freq
    set_rope_theta(config, cfg.model.rope_theta)
    if max_pos:
        config.max_position_embeddings = max_pos
    return load_weights(init_from, config=config)


@torch.no_grad()
def evaluate_lm(
    model, seqs, n_seqs: int, micro_batch: int, device, amp, d: Dist = _ONE_PROCESS
) -> dict[str, float]:
    """Token-weighted loss, ce, ppl, entropy and top-k/tail mass on the first n_seqs sequences.

    Distributed: rank r scores micro-batches r, r + world, ... and the sums are all-reduced. Every
    rank runs the same number of forwards (FSDP all-gathers inside each); a rank out of batches
    scores the first one again and drops the result."""
    was_training = model.training
    model.eval()
    n = min(n_seqs, len(seqs))
    starts = list(range(0, n, micro_batch))
    mine = starts[d.rank :: d.world]
    parts = []
    for i in range(math.ceil(len(starts) / d.world)):
        start = mine[i] if i < len(mine) else starts[0]
        batch = seqs.batch(range(start, min(start + micro_batch, n))).to(device)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            out = model(input_ids=batch[:, :-1], shift_labels=batch[:, 1:])
        if i < len(mine):
            parts.append((float(out.loss), out.loss_stats))
    model.train(was_training)
    return merge_stats(parts, all_sum=(lambda v: dist_.all_sum(d, v)) if d.on else None)


class NonFiniteError(UserError):
    """The loss or the gradient norm of a step was NaN or inf: the run stops before that step's update."""


class LMTrainer:
    """One pre-/mid-training stage of one rank: model, optimizer, scheduler, batch stream, entropy
    controller, and the loop. Its resumable state is `state_dict()` (model and optimizer go to the
    checkpoint files beside it; see `shapedce.train.checkpoint`)."""

    def __init__(
        self,
        cfg: RunConfig,
        stage: StageDir,
        d: Dist,
        device,
        amp,
        parallel: str,
        per_rank: int,
        init_from: Path | None,
        resume_from: Path | None,
    ):
        self.cfg, self.stage, self.d, self.device, self.amp = cfg, stage, d, device, amp
        self.per_rank, self.step = per_rank, 0
        torch.manual_seed(cfg.train.seed)
        if d.main:  # rank 0 trains the tokenizer and writes the token caches; the others then read them
            self.tokenizer, self.train_seqs, self.val_seqs, vocab = prepare_data(cfg, stage.path, init_from)
        dist_.barrier(d)
        if not d.main:
            self.tokenizer, self.train_seqs, self.val_seqs, vocab = prepare_data(cfg, stage.path, init_from)
        self.ckpt = Checkpointer(stage, d, cfg.train.keep_last)
        model = self.ckpt.start_model(resume_from) if resume_from else _start_model(cfg, vocab, init_from)
        # under FSDP2 `fully_shard` moves each layer to the device as it shards it: no device ever holds
        # the whole float32 model (20B parameters: 75 GiB)
        self.model = model if d.on and parallel == "fsdp" else model.to(device)
        if init_from is not None and resume_from is None:
            check_finite_weights(self.model, init_from)
        self.control = EntropyController.from_loss(cfg.loss) if cfg.loss.auto_beta else None  # beta=auto
        patch_causal_lm(self.model, self.control.loss() if self.control else cfg.loss, return_stats=True)
        self.model.train()
        set_activation_checkpointing(self.model, cfg.train.activation_checkpointing)
        full_optim = None
        if resume_from is not None:  # a one-process checkpoint on N ranks: its optimizer, sharded below
            make_opt = lambda m: make_optimizer(m, cfg)[0]  # noqa: E731
            full_optim = self.ckpt.full_optimizer(resume_from, self.model, make_opt)
        self.module = dist_.wrap(self.model, d, parallel, device, amp)
        self.autocast = dist_.autocast_dtype(d, parallel, amp)  # None under FSDP2's bf16 policy
        self.opt, self.sched = make_optimizer(self.module, cfg)
        self.stream = BatchStream(self.train_seqs, cfg.train.micro_batch, seed=cfg.train.seed)
        if resume_from is not None:
            self.load_state_dict(self.ckpt.load(resume_from, self.module, self.opt, full_optim))

    # ------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything but the weights that resuming needs (the optimizer only for one process: a
        distributed run writes it sharded into dcp/). The checkpoint writer adds each rank's RNG."""
        state: dict[str, Any] = {"scheduler": self.sched.state_dict(), "data_position": self.stream.position}
        if self.control is not None:
            state["entropy_control"] = self.control.state_dict()
        if not self.d.on:
            state["optimizer"] = self.opt.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "optimizer" in state:
            self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.stream.position = int(state["data_position"])
        self.step = int(state["step"])
        by_rank = state.get("rng_by_rank") or [state["rng"]]
        set_rng_state(by_rank[self.d.rank] if self.d.rank < len(by_rank) else state["rng"])
        if self.control is not None:
            self.control.load_state_dict(state["entropy_control"])

    def save_checkpoint(self) -> Path:
        return self.ckpt.save(self.step, self.module, self.opt, self.tokenizer, self.state_dict(), self.cfg)

    # ------------------------------------------------------------------------------ loop
    def train_step(self, stats: bool = True) -> tuple[list, float, float, bool]:
        """One optimizer step over the step's micro-batches (rank r takes the r-th block). Returns
        (per-micro-batch (loss, stats), grad norm, lr, finite); a non-finite step is not applied.

        stats=False: the loss computes no statistics (no top-k or entropy pass, unless the loss itself
        needs the top-k) and each part's stats are None; the update is the same bit for bit."""
        cfg, d = self.cfg, self.d
        stats = stats or self.control is not None  # beta=auto: every step's entropy sets the next beta
        if self.control is not None:  # beta=auto: this step's beta, set on the patched model's loss
            set_shaped_loss(self.model, self.control.loss())
        items = cfg.train.global_batch_tokens // d.world  # DDP / FSDP average over ranks: see train.dist
        parts = []
        for j in range(cfg.grad_accum):
            if j // self.per_rank != d.rank:
                self.stream.skip()
                continue
            batch = self.stream.next().to(self.device)
            with dist_.grad_sync(self.module, (j + 1) % self.per_rank == 0):
                with torch.autocast(
                    self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None
                ):
                    out = self.module(
                        input_ids=batch[:, :-1],
                        shift_labels=batch[:, 1:],
                        num_items_in_batch=items,
                        return_loss_stats=stats,
                    )
                out.loss.backward()
            parts.append((float(out.loss.detach()) * self.per_rank, out.loss_stats))
        grad_norm = dist_.clip_grad_norm(self.module, cfg.optim.grad_clip)
        lr = self.opt.param_groups[0]["lr"]
        finite = math.isfinite(grad_norm) and all(math.isfinite(loss) for loss, _ in parts)
        if finite:
            self.opt.step()
            self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        return parts, grad_norm, lr, finite

    def fit(self, log: MetricsLog | None) -> None:
        cfg, d = self.cfg, self.d
        interrupted = []
        previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
        tokens_per_step = cfg.train.global_batch_tokens
        reduce = (lambda v: dist_.all_sum(d, v)) if d.on else None
        bar = tqdm(
            total=cfg.train.steps,
            initial=self.step,
            desc=f"{cfg.stage} {self.stage.path.name}",
            unit="step",
            dynamic_ncols=True,
            disable=not d.main,
        )
        try:
            while self.step < cfg.train.steps:
                t0 = time.perf_counter()
                done = self.step + 1
                log_now = done % cfg.train.log_every == 0 or done == cfg.train.steps
                parts, grad_norm, lr, finite = self.train_step(stats=log_now)  # stats only for a log row
                # one all-reduce says whether any rank saw a non-finite loss or got Ctrl-C
                bad, stop = (x > 0 for x in dist_.all_sum(d, [float(not finite), float(bool(interrupted))]))
                if bad:
                    self._stop_non_finite(parts, grad_norm, reduce)
                # one merge (one all-reduce across ranks) serves both the controller and the log row
                row = merge_stats(parts, all_sum=reduce) if self.control is not None or log_now else None
                beta = None
                if self.control is not None:  # beta=auto: this step's entropy sets the next step's beta
                    beta = self.control.beta
                    self.control.update(row["entropy"])
                if log_now:
                    row.update(
                        lr=lr, grad_norm=grad_norm, tokens_per_s=tokens_per_step / (time.perf_counter() - t0)
                    )
                    if beta is not None:
                        row.update(beta=beta, entropy_ema=self.control.ema)
                    if log is not None:
                        log.write(cfg.stage, done, done * tokens_per_step, "train", row)
                    bar.set_postfix(
                        loss=f"{row['loss']:.3f}", ppl=f"{row['ppl']:.2f}", H=f"{row['entropy']:.2f}"
                    )
                if done % cfg.train.val_every == 0 or done == cfg.train.steps:
                    val = evaluate_lm(
                        dist_.unwrap(self.module),
                        self.val_seqs,
                        cfg.train.val_sequences,
                        cfg.train.micro_batch,
                        self.device,
                        self.autocast,
                        d,
                    )
                    if log is not None:
                        log.write(cfg.stage, done, done * tokens_per_step, "val", val)
                bar.update(1)
                if done % cfg.train.ckpt_every == 0 or done == cfg.train.steps or stop:
                    self.save_checkpoint()
                if stop:
                    bar.close()
                    if d.main:
                        print(f"interrupted: checkpoint saved at step {done}; continue with --resume")
                    raise KeyboardInterrupt
        finally:
            signal.signal(signal.SIGINT, previous)
            bar.close()

    def _stop_non_finite(self, parts, grad_norm: float, reduce) -> None:
        losses = dist_.all_sum(self.d, [sum(1 for loss, _ in parts if not math.isfinite(loss))])
        if losses[0] or any(s is None for _, s in parts):  # no stats (a step without a log row): the mean
            loss = math.nan if losses[0] else sum(loss for loss, _ in parts) / max(len(parts), 1)
        else:
            loss = merge_stats(parts, all_sum=reduce)["loss"]
        last = list_checkpoints(self.stage.checkpoints)
        keep = f"the last good checkpoint is {last[-1]}" if last else "no checkpoint was saved yet"
        raise NonFiniteError(
            f"step {self.step}: non-finite {'loss' if not math.isfinite(loss) else 'gradient norm'} "
            f"(loss {loss:.4g}, grad norm {grad_norm:.4g}); stopped before applying it; {keep}. "
            "Lower optim.lr or set optim.grad_clip"
        )

    def write_final(self) -> Path:
        return self.ckpt.write_final(self.module, self.tokenizer, self.cfg)
