"""The speed paths of docs/guides/performance.md against their plain references: bit-identical numbers.

PYTHONPATH=src python -m pytest tests/test_perf_paths.py -q
"""

from __future__ import annotations

import math

import pytest
import torch

from shapedce.config import load_config
from shapedce.eval.sample import SamplingConfig
from shapedce.eval.sample_step import _nucleus, pick_tokens
from shapedce.hf import patch_causal_lm
from shapedce.loss.chunks import xlogx_row_sums
from shapedce.models import build_model
from shapedce.reproduce.scheduler import worker_threads
from shapedce.train.lm_trainer import make_optimizer


def _mixed_logits(rows: int, vocab: int, dtype=torch.float32) -> torch.Tensor:
    """Peaked rows (nucleus of a few tokens) beside flat ones (nucleus of thousands) in one batch."""
    g = torch.Generator().manual_seed(3)
    scale = torch.tensor([8.0 if i % 3 else 0.2 for i in range(rows)], dtype=torch.float64)[:, None]
    return (torch.randn(rows, vocab, generator=g, dtype=torch.float64) * scale).to(dtype)


def _kept(ids: torch.Tensor, scores: torch.Tensor) -> list[dict[int, float]]:
    return [
        {int(i): float(s) for i, s in zip(r_ids, r_scores) if s != -math.inf}
        for r_ids, r_scores in zip(ids, scores)
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("guess", [4, 256])
def test_nucleus_of_a_mixed_batch_equals_the_full_sort(guess, dtype):
    z = _mixed_logits(7, 3001, dtype)  # odd shapes; rows 0, 3, 6 wide, the others narrow
    ref_ids, ref_scores = _nucleus(z, 0.9, z.shape[-1])  # the reference: every row sorted
    ids, scores = _nucleus(z, 0.9, guess)
    assert ids.shape == ref_ids.shape and scores.dtype == dtype
    assert _kept(ids, scores) == _kept(ref_ids, ref_scores)
    lens = [len(k) for k in _kept(ids, scores)]
    assert max(lens) > 256 and min(lens) < 8  # both kinds of rows were there


def test_pick_tokens_of_a_mixed_batch_do_not_depend_on_the_guess():
    z = _mixed_logits(9, 2049)
    keys = torch.arange(9) * 104729
    cfg = SamplingConfig(temperature=0.7, top_p=0.95)
    for step in range(6):
        ref = pick_tokens(z, cfg, keys, step, z.shape[-1])
        for guess in (4, 256):
            got = pick_tokens(z, cfg, keys, step, guess)
            assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1]) and got[2] == ref[2]


def test_foreach_adamw_matches_the_per_parameter_loop_bit_for_bit():
    """make_optimizer's foreach AdamW against torch's CPU default (one parameter at a time)."""
    cfg = load_config("tiny", ["model.vocab_size=300"])
    results = []
    for foreach in (True, False):
        model = build_model("tiny", vocab_size=300, seed=0)
        patch_causal_lm(model, "precision")
        opt, _ = make_optimizer(model, cfg)
        assert all(group["foreach"] for group in opt.param_groups)
        if not foreach:
            for group in opt.param_groups:
                group["foreach"] = False
        g = torch.Generator().manual_seed(0)
        losses = []
        for _ in range(3):
            batch = torch.randint(0, 300, (3, 17), generator=g)
            out = model(input_ids=batch[:, :-1], shift_labels=batch[:, 1:])
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(out.loss.detach()))
        results.append((losses, [p.detach().clone() for p in model.parameters()]))
    (loss_a, params_a), (loss_b, params_b) = results
    assert loss_a == loss_b
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b))


@pytest.mark.parametrize(("jobs", "cores"), [(5, 2), (5, 16), (50, 64), (64, 64), (3, 7), (1, 1)])
def test_worker_threads_leave_no_core_without_a_worker(jobs, cores):
    threads = [worker_threads(slot, jobs, cores) for slot in range(jobs)]
    assert min(threads) >= 1 and max(threads) - min(threads) <= 1
    assert sum(threads) == max(jobs, cores)  # every core has a thread; more jobs time-share them


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows", [1, 31, 32, 33, 97])  # around and across the block size
def test_blocked_xlogx_row_sums_equal_the_one_shot_expression(rows, dtype):
    g = torch.Generator().manual_seed(rows)
    z = torch.randn(rows, 1001, generator=g, dtype=torch.float64).mul_(30.0).to(dtype)
    e = (z - z.amax(1, keepdim=True)).exp()  # as the loss's chunk holds it: in (0, 1], max 1
    e[0, :7] = 0.0  # xlogy(0, 0) = 0
    if dtype == torch.float32:
        e[-1, 7:20] = torch.tensor(1e-42, dtype=dtype)  # denormals
    assert torch.equal(xlogx_row_sums(e), torch.special.xlogy(e, e).sum(1))
