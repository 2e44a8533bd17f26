"""Memory plan of every stage, per device, before anything runs (`shapedce plan`).

    shapedce plan --preset paper                       # 8 GPUs of 80 GiB, every stage, a table
    shapedce plan --preset paper --json model.flavor=1b rl.micro_batch=4 --world-size 16
    from shapedce.train.plan import plan_preset
    plan = plan_preset("smoke", [], world_size=1, device_gib=8.0, device="cpu")

Per device and stage, in bytes: parameters, gradients, AdamW state (8 B per parameter), DDP's
gradient buckets, the bf16 weight copies autocast keeps for the backward, FSDP2's all-gathered layers
and its reduce-scatter buffers, activations (with and without checkpointing), the loss or log-prob
head's chunk buffers and gradients, the sampling KV cache and the sampler's last-position logits.

bf16 follows the code (`shapedce.train.dist.autocast_dtype`): under FSDP2 (torchrun, sharded) it is
the MixedPrecisionPolicy, so there is no autocast copy; the all-gathered layers are bf16 (2 B per
parameter) and each layer's backward holds its bf16 gradients plus their float32 copy and the float32
reduce-scatter input. One process and DDP autocast (autocast_weights: 2 B per parameter, unsharded).
RL under FSDP2 samples from an unsharded copy in the policy's precision (bf16 on CUDA: 2 B per
parameter, bf16 KV cache), refreshed one parameter at a time. Evaluation holds its weights in the
`dtype` of `shapedce eval` (bf16 on CUDA: weights and KV cache at 2 B). The peak is the largest
of the stage's phases (forward, backward, optimizer step; for RL also the rollout). Each term is a
formula from the model's shape (`shapedce.models` or any HF config), documented in
docs/guides/scaling.md with its measured accuracy (`benchmarks/bench_memory_plan.py`).

Activations per token and decoder layer, as elements of the tensors autograd saves (counted on
CPU with saved-tensor hooks for Qwen3 / Qwen3-MoE, within 2%):
    dense  4 H + 6 q + 5 kv + 4 I            (H hidden, q = heads * head_dim, kv = kv_heads * head_dim)
    MoE    4 H + 6 q + 5 kv + k (4 I_e + 2 H) + 2 E    (k experts per token of E, I_e expert width)
at 4 B each in float32; under bf16 autocast the matmul-side ones are 2 B (norm internals and the
residual stream stay float32). Attention is SDPA's fused kernel: no T^2 term except the boolean mask
HF builds when rows are padded (RL, evaluation). With checkpointing each layer keeps its input
(H floats per token) and one layer is recomputed at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..config import RunConfig, load_config, read_preset
from ..loss.fused import default_chunk_rows
from ..models import flavor_config
from .rl_config import RLConfig, load_rl_config

GIB = 1024**3
PROMPT_TOKENS = 512
"""Prompt length assumed for RL rollouts and evaluation (a math problem with its chat template)."""
STAGES = ("pretrain", "midtrain", "rl", "eval")


@dataclass(frozen=True, slots=True)
class Shape:
    """What the memory terms need from a model config."""

    params: int
    layer_params: int
    layers: int
    hidden: int
    vocab: int
    q: int
    kv: int
    act_elems: int
    """Saved activation elements per token and decoder layer (see the module docstring)."""
    max_param: int = 0
    """Elements of the largest single parameter (the one-at-a-time all-gather of an RL refresh)."""

    @classmethod
    def of(cls, config) -> Shape:
        from ..data.pretrained import meta_model

        model = meta_model(config)
        params = sum(p.numel() for p in model.parameters())
        layer = max(sum(p.numel() for p in m.parameters()) for m in model.model.layers)
        h = config.hidden_size
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or h // heads
        q, kv = heads * head_dim, getattr(config, "num_key_value_heads", heads) * head_dim
        experts = getattr(config, "num_experts", 0) or getattr(config, "num_local_experts", 0)
        if experts:
            k, width = config.num_experts_per_tok, config.moe_intermediate_size
            mlp = k * (4 * width + 2 * h) + 2 * experts
        else:
            mlp = 4 * config.intermediate_size
        act = 4 * h + 6 * q + 5 * kv + mlp
        biggest = max(p.numel() for p in model.parameters())
        return cls(params, layer, config.num_hidden_layers, h, config.vocab_size, q, kv, act, biggest)

    def act_bytes(self, amp: bool) -> float:
        """Bytes saved per token and layer: float32, or bf16 except the 4 H float32 norm/residual ones."""
        return (
            4.0 * self.act_elems
            if not amp
            else 4.0 * 4 * self.hidden + 2.0 * (self.act_elems - 4 * self.hidden)
        )

    def kv_bytes(self, rows: int, length: int, elem: int = 4) -> float:
        return float(rows) * length * self.layers * 2 * self.kv * elem


@dataclass(slots=True)
class StagePlan:
    """One stage's terms (bytes per device) and its peak."""

    stage: str
    terms: dict[str, float] = field(default_factory=dict)
    peak: float = 0.0
    phase: str = ""
    """Which phase sets the peak (forward, backward, optimizer step, rollout)."""
    settings: dict[str, object] = field(default_factory=dict)
    """The settings the terms came from (tokens per micro-batch, sharding, checkpointing, ...)."""
    peak_terms: list[str] = field(default_factory=list)
    """The terms that add up to the peak."""

    def largest(self, names) -> str:
        return max(names, key=lambda n: self.terms.get(n, 0.0))

    def as_dict(self, device_gib: float | None) -> dict:
        out = {"peak_gib": round(self.peak / GIB, 3)}
        if device_gib is not None:
            out["fits"] = self.peak <= device_gib * GIB
        out.update({f"{k}_gib": round(v / GIB, 3) for k, v in self.terms.items()})
        out["peak_phase"] = self.phase
        out.update(self.settings)
        return out


