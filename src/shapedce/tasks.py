"""Verifiable tasks: prompts with known answers, answer extraction, and rewards for RL and evaluation.

    from shapedce.tasks import get_task, get_tasks, reward_fn
    task = get_task("arith-add")
    prompts = task.prompts("train", n=256, seed=0)   # [Prompt(task, text, answer, uid, meta)], distinct
    task.reward(completion, prompts[0])              # 1.0 or 0.0; partial=True passes a scorer's credit
    task.grade(completion, prompts[0])               # (normalised answer or None, correct): for eval
    trl_reward = reward_fn(task)                     # TRL: (completions, answer=[...], **kw) -> [float]

Print one prompt of every task (CPU, a few seconds): python -m shapedce.tasks

Registered tasks (TASKS):
  arith-add, -sub, -mul,     our problem families (shapedce.data.problems), drawn only from the held-out
  -chain, -linear, -compare  20 % of the problem space, which no built-in corpus contains. The model
  arith (all six, mixed)     continues "Problem: ...\\nSolution:\\n" and ends "The answer is N.".
  rg-basic_arithmetic,       reasoning-gym generators (offline), small-model settings (RG_CONFIGS),
  rg-chain_sum, rg-products, same prompt format; X of the first "The answer is X" (else the last number)
  rg-gcd                     is scored by the dataset's own `score_answer`.
  math-boxed                 held-out arithmetic asking for \\boxed{}; the last \\boxed{...} is checked
                             against the answer with math_verify (parse + verify), so 1/2 = 0.5.
  knowledge                  recall of facts the built-in pretrain corpus states (world seed 0), in its
                             quiz format "Question: ...\\nAnswer:"; NOT held out: it measures memory.

Splits: every question belongs to exactly one split, "train" or "test", by a salted content hash of
its normalised text (`split_of`, TEST_PERCENT %), so the splits are disjoint for every seed and size;
seeds only pick other samples of the same split. Prompts within a call are distinct.
Rewards are binary (1.0 iff the verifier says exactly correct); `partial=True` passes through the
scorer's score instead (reasoning-gym gives len(oracle)/len(answer) when the oracle is a substring).

Adding a task is one line: register_task(RGTask("lcm", {"max_value": 100})), or subclass `Task`.
reasoning-gym and math-verify are imported only when their tasks are used.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from .data.corpus import fact_base, knowledge_probes
from .data.problems import (PROBLEM_FAMILIES, check_int, extract_answer, generate_problem, is_heldout,
                            problem_key)
from .errors import UserError

SPLITS = ("train", "test")
TEST_PERCENT = 50
"""Share of the question space (by salted content hash) that forms the test split."""
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


def split_of(question: str) -> str:
    """"test" for TEST_PERCENT % of questions (sha256 of the salted `problem_key`), else "train"."""
    digest = hashlib.sha256(("split:" + problem_key(question)).encode("utf-8")).hexdigest()
    return "test" if int(digest[:8], 16) % 100 < TEST_PERCENT else "train"


def canonical_number(text: str) -> str | None:
    """"+1,000.50" -> "1000.5", "-0" -> "0", "007" -> "7"; None unless `text` is a plain decimal number."""
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

    def prompts(self, split: str, n: int, seed: int = 0) -> list[Prompt]:
        """`n` distinct prompts of `split` ("train" or "test"), deterministic by (split, n, seed)."""
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

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def _take(task: str, split: str, n: int, candidates: Iterator[tuple[str, str, str, dict]],
          seen: set[str] | None = None, patience: int = 10_000) -> list[Prompt]:
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


class ArithTask(Task):
    """Our arithmetic families, held-out problems only (`is_heldout`), the family quotas mixed evenly."""

    def __init__(self, name: str, families: tuple[str, ...], description: str = ""):
        bad = [f for f in families if f not in PROBLEM_FAMILIES]
        if not families or bad:
            raise UserError(f"families must be a non-empty subset of {', '.join(PROBLEM_FAMILIES)}; got {families!r}")
        self.name, self.families = name, tuple(families)
        self.description = description or f"held-out {'/'.join(families)} problems; ends 'The answer is N.'"

    def text(self, question: str) -> str:
        return f"Problem: {question}\nSolution:\n"  # = Problem.query

    def _draw(self, split: str, n: int, seed: int) -> list[Prompt]:
        k, seen, out = len(self.families), set(), []  # `seen` across families: chain can repeat add
        for i, family in enumerate(self.families):
            quota = n // k + (i < n % k)
            rng = random.Random(f"task:{family}:{split}:{seed}")

            def candidates(family: str = family, rng: random.Random = rng) -> Iterator[tuple[str, str, str, dict]]:
                while True:
                    p = generate_problem(family, rng)
                    if is_heldout(p.prompt):
                        yield p.prompt, self.text(p.prompt), p.answer, {"family": family, "solution": p.solution}

            out += _take(self.name, split, quota, candidates(), seen)
        if k > 1:
            random.Random(f"task:{self.name}:{split}:{seed}").shuffle(out)
        return out


class MathBoxedTask(ArithTask):
    """Held-out arithmetic asking for \\boxed{}; the last box is checked with math_verify."""

    def text(self, question: str) -> str:
        return f"Problem: {question} Put the final answer in \\boxed{{}}.\nSolution:\n"

    def extract(self, completion: str) -> str | None:
        """The content of the last \\boxed{...} (braces balanced), or None."""
        start = completion.rfind("\\boxed{")
        if start < 0:
            return None
        depth, i = 1, start + len("\\boxed{")
        for j in range(i, len(completion)):
            depth += {"{": 1, "}": -1}.get(completion[j], 0)
            if depth == 0:
                return completion[i:j].strip() or None
        return None

    def normalize(self, answer: str) -> str:
        """\\frac{a}{b}, a/b, decimals and "x=" answers become one canonical fraction; other LaTeX loses
        its spaces. Only for voting: correctness is math_verify's."""
        text = re.sub(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}", r"\1/\2", answer)
        text = re.sub(r"\\[dt]?frac(\d)(\d)", r"\1/\2", text)   # \frac12
        text = re.sub(r"^[a-z]=", "", re.sub(r"\\left|\\right|\\!|\\,|\s|\$", "", text))
        if re.fullmatch(r"-?\d+(\.\d+)?(/-?\d+(\.\d+)?)?", text):  # a plain number or fraction
            with contextlib.suppress(ZeroDivisionError):
                return str(Fraction(*map(Fraction, text.split("/"))))
        return text

    def score(self, answer: str | None, prompt: Prompt) -> float:
        if answer is None:
            return 0.0
        from math_verify import parse, verify

        # math_verify times out with signal.alarm, which only works in the main thread
        timeout = 5 if threading.current_thread() is threading.main_thread() else None
        gold = parse(f"${prompt.answer}$", parsing_timeout=timeout)
        pred = parse(f"$\\boxed{{{answer}}}$", parsing_timeout=timeout)
        return float(bool(gold and pred and verify(gold, pred, timeout_seconds=timeout)))


