"""The reproduce grid's stage settings as typed sections (pretrain / rl / eval): nested overrides,
section presets, fields set per run, one-line errors, grid.yaml round trips and older flat ones.
No training: configs only.

    OMP_NUM_THREADS=1 PYTHONPATH=src python -m pytest tests/test_grid_config.py -q
"""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from shapedce.config import RunConfig, load_config
from shapedce.errors import UserError
from shapedce.loss import SETTINGS
from shapedce.reproduce.grid import (
    eval_settings,
    load_grid,
    midtrain_config,
    plan,
    pretrain_config,
    rl_config,
)
from shapedce.reproduce.grid_file import load_grid_file
from shapedce.train.rl_config import load_rl_config


def test_nested_overrides_reach_every_stage(tmp_path):
    over = ["rl.steps=5", "pretrain.train.steps=7", "pretrain.midtrain.steps=9", "eval.samples=3"]
    grid = load_grid("smoke", over)
    run = plan(grid, tmp_path)[0]
    assert pretrain_config(grid, run).train.steps == 7
    assert midtrain_config(grid, run).train.steps == 9 and midtrain_config(grid, run).stage == "midtrain"
    assert rl_config(grid, run).steps == 5
    assert eval_settings(grid).samples == 3
    # everything else is the section presets': smoke
    assert pretrain_config(grid, run).data == load_config("smoke").data
    smoke = load_rl_config("smoke")
    assert dataclasses.replace(rl_config(grid, run), steps=smoke.steps) == smoke


def test_a_section_preset_comes_first_and_its_fields_go_on_top():
    # whatever the order on the command line
    for over in (["rl.preset=long", "rl.lr=1e-5"], ["rl.lr=1e-5", "rl.preset=long"]):
        assert load_grid("tiny", over).rl == load_rl_config("long", ["lr=1e-5"])
    assert load_grid("tiny", ["pretrain.preset=small"]).pretrain == load_config("small")


def test_the_grid_sets_loss_flavor_and_seed_per_run(tmp_path):
    grid = load_grid("paper", ["seeds=2", "configs=ce,precision"])  # the paper preset names a flavor
    for run in plan(grid, tmp_path):
        pre = pretrain_config(grid, run)
        assert pre.model.flavor == run.model and pre.train.seed == run.seed and pre.stage == "pretrain"
        assert dataclasses.asdict(pre.loss) == SETTINGS[run.config].settings()
        assert rl_config(grid, run).seed == run.seed


def test_grid_yaml_holds_the_resolved_sections_and_reads_back(tmp_path):
    grid = load_grid("smoke", ["rl.steps=3", "pretrain.optim.lr=1e-3"])
    grid.save(tmp_path / "grid.yaml")
    saved = yaml.safe_load((tmp_path / "grid.yaml").read_text())
    assert saved["rl"]["steps"] == 3 and saved["pretrain"]["optim"]["lr"] == 1e-3
    assert saved["pretrain"]["train"]["steps"] == 6 and saved["eval"]["samples"] == 4  # resolved
    assert "loss" not in saved["pretrain"] and "seed" not in saved["rl"]  # per-run fields left out
    assert "flavor" not in saved["pretrain"]["model"] and "seed" not in saved["pretrain"]["train"]
    assert load_grid_file(tmp_path / "grid.yaml") == grid
    assert load_grid_file(tmp_path / "grid.yaml", ["rl.steps=4"]).rl.steps == 4


OLD_TINY = {  # what `shapedce reproduce` wrote as grid.yaml before the sections (the tiny preset)
    "configs": "ce,precision,diversity,tail,head",
    "auto_target_entropy": 0.0,
    "models": "tiny",
    "seeds": 1,
    "pretrain_seeds": 0,
    "pretrain_configs": "",
    "pretrain_models": "",
    "first_look_seeds": 0,
    "jobs": 0,
    "pretrain_preset": "tiny",
    "pretrain_overrides": "",
    "midtrain_overrides": "",
    "rl_preset": "tiny",
    "rl_overrides": "",
    "eval_tasks": "knowledge,arith-small",
    "eval_problems": 128,
    "eval_samples": 8,
    "eval_temperature": 0.7,
    "eval_top_p": 0.95,
    "eval_max_new_tokens": 48,
    "eval_text_tokens": 20000,
}


def test_an_older_flat_grid_yaml_reads_as_the_grid_it_meant(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(OLD_TINY))
    assert load_grid_file(path) == load_grid("tiny")  # a rerun in the folder of the default grid fits
    old = {**OLD_TINY, "rl_preset": "smoke", "rl_overrides": "steps=3 lr=1e-4", "eval_samples": 2}
    old["pretrain_overrides"] = "train.steps=50 'optim.lr=1e-3'"
    path.write_text(yaml.safe_dump(old))
    grid = load_grid_file(path)
    assert grid.rl == load_rl_config("smoke", ["steps=3", "lr=1e-4"]) and grid.eval.samples == 2
    assert grid.pretrain == load_config("tiny", ["train.steps=50", "optim.lr=1e-3"])


def test_older_midtrain_overrides_read_as_the_field_or_are_refused_in_one_line(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({**OLD_TINY, "midtrain_overrides": "train.steps=480"}))
    grid = load_grid_file(path)  # the README's MoE 480-step grid: mid-training steps have a field
    assert grid == load_grid("tiny", ["pretrain.midtrain.steps=480"])
    assert midtrain_config(grid, plan(grid, tmp_path)[0]).train.steps == 480
    path.write_text(yaml.safe_dump({**OLD_TINY, "midtrain_overrides": "train.steps=480 optim.lr=1e-3"}))
    with pytest.raises(UserError, match=r"midtrain_overrides .* now pretrain\.midtrain\.\*") as err:
        load_grid_file(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "override, message",
    [
        ("rl.steps=0", "rl.steps must be >= 1; got 0"),
        ("rl.lr=abc", "rl.lr must be of type float; got 'abc'"),
        ("pretrain.train.micro_batch=7", "pretrain.train.global_batch_tokens (4096) must be a multiple"),
        (
            "pretrain.midtrain.warmup_steps=400",
            "pretrain.midtrain.warmup_steps must be in [0, midtrain.steps)",
        ),
        ("pretrain.loss.beta=0.5", "pretrain.loss is set per run"),
        ("pretrain.stage=midtrain", "pretrain.stage is set per run"),
        ("pretrain.train.seed=1", "pretrain.train.seed is set per run"),
        ("pretrain=3", "pretrain must be a mapping; got 3"),
        ("rl.preset=nope", "unknown rl.preset 'nope'; choose one of long, paper, smoke, tiny"),
        ("eval.top_p=0", "eval.top_p must be in (0, 1]; got 0.0"),
        ("eval.tasks=knowledge,nope", "eval.tasks: unknown task 'nope'"),
        ("eval_samples=4", "unknown config key 'eval_samples'"),
    ],
)
def test_bad_sections_fail_in_one_line_naming_the_field(override, message):
    with pytest.raises(UserError) as err:
        load_grid("tiny", [override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_default_grid_pretrains_with_the_tiny_preset_and_its_world(tmp_path):
    grid = load_grid("tiny")
    assert grid.pretrain == RunConfig() == load_config("tiny")
    assert eval_settings(grid).text == "builtin-v2"
