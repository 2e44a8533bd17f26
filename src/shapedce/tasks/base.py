"""The task contract and registry: `Prompt`, `Task`, disjoint train/val/test splits, `get_task`, `reward_fn`.

    from shapedce.tasks.base import Task, Prompt, register_task, get_task, reward_fn
    python -m pytest tests/test_tasks.py -q          # CPU, ~15 s

A task draws prompts (`prompts(split, n, seed)`), extracts a completion's answer (`extract`), and
scores it (`score` in [0, 1]); `reward` (binary by default, `partial=True` for the scorer's credit)
serves RL, `grade`/`grade_many` ((normalised answer, correct) pairs) serve `shapedce.eval`.
Names beyond TASKS resolve on first use through RESOLVERS: "rg-<dataset>" (any reasoning-gym
dataset, `gym.py`) and "file:PATH[?field=...]" (a local benchmark file, `files.py`).
Splits: every question belongs to exactly one split, train, val or test, by a salted content hash
(`split_of`, `shapedce.tasks.splits`).
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from ..data.problems import extract_answer, problem_key
from ..errors import UserError, check_int
from .splits import SPLITS, split_of
from .splits import TEST_PERCENT as TEST_PERCENT  # re-exported: the split constants lived here
from .splits import VAL_PERCENT as VAL_PERCENT

NUMBER = r"[-+]?\d+(?:,\d{3})*(?:\.\d+)?"
FINAL_RE = re.compile(r"The answer is\s*\$?\s*(" + NUMBER + ")")
NUMBER_RE = re.compile(NUMBER)


@dataclass(frozen=True, slots=True)
class Prompt:
    """One task instance: `text` is exactly what the model continues; `answer` the reference answer."""

    task: str
    text: str
    answer: str
    uid: str
    """Stable id: task name and a hash of the text."""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    """Task-specific extras: split, family, worked solution, the reasoning-gym entry ..."""

    def row(self) -> dict[str, str]:
        """A dataset row for TRL: prompt, answer (read back by `reward_fn`), task, uid."""
        return {"prompt": self.text, "answer": self.answer, "task": self.task, "uid": self.uid}


def canonical_number(text: str) -> str | None:
    """ "+1,000.50" -> "1000.5", "-0" -> "0", "007" -> "7"; None unless `text` is a plain decimal number."""
    try:
        value = Decimal(text.strip().replace(",", ""))
    except InvalidOperation:
        return None
    if not value.is_finite() or abs(value.adjusted()) > 100:
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def _uid(task: str, text: str) -> str:
    return f"{task}:{hashlib.sha256(text.encode('utf-8')).hexdigest()[:12]}"


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise UserError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")


class Task(ABC):
    """A verifiable task. Subclasses implement `_draw`; most override `extract` and `score` too."""

    name: str = ""
    description: str = ""
    size: int | None = None
    """How many test prompts exist when that is a fixed number (a benchmark file), else None."""

    def prompts(self, split: str, n: int, seed: int = 0) -> list[Prompt]:
        """`n` distinct prompts of `split` ("train", "val" or "test"), deterministic by (split, n, seed)."""
        _check_split(split)
        check_int("n", n, 0)
        check_int("seed", seed, 0)
        out = self._draw(split, n, seed)
        assert len(out) == n and len({p.uid for p in out}) == n, f"{self.name}: prompts are not distinct"
        assert all(p.meta.get("split") == split for p in out), f"{self.name}: a prompt left its split"
        return out

    @abstractmethod
    def _draw(self, split: str, n: int, seed: int) -> list[Prompt]:
        """`n` distinct prompts of `split`, deterministic by seed."""

    def extract(self, completion: str) -> str | None:
        """The final answer in a model completion: N of the first "The answer is N.", or None."""
        return extract_answer(completion)

    def normalize(self, answer: str) -> str:
        """The form majority voting compares: canonical numbers, else stripped lower-case text."""
        return canonical_number(answer) or " ".join(answer.split()).lower()

    def score(self, answer: str | None, prompt: Prompt) -> float:
        """The verifier's score in [0, 1] of an extracted answer (None scores 0)."""
        return float(answer is not None and self.normalize(answer) == self.normalize(prompt.answer))

    def reward(self, completion: str, prompt: Prompt, *, partial: bool = False) -> float:
        """1.0 if the completion's answer is exactly correct, else 0.0; partial=True: the score itself."""
        score = min(max(float(self.score(self.extract(completion), prompt)), 0.0), 1.0)
        return score if partial else float(score >= 1.0)

    def grade(self, completion: str, prompt: Prompt) -> tuple[str | None, bool]:
        """(normalised answer or None, exactly correct): one sample's entry for `eval.metrics.summarize`."""
        answer = self.extract(completion)
        return (None if answer is None else self.normalize(answer)), self.score(answer, prompt) >= 1.0

    def grade_many(self, pairs: list[tuple[str, Prompt]]) -> list[tuple[str | None, bool]]:
        """`grade` of many (completion, prompt) pairs; tasks with slow verifiers run them in parallel."""
        return [self.grade(completion, prompt) for completion, prompt in pairs]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def _take(
    task: str,
    split: str,
    n: int,
    candidates: Iterator[tuple[str, str, str, dict]],
    seen: set[str] | None = None,
    patience: int = 10_000,
) -> list[Prompt]:
    """The first `n` candidates (question, text, answer, meta) of `split` with unseen questions;
    gives up (ValueError) after `patience` candidates in a row bring nothing new."""
    seen = set() if seen is None else seen
    out: list[Prompt] = []
    misses = 0
    for question, text, answer, meta in candidates:
        if len(out) == n:
            break
        key = problem_key(question)
        if key in seen or split_of(question) != split:
            if (misses := misses + 1) > patience:
                break
            continue
        seen.add(key)
        misses = 0
        out.append(Prompt(task, text, answer, _uid(task, text), {"split": split, **meta}))
    if len(out) < n:
        raise UserError(f"n={n} is more {split} prompts than task {task!r} yields ({len(out)} found)")
    return out