RG_CONFIGS: dict[str, dict[str, Any]] = {
    "basic_arithmetic": {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2,
                         "operators": ("+", "-", "*")},  # no "/": reasoning-gym means floor division
    "chain_sum": {"min_terms": 2, "max_terms": 4, "min_digits": 1, "max_digits": 2},
    "products": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2},
    "gcd": {"min_numbers": 2, "max_numbers": 2, "min_value": 1, "max_value": 200},
}
"""Small-model settings of the registered reasoning-gym datasets (their defaults go up to 4-6 terms
of 4-5 digits). Keyword arguments of each dataset's config class."""


class RGTask(Task):
    """A reasoning-gym dataset: questions from `create_dataset`, verified by its `score_answer`."""

    STREAM = 1_000_000
    """reasoning-gym seeds item i with Random(seed + i), so seeds s and s+1 share all but one item;
    each (split, seed) reads its own block of STREAM dataset seeds instead."""

    def __init__(self, dataset: str, config: dict[str, Any] | None = None, name: str | None = None,
                 description: str = ""):
        self.dataset, self.config = dataset, dict(config or {})
        self.name = name or f"rg-{dataset}"
        self.description = description or f"reasoning-gym {dataset} {self.config}, scored by its score_answer"
        self._scorer: Callable[[str | None, dict], float] | None = None

    def _draw(self, split: str, n: int, seed: int) -> list[Prompt]:
        import reasoning_gym

        base = self.STREAM * (2 * seed + SPLITS.index(split))
        data = reasoning_gym.create_dataset(self.dataset, seed=base, size=self.STREAM, **self.config)

        def candidates() -> Iterator[tuple[str, str, str, dict]]:
            for i in range(self.STREAM):
                e = data[i]
                entry = {"question": e["question"], "answer": str(e["answer"]), "metadata": e.get("metadata", {})}
                yield e["question"], f"Problem: {e['question']}\nSolution:\n", entry["answer"], {"entry": entry}

        return _take(self.name, split, n, candidates())

    def extract(self, completion: str) -> str | None:
        """X of the first "The answer is X" (X a number), else the last number; commas and "+" dropped."""
        match = FINAL_RE.search(completion) or ([None, *NUMBER_RE.finditer(completion)][-1])
        if match is None:
            return None
        return (match.group(1) if match.re is FINAL_RE else match.group(0)).replace(",", "").lstrip("+")

    def score(self, answer: str | None, prompt: Prompt) -> float:
        if self._scorer is None:
            import reasoning_gym

            self._scorer = reasoning_gym.get_score_answer_fn(self.dataset)
        entry = prompt.meta.get("entry") or {"question": "", "answer": prompt.answer, "metadata": {}}
        return float(self._scorer(answer, entry))


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


