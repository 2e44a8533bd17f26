"""Pre-training and mid-training of Qwen3 dense / MoE models with the reward-shaped loss.

    shapedce pretrain --preset tiny --out runs/precision loss=precision
    shapedce midtrain --from runs/precision --out runs/precision-mid
    shapedce pretrain --preset tiny --out runs/precision --resume      # after a crash or Ctrl-C
    torchrun --nproc-per-node 8 -m shapedce pretrain --preset paper --out runs/4b   # several processes

One optimizer step = gradient accumulation over micro-batches up to `train.global_batch_tokens`.
AdamW (weight decay on matrices only), global-norm clipping, warmup-stable-decay lr, float32 on
CPU and bf16 autocast on GPU. The loss is the fused shaped loss through
`shapedce.hf.patch_causal_lm`, whose statistics give the logged perplexity and entropy.
With `loss.beta=auto` an `EntropyController` (shapedce.loss.control) sets each step's beta from the
previous steps' entropy; train rows log `beta` and `entropy_ema`, checkpoints hold its state.
Outputs in RUN/: config.yaml, metrics.jsonl (+ TensorBoard events in tb/ when tensorboard is
installed), tokenizer/, checkpoints/step_N/ (resumable), final/ (a plain HF model directory).
Mid-training starts from RUN/final of a pre-training run: same loss, lr decaying from the
pre-training peak to `midtrain.final_lr_ratio` of it, `midtrain.seq_len_multiplier` x longer
sequences, RoPE base `midtrain.rope_theta`, and the reasoning-heavy data mix.
Under torchrun the same commands run data-parallel (DDP or FSDP2, `train.parallel`) with the
same global batch and loss curve as one process; `shapedce.train.dist` says how, and
`shapedce.train.dist_checkpoint` how its sharded checkpoints resume at any world size.
"""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoConfig

from ..config import RunConfig, build_config, load_run_config
from ..hf import patch_causal_lm
from ..loss import EntropyController
from ..models import build_model, set_rope_theta
from . import dist as dist_
from .checkpoint import (list_checkpoints, load_trainer_state, load_weights, save_checkpoint, set_rng_state,
                         write_model_dir)
from .dist import Dist
from .dist_checkpoint import (full_optimizer_state, is_sharded_checkpoint, load_sharded, model_from_checkpoint_config,
                              save_sharded_checkpoint, set_full_optimizer_state, write_final)
from .lm_data import BatchStream, prepare_data
from .metrics import MetricsLog, merge_stats
from ..errors import UserError

FINAL = "final"


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
    opt = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=(cfg.optim.beta1, cfg.optim.beta2), eps=cfg.optim.eps)
    o = cfg.optim
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, cfg.train.steps, o.warmup_steps, o.decay_fraction, o.final_lr_ratio)
    )
    return opt, sched


def resolve_device(cfg: RunConfig) -> tuple[torch.device, torch.dtype | None]:
    want = cfg.train.device
    if want == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device=cuda but no CUDA device is available")
    dev = torch.device("cuda" if want == "cuda" or (want == "auto" and torch.cuda.is_available()) else "cpu")
    prec = cfg.train.precision
    amp = torch.bfloat16 if prec == "bf16" or (prec == "auto" and dev.type == "cuda") else None
    return dev, amp