def _state_terms(shape: Shape, shards: int, ddp_buckets: bool, amp: bool) -> dict[str, float]:
    """Whole-step terms. `amp` with shards > 1 is FSDP2's bf16 MixedPrecisionPolicy (no autocast
    copy; bf16 all-gathers), with one shard bf16 autocast (a bf16 copy of every weight)."""
    p, mp = shape.params, amp and shards > 1
    gathered = 2.0 if mp else 4.0  # bytes per all-gathered element: bf16 under the policy
    return {
        "parameters": 4.0 * p / shards,
        "gradients": 4.0 * p / shards,
        "optimizer": 8.0 * p / shards,
        "ddp_buckets": 4.0 * p if ddp_buckets else 0.0,
        "autocast_weights": 2.0 * p if amp and not mp else 0.0,
        # the layer computing, the next one prefetched, the root (embedding / tied head) held throughout
        "fsdp_unsharded": (
            gathered * (2 * shape.layer_params + shape.vocab * shape.hidden) if shards > 1 else 0.0
        ),
        # one layer's backward: its unsharded gradients (bf16 under the policy, then cast to float32)
        # and the float32 reduce-scatter input
        "fsdp_reduce_scatter": (gathered + (4.0 if mp else 0.0) + 4.0) * shape.layer_params
        if shards > 1
        else 0.0,
    }


def bf16_of(precision: str, device: str) -> bool:
    """True when `precision` ("auto", "fp32", "bf16") trains in bf16 on `device` ("auto": on CUDA)."""
    return precision == "bf16" or (precision == "auto" and device == "cuda")


def _activations(shape: Shape, tokens: int, amp: bool) -> tuple[float, float]:
    """(without, with) checkpointing, for `tokens` tokens in one micro-batch. With checkpointing each
    layer keeps its float32 input; the layer being recomputed holds its activations and, while its
    backward runs, about as much again (calibrated on CPU, benchmarks/bench_memory_plan.py)."""
    per_layer = shape.act_bytes(amp) * tokens
    edges = 2 * 4.0 * shape.hidden * tokens  # embedding output, final norm
    return (
        shape.layers * per_layer + edges,
        shape.layers * 4.0 * shape.hidden * tokens + 2 * per_layer + edges,
    )


