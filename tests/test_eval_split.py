"""`shapedce eval --split`: the val prompts (tuning, pilots) instead of the test prompts, never both.

python -m pytest tests/test_eval_split.py -q       # CPU, seconds
"""

from __future__ import annotations

import json

import pytest

from conftest import untrained_model_dir
from shapedce.cli import main
from shapedce.errors import UserError
from shapedce.eval.run import EvalSettings, evaluate
from shapedce.tasks import get_task


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return untrained_model_dir(tmp_path_factory.mktemp("eval-split"))


def _settings(**kw) -> EvalSettings:
    base = dict(tasks="arith-small", samples=1, max_new_tokens=2, text_tokens=50, temperature=1.0)
    return EvalSettings(**{**base, **kw})


def test_val_split_reaches_the_task(model_dir, tmp_path):
    val = len(get_task("arith-small").prompts("val", 95))
    with pytest.raises(UserError, match="val prompts"):  # one more than the val split holds
        evaluate(model_dir, _settings(split="val", problems=val + 1), tmp_path / "a")
    results = evaluate(model_dir, _settings(split="val", problems=4), tmp_path / "b")
    assert results["settings"]["split"] == "val" and results["tasks"]["arith-small"]["prompts"] == 4
    saved = json.loads((tmp_path / "b" / "results.json").read_text())
    assert saved["settings"]["split"] == "val"


def test_split_defaults_to_test_and_a_bad_one_is_one_line(model_dir, tmp_path, capsys):
    assert EvalSettings().split == "test"
    code = main(
        ["eval", str(model_dir), "--tasks", "arith-small", "--split", "train", "--out", str(tmp_path)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].endswith("error: --split must be one of test, val; got 'train'")
