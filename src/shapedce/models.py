"""Model flavors: a plain dict from name to a Qwen3 / Qwen3-MoE config, plus builders and counts.

    python -c "from shapedce.models import models_table; print(models_table())"   # = `shapedce models`

    from shapedce.models import build_model, param_counts, set_rope_theta
    model = build_model("tiny-moe", seed=0)               # float32 Qwen3MoeForCausalLM, ~1.3M params
    total, active = param_counts("moe-10b-a0.5b")         # counted on the meta device, no memory
    set_rope_theta(model, 1e6)                            # mid-training RoPE base (config AND inv_freq)

Flavors (docs/method/pipeline.md): CPU flavors `tiny`, `tiny-moe`, `small`, `small-moe` (max positions 2048)
and the paper's `1b`, `4b`, `moe-5b-a0.3b`, `moe-10b-a0.5b`, `moe-20b-a1b` with the Qwen3 vocabulary
(151936) and 16384 positions, so mid-training at sequence length 16384 needs no override.
Every flavor: RoPE base 1e4, no dropout, use_cache=True, float32, tied input/output embeddings.

The MoE paper flavors use 256 fine-grained experts with top-8 routing. Qwen3-MoE's 128 experts
cannot reach these total/active ratios: with top-8 of 128 at most 1/16 of the expert weights is
active, and 5B/0.3B = 16.7 and 10B/0.5B = 20 exceed 16 before the embedding is counted.
Embeddings are tied in every flavor because the 151936 x hidden table is already 15-40% of the
active budget of the small MoEs; untying would double that share.

Active parameters = total - expert weights x (1 - top_k / num_experts): attention, norms, router
and embedding always count. Transformers 5.x stores each layer's experts as two fused 3-D
tensors (`mlp.experts.gate_up_proj` [E, 2I, H] and `mlp.experts.down_proj` [E, H, I]).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import torch
from transformers import (
    PretrainedConfig,
    PreTrainedModel,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

from .data.pretrained import check_fits_memory
from .errors import UserError, check_int, check_real

QWEN3_VOCAB = 151936
"""Size of the Qwen3 tokenizer's embedding table (vocabulary padded to a multiple of 128)."""
ROPE_THETA = 1e4
"""RoPE base of pre-training (docs/method/pipeline.md); mid-training raises it to 1e6
(`set_rope_theta`)."""
"""RoPE base of mid-training (docs/method/pipeline.md)."""


def _common(*, vocab: int, positions: int) -> dict[str, Any]:
    """Settings every flavor shares."""
    return dict(
        vocab_size=vocab,
        max_position_embeddings=positions,
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
        attention_dropout=0.0,
        attention_bias=False,
        use_cache=True,
        tie_word_embeddings=True,
        hidden_act="silu",
        rms_norm_eps=1e-6,
        initializer_range=0.02,
    )


def _dense(
    *,
    vocab: int,
    positions: int,
    hidden: int,
    layers: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    intermediate: int,
) -> Qwen3Config:
    return Qwen3Config(
        **_common(vocab=vocab, positions=positions),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=intermediate,
        use_sliding_window=False,
    )


def _moe(
    *,
    vocab: int,
    positions: int,
    hidden: int,
    layers: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    expert_intermediate: int,
    experts: int,
    top_k: int,
) -> Qwen3MoeConfig:
    return Qwen3MoeConfig(
        **_common(vocab=vocab, positions=positions),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        moe_intermediate_size=expert_intermediate,
        num_experts=experts,
        num_experts_per_tok=top_k,
        # intermediate_size only sizes dense MLP layers (mlp_only_layers); there are none.
        intermediate_size=4 * expert_intermediate,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        norm_topk_prob=True,  # as Qwen3-30B-A3B ships
        output_router_logits=False,
        router_aux_loss_coef=0.001,
        use_sliding_window=False,
    )


_CPU = dict(vocab=2048, positions=2048)
_CPU_SMALL = dict(vocab=8192, positions=2048)
_PAPER = dict(vocab=QWEN3_VOCAB, positions=16384)