def _head(shape: Shape, tokens: int, buffers: int = 1) -> tuple[float, float]:
    """The fused loss / log-prob head: (chunk buffers, its float32 weight gradient + grad_hidden)."""
    chunk = default_chunk_rows(tokens, shape.vocab)
    return 4.0 * chunk * shape.vocab * buffers, 4.0 * shape.vocab * shape.hidden + 4.0 * tokens * shape.hidden


def _backward_transient(shape: Shape, tokens: int, amp: bool) -> float:
    """Gradients of one layer's intermediate activations while its backward runs (about twice what
    the layer saves: calibrated on CPU by benchmarks/bench_memory_plan.py)."""
    return 2.0 * shape.act_bytes(amp) * tokens


def _finish(plan: StagePlan, phases: dict[str, list[str]]) -> StagePlan:
    sums = {name: sum(plan.terms.get(t, 0.0) for t in terms) for name, terms in phases.items()}
    plan.phase = max(sums, key=sums.get)
    plan.peak, plan.peak_terms = sums[plan.phase], phases[plan.phase]
    return plan


STATE_TERMS = ["parameters", "gradients", "optimizer", "ddp_buckets"]
"""Terms held for the whole step of a training stage."""
LIVE_TERMS = [*STATE_TERMS, "autocast_weights", "fsdp_unsharded", "activations"]
"""Terms alive from the forward through the backward of a training stage."""
BACKWARD_TERMS = [*LIVE_TERMS, "backward_transient", "fsdp_reduce_scatter"]
"""Terms of the backward pass through the decoder layers."""


def plan_lm(cfg: RunConfig, shape: Shape, world: int, device: str, parallel: str) -> StagePlan:
    """Pre- or mid-training: one micro-batch of micro_batch x seq_len tokens per device."""
    amp = bf16_of(cfg.train.precision, device)
    sharded = parallel == "fsdp" and world > 1
    tokens = cfg.train.micro_batch * cfg.data.seq_len
    plan = StagePlan(cfg.stage, _state_terms(shape, world if sharded else 1, world > 1 and not sharded, amp))
    full, ckpt = _activations(shape, tokens, amp)
    on = cfg.train.activation_checkpointing
    plan.terms.update(activations=ckpt if on else full, activations_no_ckpt=full, activations_ckpt=ckpt)
    plan.terms["loss_head"], plan.terms["head_grads"] = _head(shape, tokens)
    plan.terms["backward_transient"] = _backward_transient(shape, tokens, amp)
    plan.terms["optimizer_step_temp"] = 4.0 * shape.params / (world if sharded else 1)
    plan.settings = dict(
        tokens_per_micro_batch=tokens,
        sharding="fsdp" if sharded else ("ddp" if world > 1 else "none"),
        bf16_autocast=amp and not sharded,
        fsdp_mixed_precision=amp and sharded,
        activation_checkpointing=on,
    )
    return _finish(
        plan,
        {
            "forward": [*LIVE_TERMS, "loss_head", "head_grads"],
            "backward": [*BACKWARD_TERMS, "head_grads"],
            "optimizer step": [*STATE_TERMS, "optimizer_step_temp"],
        },
    )


