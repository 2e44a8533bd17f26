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
Files are read by `data/userjson.py` (size- and depth-limited JSON, pyarrow for parquet), never executed
or unpickled; a malformed file is one line naming the file, row and field.
"""

from __future__ import annotations

import random
from pathlib import Path
from urllib.parse import parse_qsl

from ..data.userjson import read_rows, row_text
from ..errors import UserError
from .arith import BoxedAnswers
from .base import Prompt, Task, _uid
from .chat import render_conversations

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
            out, q = [], self.question_field
            for i, (where, row) in enumerate(read_rows(self.path, columns=self._columns())):
                if i == 0:
                    q = q or next((f for f in ("problem", "question") if f in row), None)
                    for field, label in ((q, "question"), (self.answer_field, "answer")):
                        if field not in row:
                            named = repr(field) if field else "('problem' or 'question')"
                            raise UserError(
                                f"task {self.name!r}: no {label} field {named} in {where}; its fields are "
                                f"{', '.join(map(str, row))} (choose with ?{label}=NAME)"
                            )
                question = row_text(row, q, where, numbers=True).strip()
                answer = row_text(row, self.answer_field, where, numbers=True).strip()
                answer = self.extract(answer) or answer
                if not question or not answer:
                    raise UserError(f"{where}: field {q if not question else self.answer_field!r} is empty")
                text = f"Problem: {question} Put the final answer in \\boxed{{}}.\nSolution:\n"
                meta = {"split": "test", "row": i, "chat": self.chat, "question": question}
                out.append(Prompt(self.name, text, answer, _uid(self.name, f"{i}:{text}"), meta))
            if not out:
                raise UserError(f"task {self.name!r}: {self.path} holds no rows")
            self._rows = out
        return self._rows

    def _columns(self) -> list[str]:
        """The parquet columns to read: the named fields, or the default question names present."""
        if self.path.suffix != ".parquet":
            return []
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(self.path).names
        except Exception:  # noqa: BLE001 - read_rows names the fault in one line
            names = []
        q = self.question_field or next((f for f in ("problem", "question") if f in names), "problem")
        return [q, self.answer_field]

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
    return render_chats([prompt], tokenizer)[0]


def render_chats(prompts: list[Prompt], tokenizer) -> list[str]:
    """`render_chat` of every prompt; the templates run in one time- and memory-bounded child
    process (`tasks/chat.py`), so a hostile template cannot hang the evaluation."""
    chat = [p for p in prompts if p.meta.get("chat")]
    if chat and not getattr(tokenizer, "chat_template", None):
        raise UserError(
            f"task {chat[0].task!r} asks for a chat template (?chat=1) but the tokenizer has none"
        )
    conversations = [
        [{"role": "user", "content": p.meta["question"] + " Put the final answer in \\boxed{}."}]
        for p in chat
    ]
    where = getattr(tokenizer, "name_or_path", "") or "the tokenizer"
    rendered = iter(render_conversations(tokenizer, conversations, where=where))
    return [next(rendered) if p.meta.get("chat") else p.text for p in prompts]
