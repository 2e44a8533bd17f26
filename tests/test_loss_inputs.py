"""Bad input raises a one-line ValueError that names the argument and its allowed range."""

from __future__ import annotations

import math

import pytest
import torch

from shapedce.loss import ShapedLoss, fused_linear_shaped_cross_entropy, shaped_cross_entropy

V, H = 11, 4


def both(logits_kwargs=None, **kwargs):
    """Call the reference on logits and the fused path on (hidden, weight) with the same knobs."""
    g = torch.Generator().manual_seed(0)
    h, w = torch.randn(5, H, generator=g), torch.randn(V, H, generator=g)
    t = kwargs.pop("targets", torch.randint(0, V, (5,), generator=g))
    yield lambda: shaped_cross_entropy(kwargs.pop("logits", h @ w.T), t, **kwargs)
    yield lambda: fused_linear_shaped_cross_entropy(h, w, t, **kwargs)


BAD_KNOBS = [
    (dict(beta=-1.5), "beta must be a number >= -1"),
    (dict(beta=math.nan), "beta must be a number >= -1"),
    (dict(k=0), "k must be an integer >= 1"),
    (dict(k=2.5), "k must be an integer >= 1"),
    (dict(k=True), "k must be an integer >= 1"),
    (dict(lambda_top=math.inf), "lambda_top must be a finite number"),
    (dict(lambda_tail=math.nan), "lambda_tail must be a finite number"),
    (dict(reduction="avg"), "reduction must be one of mean, sum, none"),
    (dict(targets=torch.tensor([0, 1, V, 2, 3])), f"targets must lie in [0, {V})"),
    (dict(targets=torch.tensor([0, 1, -5, 2, 3])), "got -5"),
    (dict(targets=torch.zeros(4, dtype=torch.long)), "targets shape (4,) must equal"),
    (dict(targets=torch.zeros(5)), "targets must be an integer tensor"),
]


def check_one_line(excinfo, needle):
    message = str(excinfo.value)
    assert "\n" not in message
    assert needle in message, message


@pytest.mark.parametrize("kwargs,needle", BAD_KNOBS)
def test_bad_knobs_and_targets(kwargs, needle):
    for call in both(**dict(kwargs)):
        with pytest.raises(ValueError) as excinfo:
            call()
        check_one_line(excinfo, needle)


def test_ignore_index_targets_are_allowed_outside_the_vocabulary():
    for call in both(targets=torch.tensor([0, -100, 3, -100, 1])):
        assert torch.isfinite(call())


def test_non_floating_logits():
    with pytest.raises(ValueError) as excinfo:
        shaped_cross_entropy(torch.zeros(5, V, dtype=torch.long), torch.zeros(5, dtype=torch.long))
    check_one_line(excinfo, "logits must be a floating-point tensor")


@pytest.mark.parametrize(
    "hidden,weight,bias,chunk,needle",
    [
        ((5, H), (V, H + 1), None, None, "weight must be [V, H]"),
        ((5, H), (V,), None, None, "weight must be [V, H]"),
        ((5, H), (V, H), (V + 1,), None, f"bias must have shape ({V},)"),
        ((5, H), (V, H), None, 0, "chunk_size must be an integer >= 1"),
    ],
)
def test_bad_fused_shapes(hidden, weight, bias, chunk, needle):
    t = torch.zeros(5, dtype=torch.long)
    b = None if bias is None else torch.zeros(bias)
    with pytest.raises(ValueError) as excinfo:
        fused_linear_shaped_cross_entropy(
            torch.zeros(hidden), torch.zeros(weight), t, bias=b, chunk_size=chunk
        )
    check_one_line(excinfo, needle)


def test_fused_rejects_integer_hidden():
    with pytest.raises(ValueError) as excinfo:
        fused_linear_shaped_cross_entropy(
            torch.zeros(5, H, dtype=torch.long), torch.zeros(V, H), torch.zeros(5, dtype=torch.long)
        )
    check_one_line(excinfo, "hidden must be a floating-point tensor")


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(beta=-3.0), "beta must be"),
        (dict(k=-1), "k must be"),
        (dict(ignore_index=1.5), "ignore_index must be"),
    ],
)
def test_shaped_loss_dataclass_validates(kwargs, needle):
    with pytest.raises(ValueError) as excinfo:
        ShapedLoss(**kwargs)
    check_one_line(excinfo, needle)


def test_unknown_setting_name_lists_the_choices():
    with pytest.raises(ValueError) as excinfo:
        ShapedLoss.named("precise")
    check_one_line(excinfo, "choose one of ce, precision, diversity, tail, head")


def test_beta_infinity_is_allowed_and_k_float_integral_is_normalised():
    assert ShapedLoss(beta=math.inf).beta == math.inf
    assert ShapedLoss(k=100.0).k == 100
