"""The runnable examples of docs/guides/huggingface.md (examples/*.py), each at a tiny size on a CPU.

PYTHONPATH=src OMP_NUM_THREADS=1 python -m pytest -q tests/test_examples.py      # ~1 min: slow tier
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guides" / "huggingface.md"


@pytest.fixture(autouse=True)
def examples_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))


def rows_with(history: list[dict], key: str) -> list[dict]:
    return [r for r in history if key in r]


@pytest.mark.slow
def test_hf_trainer_example_logs_the_shaped_statistics(tmp_path):
    import hf_trainer

    history = hf_trainer.main(["--steps", "3", "--out", str(tmp_path)])
    rows = rows_with(history, "loss")
    assert len(rows) == 3 and all(math.isfinite(r["shaped/grad_shift"]) for r in rows)
    assert all(r["shaped/w_mean"] > 1 for r in rows)  # precision: w >= 1
    auto = ["--steps", "3", "--loss", "auto", "--target-entropy", "1.0", "--out", str(tmp_path)]
    auto = hf_trainer.main(auto)
    assert rows_with(auto, "loss")[-1]["shaped/beta"] < 0  # entropy far above 1 nat: beta walks down


@pytest.mark.slow
def test_sft_trainer_example_keeps_token_accuracy(tmp_path):
    pytest.importorskip("trl")
    import sft_trainer

    for loss in ("precision", "dft"):
        rows = rows_with(sft_trainer.main(["--steps", "2", "--loss", loss, "--out", str(tmp_path)]), "loss")
        assert len(rows) == 2
        assert all(math.isfinite(r["mean_token_accuracy"]) and "shaped/entropy" in r for r in rows)


@pytest.mark.slow
def test_grpo_trainer_example_logs_rewards_and_pass_at_k(tmp_path):
    pytest.importorskip("trl")
    import grpo_trainer

    history = grpo_trainer.main(["--steps", "2", "--eval-every", "1", "--out", str(tmp_path)])
    evals = rows_with(history, "heldout/pass_at_4")
    assert [r["step"] for r in evals] == [0, 1, 2]  # start, every step, end
    for r in evals:
        assert 0 <= r["heldout/pass_at_1"] <= r["heldout/pass_at_2"] <= r["heldout/pass_at_4"] <= 1
        assert r["heldout/avg_at_k"] == pytest.approx(r["heldout/pass_at_1"])  # Pass@1 = Avg@k
    assert len(rows_with(history, "rewards/arith_reward/mean")) == 2


def test_the_guide_runs_the_example_scripts_it_shows():
    """Every `python examples/X.py` command of the guide names a script that exists and has a main()."""
    text = GUIDE.read_text()
    scripts = set(re.findall(r"python (examples/\w+\.py)", text))
    assert {"examples/hf_trainer.py", "examples/sft_trainer.py", "examples/grpo_trainer.py"} <= scripts
    for script in scripts:
        source = (EXAMPLES.parent / script).read_text()
        assert "def main(argv" in source and source.startswith('"""'), script