def midtrain_config(pre: RunConfig, from_dir: Path, overrides: list[str] = ()) -> RunConfig:
    """The mid-training run derived from a pre-training run's config (SPEC section 2)."""
    mt = pre.midtrain
    data = pre.to_dict()
    seq = pre.data.seq_len * mt.seq_len_multiplier
    data["stage"] = "midtrain"
    data["data"].update(seq_len=seq, corpus=mt.corpus, n_docs=mt.n_docs, tokenizer=str(from_dir / FINAL))
    data["model"]["rope_theta"] = mt.rope_theta
    if pre.model.max_position_embeddings:
        data["model"]["max_position_embeddings"] = max(pre.model.max_position_embeddings, seq)
    data["optim"].update(warmup_steps=0, decay_fraction=1.0, final_lr_ratio=mt.final_lr_ratio)
    data["train"].update(steps=mt.steps, micro_batch=max(1, pre.train.micro_batch // mt.seq_len_multiplier))
    return build_config(data, overrides)


def _start_model(cfg: RunConfig, vocab: int, init_from: Path | None, resume_from: Path | None):
    if resume_from is not None:
        if is_sharded_checkpoint(resume_from):  # weights come from dcp/ once the model is wrapped
            return model_from_checkpoint_config(resume_from)
        return load_weights(resume_from)
    max_pos = cfg.model.max_position_embeddings or None
    if init_from is None:
        return build_model(cfg.model.flavor, vocab_size=vocab, rope_theta=cfg.model.rope_theta,
                           max_position_embeddings=max_pos, seed=cfg.train.seed)
    config = AutoConfig.from_pretrained(init_from)  # edit before construction: RoPE caches inv_freq
    set_rope_theta(config, cfg.model.rope_theta)
    if max_pos:
        config.max_position_embeddings = max_pos
    return load_weights(init_from, config=config)


@torch.no_grad()
def evaluate_lm(model, seqs, n_seqs: int, micro_batch: int, device, amp, d: Dist = Dist()) -> dict[str, float]:
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


def train_lm(cfg: RunConfig, out: Path, *, resume: bool = False, init_from: Path | None = None) -> Path:
    """Run (or resume) one pre-/mid-training stage into `out`; returns `out/final`.

    Under torchrun (see `shapedce.train.dist`) every rank calls this; rank 0 writes the files."""
    d = dist_.detect()
    device, amp = resolve_device(cfg)
    t = cfg.train
    per_rank = dist_.check_world(cfg.grad_accum, d.world, t.global_batch_tokens, t.micro_batch, cfg.data.seq_len)
    parallel = dist_.resolve_parallel(t.parallel, device)
    device = dist_.device_for(d, device)
    dist_.init(d, device)
    try:
        return _train(cfg, Path(out), d, device, amp, parallel, per_rank, resume, init_from)
    finally:
        dist_.teardown(d)


def _train(cfg: RunConfig, out: Path, d: Dist, device, amp, parallel: str, per_rank: int, resume: bool,
           init_from: Path | None) -> Path:
    ckpt_root = out / "checkpoints"
    resume_from = None
    if resume:
        ckpts = list_checkpoints(ckpt_root)
        if not ckpts:
            raise UserError(f"--resume: no checkpoint in {ckpt_root}")
        resume_from = ckpts[-1]
        state = load_trainer_state(resume_from)
    elif (out / "config.yaml").exists():
        raise UserError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    dist_.barrier(d)  # every rank has checked `out` before rank 0 writes to it
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.yaml")

    torch.manual_seed(cfg.train.seed)
    if d.main:  # rank 0 trains the tokenizer and writes the token caches; the others then read them
        tokenizer, train_seqs, val_seqs, vocab = prepare_data(cfg, out, init_from)
    dist_.barrier(d)
    if not d.main:
        tokenizer, train_seqs, val_seqs, vocab = prepare_data(cfg, out, init_from)
    model = _start_model(cfg, vocab, init_from, resume_from).to(device)
    max_pos = model.config.max_position_embeddings
    if cfg.data.seq_len > max_pos:
        raise UserError(f"data.seq_len ({cfg.data.seq_len}) exceeds the model's max_position_embeddings ({max_pos})")
    control = EntropyController.from_loss(cfg.loss) if cfg.loss.auto_beta else None  # beta=auto
    patch_causal_lm(model, control.loss() if control else cfg.loss, return_stats=True)
    model.train()
    sharded_resume = resume_from is not None and is_sharded_checkpoint(resume_from)
    full_optim = None
    if resume_from is not None and not sharded_resume and d.on:  # a one-process checkpoint on N ranks
        full_optim = full_optimizer_state(model, make_optimizer(model, cfg)[0], state["optimizer"])
    module = dist_.wrap(model, d, parallel, device)
    opt, sched = make_optimizer(module, cfg)
    stream = BatchStream(train_seqs, cfg.train.micro_batch, seed=cfg.train.seed)
    start = 0
    if resume_from is not None:
        if sharded_resume:
            load_sharded(resume_from, module, opt)
        elif full_optim is not None:
            set_full_optimizer_state(module, opt, full_optim)
        else:
            opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        stream.position = int(state["data_position"])
        start = int(state["step"])
        by_rank = state.get("rng_by_rank") or [state["rng"]]
        set_rng_state(by_rank[d.rank] if d.rank < len(by_rank) else state["rng"])
        if control is not None:
            control.load_state_dict(state["entropy_control"])
    log = MetricsLog(out, truncate_after=start if resume_from is not None else None) if d.main else None

    interrupted = []
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    tokens_per_step = cfg.train.global_batch_tokens
    items = tokens_per_step // d.world  # DDP / FSDP average over ranks: see shapedce.train.dist
    reduce = (lambda v: dist_.all_sum(d, v)) if d.on else None
    bar = tqdm(total=cfg.train.steps, initial=start, desc=f"{cfg.stage} {out.name}", unit="step",
               dynamic_ncols=True, disable=not d.main)

    def checkpoint(step: int) -> Path:
        st = {"scheduler": sched.state_dict(), "data_position": stream.position}
        if control is not None:
            st["entropy_control"] = control.state_dict()
        if d.on:  # model and optimizer go to dcp/, sharded as they are trained
            return save_sharded_checkpoint(ckpt_root, step, module, opt, tokenizer, st, cfg, cfg.train.keep_last, d)
        st["optimizer"] = opt.state_dict()
        return save_checkpoint(ckpt_root, step, model, tokenizer, st, cfg, cfg.train.keep_last)

    try:
        for step in range(start, cfg.train.steps):
            t0 = time.perf_counter()
            if control is not None:
                patch_causal_lm(model, control.loss(), return_stats=True)
            parts = []
            for j in range(cfg.grad_accum):  # the step's micro-batches; rank r takes the r-th block
                if j // per_rank != d.rank:
                    stream.skip()
                    continue
                batch = stream.next().to(device)
                with dist_.grad_sync(module, (j + 1) % per_rank == 0):
                    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                        out_ = module(input_ids=batch[:, :-1], shift_labels=batch[:, 1:], num_items_in_batch=items)
                    out_.loss.backward()
                parts.append((float(out_.loss.detach()) * per_rank, out_.loss_stats))
            grad_norm = dist_.clip_grad_norm(module, cfg.optim.grad_clip)
            lr = opt.param_groups[0]["lr"]
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            done = step + 1
            log_now = done % cfg.train.log_every == 0 or done == cfg.train.steps
            # one merge (one all-reduce across ranks) serves both the controller and the log row
            row = merge_stats(parts, all_sum=reduce) if control is not None or log_now else None
            beta = None
            if control is not None:  # beta=auto: this step's entropy sets the next step's beta
                beta = control.beta
                control.update(row["entropy"])
            if log_now:
                row.update(lr=lr, grad_norm=grad_norm, tokens_per_s=tokens_per_step / (time.perf_counter() - t0))
                if beta is not None:
                    row.update(beta=beta, entropy_ema=control.ema)
                if log is not None:
                    log.write(cfg.stage, done, done * tokens_per_step, "train", row)
                bar.set_postfix(loss=f"{row['loss']:.3f}", ppl=f"{row['ppl']:.2f}", H=f"{row['entropy']:.2f}")
            if done % cfg.train.val_every == 0 or done == cfg.train.steps:
                val = evaluate_lm(dist_.unwrap(module), val_seqs, cfg.train.val_sequences, cfg.train.micro_batch,
                                  device, amp, d)
                if log is not None:
                    log.write(cfg.stage, done, done * tokens_per_step, "val", val)
            bar.update(1)
            stop = dist_.any_rank(d, bool(interrupted))  # all ranks checkpoint together
            if done % cfg.train.ckpt_every == 0 or done == cfg.train.steps or stop:
                checkpoint(done)
            if stop:
                bar.close()
                if d.main:
                    print(f"interrupted: checkpoint saved at step {done}; continue with --resume")
                raise KeyboardInterrupt
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()
        if log is not None:
            log.close()

    if d.on:
        return write_final(out / FINAL, module, tokenizer, cfg, d)
    return write_model_dir(out / FINAL, model, tokenizer, cfg)


def run_midtrain(from_dir: Path, out: Path, overrides: list[str] = (), *, resume: bool = False) -> Path:
    """`shapedce midtrain`: derive the config from FROM/config.yaml and train from FROM/final."""
    from_dir = Path(from_dir)
    if resume:
        return train_lm(load_run_config(Path(out) / "config.yaml", overrides), out, resume=True, init_from=from_dir / FINAL)
    if not (from_dir / FINAL / "config.json").is_file():
        raise UserError(f"--from {from_dir}: no finished run there (expected {from_dir / FINAL}/config.json)")
    cfg = midtrain_config(load_run_config(from_dir / "config.yaml"), from_dir, overrides)
    return train_lm(cfg, out, init_from=from_dir / FINAL)
