"""benchmarks/fixed_point.py: at its fixed point pi*, the expected gradient of the reference shaped
loss (targets drawn from q) vanishes, for every paper configuration; CE's fixed point is q itself.

    PYTHONPATH=$PWD/src OMP_NUM_THREADS=1 python -m pytest -q tests/test_fixed_point.py
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from shapedce.loss import shaped_cross_entropy

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "fixed_point.py"
spec = importlib.util.spec_from_file_location("fixed_point", SCRIPT)
fixed_point_module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fixed_point_module)


def expected_grad(pi: torch.Tensor, q: torch.Tensor, beta: float, top: float, tail: float, k: int):
    """sum_x q_x * d loss(z = log pi, target x) / dz, per row, through the reference loss."""
    rows, vocab = q.shape
    z = pi.log().repeat_interleave(vocab, 0).requires_grad_()
    targets = torch.arange(vocab).repeat(rows)
    loss = shaped_cross_entropy(
        z, targets, beta=beta, lambda_top=top, lambda_tail=tail, k=k, reduction="none"
    )
    (grad,) = torch.autograd.grad((loss * q.reshape(-1)).sum(), z)
    return grad.reshape(rows, vocab, vocab).sum(1)


@pytest.mark.parametrize("name", sorted(fixed_point_module.CONFIGS))
def test_the_expected_gradient_vanishes_at_the_fixed_point(name):
    beta, top, tail = fixed_point_module.CONFIGS[name]
    gen = torch.Generator().manual_seed(0)
    q = torch.softmax(3 * torch.randn(4, 30, generator=gen, dtype=torch.float64), -1)
    k = 5
    pi = fixed_point_module.fixed_point(q, beta, top, tail, k)
    assert torch.allclose(pi.sum(1), torch.ones(4, dtype=torch.float64))
    assert expected_grad(pi, q, beta, top, tail, k).abs().max() < 1e-9
    assert expected_grad(q, q, beta, top, tail, k).abs().max() > 1e-4  # q itself is not stationary
    h = fixed_point_module.stats
    moved = h(pi, k)[0] - h(q, k)[0]
    assert (moved < 0).all() if beta < 0 else (moved > 0).all() if beta > 0 else True


def test_ce_fixed_point_is_q():
    q = torch.softmax(torch.randn(3, 20, dtype=torch.float64), -1)
    assert torch.allclose(fixed_point_module.fixed_point(q, 0.0, 0.0, 0.0, 5), q, atol=1e-14)


@pytest.mark.parametrize("knobs", [(-1.0, 0.0, -0.5), (-0.75, 0.0, -0.7), (5.0, 0.0, 0.0)])
def test_the_study_strengths_are_fixed_points_too(knobs):
    """The calibration's candidate strengths (docs/rl-study/design.md) are stationary as well."""
    beta, top, tail = knobs
    gen = torch.Generator().manual_seed(1)
    q = torch.softmax(2 * torch.randn(3, 25, generator=gen, dtype=torch.float64), -1)
    pi = fixed_point_module.fixed_point(q, beta, top, tail, 5)
    assert expected_grad(pi, q, beta, top, tail, 5).abs().max() < 1e-9
    h = fixed_point_module.stats
    assert (h(pi, 5)[0] < h(q, 5)[0]).all() if beta < 0 else (h(pi, 5)[0] > h(q, 5)[0]).all()


def test_a_tail_penalty_too_strong_for_the_row_has_no_fixed_point():
    """lambda_tail = -3 on a flat row: the normaliser turns negative; the map says so instead of
    iterating to garbage (it used to print a 6,700% entropy change)."""
    q = torch.full((1, 40), 1 / 40, dtype=torch.float64)
    with pytest.raises(ValueError, match="no fixed point"):
        fixed_point_module.fixed_point(q, 0.0, 0.0, -3.0, 5)
