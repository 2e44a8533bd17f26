"""Pre-training and mid-training of Qwen3 dense / MoE models with the reward-shaped loss.

    shapedce pretrain --preset tiny --out runs/precision loss=precision
    shapedce midtrain --from runs/precision --out runs/precision-mid
    shapedce pretrain --preset tiny --out runs/precision --resume      # after a crash or Ctrl-C
    torchrun --nproc-per-node 8 -m shapedce pretrain --preset paper --out runs/4b   # several processes

One optimizer step = gradient accumulation over micro-batches up to `train.global_batch_tokens`.
AdamW (weight decay on matrices only), global-norm clipping, warmup-stable-decay lr, float32 on
CPU and bf16 on GPU (FSDP2's mixed-precision policy when sharded, autocast otherwise). The loss is
the fused shaped loss through `shapedce.hf.patch_causal_lm`, whose statistics give the logged
perplexity and entropy.
With `loss.beta=auto` an `EntropyController` (shapedce.loss.control) sets each step's beta from the
previous steps' entropy; train rows log `beta` and `entropy_ema`, checkpoints hold its state.
Outputs in RUN/: config.yaml, metrics.jsonl (+ the `train.report_to` backends: TensorBoard events in
tb/ by default when installed, trackio, wandb), tokenizer/, checkpoints/step_N/ (resumable), final/
(a plain HF model directory whose config names eos, bos and pad ids).
Mid-training starts from RUN/final of a pre-training run: same loss, lr decaying from the
pre-training peak to `midtrain.final_lr_ratio` of it, `midtrain.seq_len_multiplier` x longer
sequences, RoPE base `midtrain.rope_theta`, and the reasoning-heavy data mix.
Under torchrun the same commands run data-parallel (DDP or FSDP2, `train.parallel`) with the
same global batch and loss curve as one process; `shapedce.train.dist` says how, and
`shapedce.train.checkpoint` how its sharded checkpoints resume at any world size.

State: `LMTrainer` (shapedce.train.lm_trainer) owns the model, optimizer, scheduler, batch stream
and controller; its `state_dict()` is what a checkpoint holds beside the weights. Faults: a NaN or
inf loss or gradient norm stops the run before that update (one line naming the step; the last
good checkpoint stays; no final/ is written). `--resume` takes the newest intact checkpoint
(`shapedce.train.checkpoint`), refusing an override that changes the model or the data; a
folder with no checkpoint can always be started again; every config check runs before the
folder is written. Rank 0 holds RUN/.lock for the run's whole life: a second process on the
folder stops at once with one line naming the holder's pid.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..config import RunConfig, build_config, load_run_config
from ..errors import UserError
from ..models import flavor_config
from ..rundir import FINAL, StageDir, prepare_out
from . import dist as dist_
from .checkpoint import Checkpointer, lock_stage
from .dist import Dist
from .lm_trainer import (  # noqa: F401 - re-exported: the training API of this stage
    LMTrainer,
    NonFiniteError,
    evaluate_lm,
    lr_factor,
    make_optimizer,
    resolve_device,
)
from .metrics import MetricsLog

RESUME_FIXED = ("stage", "model", "data")
"""Settings a `--resume` override may not change (they fix the model's or the data's shape)."""


def midtrain_config(pre: RunConfig, from_dir: Path, overrides: list[str] = ()) -> RunConfig:
    """The mid-training run derived from a pre-training run's config (docs/method/pipeline.md).

    `midtrain.*` overrides apply before the derivation (so `midtrain.rope_theta=1e4` sets the
    model's RoPE base), every other override after it.
    """
    own = [o for o in overrides if o.split("=", 1)[0].strip().startswith("midtrain.")]
    pre = build_config(pre.to_dict(), own) if own else pre
    mt = pre.midtrain
    data = pre.to_dict()
    seq = pre.data.seq_len * mt.seq_len_multiplier
    data["stage"] = "midtrain"
    data["data"].update(seq_len=seq, corpus=mt.corpus, n_docs=mt.n_docs, tokenizer=str(from_dir / FINAL))
    data["model"]["rope_theta"] = mt.rope_theta
    if pre.model.max_position_embeddings:
        data["model"]["max_position_embeddings"] = max(pre.model.max_position_embeddings, seq)
    data["optim"].update(warmup_steps=mt.warmup_steps, decay_fraction=1.0, final_lr_ratio=mt.final_lr_ratio)
    data["train"].update(steps=mt.steps, micro_batch=max(1, pre.train.micro_batch // mt.seq_len_multiplier))
    if mt.global_batch_tokens:
        data["train"]["global_batch_tokens"] = mt.global_batch_tokens
    return build_config(data, overrides)


def _max_positions(cfg: RunConfig, init_from: Path | None, resume_from: Path | None) -> int:
    """The model's max_position_embeddings, read before anything is built or written."""
    if cfg.model.max_position_embeddings:
        return cfg.model.max_position_embeddings
    source = resume_from or init_from
    if source is not None:
        try:
            return int(json.loads((Path(source) / "config.json").read_text())["max_position_embeddings"])
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            raise UserError(f"cannot read max_position_embeddings from {source}/config.json") from None
    return flavor_config(cfg.model.flavor).max_position_embeddings


def _claim_folder(cfg: RunConfig, stage: StageDir, resume: bool, d: Dist) -> Path | None:
    """The checkpoint to resume from, or None for a fresh start (`Checkpointer.claim`: a `--resume`
    override changing the model or data shape is refused); a fresh start in a folder an earlier
    start wrote to drops that start's derived files."""
    outcome = Checkpointer(stage, d, cfg.train.keep_last).claim(resume, cfg.to_dict(), RESUME_FIXED)
    if outcome is None and d.main and stage.started():
        for leftover in (stage.metrics, stage.tokenizer, stage.cache, stage.path / "tb"):
            if leftover.is_dir():
                shutil.rmtree(leftover)
            elif leftover.exists():
                leftover.unlink()
    return outcome


def train_lm(cfg: RunConfig, out: Path, *, resume: bool = False, init_from: Path | None = None) -> Path:
    """Run (or resume) one pre-/mid-training stage into `out`; returns `out/final`.

    Every check runs before anything is written. Under torchrun (see `shapedce.train.dist`) every
    rank calls this; rank 0 writes the files."""
    d = dist_.detect()
    device, amp = resolve_device(cfg)
    t = cfg.train
    per_rank = dist_.check_world(
        cfg.grad_accum, d.world, t.global_batch_tokens, t.micro_batch, cfg.data.seq_len
    )
    parallel = dist_.resolve_parallel(t.parallel, device)
    stage = StageDir(out)
    max_pos = _max_positions(cfg, init_from, None)
    if cfg.data.seq_len > max_pos:
        raise UserError(
            f"data.seq_len ({cfg.data.seq_len}) exceeds the model's max_position_embeddings ({max_pos})"
        )
    prepare_out(stage.path)  # every rank: a bad --out fails everywhere before the process group forms
    device = dist_.device_for(d, device)
    dist_.init(d, device)
    lock = None
    try:
        lock = lock_stage(stage, d)
        resume_from = _claim_folder(cfg, stage, resume, d)
        dist_.barrier(d)  # every rank has checked the folder before rank 0 writes to it
        if d.main:
            cfg.save(stage.config)
        trainer = LMTrainer(cfg, stage, d, device, amp, parallel, per_rank, init_from, resume_from)
        log = (
            MetricsLog(
                stage.path,
                truncate_after=trainer.step if resume_from is not None else None,
                report_to=cfg.train.report_to,
                key="train.report_to",
                config=cfg.to_dict(),
            )
            if d.main
            else None
        )
        try:
            trainer.fit(log)
        finally:
            if log is not None:
                log.close()
        return trainer.write_final()
    finally:
        if lock is not None:
            lock.release()
        dist_.teardown(d)


def run_midtrain(from_dir: Path, out: Path, overrides: list[str] = (), *, resume: bool = False) -> Path:
    """`shapedce midtrain`: derive the config from FROM/config.yaml and train from FROM/final."""
    from_dir = Path(from_dir)
    if resume:
        return train_lm(
            load_run_config(StageDir(out).config, overrides), out, resume=True, init_from=from_dir / FINAL
        )
    if not (from_dir / FINAL / "config.json").is_file():
        raise UserError(f"--from {from_dir}: no finished run there (expected {from_dir / FINAL}/config.json)")
    cfg = midtrain_config(load_run_config(StageDir(from_dir).config), from_dir, overrides)
    return train_lm(cfg, out, init_from=from_dir / FINAL)
