"""Our own tasks: arithmetic families, arithmetic with \\boxed{} answers, and recall of pre-training facts.

    from shapedce.tasks import get_task
    get_task("arith").prompts("test", 4)       # held-out problems of shapedce.data.problems ("train", "val")
    python -m shapedce.tasks                   # one prompt of every registered task

arith-*: held-out problems (`is_heldout`, 20 % of the problem space no built-in corpus contains);
the model continues "Problem: ...\\nSolution:\\n" and ends "The answer is N.".
math-boxed: the same problems asking for \\boxed{}; checked with math-verify (`mathcheck`).
knowledge: recall of facts the pretrain corpus states; seen in pre-training, so it measures memory.
"""

from __future__ import annotations

import contextlib
import functools
import random
import re
from collections.abc import Iterator
from fractions import Fraction

from ..data.corpus import fact_base, knowledge_probes
from ..data.problems import ALL_FAMILIES, generate_problem, is_heldout, small_prompts
from ..errors import UserError
from .base import Prompt, Task, _take, split_of
from .mathcheck import verify_math


class ArithTask(Task):
    """Our arithmetic families, held-out problems only (`is_heldout`), the family quotas mixed evenly."""

    def __init__(self, name: str, families: tuple[str, ...], description: str = ""):
        bad = [f for f in families if f not in ALL_FAMILIES]
        if not families or bad:
            raise UserError(
                f"families must be a non-empty subset of {', '.join(ALL_FAMILIES)}; got {families!r}"
            )
        self.name, self.families = name, tuple(families)
        self.description = description or f"held-out {'/'.join(families)} problems; ends 'The answer is N.'"

    def text(self, question: str) -> str:
        return f"Problem: {question}\nSolution:\n"  # = Problem.query

    @functools.cached_property
    def size(self) -> int | None:
        """Test prompts of a finite problem space (`small` alone: 180), else None (unbounded)."""
        if self.families != ("small",):
            return None
        return sum(is_heldout(q) and split_of(q) == "test" for q in small_prompts())

    def _draw(self, split: str, n: int, seed: int) -> list[Prompt]:
        k, seen, out = len(self.families), set(), []  # `seen` across families: chain can repeat add
        for i, family in enumerate(self.families):
            quota = n // k + (i < n % k)
            rng = random.Random(f"task:{family}:{split}:{seed}")

            def candidates(
                family: str = family, rng: random.Random = rng
            ) -> Iterator[tuple[str, str, str, dict]]:
                while True:
                    p = generate_problem(family, rng)
                    if is_heldout(p.prompt):
                        yield (
                            p.prompt,
                            self.text(p.prompt),
                            p.answer,
                            {"family": family, "solution": p.solution},
                        )

            out += _take(self.name, split, quota, candidates(), seen)
        if k > 1:
            random.Random(f"task:{self.name}:{split}:{seed}").shuffle(out)
        return out


class BoxedAnswers:
    """Answer handling for tasks asking for \\boxed{}: the last box, math-verify as the judge."""

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
        text = re.sub(r"\\[dt]?frac(\d)(\d)", r"\1/\2", text)  # \frac12
        text = re.sub(r"^[a-z]=", "", re.sub(r"\\left|\\right|\\!|\\,|\s|\$", "", text))
        if re.fullmatch(r"-?\d+(\.\d+)?(/-?\d+(\.\d+)?)?", text):  # a plain number or fraction
            with contextlib.suppress(ZeroDivisionError):
                return str(Fraction(*map(Fraction, text.split("/"))))
        return text

    def score(self, answer: str | None, prompt: Prompt) -> float:
        """math-verify's verdict, bounded in time in any thread (`mathcheck.verify_math`)."""
        return float(verify_math(prompt.answer, answer))


class MathBoxedTask(BoxedAnswers, ArithTask):
    """Held-out arithmetic asking for \\boxed{}; the last box is checked with math_verify."""

    def text(self, question: str) -> str:
        return f"Problem: {question} Put the final answer in \\boxed{{}}.\nSolution:\n"


class KnowledgeTask(Task):
    """Recall of facts the built-in pretrain corpus states, in its quiz format "Question: ...\\nAnswer:".

    Every fact was seen in pre-training: this measures memory of the training data (the train/val/test
    split only keeps RL prompts, tuning prompts and evaluation prompts apart). The answer is the first
    line of the completion."""

    name = "knowledge"
    description = "recall of facts seen in pre-training (the built-in corpus's quiz format): memory"

    @functools.cached_property
    def size(self) -> int:
        """Test prompts: the facts fall into a fixed train / test split."""
        return sum(split_of(text) == "test" for text, _ in knowledge_probes(0, len(fact_base(0))))

    def _draw(self, split: str, n: int, seed: int) -> list[Prompt]:
        probes = knowledge_probes(0, len(fact_base(0)))
        random.Random(f"task:knowledge:{split}:{seed}").shuffle(probes)
        return _take(self.name, split, n, ((text, text, answer, {}) for text, answer in probes))

    def extract(self, completion: str) -> str | None:
        line = completion.strip().split("\n", 1)[0].strip().rstrip(".").strip()
        return line or None