FLAVORS: dict[str, PretrainedConfig] = {
    # CPU flavors: tests, smoke runs and the small reproductions.
    "tiny": _dense(**_CPU, hidden=128, layers=4, heads=4, kv_heads=2, head_dim=32, intermediate=384),
    "tiny-moe": _moe(
        **_CPU,
        hidden=128,
        layers=4,
        heads=4,
        kv_heads=2,
        head_dim=32,
        expert_intermediate=64,
        experts=8,
        top_k=2,
    ),
    "small": _dense(**_CPU_SMALL, hidden=384, layers=8, heads=6, kv_heads=2, head_dim=64, intermediate=1024),
    "small-moe": _moe(
        **_CPU_SMALL,
        hidden=384,
        layers=8,
        heads=6,
        kv_heads=2,
        head_dim=64,
        expert_intermediate=192,
        experts=16,
        top_k=4,
    ),
    # Paper flavors (docs/method/pipeline.md). 4b is the Qwen3-4B shape; 1b sits between Qwen3-0.6B and 1.7B.
    "1b": _dense(**_PAPER, hidden=1536, layers=28, heads=16, kv_heads=8, head_dim=128, intermediate=4096),
    "4b": _dense(**_PAPER, hidden=2560, layers=36, heads=32, kv_heads=8, head_dim=128, intermediate=9728),
    # MoE: Qwen3-MoE layout (query width 2 x hidden, 4 KV heads, head_dim 128), 256 experts, top-8.
    "moe-5b-a0.3b": _moe(
        **_PAPER,
        hidden=640,
        layers=22,
        heads=10,
        kv_heads=4,
        head_dim=128,
        expert_intermediate=448,
        experts=256,
        top_k=8,
    ),
    "moe-10b-a0.5b": _moe(
        **_PAPER,
        hidden=768,
        layers=24,
        heads=12,
        kv_heads=4,
        head_dim=128,
        expert_intermediate=704,
        experts=256,
        top_k=8,
    ),
    "moe-20b-a1b": _moe(
        **_PAPER,
        hidden=1280,
        layers=24,
        heads=20,
        kv_heads=4,
        head_dim=128,
        expert_intermediate=832,
        experts=256,
        top_k=8,
    ),
}
"""Flavor name -> config. Treat as read-only; `flavor_config` hands out deep copies."""

_CAUSAL_LM: dict[type, type[PreTrainedModel]] = {
    Qwen3Config: Qwen3ForCausalLM,
    Qwen3MoeConfig: Qwen3MoeForCausalLM,
}


def is_moe(config: PretrainedConfig) -> bool:
    return isinstance(config, Qwen3MoeConfig)


def _check_flavor(flavor: str) -> PretrainedConfig:
    if flavor not in FLAVORS:
        raise UserError(f"unknown model flavor {flavor!r}; choose one of {', '.join(FLAVORS)}")
    return FLAVORS[flavor]


def _check_theta(theta: Any) -> float:
    check_real("rope_theta", theta, 1, lo_open=True)
    return float(theta)


def get_rope_theta(config: PretrainedConfig | PreTrainedModel) -> float:
    """The RoPE base. Transformers 5.x keeps it in `config.rope_parameters["rope_theta"]`."""
    config = getattr(config, "config", config)
    params = config.rope_parameters or {}
    if "rope_theta" not in params:  # per-layer-type form {"full_attention": {...}, ...}
        params = next(iter(params.values()), {})
    return float(params["rope_theta"])


def set_rope_theta(
    config: PretrainedConfig | PreTrainedModel, theta: float
) -> PretrainedConfig | PreTrainedModel:
    """Set the RoPE base in place and return the argument (mid-training: 1e4 -> 1e6).

    Writes `config.rope_parameters["rope_theta"]`, the only place transformers 5.x reads and saves;
    a bare `config.rope_theta = x` is silently ignored by the model. Given a model, also recomputes
    the rotary embeddings' `inv_freq` buffers, which are otherwise fixed at construction.
    """
    theta = _check_theta(theta)
    model = config if isinstance(config, PreTrainedModel) else None
    cfg = model.config if model is not None else config
    params = copy.deepcopy(dict(cfg.rope_parameters or {}))
    if params and all(isinstance(v, dict) for v in params.values()):
        for sub in params.values():
            sub["rope_theta"] = theta
    else:
        params.setdefault("rope_type", "default")
        params["rope_theta"] = theta
    cfg.rope_parameters = params
    if model is not None:
        for module in model.modules():
            if isinstance(getattr(module, "inv_freq", None), torch.Tensor) and hasattr(
                module, "original_inv_freq"
            ):
                fresh = type(module)(cfg)
                device = module.inv_freq.device
                module.inv_freq = fresh.inv_freq.to(device)
                module.original_inv_freq = fresh.original_inv_freq.to(device)
                module.attention_scaling = fresh.attention_scaling
    return config