def plan_rl(
    cfg: RLConfig, shape: Shape, world: int, device: str, prompt_tokens: int = PROMPT_TOKENS
) -> StagePlan:
    """GRPO: the rollout (KV cache of rollout_batch rows) and the update (micro_batch rows of
    prompt + completion tokens through the fused log-prob head)."""
    amp = bf16_of(getattr(cfg, "precision", "auto"), device)
    parallel = getattr(cfg, "parallel", "ddp")  # RL sharding, where the trainer offers it
    sharded = (parallel == "fsdp" or (parallel == "auto" and device == "cuda")) and world > 1
    length = prompt_tokens + max(cfg.max_completion_length, cfg.eval_max_new_tokens)
    tokens = cfg.micro_batch * (prompt_tokens + cfg.max_completion_length)
    plan = StagePlan("rl", _state_terms(shape, world if sharded else 1, world > 1 and not sharded, amp))
    full, ckpt = _activations(shape, tokens, amp)
    on = bool(getattr(cfg, "activation_checkpointing", False))
    width = prompt_tokens + cfg.max_completion_length
    plan.terms.update(activations=ckpt if on else full, activations_no_ckpt=full, activations_ckpt=ckpt)
    # the head's backward: one chunk buffer (two with an entropy gradient, which GRPO's loss has not)
    head = _head(shape, cfg.micro_batch * cfg.max_completion_length, buffers=1)
    plan.terms["logprob_head"] = sum(head)
    plan.terms["backward_transient"] = _backward_transient(shape, tokens, amp)
    plan.terms["attention_mask"] = float(cfg.micro_batch) * width * width  # boolean [rows, 1, T, T]
    rows = cfg.rollout_batch
    sample_bf16 = amp and sharded  # the sampling copy is bf16; DDP / one process sample the fp32 policy
    plan.terms["kv_cache"] = shape.kv_bytes(rows, length, 2 if sample_bf16 else 4)
    plan.terms["sampler_logits"] = 3 * 4.0 * rows * shape.vocab
    # the unsharded sampling copy (FSDP2), and one float32 parameter all-gathered while it is refreshed
    plan.terms["rollout_weights"] = (2.0 if sample_bf16 else 4.0) * shape.params if sharded else 0.0
    plan.terms["rollout_refresh"] = 4.0 * shape.max_param if sharded else 0.0
    plan.settings = dict(
        tokens_per_micro_batch=tokens,
        rollout_rows=rows,
        rollout_length=length,
        sharding="fsdp" if sharded else ("ddp" if world > 1 else "none"),
        bf16_autocast=amp and not sharded,
        fsdp_mixed_precision=amp and sharded,
        rollout_dtype=("bf16" if sample_bf16 else "fp32") if sharded else "policy",
        activation_checkpointing=on,
    )
    return _finish(
        plan,
        {
            "head backward": [*LIVE_TERMS, "logprob_head", "attention_mask"],
            "backward": [*BACKWARD_TERMS, "attention_mask"],
            "rollout refresh": ["parameters", "optimizer", "rollout_weights", "rollout_refresh"],
            "rollout": [
                "parameters",
                "optimizer",
                "ddp_buckets",
                "rollout_weights",
                "kv_cache",
                "sampler_logits",
            ],
        },
    )


def plan_eval(
    shape: Shape,
    batch: int,
    max_new_tokens: int,
    prompt_tokens: int = PROMPT_TOKENS,
    text_tokens: int = 4096,
    bf16: bool = False,
) -> StagePlan:
    """Evaluation: the model (float32, or bf16: `shapedce eval --dtype`, bf16 on CUDA by default), the
    sampler's KV cache (in the weights' dtype) and float32 logits, the text scoring head (its chunk
    buffers float32, the layer activations in the weights' dtype)."""
    elem = 2 if bf16 else 4
    plan = StagePlan("eval", {"parameters": float(elem) * shape.params})
    plan.terms["kv_cache"] = shape.kv_bytes(batch, prompt_tokens + max_new_tokens, elem)
    plan.terms["sampler_logits"] = 3 * 4.0 * batch * shape.vocab
    chunk = default_chunk_rows(text_tokens, shape.vocab)
    plan.terms["text_head"] = 4.0 * chunk * shape.vocab + float(elem) * shape.act_elems * text_tokens
    plan.settings = dict(
        sample_rows=batch,
        sample_length=prompt_tokens + max_new_tokens,
        weights_dtype="bf16" if bf16 else "fp32",
    )
    return _finish(
        plan,
        {
            "sampling": ["parameters", "kv_cache", "sampler_logits"],
            "text scoring": ["parameters", "text_head"],
        },
    )


def run_shape(cfg: RunConfig) -> Shape:
    over = {"vocab_size": cfg.model.vocab_size} if cfg.model.vocab_size else {}
    return Shape.of(flavor_config(cfg.model.flavor, **over))


def lm_parallel(cfg: RunConfig, device: str) -> str:
    return ("fsdp" if device == "cuda" else "ddp") if cfg.train.parallel == "auto" else cfg.train.parallel


