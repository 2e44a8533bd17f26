"""reasoning-gym tasks: `rg-<name>` for every dataset reasoning-gym ships, and the `logic` mixture.

    from shapedce.tasks import get_task
    task = get_task("rg-knights_knaves")          # any reasoning-gym dataset, made on first use
    p = task.prompts("test", 1)[0]
    task.reward("... The answer is Zoey is a knight.", p)            # 1.0 / 0.0 (binary)
    task.reward("<answer>Zoey is a knight</answer>", p, partial=True)  # the dataset's partial credit
    python -m pytest tests/test_tasks_gym.py -q    # CPU, ~1 min: every dataset scores its own answer

Prompts are "Problem: {question}\\nSolution:\\n"; the answer is the content of the last
<answer>...</answer> (reasoning-gym's own format, may span lines), else the rest of the line after
the first "The answer is" (a trailing period dropped; numbers lose commas and "+"), else the last
number in the completion. It is scored by the dataset's own `score_answer`. Datasets run with
reasoning-gym's defaults except the small-model settings in RG_CONFIGS. `logic` mixes LOGIC evenly.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import UserError, check_installed, require
from .base import NUMBER, NUMBER_RE, Prompt, Task, _take, get_task

RG_CONFIGS: dict[str, dict[str, Any]] = {
    "basic_arithmetic": {
        "min_terms": 2,
        "max_terms": 3,
        "min_digits": 1,
        "max_digits": 2,
        "operators": ("+", "-", "*"),
    },  # no "/": reasoning-gym means floor division
    "chain_sum": {"min_terms": 2, "max_terms": 4, "min_digits": 1, "max_digits": 2},
    "products": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2},
    "gcd": {"min_numbers": 2, "max_numbers": 2, "min_value": 1, "max_value": 200},
    "knights_knaves": {"n_people": 2, "depth_constraint": 2, "width_constraint": 2},
    "zebra_puzzles": {"num_people": 3, "num_characteristics": 3},
    "propositional_logic": {"max_vars": 3, "max_statements": 3, "max_complexity": 2},
}
"""Small-model settings (keyword arguments of each dataset's config class); others use defaults."""
REGISTERED = ("basic_arithmetic", "chain_sum", "products", "gcd")
"""Datasets listed by `shapedce tasks` from the start; every other `rg-<name>` is made on first use."""
LOGIC = ("knights_knaves", "syllogism", "propositional_logic", "zebra_puzzles")
"""The curated `logic` mixture: deduction over truth-tellers, syllogisms, propositions and grids."""
ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S)
FINAL_LINE = re.compile(r"The answer is[ \t]*(.*)")


REFERENCE_KEYS = ("possible_answer", "example_answer", "example_correct_answer")
"""Where a dataset whose questions have many right answers (answer None) keeps one of them (a dict
or list as JSON, the form its scorer reads). boxnet and rush_hour keep none: their reference is ""."""


def reference(entry: dict) -> str:
    """The entry's reference answer: its answer, else a correct example from its metadata, else ""."""
    if entry.get("answer") is not None:
        return str(entry["answer"])
    meta = entry.get("metadata") or {}
    value = next((meta[k] for k in REFERENCE_KEYS if meta.get(k) is not None), "")
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def rg_datasets() -> list[str]:
    """Every dataset name reasoning-gym registers."""
    check_installed("reasoning_gym", "eval")
    from reasoning_gym.factory import DATASETS

    return sorted(DATASETS)


