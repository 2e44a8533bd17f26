"""Hostile or out-of-range config input: YAML tags and aliases, seeds, clip bounds, temperatures, sizes.

    python -m pytest -q tests/test_config_inputs.py

Every case of issue 34's probe that used to end in a traceback, a NaN or a native abort must give one
line naming the field (or override) and its allowed range, through the real command line.
"""

from __future__ import annotations

import math

import pytest

from shapedce.cli import main
from shapedce.config import load_config, parse_override, parse_yaml
from shapedce.errors import UserError


def one_line(capsys, *args, needle: str) -> str:
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert needle in err, err
    return err


@pytest.mark.parametrize(
    "override, needle",
    [
        ('train.steps=!!python/object/apply:os.system ["touch PWNED"]', "YAML tags"),
        ("train.steps=!!int 3", "YAML tags"),
        ("train.steps=! 3", "YAML tags"),
        ("train.steps=*a", "anchors and aliases"),
        ("train.steps=&a 3", "anchors and aliases"),
        ("loss={beta: &b 1, k: *b}", "anchors and aliases"),
        ("train.steps=[1, 2", "not plain YAML"),
        ("train.steps=" + "[" * 5000, "override train.steps"),
    ],
)
def test_yaml_tags_aliases_and_garbage_in_overrides(tmp_path, capsys, override, needle):
    one_line(capsys, "pretrain", "--preset", "smoke", "--out", tmp_path / "r", override, needle=needle)
    assert not (tmp_path / "r").exists() and not (tmp_path / "PWNED").exists()


def test_plain_overrides_still_parse():
    assert parse_override("a.b=[1, {c: d}]") == {"a": {"b": [1, {"c": "d"}]}}
    assert parse_override('a="x: y"') == {"a": "x: y"}
    assert parse_yaml("k: 1e-3\nn: .inf\n", "f") == {"k": "1e-3", "n": math.inf}
    cfg = load_config("smoke", ["train.seed=4294967295", "data.seed=0", "optim.lr=1e-3"])
    assert cfg.train.seed == 2**32 - 1 and cfg.optim.lr == 1e-3


def test_a_run_config_yaml_with_a_tag_is_refused(tmp_path, capsys):
    from shapedce.config import load_run_config

    path = tmp_path / "config.yaml"
    path.write_text("stage: !!python/name:os.system\n")
    with pytest.raises(UserError, match="YAML tags") as info:
        load_run_config(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "override, needle",
    [
        ("train.seed=-1", "train.seed must be an integer in [0, 2**32 - 1]; got -1"),
        ("train.seed=4294967296", "train.seed must be an integer in [0, 2**32 - 1]"),
        ("data.seed=-5", "data.seed must be an integer in [0, 2**32 - 1]"),
        ("optim.weight_decay=.inf", "optim.weight_decay must be a finite number >= 0; got inf"),
        ("optim.grad_clip=.nan", "optim.grad_clip must be a finite number >= 0"),
        ("model.vocab_size=2000000000", "model.vocab_size must be in [0, 4194304]"),
        ("data.seq_len=2000000", "data.seq_len must be in [2, 1048576]"),
        ("model.max_position_embeddings=10000000", "model.max_position_embeddings must be in [0, 1048576]"),
        ("data.n_docs=1000000000000", "data.n_docs must be in [1, 100000000]"),
    ],
)
def test_pretrain_ranges(tmp_path, capsys, override, needle):
    one_line(capsys, "pretrain", "--preset", "smoke", "--out", tmp_path / "r", override, needle=needle)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "override, needle",
    [
        ("seed=-1", "seed must be an integer in [0, 2**32 - 1]; got -1"),
        ("eval_seed=99999999999", "eval_seed must be an integer in [0, 2**32 - 1]"),
        ("epsilon_high=.inf", "epsilon_high must be a finite number in [0, 10]; got inf"),
        ("epsilon_high=-0.1", "epsilon_high must be a finite number in [0, 10]"),
        ("epsilon_low=.nan", "epsilon_low must be in [0, 1)"),
        ("temperature=1e-300", "temperature must be a finite number >= 0.001; got 1e-300"),
        ("temperature=.inf", "temperature must be a finite number >= 0.001"),
        ("eval_temperature=1e-9", "eval_temperature must be 0 (greedy) or a finite number >= 0.001"),
        ("top_p=.nan", "top_p must be in (0, 1]"),
        ("weight_decay=.inf", "weight_decay must be a finite number >= 0; got inf"),
        ("lr=!!float 1", "YAML tags"),
    ],
)
def test_rl_ranges(tmp_path, capsys, override, needle):
    from shapedce.train.rl_config import load_rl_config

    with pytest.raises(UserError) as info:
        load_rl_config("smoke", [override])
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_rl_command_checks_before_loading(tmp_path, capsys):
    # the config is checked before the (missing) model folder is touched
    one_line(
        capsys,
        "rl",
        "--from",
        tmp_path / "nowhere",
        "--out",
        tmp_path / "r",
        "--preset",
        "smoke",
        "temperature=1e-300",
        needle="temperature must be",
    )


