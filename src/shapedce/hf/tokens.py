"""Per-token log pi and entropy of any HF causal LM without its [B, T, V] logits.

    from shapedce.hf.tokens import lm_token_head
    out = lm_token_head(model, input_ids, attention_mask, targets, temperature=1.0)   # targets [B, T]
    out.logp, out.entropy                                 # [B, T]; 0 where targets == ignore_index

Runs the model's decoder (found by `shapedce.hf.heads.read_head`, as the patched loss does), then
`shapedce.loss.token_head` on its last hidden states with the model's own head weight, bias, logit
scale and final-logit softcap. The call goes through the model's `__call__` with its forward swapped
for this one, so the hooks of DDP and FSDP2 (`fully_shard` unshards the root's parameters, the head
among them, in a forward pre-hook) run as for an ordinary forward; pass the wrapped module (a DDP
wrapper is unwrapped to find the model). `positions` picks the positions to score ([B, T'] index
into the sequence, e.g. the completion's), so the head never sees the prompt's hidden states.
Tests: `PYTHONPATH=src python -m pytest -q tests/test_token_head.py tests/test_hf_tokens.py`.
"""

from __future__ import annotations

import types

import torch
from torch import Tensor

from ..loss.token_head import TokenHeadOutput, token_head
from .heads import HeadSpec, module_at, read_head


def _spec(lm) -> HeadSpec:
    spec = getattr(lm, "_shaped_spec", None)
    if spec is None:
        spec = read_head(lm)
        lm._shaped_spec = spec
    return spec


def _inner(module):
    """The causal LM inside a DDP wrapper (its `.module`), a PeftModel's base model, or the model itself."""
    lm = (
        getattr(module, "module", module)
        if isinstance(module, torch.nn.parallel.DistributedDataParallel)
        else module
    )
    if hasattr(lm, "peft_config") and hasattr(lm, "get_base_model"):
        lm = lm.get_base_model()
    return lm


def _head_forward(self, input_ids, attention_mask, position_ids, targets, positions, head_kwargs):
    spec = _spec(self)
    kwargs = {"use_cache": False}
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    outputs = module_at(self, spec.decoder)(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    hidden = outputs.last_hidden_state if hasattr(outputs, "last_hidden_state") else outputs[0]
    if positions is not None:
        hidden = hidden.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    head = getattr(self, spec.head)
    return token_head(
        hidden.to(head.weight.device),
        head.weight,
        targets.to(head.weight.device),
        bias=head.bias,
        logit_scale=spec.logit_scale,
        softcap=spec.softcap,
        **head_kwargs,
    )


def lm_token_head(
    module,
    input_ids: Tensor,
    attention_mask: Tensor | None,
    targets: Tensor,
    *,
    position_ids: Tensor | None = None,
    positions: Tensor | None = None,
    temperature: float = 1.0,
    ignore_index: int = -100,
    tail_k: int | None = None,
    want_rank: bool = False,
    chunk_size: int | None = None,
) -> TokenHeadOutput:
    """`token_head` of the model's next-token distributions: targets [B, T] (or [B, T'] with `positions`)
    are the tokens scored at each position (already shifted: targets[:, t] is predicted at t)."""
    lm = _inner(module)
    _spec(lm)  # a model the head cannot be read from fails here, with one line
    head_kwargs = dict(
        temperature=temperature,
        ignore_index=ignore_index,
        tail_k=tail_k,
        want_rank=want_rank,
        chunk_size=chunk_size,
    )
    had = "forward" in lm.__dict__
    saved = lm.__dict__.get("forward")
    lm.forward = types.MethodType(_head_forward, lm)
    try:
        return module(input_ids, attention_mask, position_ids, targets, positions, head_kwargs)
    finally:
        if had:
            lm.forward = saved
        else:
            del lm.forward
