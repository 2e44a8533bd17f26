"""`file:PATH`: the user's own benchmark from a local .jsonl / .json / .parquet file.

    shapedce eval runs/x --tasks file:data/math500.jsonl
    shapedce eval runs/x --tasks "file:data/my.parquet?question=problem&answer=solution&chat=1"
    python -m pytest tests/test_tasks_files.py -q     # CPU, ~10 s, on a generated MATH-500-shaped file

Each row gives a question (field `problem`, else `question`, or ?question=NAME) and an answer
(field `answer`, or ?answer=NAME; a solution holding \\boxed{...} gives its last box). The prompt
asks for the final answer in \\boxed{}; the last \\boxed{...} of the completion is checked against
the answer with math-verify (`mathcheck.verify_math`, time-bounded). `?chat=1` renders the prompt
with the checkpoint's chat template (for instruct models: `render_chat` at evaluation time).
Every row is a test prompt (there is no train split); seed 0 keeps the file's order, others shuffle.
Files are read with `datasets` (json / parquet builders), never executed or unpickled.
"""

from __future__ import annotations

import random
from pathlib import Path
from urllib.parse import parse_qsl

from ..errors import UserError, check_installed
from .arith import BoxedAnswers
from .base import Prompt, Task, _uid

SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
OPTIONS = ("question", "answer", "chat")


class FileTask(BoxedAnswers, Task):
    """Questions and answers of a local file, answers verified with math-verify."""

    def __init__(self, spec: str):
        path, _, query = spec.removeprefix("file:").partition("?")
        options = dict(parse_qsl(query, keep_blank_values=True))
        bad = sorted(set(options) - set(OPTIONS))
        if bad:
            raise UserError(f"task {spec!r}: unknown option {bad[0]!r}; allowed: {', '.join(OPTIONS)}")
        self.name, self.path = spec, Path(path).expanduser()
        self.question_field, self.answer_field = options.get("question"), options.get("answer", "answer")
        self.chat = options.get("chat", "0") not in ("0", "", "false")
        if self.path.suffix not in SUFFIXES or not self.path.is_file():
            raise UserError(f"task {spec!r}: {self.path} must be an existing {'/'.join(SUFFIXES)} file")
        self.description = f"{self.path.name}: questions and \\boxed answers checked with math-verify"
        self._rows: list[Prompt] | None = None

    @property
    def size(self) -> int:
        return len(self.rows())

    def rows(self) -> list[Prompt]:
        if self._rows is None:
            check_installed("datasets", "eval")
            from datasets import load_dataset

            data = load_dataset(SUFFIXES[self.path.suffix], data_files=str(self.path), split="train")
            names = data.column_names
            q = self.question_field or next((f for f in ("problem", "question") if f in names), None)
            for field, label in ((q, "question"), (self.answer_field, "answer")):
                if field not in data.column_names:
                    raise UserError(
                        f"task {self.name!r}: no {label} field {field!r} in {self.path}; "
                        f"its fields are "
                        f"{', '.join(data.column_names)} (choose with ?{label}=NAME)"
                    )
            out = []
            for i, row in enumerate(data):
                answer = str(row[self.answer_field]).strip()
                answer = self.extract(answer) or answer
                text = f"Problem: {str(row[q]).strip()} Put the final answer in \\boxed{{}}.\nSolution:\n"
                meta = {"split": "test", "row": i, "chat": self.chat, "question": str(row[q]).strip()}
                out.append(Prompt(self.name, text, answer, _uid(self.name, f"{i}:{text}"), meta))
            self._rows = out
        return self._rows

    def _draw(self, split: str, n: int, seed: int) -> list[Prompt]:
        rows = self.rows()
        if split != "test":
            raise UserError(
                f"task {self.name!r} is a test set (every row is a test prompt); got split {split!r}"
            )
        if n > len(rows):
            raise UserError(f"n={n} is more prompts than {self.path} has rows ({len(rows)})")
        order = list(rows)
        if seed:
            random.Random(f"task:file:{seed}").shuffle(order)
        return order[:n]


def render_chat(prompt: Prompt, tokenizer) -> str:
    """The prompt through the tokenizer's chat template when the task asked for it, else its text."""
    if not prompt.meta.get("chat"):
        return prompt.text
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"task {prompt.task!r} asks for a chat template (?chat=1) but the tokenizer has none")
    question = prompt.meta["question"] + " Put the final answer in \\boxed{}."
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
