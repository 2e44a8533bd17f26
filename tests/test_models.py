"""Model flavors: sizes against their names, meta counts against real models, build, RoPE base.

python -m pytest tests/test_models.py -q
"""

from __future__ import annotations

import re

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

from shapedce.models import (
    FLAVORS,
    build_model,
    flavor_config,
    get_rope_theta,
    human,
    models_table,
    param_counts,
    set_rope_theta,
)

PAPER = ["1b", "4b", "moe-5b-a0.3b", "moe-10b-a0.5b", "moe-20b-a1b"]


def sizes_from_name(name: str) -> tuple[float, float]:
    """'moe-10b-a0.5b' -> (10e9, 0.5e9); '4b' -> (4e9, 4e9)."""
    m = re.fullmatch(r"(?:moe-)?([\d.]+)b(?:-a([\d.]+)b)?", name)
    assert m, name
    total = float(m[1]) * 1e9
    return total, float(m[2]) * 1e9 if m[2] else total


@pytest.mark.parametrize("name", PAPER)
def test_paper_flavors_match_their_names(name):
    want_total, want_active = sizes_from_name(name)
    total, active = param_counts(name)
    assert abs(total / want_total - 1) <= 0.10, (name, total)
    assert abs(active / want_active - 1) <= 0.10, (name, active)
    cfg = FLAVORS[name]
    assert cfg.vocab_size == 151936 and cfg.max_position_embeddings == 16384
    assert isinstance(cfg, Qwen3MoeConfig) == name.startswith("moe-")


def test_cpu_flavor_sizes():
    assert 0.8e6 <= param_counts("tiny")[0] <= 1.3e6
    assert 10e6 <= param_counts("small")[0] <= 20e6
    assert 10e6 <= param_counts("small-moe")[1] <= 20e6
    assert param_counts("tiny-moe")[1] < param_counts("tiny-moe")[0]
    assert FLAVORS["tiny"].vocab_size == FLAVORS["tiny-moe"].vocab_size == 2048
    assert FLAVORS["small"].vocab_size == FLAVORS["small-moe"].vocab_size == 8192
    assert FLAVORS["4b"].tie_word_embeddings and FLAVORS["tiny"].tie_word_embeddings


def test_every_config_has_the_shared_settings():
    for name, cfg in FLAVORS.items():
        assert type(cfg) in (Qwen3Config, Qwen3MoeConfig), name
        assert get_rope_theta(cfg) == 1e4, name
        assert "rope_theta" not in cfg.to_dict(), name  # only inside rope_parameters
        assert cfg.attention_dropout == 0 and cfg.use_cache, name
        assert cfg.max_position_embeddings >= 2048, name
        if isinstance(cfg, Qwen3MoeConfig):
            assert not cfg.output_router_logits and cfg.router_aux_loss_coef == 0.001, (
                name
            )  # generate() breaks with it on
            assert cfg.decoder_sparse_step == 1 and cfg.mlp_only_layers == [], name


@pytest.mark.parametrize("name", ["tiny", "tiny-moe"])
def test_meta_counts_equal_real_numel(name):
    model = build_model(name)
    total, active = param_counts(name)
    assert total == sum(p.numel() for p in model.parameters())
    cfg = model.config
    if isinstance(cfg, Qwen3MoeConfig):
        per_layer = [layer.mlp.experts for layer in model.model.layers]
        expert = sum(e.gate_up_proj.numel() + e.down_proj.numel() for e in per_layer)
        assert active == total - expert + expert * cfg.num_experts_per_tok // cfg.num_experts
    else:
        assert active == total


@pytest.mark.parametrize(("name", "cls"), [("tiny", Qwen3ForCausalLM), ("tiny-moe", Qwen3MoeForCausalLM)])
def test_build_forward_and_determinism(name, cls):
    a, b, c = build_model(name, seed=3), build_model(name, seed=3), build_model(name, seed=4)
    assert type(a) is cls and a.dtype == torch.float32
    for (n, p), q, _r in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(p, q), n
    assert not all(torch.equal(p, r) for p, r in zip(a.parameters(), c.parameters()))
    ids = torch.randint(0, a.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    out = a(
        input_ids=ids, labels=ids, **({"output_router_logits": True} if cls is Qwen3MoeForCausalLM else {})
    )
    assert out.logits.shape == (2, 16, a.config.vocab_size) and torch.isfinite(out.loss)
    if cls is Qwen3MoeForCausalLM:
        assert out.aux_loss is not None and torch.isfinite(out.aux_loss)
    out.loss.backward()
    assert a.model.embed_tokens.weight.grad is not None


def test_overrides_apply_to_a_copy():
    cfg = flavor_config(
        "tiny", vocab_size=100, max_position_embeddings=64, rope_theta=1e6, num_hidden_layers=2
    )
    assert (cfg.vocab_size, cfg.max_position_embeddings, get_rope_theta(cfg)) == (100, 64, 1e6)
    assert len(cfg.layer_types) == 2
    assert FLAVORS["tiny"].vocab_size == 2048 and get_rope_theta(FLAVORS["tiny"]) == 1e4
    model = build_model("tiny-moe", vocab_size=100)
    assert model.lm_head.weight.shape[0] == 100 and model.lm_head.weight is model.model.embed_tokens.weight


def test_rope_theta_survives_save_and_load(tmp_path):
    model = build_model("tiny", rope_theta=1e6)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded) is Qwen3ForCausalLM and get_rope_theta(loaded.config) == 1e6
    assert torch.allclose(loaded.model.rotary_emb.inv_freq, model.model.rotary_emb.inv_freq)
    assert torch.equal(loaded.model.embed_tokens.weight, model.model.embed_tokens.weight)


def test_set_rope_theta_on_a_model_updates_inv_freq():
    model = build_model("tiny")
    before = model.model.rotary_emb.inv_freq.clone()
    assert set_rope_theta(model, 1e6) is model and get_rope_theta(model) == 1e6
    want = build_model("tiny", rope_theta=1e6).model.rotary_emb.inv_freq
    assert torch.equal(model.model.rotary_emb.inv_freq, want) and not torch.equal(before, want)


def test_errors_are_one_line():
    with pytest.raises(
        ValueError, match=r"unknown model flavor 'huge'; choose one of tiny, tiny-moe, .*moe-20b-a1b$"
    ):
        flavor_config("huge")
    with pytest.raises(ValueError, match="unknown model flavor"):
        build_model("huge")
    with pytest.raises(ValueError, match="unknown model flavor"):
        param_counts("huge")
    with pytest.raises(ValueError, match="rope_theta must be"):
        set_rope_theta(flavor_config("tiny"), -1.0)
    with pytest.raises(ValueError, match="vocab_size must be an integer >= 1"):
        build_model("tiny", vocab_size=0)
    with pytest.raises(ValueError, match="not_a_field is not a field of Qwen3Config"):
        flavor_config("tiny", not_a_field=1)


def test_table_and_units():
    got = human(1_052_672), human(4_022_468_096), human(660_992), human(15_700_000)
    assert got == ("1.05M", "4.02B", "661K", "15.7M")
    table = models_table().splitlines()
    assert len(table) == 2 + len(FLAVORS)
    assert table[0].startswith("| flavor | kind | layers | hidden | experts")
    assert any(row.startswith("| moe-20b-a1b | MoE | ") and "256/8" in row for row in table)
