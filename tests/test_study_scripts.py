"""scripts/calibrate_priors.py and scripts/tune_rl.py: the parts that decide something (config and
seed parsing, the seed-paired table, which val rows the tuning reads), without training.

    PYTHONPATH=$PWD/src python -m pytest -q tests/test_study_scripts.py
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from shapedce.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


calibrate = _load("calibrate_priors")
tune = _load("tune_rl")


def test_configs_by_name_and_by_knobs():
    assert calibrate.parse_configs("ce,tail-strong") == [
        ("ce", ["loss=ce"]),
        ("tail-strong", ["loss=tail-strong"]),
    ]
    (label, loss), (label2, _) = calibrate.parse_configs("beta=-1,lambda_tail=-0.5;lambda_tail=-1,k=20")
    assert label == "beta-1_lambda_tail-0.5" and label2 == "lambda_tail-1_k20"
    assert loss == ["loss=ce", "loss.beta=-1", "loss.lambda_tail=-0.5"]


@pytest.mark.parametrize("spec", ["ce,sharpest", "beta=-1,temperature=2"])
def test_bad_configs_are_one_line_errors(spec):
    with pytest.raises(UserError, match="--configs"):
        calibrate.parse_configs(spec)


def test_seeds():
    assert calibrate.parse_seeds("100") == [100]
    assert calibrate.parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert calibrate.parse_seeds("0,7-8") == [0, 7, 8]


def test_paired_differences_pair_by_seed():
    rows = [
        {"label": "ce", "seed": 0, "h": 2.0},
        {"label": "ce", "seed": 1, "h": 4.0},
        {"label": "x", "seed": 1, "h": 3.6},  # -10% against seed 1's ce, not seed 0's
        {"label": "x", "seed": 0, "h": 1.8},
    ]
    out = calibrate.paired(rows, "x", "h")
    assert out.startswith("-10.00% [")  # both seeds -10%: a zero-width interval
    assert calibrate.paired(rows[:3], "x", "h") == "-10.00%"  # one seed: no interval
    assert calibrate.paired(rows, "y", "h") == "-"


def test_tuning_reads_val_rows_only(tmp_path):
    rows = [
        {"split": "val", "avg_at_k": 0.2, "prompts_split": "val"},
        {"split": "train", "reward": 0.9},
        {"split": "val", "avg_at_k": 0.7, "prompts_split": "test"},  # a test-split curve never counts
        {"split": "val", "avg_at_k": 0.3, "prompts_split": "val"},
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert tune.val_scores(tmp_path) == [0.2, 0.3]
    assert tune.base_name(tmp_path / "tiny" / "tail" / "s0" / "midtrain") == "tail-s0"
