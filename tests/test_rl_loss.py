"""The GRPO loss of docs/method/pipeline.md (shapedce.train.grpo) on hand-made numbers: token-level
aggregation, clip-higher with its low / high clip counts, no KL; advantages and the group filter.

    python -m pytest tests/test_rl_loss.py -q
"""

from __future__ import annotations

import math

import pytest
import torch

from shapedce.train.grpo import ADV_EPS, clipped_loss, group_advantages, informative, token_logps

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor")


def hand_batch():
    """Row 0: A = +1, rho = 1, 1.5, 0.5 (all tokens); row 1: A = -1, rho = 1, 0.5, 1.5 (last token masked)."""
    old = torch.zeros(2, 3)
    rho = torch.tensor([[1.0, 1.5, 0.5], [1.0, 0.5, 1.5]])
    logp = rho.log().requires_grad_(True)
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    return logp, old, adv, mask


def test_loss_value_gradient_and_clip_counts_by_hand():
    logp, old, adv, mask = hand_batch()
    loss, stats = clipped_loss(logp, old, adv, mask, 0.2, 0.28, num_tokens=5)
    # row 0: min(1, 1) + min(1.5, 1.28) + min(0.5, 0.8) = 1 + 1.28 + 0.5 (1.5 clipped high)
    # row 1: min(-1, -1) + min(-0.5, -0.8) = -1 - 0.8 (0.5 clipped low); the masked 1.5 is out
    assert float(loss) == pytest.approx(-(1 + 1.28 + 0.5 - 1 - 0.8) / 5, abs=1e-6)
    assert stats == {"tokens": 5.0, "clipped_low": 1.0, "clipped_high": 1.0}
    loss.backward()
    # d/dlogp of -(rho A)/N = -rho A / N where unclipped; 0 where clipped or masked
    expected = torch.tensor([[-1.0 / 5, 0.0, -0.5 / 5], [1.0 / 5, 0.0, 0.0]])
    assert torch.allclose(logp.grad, expected, atol=1e-6)


def test_clip_is_asymmetric_clip_higher():
    """rho = 1.25 with A > 0 is inside [0.8, 1.28] (not clipped); with symmetric 0.2 it would be."""
    logp = torch.tensor([[math.log(1.25)]], requires_grad=True)
    args = (logp, torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1))
    loss, stats = clipped_loss(*args, 0.2, 0.28, num_tokens=1)
    assert stats["clipped_high"] == 0 and float(loss) == pytest.approx(-1.25)
    loss, stats = clipped_loss(*args, 0.2, 0.2, num_tokens=1)
    assert stats["clipped_high"] == 1 and float(loss) == pytest.approx(-1.2)


def test_token_level_not_sequence_mean():
    """Splitting rows over calls (micro-batches, ranks) with the batch's token count adds up to the
    whole; a per-sequence mean would weigh row 1's tokens 3/2 as much and give another number."""
    logp, old, adv, mask = hand_batch()
    whole, _ = clipped_loss(logp, old, adv, mask, 0.2, 0.28, num_tokens=5)
    parts = [
        clipped_loss(
            logp[i : i + 1], old[i : i + 1], adv[i : i + 1], mask[i : i + 1], 0.2, 0.28, num_tokens=5
        )[0]
        for i in range(2)
    ]
    assert float(sum(parts)) == pytest.approx(float(whole), abs=1e-7)
    seq_mean = -((1 + 1.28 + 0.5) / 3 + (-1 - 0.8) / 2) / 2
    assert abs(float(whole) - seq_mean) > 0.05


def test_on_policy_ratio_is_one_and_nothing_clips():
    logp = torch.randn(3, 4, requires_grad=True)
    loss, stats = clipped_loss(
        logp, logp.detach(), torch.tensor([2.0, -1.0, 0.5]), torch.ones(3, 4), 0.2, 0.28, 12
    )
    assert stats["clipped_low"] == stats["clipped_high"] == 0
    loss.backward()  # gradient of -(1/N) sum A * logp: the plain policy gradient
    assert torch.allclose(logp.grad, -torch.tensor([2.0, -1.0, 0.5])[:, None].expand(3, 4) / 12)


def test_group_advantages_and_filter_by_hand():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
    adv = group_advantages(rewards)
    std = math.sqrt(1 / 3)  # Bessel: sum of squares 4 * 0.25 over 3
    assert torch.allclose(adv[0], torch.tensor([0.5, -0.5, -0.5, 0.5]) / (std + ADV_EPS))
    assert torch.equal(adv[1], torch.zeros(4))
    assert float(adv[2, 3]) == pytest.approx(0.75 / (0.5 + ADV_EPS), rel=1e-6)
    assert informative(rewards).tolist() == [True, False, True]


def test_token_logps_match_unpadded_forward():
    from conftest import tiny_qwen3

    model = tiny_qwen3(vocab=50).eval()
    prompts, comps = [[3, 4, 5], [6]], [[7, 8], [9, 10, 11]]
    with torch.no_grad():
        logp, mask = token_logps(model, prompts, comps, pad=0, temperature=0.7)
        for i, (p, c) in enumerate(zip(prompts, comps)):
            logits = model(input_ids=torch.tensor([p + c])).logits[0, len(p) - 1 : -1].float() / 0.7
            ref = torch.log_softmax(logits, -1).gather(-1, torch.tensor(c)[:, None]).squeeze(-1)
            assert torch.allclose(logp[i, : len(c)], ref, atol=1e-5)
            assert mask[i].tolist() == [1.0] * len(c) + [0.0] * (3 - len(c))