class RGTask(Task):
    """A reasoning-gym dataset: questions from `create_dataset`, verified by its `score_answer`."""

    STREAM = 1_000_000
    """reasoning-gym seeds item i with Random(seed + i), so seeds s and s+1 share all but one item;
    each (train or test, seed) reads its own block of STREAM dataset seeds instead; val reads train's
    block (the hash split keeps the two apart), so the train and test draws stayed as they were
    before val existed."""
    BLOCK = 64
    """Items per `create_dataset` call within the stream (some datasets build every item up front)."""

    def __init__(
        self,
        dataset: str,
        config: dict[str, Any] | None = None,
        name: str | None = None,
        description: str = "",
    ):
        self.dataset, self.config = dataset, dict(config or {})
        self.name = name or f"rg-{dataset}"
        settings = f" {self.config}" if self.config else ""
        self.description = description or f"reasoning-gym {dataset}{settings}, scored by its score_answer"
        self._scorer: Callable[[str | None, dict], float] | None = None

    def block(self, seed: int):
        """BLOCK items of the dataset from dataset seed `seed`; a config it refuses is a UserError."""
        reasoning_gym = require("reasoning_gym", "eval")

        try:
            return reasoning_gym.create_dataset(self.dataset, seed=seed, size=self.BLOCK, **self.config)
        except Exception as err:  # noqa: BLE001 - reasoning-gym validates configs with assert / ValueError
            first = (str(err).strip().splitlines() or [""])[0]
            raise UserError(
                f"reasoning-gym cannot build {self.dataset!r} with config {self.config}: "
                f"{type(err).__name__}: {first}"
            ) from None

    def _draw(self, split: str, n: int, seed: int) -> list[Prompt]:
        base = self.STREAM * (2 * seed + (split == "test"))

        def candidates() -> Iterator[tuple[str, str, str, dict]]:
            for start in range(base, base + self.STREAM, self.BLOCK):
                for e in self.block(start):
                    answer = reference(e)
                    entry = {
                        "question": e["question"],
                        "answer": e["answer"],
                        "metadata": e.get("metadata", {}),
                    }
                    yield e["question"], f"Problem: {e['question']}\nSolution:\n", answer, {"entry": entry}

        return _take(self.name, split, n, candidates())

    def extract(self, completion: str) -> str | None:
        """The last <answer>...</answer>, else the rest of the first "The answer is" line, else the last
        number; a number loses commas and "+"."""
        tags = ANSWER_TAG.findall(completion)
        if tags:
            text = tags[-1].strip()
        elif match := FINAL_LINE.search(completion):
            text = match.group(1).strip().removesuffix(".").strip().strip("$").strip()
        elif numbers := NUMBER_RE.findall(completion):
            text = numbers[-1]
        else:
            return None
        if re.fullmatch(NUMBER, text):
            text = text.replace(",", "").lstrip("+")
        return text or None

    def score(self, answer: str | None, prompt: Prompt) -> float:
        if self._scorer is None:
            reasoning_gym = require("reasoning_gym", "eval")

            self._scorer = reasoning_gym.get_score_answer_fn(self.dataset)
        entry = prompt.meta.get("entry") or {"question": "", "answer": prompt.answer, "metadata": {}}
        if answer is None:
            return 0.0
        try:
            return float(self._scorer(answer, entry))
        except Exception:  # noqa: BLE001 - a scorer that cannot read the answer: it is wrong
            return 0.0


class MixtureTask(Task):
    """Registered tasks mixed evenly; each prompt keeps its own task's name, extraction and scorer."""

    def __init__(self, name: str, parts: tuple[str, ...], description: str = ""):
        self.name, self.parts = name, tuple(parts)
        self.description = description or f"{', '.join(parts)} mixed evenly"

    def _draw(self, split: str, n: int, seed: int) -> list[Prompt]:
        k, out = len(self.parts), []
        for i, part in enumerate(self.parts):
            out += get_task(part).prompts(split, n // k + (i < n % k), seed)
        random.Random(f"task:{self.name}:{split}:{seed}").shuffle(out)
        return out

    def _part(self, prompt: Prompt) -> Task:
        if prompt.task not in self.parts:
            raise UserError(
                f"task {self.name!r} scores prompts of {', '.join(self.parts)}; got one of {prompt.task!r}"
            )
        return get_task(prompt.task)

    def score(self, answer: str | None, prompt: Prompt) -> float:
        return self._part(prompt).score(answer, prompt)

    def reward(self, completion: str, prompt: Prompt, *, partial: bool = False) -> float:
        return self._part(prompt).reward(completion, prompt, partial=partial)

    def grade(self, completion: str, prompt: Prompt) -> tuple[str | None, bool]:
        return self._part(prompt).grade(completion, prompt)


def rg_task(name: str) -> RGTask:
    """The task `rg-<dataset>` for any reasoning-gym dataset (RESOLVERS["rg-"])."""
    dataset = name.removeprefix("rg-")
    names = rg_datasets()
    if dataset not in names:
        raise UserError(
            f"unknown reasoning-gym dataset {dataset!r} in task {name!r}; "
            f"`shapedce tasks --rg` lists all {len(names)}"
        )
    return RGTask(dataset, RG_CONFIGS.get(dataset))
