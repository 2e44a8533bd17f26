"""Which split a question belongs to: train (RL), val (tuning) or test (evaluation), by its content.

    from shapedce.tasks.splits import split_of, SPLITS
    split_of("What is 4 + 2 - 1?")          # "val": one of the 64 questions earlier tuning looked at
    python -m pytest tests/test_tasks_splits.py -q

A question's split is a salted sha256 of its normalised text (`problem_key`), so it is the same in
every task, seed and process: TEST_PERCENT % of the hash range is test, the next VAL_PERCENT % val,
the rest train. Val was carved out of the former train range: no former train question became
test. One exception moves questions out of test: the 64 `small` questions of TUNING_SEEN (the
first 64 test prompts of `arith-small` at seed 0, which the RL stage's held-out evaluation scored
before val existed; the RL learning rate and the mid-training step counts were chosen on them)
belong to val, so the evaluation never sees them. `arith-small` then holds 198 train, 95 val
(64 of them from TUNING_SEEN) and 180 test prompts (docs/guides/rl.md#splits).
"""

from __future__ import annotations

import hashlib

from ..data.problems import problem_key

SPLITS = ("train", "val", "test")
"""Every split a task may serve: RL trains on train, tuning looks at val, evaluation at test."""
TEST_PERCENT = 50
"""Share of the question hash range (0-99) that forms the test split: hashes below it."""
VAL_PERCENT = 10
"""Share of the hash range after the test split's that forms the validation split."""

TUNING_SEEN = (
    "4 + 2 - 1, 8 + 3 + 7, 8 - 6 - 2, 9 - 9 + 9, 1 + 0 + 3, 6 - 3 - 2, 7 - 4 - 1, 8 + 4 - 4, "
    "7 - 1 - 0, 6 - 2 + 9, 7 + 2 + 9, 9 - 0 - 9, 7 + 3 + 5, 1 + 8 + 2, 0 + 7 - 4, 6 - 4 + 3, "
    "3 + 1 - 1, 2 + 6 + 8, 4 + 8 - 1, 3 + 7 - 9, 5 + 0 + 3, 1 + 7 - 4, 0 + 6 - 1, 0 + 1 + 0, "
    "3 + 4 - 1, 4 + 9 + 3, 5 + 8 - 3, 6 + 4 + 1, 8 - 0 + 9, 4 + 8 - 2, 4 - 1 - 1, 8 + 7 + 7, "
    "5 + 3 - 7, 5 - 4 - 0, 6 + 4 + 5, 5 + 8 - 8, 5 + 1 + 5, 9 - 6 + 7, 9 - 1 + 3, 7 - 4 + 8, "
    "8 - 7 + 1, 6 + 7 - 6, 9 + 2 + 1, 5 - 2 + 7, 2 + 6 - 5, 1 + 9 - 6, 9 - 1 + 2, 6 + 1 + 0, "
    "9 + 4 - 9, 8 - 0 + 7, 8 + 5 - 2, 7 - 5 + 7, 9 + 4 - 4, 4 - 0 + 1, 9 + 0 + 1, 7 - 7 + 7, "
    "6 - 2 - 0, 7 - 5 - 2, 6 + 8 - 3, 6 + 7 - 9, 4 - 3 + 5, 8 + 7 - 1, 3 + 9 - 9, 9 - 7 + 8"
).split(", ")
"""The `small` questions ("What is 4 + 2 - 1?", in draw order) that the RL held-out evaluation scored
while the RL learning rate, the mid-training steps and the MoE step count were tuned: the first 64
prompts of `arith-small`'s test split at seed 0 under the former two-way split. They count as val."""
_TUNING_SEEN_KEYS = frozenset(problem_key(f"What is {q}?") for q in TUNING_SEEN)


def split_hash(question: str) -> int:
    """The question's place in the hash range, 0-99 (sha256 of "split:" + its `problem_key`)."""
    digest = hashlib.sha256(("split:" + problem_key(question)).encode("utf-8")).hexdigest()
    return int(digest[:8], 16) % 100


def split_of(question: str) -> str:
    """ "test" below TEST_PERCENT of the hash range, "val" for the next VAL_PERCENT and for TUNING_SEEN,
    else "train"."""
    if problem_key(question) in _TUNING_SEEN_KEYS:
        return "val"
    h = split_hash(question)
    return "test" if h < TEST_PERCENT else "val" if h < TEST_PERCENT + VAL_PERCENT else "train"