def flavor_config(flavor: str, **overrides: Any) -> PretrainedConfig:
    """A deep copy of `FLAVORS[flavor]` with config fields overridden (`rope_theta` is routed to
    `rope_parameters`). Unknown flavors and unknown fields raise a one-line ValueError."""
    config = copy.deepcopy(_check_flavor(flavor))
    for name, value in overrides.items():
        if name == "rope_theta":
            set_rope_theta(config, value)
            continue
        if name in ("vocab_size", "max_position_embeddings", "num_hidden_layers", "hidden_size"):
            check_int(name, value, 1)
        if not hasattr(config, name):
            raise UserError(f"{name} is not a field of {type(config).__name__} (flavor {flavor!r})")
        setattr(config, name, value)  # strict dataclass: type-checked here
    if (
        "num_hidden_layers" in overrides
        and "layer_types" not in overrides
        and getattr(config, "layer_types", None)
    ):
        config.layer_types = ["full_attention"] * config.num_hidden_layers
    config.validate()
    return config


def build_model(
    flavor: str,
    *,
    vocab_size: int | None = None,
    rope_theta: float | None = None,
    max_position_embeddings: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> PreTrainedModel:
    """A freshly initialised float32 `Qwen3ForCausalLM` / `Qwen3MoeForCausalLM`.

    The init is a function of (flavor, overrides, seed, device type): `torch.manual_seed(seed)`
    runs right before construction, and the weights are created directly on `device`.
    """
    overrides: dict[str, Any] = {}
    if vocab_size is not None:
        overrides["vocab_size"] = vocab_size
    if rope_theta is not None:
        overrides["rope_theta"] = rope_theta
    if max_position_embeddings is not None:
        overrides["max_position_embeddings"] = max_position_embeddings
    config = flavor_config(flavor, **overrides)
    check_int("seed", seed)
    if torch.device(device).type == "cpu":
        check_fits_memory(config, f"model flavor {flavor!r}")  # host memory, before any allocation
    torch.manual_seed(seed)
    with torch.device(device):
        model = _CAUSAL_LM[type(config)](config)
    return model.to(torch.float32)


@functools.cache
def param_counts(flavor: str) -> tuple[int, int]:
    """(total, active) parameters of a flavor, counted on the meta device. Tied weights count once."""
    config = flavor_config(flavor)
    with torch.device("meta"):
        model = _CAUSAL_LM[type(config)](config)
    total = sum(p.numel() for p in model.parameters())  # parameters() drops the tied duplicate
    if not is_moe(config):
        return total, total
    expert = sum(p.numel() for name, p in model.named_parameters() if ".mlp.experts." in name)
    idle = expert * (config.num_experts - config.num_experts_per_tok) // config.num_experts
    return total, total - idle


def human(n: float) -> str:
    """1052672 -> '1.05M', 4022468096 -> '4.02B' (three significant digits)."""
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            value = n / scale
            return f"{value:.{2 if value < 10 else 1 if value < 100 else 0}f}{unit}"
    return str(int(n))


def models_table() -> str:
    """Markdown table of every flavor: what `shapedce models` prints."""
    rows = [
        "| flavor | kind | layers | hidden | experts (E/top-k) | vocab | total params | active params |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, config in FLAVORS.items():
        total, active = param_counts(name)
        moe = is_moe(config)
        experts = f"{config.num_experts}/{config.num_experts_per_tok}" if moe else "-"
        rows.append(
            f"| {name} | {'MoE' if moe else 'dense'} | {config.num_hidden_layers} | {config.hidden_size} | "
            f"{experts} | {config.vocab_size} | {human(total)} | {human(active)} |"
        )
    return "\n".join(rows)


def check_finite_weights(model: PreTrainedModel, source: str | Path) -> None:
    """One-line UserError if any parameter or buffer of `model` (loaded from `source`) holds NaN or
    inf: such a model would only produce garbage (and crash samplers), so every stage refuses it."""
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise UserError(
                f"{source}: weight {name} holds {bad} non-finite values (NaN or inf); "
                "refusing to use this model"
            )


def cast_weights(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast the floating-point parameters of `model` to `dtype` in place; buffers stay as they are.
    `model.to(bf16)` would also round RoPE's float32 `inv_freq` to bf16 and move every angle of a long
    sequence; the bf16 rollout copy (RL) and bf16 evaluation cast through this instead."""
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point():
                p.data = p.data.to(dtype)
    return model
