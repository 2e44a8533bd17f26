"""The paper-shape checks of benchmarks/gpu_check.py: measured GPU peak memory against `shapedce plan`.

    python benchmarks/gpu_check.py --only paper_pre,paper_rl,paper_mp     # one GPU of >= 90 GiB

paper_pre and paper_rl run one unsharded process with bf16 autocast (the one-process code path);
paper_mp runs pre-training under FSDP2 with the bf16 MixedPrecisionPolicy on a one-rank process group
(`shapedce.train.dist.fsdp_shard`, the path of every sharded bf16 run), against the plan of one
unsharded process with the policy's terms (bf16 all-gathers, reduce-scatter buffers) in place of
autocast's weight copies. Pass: plan / measured in [0.8, 1.25].
"""

from __future__ import annotations

import os
from pathlib import Path

import torch


def _paper_model(cfg):
    """The 4B flavor built directly on the GPU (float32 weights, as the trainers keep them)."""
    from shapedce.models import build_model

    return build_model(cfg.model.flavor, max_position_embeddings=16384, device="cuda").train()


def _verdict(measured: float, planned: float, what: str) -> tuple[bool, str]:
    ratio = planned / measured
    gib = 1024**3
    return (
        0.8 <= ratio <= 1.25,
        f"{what}: peak {measured / gib:.1f} GiB, plan {planned / gib:.1f} GiB, plan/measured {ratio:.2f}",
    )


def check_paper_pre(out: Path) -> tuple[bool, str]:
    from shapedce.config import load_config
    from shapedce.hf import patch_causal_lm
    from shapedce.train.memory import set_activation_checkpointing
    from shapedce.train.plan import plan_lm, run_shape

    cfg = load_config("paper")
    plan = plan_lm(cfg, run_shape(cfg), 1, "cuda", "ddp")
    model = _paper_model(cfg)
    patch_causal_lm(model, "ce")
    set_activation_checkpointing(model, cfg.train.activation_checkpointing)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    batch = torch.randint(
        0, model.config.vocab_size, (cfg.train.micro_batch, cfg.data.seq_len + 1), device="cuda"
    )
    torch.cuda.reset_peak_memory_stats()
    for _ in range(2):  # the second step runs with the AdamW state allocated
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=batch[:, :-1], shift_labels=batch[:, 1:]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    return _verdict(
        torch.cuda.max_memory_allocated(),
        plan.peak,
        f"4B pretrain {cfg.train.micro_batch}x{cfg.data.seq_len}",
    )


def check_paper_rl(out: Path) -> tuple[bool, str]:
    from shapedce.config import load_config
    from shapedce.train.grpo import clipped_loss, token_logps
    from shapedce.train.memory import set_activation_checkpointing
    from shapedce.train.plan import PROMPT_TOKENS, plan_rl, run_shape
    from shapedce.train.rl_config import load_rl_config

    cfg, rl = load_config("paper"), load_rl_config("paper", ["device=cuda"])
    plan = plan_rl(rl, run_shape(cfg), 1, "cuda")
    phase = [
        "parameters",
        "gradients",
        "optimizer",
        "autocast_weights",
        "activations",
        "logprob_head",
        "attention_mask",
    ]
    planned = sum(plan.terms[t] for t in phase)
    model = _paper_model(cfg)
    set_activation_checkpointing(model, rl.activation_checkpointing)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    g = torch.Generator().manual_seed(0)
    vocab, rows = model.config.vocab_size, rl.micro_batch
    prompts = torch.randint(1, vocab, (rows, PROMPT_TOKENS), generator=g).tolist()
    completions = torch.randint(1, vocab, (rows, rl.max_completion_length), generator=g).tolist()
    adv = torch.linspace(-1, 1, rows, device="cuda")
    torch.cuda.reset_peak_memory_stats()
    for _ in range(2):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logp, mask = token_logps(model, prompts, completions, 0, rl.temperature)
        loss, _ = clipped_loss(
            logp, logp.detach(), adv, mask, rl.epsilon_low, rl.epsilon_high, float(mask.sum())
        )
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    what = f"4B RL {rows}x({PROMPT_TOKENS}+{rl.max_completion_length})"
    return _verdict(torch.cuda.max_memory_allocated(), planned, what)


def check_paper_mp(out: Path) -> tuple[bool, str]:
    import torch.distributed as dist

    from shapedce.config import load_config
    from shapedce.hf import patch_causal_lm
    from shapedce.train.dist import fsdp_shard
    from shapedce.train.memory import set_activation_checkpointing
    from shapedce.train.plan import plan_lm, run_shape

    cfg = load_config("paper")
    shape = run_shape(cfg)
    base = plan_lm(cfg, shape, 1, "cuda", "ddp")  # one unsharded process, autocast
    policy = plan_lm(cfg, shape, 2, "cuda", "fsdp").terms  # the policy's per-layer terms
    terms = {t: base.terms[t] for t in base.peak_terms}
    terms.update(autocast_weights=0.0, **{t: policy[t] for t in ("fsdp_unsharded", "fsdp_reduce_scatter")})
    planned = sum(terms.values())
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("nccl", rank=0, world_size=1, device_id=torch.device("cuda", 0))
    try:
        model = _paper_model(cfg)
        patch_causal_lm(model, "ce")
        set_activation_checkpointing(model, cfg.train.activation_checkpointing)
        fsdp_shard(model, torch.bfloat16)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, foreach=True)
        batch = torch.randint(
            0, model.config.vocab_size, (cfg.train.micro_batch, cfg.data.seq_len + 1), device="cuda"
        )
        torch.cuda.reset_peak_memory_stats()
        for _ in range(2):  # no autocast: the policy casts the parameters
            loss = model(input_ids=batch[:, :-1], shift_labels=batch[:, 1:]).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        what = f"4B pretrain FSDP2 bf16 policy, 1 rank, {cfg.train.micro_batch}x{cfg.data.seq_len}"
        return _verdict(torch.cuda.max_memory_allocated(), planned, what)
    finally:
        dist.destroy_process_group()
