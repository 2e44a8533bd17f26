"""`file:PATH`: the user's own benchmark from a generated MATH-500-shaped .jsonl / .parquet file.

python -m pytest tests/test_tasks_files.py -q     # CPU, ~15 s
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("math_verify")

from shapedce.errors import UserError  # noqa: E402
from shapedce.tasks import TASKS, get_task, render_chat  # noqa: E402

ROWS = [  # MATH-500's fields: problem, solution, answer, subject, level, unique_id
    {
        "problem": "What is $\\frac{1}{2} + \\frac{1}{4}$?",
        "solution": "Add: $\\boxed{\\frac{3}{4}}$.",
        "answer": "\\frac{3}{4}",
        "subject": "Prealgebra",
        "level": 1,
        "unique_id": "test/prealgebra/1.json",
    },
    {
        "problem": "Compute $7 \\cdot 6$.",
        "solution": "$7 \\cdot 6 = \\boxed{42}$.",
        "answer": "42",
        "subject": "Prealgebra",
        "level": 1,
        "unique_id": "test/prealgebra/2.json",
    },
    {
        "problem": "Solve $2x + 3 = 7$.",
        "solution": "So $x = \\boxed{2}$.",
        "answer": "2",
        "subject": "Algebra",
        "level": 2,
        "unique_id": "test/algebra/3.json",
    },
]


def write_math500(path) -> str:
    """A MATH-500-shaped file: .jsonl by hand, .parquet through datasets."""
    if str(path).endswith(".jsonl"):
        path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    else:
        from datasets import Dataset

        Dataset.from_list(ROWS).to_parquet(str(path))
    return f"file:{path}"


@pytest.fixture(autouse=True)
def forget_file_tasks():
    yield
    for name in [n for n in TASKS if n.startswith("file:")]:
        del TASKS[name]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_file_task_reads_and_verifies(tmp_path, suffix):
    task = get_task(write_math500(tmp_path / f"math500{suffix}"))
    prompts = task.prompts("test", 3)
    assert task.size == 3 and [p.answer for p in prompts] == ["\\frac{3}{4}", "42", "2"]
    assert prompts[0].text == (
        "Problem: What is $\\frac{1}{2} + \\frac{1}{4}$? Put the final answer in \\boxed{}.\nSolution:\n"
    )
    assert task.reward("so \\boxed{0.75}", prompts[0]) == 1.0  # math-verify: 0.75 = 3/4
    assert task.reward("\\boxed{\\dfrac{3}{4}}", prompts[0]) == 1.0
    assert task.reward("\\boxed{4/3}", prompts[0]) == 0.0
    assert task.grade("x = \\boxed{2}", prompts[2]) == ("2", True)
    shuffled = task.prompts("test", 3, seed=1)
    assert shuffled != prompts and {p.uid for p in shuffled} == {p.uid for p in prompts}


def test_field_names_override_and_solution_boxes(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps({"q": r["problem"], "sol": r["solution"]}) + "\n" for r in ROWS))
    task = get_task(f"file:{path}?question=q&answer=sol")
    p = task.prompts("test", 2)[1]
    assert p.answer == "42" and task.reward("\\boxed{42}", p) == 1.0


def test_bad_files_and_fields_are_one_line(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"q": "1 + 1?", "a": "2"}) + "\n")
    for spec, needle in [
        (f"file:{tmp_path}/nope.jsonl", "must be an existing"),
        (f"file:{tmp_path}/x.csv", "must be an existing"),
        (f"file:{path}?colour=red", "unknown option 'colour'"),
    ]:
        with pytest.raises(UserError, match=needle) as excinfo:
            get_task(spec)
        assert "\n" not in str(excinfo.value)
    with pytest.raises(UserError, match="no question field") as excinfo:
        get_task(f"file:{path}").prompts("test", 1)
    assert "q, a" in str(excinfo.value)
    with pytest.raises(UserError, match="is a test set"):
        get_task(f"file:{path}?question=q&answer=a").prompts("train", 1)
    with pytest.raises(UserError, match="rows"):
        get_task(f"file:{path}?question=q&answer=a").prompts("test", 2)


def test_chat_template(tmp_path):
    class Tok:
        chat_template = "{{ messages }}"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            assert not tokenize and add_generation_prompt
            return f"<user>{messages[0]['content']}</user><assistant>"

    task = get_task(write_math500(tmp_path / "m.jsonl") + "?chat=1")
    p = task.prompts("test", 1)[0]
    assert render_chat(p, Tok()) == (
        "<user>What is $\\frac{1}{2} + \\frac{1}{4}$? Put the final answer in \\boxed{}.</user><assistant>"
    )
    plain = get_task(write_math500(tmp_path / "n.jsonl")).prompts("test", 1)[0]
    assert render_chat(plain, Tok()) == plain.text
    Tok.chat_template = None
    with pytest.raises(UserError, match="the tokenizer has none"):
        render_chat(p, Tok())
