"""`shapedce.hf.tokens.lm_token_head` and `grpo.token_logps` against the unfused path on the model's
own logits (float64 tiny models): values and every parameter gradient, temperature, padding,
softcapped and scaled heads, a DDP wrapper on one gloo process.

    PYTHONPATH=src OMP_NUM_THREADS=1 python -m pytest -q tests/test_hf_tokens.py
"""

from __future__ import annotations

import time

import pytest
import torch

from shapedce.hf.tokens import lm_token_head
from shapedce.loss import token_head_reference
from shapedce.train.grpo import token_logps
from test_hf_families import FAMILIES, build

V = 97


def unfused_logps(model, prompts, completions, pad, temperature):
    """The previous implementation: full logits, log_softmax, gather."""
    pw, cw = max(map(len, prompts)), max(max(map(len, completions)), 1)
    ids = torch.full((len(prompts), pw + cw), pad, dtype=torch.long)
    att = torch.zeros_like(ids)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        ids[i, pw - len(p) : pw] = torch.tensor(p)
        ids[i, pw : pw + len(c)] = torch.tensor(c, dtype=torch.long)
        att[i, pw - len(p) : pw + len(c)] = 1
    pos = (att.cumsum(-1) - 1).clamp_min(0)
    logits = model(input_ids=ids, attention_mask=att, position_ids=pos).logits[:, -cw - 1 : -1]
    logp = torch.log_softmax(logits / temperature, -1).gather(-1, ids[:, pw:, None]).squeeze(-1)
    return logp, att[:, pw:].to(logp.dtype)


ROWS = ([[5, 6, 7], [8, 9], [3]], [[10, 11, 12, 13], [14], []])


def qwen3():
    """Left padding: eager attention turns a fully masked (padded) query row into NaN values that
    later layers multiply by 0 (NaN); SDPA, what training uses, does not."""
    model = build("qwen3")
    model.set_attn_implementation("sdpa")
    return model


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logps_equals_full_logits_value_and_gradient(temperature):
    model = qwen3()
    prompts, completions = ROWS
    logp, mask = token_logps(model, prompts, completions, pad=0, temperature=temperature)
    ref, ref_mask = unfused_logps(model, prompts, completions, 0, temperature)
    assert torch.equal(mask, ref_mask)
    torch.testing.assert_close(logp * mask, ref * ref_mask, rtol=1e-10, atol=1e-12)
    weights = torch.linspace(-1, 2, mask.numel(), dtype=torch.float64).reshape(mask.shape) * mask
    params = [p for p in model.parameters() if p.requires_grad]
    got = torch.autograd.grad((logp * weights).sum(), params)
    want = torch.autograd.grad((ref * weights).sum(), params, allow_unused=True)
    for name_p, a, b in zip(model.named_parameters(), got, want):
        b = torch.zeros_like(a) if b is None else b
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10, msg=name_p[0])


@pytest.mark.parametrize("family", ["gemma2", "cohere", "granite", "phi-bias", "llama-untied"])
def test_lm_token_head_matches_the_models_logits(family):
    model = build(family)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, V, (2, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0
    targets = torch.nn.functional.pad(ids, (0, 1), value=-100)[:, 1:].masked_fill(
        torch.nn.functional.pad(mask, (0, 1))[:, 1:] == 0, -100
    )
    out = lm_token_head(model, ids, mask, targets, temperature=0.8, tail_k=7, want_rank=True)
    ref = token_head_reference(
        model(input_ids=ids, attention_mask=mask).logits, targets, temperature=0.8, tail_k=7
    )
    for name in ("logp", "entropy", "tail_mass", "rank"):
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), rtol=1e-9, atol=1e-11, msg=name)
    params = [p for p in model.parameters() if p.requires_grad]
    loss = out.logp.sum() - 0.3 * out.entropy.sum()
    ref_loss = ref.logp.sum() - 0.3 * ref.entropy.sum()
    for a, b in zip(
        torch.autograd.grad(loss, params), torch.autograd.grad(ref_loss, params, allow_unused=True)
    ):
        torch.testing.assert_close(a, torch.zeros_like(a) if b is None else b, rtol=1e-8, atol=1e-10)
    assert "forward" not in model.__dict__  # the swapped forward is removed again


def test_through_a_ddp_wrapper_one_process(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        model = qwen3()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        prompts, completions = ROWS
        logp, mask = token_logps(ddp, prompts, completions, pad=0)
        ref, _ = unfused_logps(model, prompts, completions, 0, 1.0)
        torch.testing.assert_close(logp * mask, ref * mask, rtol=1e-10, atol=1e-12)
        (logp * mask).sum().backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    finally:
        # gloo's worker thread still has to free the finished allreduce, which takes the GIL; freeing
        # `ddp` right after backward (GIL held) joins that thread and deadlocked in 1 of ~3 runs.
        # Releasing the GIL for a moment lets the worker finish first.
        time.sleep(0.05)
        dist.destroy_process_group()


def test_families_table_has_the_tested_ones():
    assert {"gemma2", "cohere", "granite", "phi-bias", "llama-untied", "qwen3"} <= set(FAMILIES)