# ----------------------------------------------------------------------------- registry

TASKS: dict[str, Task] = {}


def register_task(task: Task, *, replace: bool = False) -> Task:
    """Add `task` to TASKS under `task.name` (an existing name needs replace=True); returns it."""
    if not task.name or "," in task.name:
        raise UserError(f"task name must be non-empty and without commas; got {task.name!r}")
    if task.name in TASKS and not replace:
        raise UserError(f"task {task.name!r} is already registered; pass replace=True to replace it")
    TASKS[task.name] = task
    return task


RESOLVERS: dict[str, Callable[[str], Task]] = {}
"""Name prefix -> a function making the task of a full name ("rg-lcm", "file:my.jsonl"); the task
is registered on first use."""


def get_task(name: str) -> Task:
    """The registered task `name`, or the task a RESOLVERS prefix makes of it (then registered)."""
    if name not in TASKS:
        prefix = next((p for p in RESOLVERS if name.startswith(p)), None)
        if prefix is None:
            raise UserError(
                f"unknown task {name!r}; choose one of {', '.join(TASKS)}, "
                f"or {', '.join(p + '...' for p in RESOLVERS)} (`shapedce tasks` lists them)"
            )
        task = RESOLVERS[prefix](name)
        TASKS.setdefault(name, task)
    return TASKS[name]


def task_lines(extra: dict[str, str] | None = None) -> list[str]:
    """One aligned "name  description" line per registered task, then per `extra` entry."""
    rows = {name: task.description for name, task in TASKS.items()} | (extra or {})
    width = max(len(n) for n in rows)
    return [f"{name:<{width}}  {text}" for name, text in rows.items()]


def get_tasks(names: str) -> list[Task]:
    """Tasks named in a comma-separated list, e.g. "arith,rg-gcd"."""
    picked = [s.strip() for s in names.split(",") if s.strip()]
    if not picked:
        raise UserError(f"tasks must name at least one of {', '.join(TASKS)}; got {names!r}")
    return [get_task(name) for name in picked]


def reward_fn(
    task: Task | str | None = None, *, partial: bool = False, answer_key: str = "answer"
) -> Callable[..., list[float]]:
    """A TRL-style reward function `(completions, **kwargs) -> list[float]`, one reward per completion.

    TRL passes dataset columns as keyword lists: the column `answer_key` holds each row's answer
    (`Prompt.row()` writes it), and a "task" column, when present, picks each row's task (task=None
    requires it), and a "uid" column, when present, names each row's prompt (code tasks find their
    tests by it). Conversational completions (lists of {"role", "content"}) use the last message.

    >>> fn = reward_fn("arith-add")
    >>> fn(["Ones: 3 + 4 = 7. Write 7.\\nThe answer is 7.", "The answer is 8.", "no idea"], answer=["7"] * 3)
    [1.0, 0.0, 0.0]
    >>> reward_fn()(["The answer is 6."], answer=["6"], task=["rg-gcd"])
    [1.0]
    """
    fixed = get_task(task) if isinstance(task, str) else task

    def reward(completions: list[Any], **kwargs: Any) -> list[float]:
        answers = kwargs.get(answer_key)
        if answers is None or len(answers) != len(completions):
            raise UserError(f"{answer_key} must be a list with one answer per completion; got {answers!r}")
        names = kwargs.get("task") or [None] * len(completions)
        uids = kwargs.get("uid") or [""] * len(completions)
        if fixed is None and None in names:
            raise UserError("task must be given to reward_fn or as a 'task' column naming each row's task")
        out = []
        for completion, answer, name, uid in zip(completions, answers, names, uids):
            t = get_task(name) if name is not None else fixed
            if isinstance(completion, list):  # conversational: [{"role": ..., "content": ...}, ...]
                completion = completion[-1]["content"] if completion else ""
            out.append(t.reward(completion, Prompt(t.name, "", str(answer), uid), partial=partial))
        return out

    reward.__name__ = f"{fixed.name if fixed else 'task'}_reward".replace("-", "_")
    return reward
