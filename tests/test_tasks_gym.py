"""Every reasoning-gym dataset as `rg-<name>`: builds offline and scores its own reference answer 1.

python -m pytest tests/test_tasks_gym.py -q     # CPU, ~30 s (one item of each of ~106 datasets)
"""

from __future__ import annotations

import pytest

pytest.importorskip("reasoning_gym")

from shapedce.errors import UserError  # noqa: E402
from shapedce.tasks import LOGIC, TASKS, get_task, rg_datasets  # noqa: E402

NO_REFERENCE = {
    "boxnet": "reasoning-gym gives no reference plan (answer None, no example in its metadata)",
    "rush_hour": "reasoning-gym gives no reference move list (answer None, none in its metadata)",
    "composite": "composite mixes other datasets and needs their list in its config",
}

LENIENT = {"game_of_life_halting"}
"""Scorers that accept nonsense (reasoning-gym 0.1.25 compares bool(answer) == bool(reference))."""


@pytest.mark.parametrize("name", rg_datasets())
def test_every_dataset_scores_its_reference(name):
    if name in NO_REFERENCE:
        pytest.skip(NO_REFERENCE[name])
    task = get_task(f"rg-{name}")
    p = task.prompts("test", 1)[0]
    assert p.task == f"rg-{name}" and p.text.startswith("Problem: ") and p.answer
    assert task.reward(f"Let me think.\n<answer>{p.answer}</answer>", p) == 1.0
    if name not in LENIENT:
        assert task.reward("<answer>\u2603 certainly not it</answer>", p) < 1.0
    assert task.reward("", p) == 0.0


def test_datasets_without_a_reference_still_build_and_score_zero_for_nonsense():
    for name in ("boxnet", "rush_hour"):
        task = get_task(f"rg-{name}")
        p = task.prompts("test", 1)[0]
        assert p.answer == "" and task.reward("<answer>no idea</answer>", p) == 0.0


def test_composite_without_datasets_is_one_line():
    with pytest.raises(UserError) as excinfo:
        get_task("rg-composite").prompts("test", 1)
    assert "\n" not in str(excinfo.value) and "composite" in str(excinfo.value)


def test_unknown_dataset_is_one_line():
    with pytest.raises(UserError) as excinfo:
        get_task("rg-no_such_dataset")
    assert "\n" not in str(excinfo.value) and "shapedce tasks --rg" in str(excinfo.value)


def test_answer_formats():
    task = get_task("rg-knights_knaves")
    p = task.prompts("test", 1)[0]
    line = p.answer.rstrip(".")
    assert task.reward(f"Reasoning ...\nThe answer is {line}.", p) == 1.0
    assert task.extract("<answer>a</answer> then <answer>\nb\nc\n</answer>") == "b\nc"
    assert task.extract("The answer is $1,234$.") == "1234"


def test_logic_mixture_scores_each_prompt_with_its_own_dataset():
    logic = TASKS["logic"]
    prompts = logic.prompts("test", 8, seed=1)
    assert sorted({p.task for p in prompts}) == sorted(f"rg-{d}" for d in LOGIC)
    assert prompts == logic.prompts("test", 8, seed=1)
    for p in prompts:
        assert logic.reward(f"<answer>{p.answer}</answer>", p) == 1.0
        assert logic.grade(f"<answer>{p.answer}</answer>", p)[1]
    train = {p.uid for p in logic.prompts("train", 8, seed=1)}
    assert train.isdisjoint(p.uid for p in prompts)
