"""Run configs: presets, key=value overrides, validation, and the saved config's round trip."""

from __future__ import annotations

import math

import pytest

from shapedce.config import load_config, load_run_config, parse_override, preset_names
from shapedce.data.corpus import builtin_corpus, fact_base


def test_every_preset_validates():
    assert {"smoke", "tiny", "small", "paper"} <= set(preset_names())
    for name in preset_names():
        cfg = load_config(name)
        assert cfg.grad_accum >= 1


def test_yaml_exponents_without_a_dot_are_floats():
    """Regression: YAML 1.1 reads '1e-3' as a string; it must still set a float field."""
    assert load_config("smoke", ["optim.lr=1e-3"]).optim.lr == 1e-3
    assert load_config("smoke", ["loss.beta=inf"]).loss.beta == math.inf


def test_loss_by_name_and_by_field():
    cfg = load_config("smoke", ["loss=tail", "loss.k=7"])
    assert (cfg.loss.lambda_tail, cfg.loss.k) == (-0.1, 7)
    assert parse_override("train.steps=5") == {"train": {"steps": 5}}


def test_saved_config_round_trips(tmp_path):
    cfg = load_config("tiny", ["loss=precision", "train.steps=17", "loss.beta=inf"])
    cfg.save(tmp_path / "config.yaml")
    assert load_run_config(tmp_path / "config.yaml") == cfg


def test_validation_sample_shares_the_training_world():
    """Regression: validation documents once came from another seed, i.e. another world."""
    train = builtin_corpus("pretrain-v2", 300, seed=3)
    val = builtin_corpus("pretrain-v2", 300, seed=3, split="val")
    assert train != val
    cities = [f.entity for f in fact_base(3) if f.attribute == "country"]
    assert any(c in doc for doc in val for c in cities)
    other = [f.entity for f in fact_base(4) if f.attribute == "country" and f.entity not in cities]
    assert not any(c in doc for doc in val for c in other)


@pytest.mark.parametrize("override", ["optim.warmup_steps=-1", "train.device=tpu", "optim.beta2=1.0"])
def test_out_of_range_values_name_the_key(override):
    with pytest.raises(ValueError, match=override.split("=")[0]):
        load_config("smoke", [override])