def plan_preset(
    name: str,
    overrides: list[str] = (),
    *,
    world_size: int = 8,
    device_gib: float | None = 80.0,
    device: str = "cuda",
    prompt_tokens: int = PROMPT_TOKENS,
) -> dict:
    """The plan of preset NAME: pre-/mid-training from presets/NAME.yaml, RL from presets/rl/NAME.yaml,
    evaluation from presets/reproduce/NAME.yaml (where they exist). Overrides `rl.KEY=V` go to the
    RL config, `eval.batch_size=N` / `eval.max_new_tokens=N` / `eval.dtype=D` to evaluation, the rest
    to the run config."""
    from .lm import midtrain_config

    run_over = [o for o in overrides if not o.startswith(("rl.", "eval."))]
    rl_over = [o[3:] for o in overrides if o.startswith("rl.")]
    eval_over = dict(o[5:].split("=", 1) for o in overrides if o.startswith("eval."))
    pre = load_config(name, run_over)
    shape = run_shape(pre)
    mid = midtrain_config(pre, Path("FROM"), run_over)
    stages = {
        "pretrain": plan_lm(pre, shape, world_size, device, lm_parallel(pre, device)),
        "midtrain": plan_lm(mid, shape, world_size, device, lm_parallel(mid, device)),
    }
    rl_root = Path(__file__).resolve().parent.parent / "presets"
    if (rl_root / "rl" / f"{name}.yaml").is_file():
        stages["rl"] = plan_rl(load_rl_config(name, rl_over), shape, world_size, device, prompt_tokens)
    grid = (
        read_preset(name, rl_root / "reproduce", "reproduce preset")
        if (rl_root / "reproduce" / f"{name}.yaml").is_file()
        else {}
    )
    grid_eval = grid.get("eval") if isinstance(grid.get("eval"), dict) else {}
    batch = int(eval_over.get("batch_size", grid_eval.get("batch_size", 64)))
    max_new = int(eval_over.get("max_new_tokens", grid_eval.get("max_new_tokens", 48)))
    dtype = str(eval_over.get("dtype", grid_eval.get("dtype", "auto")))
    stages["eval"] = plan_eval(shape, batch, max_new, prompt_tokens, bf16=bf16_of(dtype, device))
    return {
        "preset": name,
        "world_size": world_size,
        "device_gib": device_gib,
        "device": device,
        "model": {"flavor": pre.model.flavor, "parameters": shape.params, "vocab": shape.vocab},
        "stages": {k: v.as_dict(device_gib) for k, v in stages.items()},
    }


def render(plan: dict) -> str:
    """A fixed-width table: one column per stage, one row per term (GiB per device)."""
    stages = plan["stages"]
    rows = sorted({k for s in stages.values() for k in s if k.endswith("_gib") and k != "peak_gib"})
    head = f"{'GiB per device':<22}" + "".join(f"{s:>11}" for s in stages)
    lines = [
        f"plan: preset {plan['preset']}, {plan['model']['flavor']} "
        f"({plan['model']['parameters'] / 1e9:.2f}B params), "
        f"{plan['world_size']} x {plan['device']} of {plan['device_gib']} GiB",
        head,
    ]
    for r in rows:
        lines.append(
            f"{r[:-4]:<22}"
            + "".join(f"{s.get(r, 0.0):>11.2f}" if r in s else f"{'-':>11}" for s in stages.values())
        )
    lines.append(f"{'peak':<22}" + "".join(f"{s['peak_gib']:>11.2f}" for s in stages.values()))
    if plan["device_gib"] is not None:
        lines.append(
            f"{'fits':<22}" + "".join(f"{('yes' if s['fits'] else 'NO'):>11}" for s in stages.values())
        )
    lines.append(f"{'peak phase':<22}" + "".join(f"{s['peak_phase'][:10]:>11}" for s in stages.values()))
    return "\n".join(lines)


def gib(x: float) -> str:
    return f"{x / GIB:.1f}" if math.isfinite(x) else "inf"
