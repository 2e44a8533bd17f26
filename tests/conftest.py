"""Shared test helpers: a readable float64 reference of SPEC section 1, and tiny HF models."""

from __future__ import annotations

import math

import pytest
import torch


def reference_rows(logits, targets, *, beta=0.0, lambda_top=0.0, lambda_tail=0.0, k=100, ignore_index=-100):
    """Per-position surrogate loss written straight from SPEC section 1, in float64 autograd.

    w and lam are detached; w takes the SPEC's limits where pi_x is exactly 1 in float64.
    Returns (rows [N], valid mask [N]).
    """
    z = logits.reshape(-1, logits.shape[-1]).double()
    x = targets.reshape(-1)
    valid = x != ignore_index
    x = torch.where(valid, x, 0)
    vocab = z.shape[-1]
    pi = torch.softmax(z, -1)
    log_pi = torch.log_softmax(z, -1)
    pi_x = pi.gather(1, x[:, None]).squeeze(1).detach()
    one_minus = (1 - pi_x).clamp_min(0)
    if beta == math.inf:
        w = pi_x
    elif beta == 0:
        w = torch.ones_like(pi_x)
    else:
        limit = math.e if beta == -1 else 1.0
        w = torch.where(
            one_minus == 0, torch.full_like(pi_x, limit), pi_x ** (1 - one_minus.clamp_min(1e-300) ** beta)
        )
    kth = torch.topk(z.detach(), min(k, vocab), -1).values[:, -1:]
    in_top = z.detach() >= kth
    lam = torch.where(
        in_top, torch.tensor(lambda_top, dtype=z.dtype), torch.tensor(lambda_tail, dtype=z.dtype)
    )
    lam = lam.scatter(1, x[:, None], 0.0)
    rows = -(w * log_pi.gather(1, x[:, None]).squeeze(1) + (lam * pi).sum(-1))
    return torch.where(valid, rows, 0.0), valid


def reference_loss(logits, targets, reduction="mean", **knobs):
    rows, valid = reference_rows(logits, targets, **knobs)
    if reduction == "none":
        return rows.reshape(targets.shape)
    return rows.sum() / max(int(valid.sum()), 1) if reduction == "mean" else rows.sum()


def tiny_qwen3(moe: bool = False, vocab: int = 97, seed: int = 0):
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    if moe:
        cfg = Qwen3MoeConfig(
            **common,
            moe_intermediate_size=16,
            num_experts=4,
            num_experts_per_tok=2,
            output_router_logits=True,
            router_aux_loss_coef=0.01,
            decoder_sparse_step=1,
        )
        model = Qwen3MoeForCausalLM(cfg)
    else:
        model = Qwen3ForCausalLM(Qwen3Config(**common, intermediate_size=64))
    return model.float()


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(1234)