def get_task(name: str) -> Task:
    """The registered task `name`."""
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]


def get_tasks(names: str) -> list[Task]:
    """Tasks named in a comma-separated list, e.g. "arith,rg-gcd"."""
    picked = [s.strip() for s in names.split(",") if s.strip()]
    if not picked:
        raise UserError(f"tasks must name at least one of {', '.join(TASKS)}; got {names!r}")
    return [get_task(name) for name in picked]


def reward_fn(task: Task | str | None = None, *, partial: bool = False,
              answer_key: str = "answer") -> Callable[..., list[float]]:
    """A TRL-style reward function `(completions, **kwargs) -> list[float]`, one reward per completion.

    TRL passes dataset columns as keyword lists: the column `answer_key` holds each row's answer
    (`Prompt.row()` writes it), and a "task" column, when present, picks each row's task (task=None
    requires it). Conversational completions (lists of {"role", "content"}) use the last message.

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
        if fixed is None and None in names:
            raise UserError("task must be given to reward_fn or as a 'task' column naming each row's task")
        out = []
        for completion, answer, name in zip(completions, answers, names):
            t = get_task(name) if name is not None else fixed
            if isinstance(completion, list):  # conversational: [{"role": ..., "content": ...}, ...]
                completion = completion[-1]["content"] if completion else ""
            out.append(t.reward(completion, Prompt(t.name, "", str(answer), ""), partial=partial))
        return out

    reward.__name__ = f"{fixed.name if fixed else 'task'}_reward".replace("-", "_")
    return reward


class KnowledgeTask(Task):
    """Fact recall in the corpus's quiz format; the answer is the first line of the completion."""

    name = "knowledge"
    description = "recall of facts the built-in pretrain corpus states (not held out: memory, not reasoning)"

    def _draw(self, split: str, n: int, seed: int) -> list[Prompt]:
        probes = knowledge_probes(0, len(fact_base(0)))
        random.Random(f"task:knowledge:{split}:{seed}").shuffle(probes)
        return _take(self.name, split, n, ((text, text, answer, {}) for text, answer in probes))

    def extract(self, completion: str) -> str | None:
        line = completion.strip().split("\n", 1)[0].strip().rstrip(".").strip()
        return line or None


for _family in PROBLEM_FAMILIES:
    register_task(ArithTask(f"arith-{_family}", (_family,)))
register_task(ArithTask("arith", PROBLEM_FAMILIES, "held-out problems of all six families, mixed evenly"))
for _dataset, _config in RG_CONFIGS.items():
    register_task(RGTask(_dataset, _config))
register_task(MathBoxedTask("math-boxed", PROBLEM_FAMILIES,
                            "held-out arithmetic asking for \\boxed{}, verified with math_verify"))
register_task(KnowledgeTask())


if __name__ == "__main__":
    for _task in TASKS.values():
        _p = _task.prompts("train", 1)[0]
        print(f"== {_task.name}: {_task.description}\n{_p.text}[answer: {_p.answer}]\n")
