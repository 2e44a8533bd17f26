"""The train / val / test splits (shapedce.tasks.splits): a partition by content hash, val carved from
the former train range, the 64 prompts earlier tuning looked at moved to val, evaluation untouched.

    python -m pytest tests/test_tasks_splits.py -q        # CPU, a few seconds
"""

from __future__ import annotations

import pytest

import shapedce.tasks.base as base
from shapedce.data.problems import is_heldout, problem_key, small_prompts
from shapedce.errors import UserError
from shapedce.tasks import SPLITS, TEST_PERCENT, VAL_PERCENT, get_task, split_of
from shapedce.tasks.splits import TUNING_SEEN, split_hash

SMALL = [q for q in small_prompts() if is_heldout(q)]
SEEN = {problem_key(f"What is {q}?") for q in TUNING_SEEN}


def former_split(question: str) -> str:
    """The two-way split before val existed: test below TEST_PERCENT of the hash range, else train."""
    return "test" if split_hash(question) < TEST_PERCENT else "train"


def question(p) -> str:
    return p.text.removeprefix("Problem: ").split("\nSolution:")[0].split(" Put the final answer")[0]


def keys(prompts) -> set[str]:
    return {problem_key(question(p)) for p in prompts}


def test_split_of_partitions_the_small_space_and_the_tasks_serve_every_question():
    counts = {s: sum(split_of(q) == s for q in SMALL) for s in SPLITS}
    assert counts == {"train": 198, "val": 95, "test": 180}  # docs/guides/rl.md#splits states these
    task = get_task("arith-small")
    assert task.size == counts["test"]
    for s in SPLITS:  # each split's draw reaches every question of the split, and nothing else
        assert keys(task.prompts(s, counts[s], seed=0)) == {problem_key(q) for q in SMALL if split_of(q) == s}
        with pytest.raises(UserError, match=f"more {s} prompts than task 'arith-small' yields"):
            task.prompts(s, counts[s] + 1)


def test_val_comes_from_the_former_train_range_and_test_loses_only_the_tuned_prompts():
    questions = SMALL + [q for q in (f"What is {a} + {b}?" for a in range(60) for b in range(60))]
    moved = {"train": 0, "tuned": 0}
    for q in questions:
        old, new = former_split(q), split_of(q)
        if problem_key(q) in SEEN:
            assert (old, new) == ("test", "val"), q
            moved["tuned"] += 1
        elif old == "test":
            assert new == "test", q  # every other test question stays test
        else:
            assert new in ("train", "val") and (new == "val") == (split_hash(q) < TEST_PERCENT + VAL_PERCENT)
            moved["train"] += new == "val"
    assert moved["tuned"] == 64 and moved["train"] > 0.05 * len(questions) * VAL_PERCENT / 100


def test_tuning_seen_is_what_the_rl_held_out_evaluation_scored(monkeypatch):
    """The former default RL evaluation: the first 64 test prompts of arith-small at seed 0."""
    from shapedce.train.rl_config import RLConfig

    cfg = RLConfig()
    monkeypatch.setattr(base, "split_of", former_split)
    old = get_task("arith-small").prompts("test", 64, seed=cfg.eval_seed)
    assert [question(p) for p in old] == [f"What is {q}?" for q in TUNING_SEEN]
    monkeypatch.undo()
    assert cfg.eval_split == "val" and all(split_of(question(p)) == "val" for p in old)


def test_the_grid_evaluation_never_scores_a_prompt_rl_or_tuning_sees():
    from shapedce.reproduce.grid import eval_settings, load_grid
    from shapedce.train.rl import train_prompts
    from shapedce.train.rl_config import RLConfig

    settings, rl = eval_settings(load_grid("tiny")), RLConfig()
    small = get_task(rl.task)
    assert rl.task in settings.tasks.split(",") and settings.problems <= small.size  # 128 of 180 fit
    for name in settings.tasks.split(","):
        task = get_task(name)
        n = settings.problems if task.size is None else min(settings.problems, task.size)  # as eval does
        evaluated = keys(task.prompts("test", n, seed=settings.seed))
        assert not evaluated & SEEN
        assert not evaluated & keys(task.prompts("val", 29 if name == "knowledge" else rl.eval_problems))
    tuned = keys(small.prompts(rl.eval_split, rl.eval_problems, seed=rl.eval_seed))
    assert not tuned & keys(train_prompts(rl))
    assert not tuned & keys(small.prompts("test", small.size))


@pytest.mark.parametrize("name", ["arith-add", "arith-linear", "arith", "math-boxed", "knowledge", "rg-gcd"])
def test_every_task_with_splits_serves_val_disjoint_from_train_and_test(name, monkeypatch):
    if name.startswith("rg-"):
        pytest.importorskip("reasoning_gym")
    if name == "math-boxed":
        pytest.importorskip("math_verify")
    task = get_task(name)
    n = 20
    draws = {s: task.prompts(s, n, seed=1) for s in SPLITS}
    for s, prompts in draws.items():
        assert all(p.meta["split"] == s == split_of(question(p)) for p in prompts)
    assert draws["val"] == task.prompts("val", n, seed=1) and draws["val"] != task.prompts("val", n, seed=2)
    assert not keys(draws["val"]) & (keys(draws["train"]) | keys(draws["test"]))
    # the test draws are the ones before val existed (no tuned prompt among these tasks' questions)
    monkeypatch.setattr(base, "split_of", former_split)
    assert task.prompts("test", n, seed=1) == draws["test"]


@pytest.mark.parametrize("name", ["humaneval", "file"])
def test_test_only_tasks_refuse_val_in_one_line(name, tmp_path):
    if name == "file":
        path = tmp_path / "bench.jsonl"
        path.write_text('{"question": "1 + 1?", "answer": "2"}\n')
        name = f"file:{path}"
    with pytest.raises(UserError) as excinfo:
        get_task(name).prompts("val", 1)
    assert "\n" not in str(excinfo.value) and "val" in str(excinfo.value)