@pytest.mark.parametrize(
    "args, needle",
    [
        (["eval.temperature=1e-300"], "eval.temperature must be 0 (greedy)"),
        (["eval.top_p=.nan"], "eval.top_p must be in (0, 1]"),
        (["seeds=!!int 2"], "YAML tags"),
        (["seeds=1000000000"], "seeds must be in [1, 1000]"),
    ],
)
def test_grid_ranges(tmp_path, capsys, args, needle):
    one_line(capsys, "reproduce", "--preset", "smoke", "--out", tmp_path / "g", *args, needle=needle)


def test_readiness_and_eval_temperatures_and_seeds():
    from shapedce.eval.sample import SamplingConfig
    from shapedce.readiness.signals import ReadinessSettings

    for kwargs, needle in [
        ({"temperature": 1e-300}, "--temperature must be a finite number >= 0.001"),
        ({"seed": -1}, "--seed must be an integer in [0, 2**32 - 1]"),
    ]:
        with pytest.raises(UserError, match="^" + needle.replace("*", r"\*").replace("[", r"\[")):
            ReadinessSettings(**kwargs).validate()
    with pytest.raises(UserError, match="temperature must be 0"):
        SamplingConfig(temperature=1e-300)
    assert SamplingConfig(temperature=0).temperature == 0 and SamplingConfig(temperature=1e-3)


def test_model_sizes_are_checked_against_memory_before_allocation(monkeypatch):
    import shapedce.data.pretrained as pretrained
    from shapedce.models import build_model, flavor_config

    monkeypatch.setattr(pretrained, "available_memory", lambda: 1 << 20)  # 1 MiB free
    with pytest.raises(UserError, match=r"model flavor 'tiny': about [\d,]+ parameters") as info:
        build_model("tiny")
    assert "GiB free" in str(info.value) and "\n" not in str(info.value)
    monkeypatch.setattr(pretrained, "available_memory", lambda: 3 << 20)  # the exact count decides
    with pytest.raises(UserError, match=r"model flavor 'tiny': 1,049,984 parameters need 0.0 GiB"):
        build_model("tiny")
    assert build_model("tiny", device="meta").device.type == "meta"  # the meta device allocates nothing
    monkeypatch.setattr(pretrained, "available_memory", lambda: None)  # unknown: not checked
    n = pretrained.check_fits_memory(flavor_config("tiny", vocab_size=2_000_000_000), "x")
    assert n > 2_000_000_000 * 128  # counted on the meta device, nothing allocated
    with pytest.raises(UserError, match="far more than the 1e[+]13 cap"):  # not even built on meta
        pretrained.check_fits_memory(flavor_config("tiny", vocab_size=10**12), "x")


def test_available_memory_reads_this_host():
    free = __import__("shapedce.data.pretrained", fromlist=["x"]).available_memory()
    assert free is None or free > 0
