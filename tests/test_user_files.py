"""Malformed user files through the command line: each one is one error line (exit 2), never a crash.

    python -m pytest -q tests/test_user_files.py

A fuzz-style table of broken .jsonl / .json / .parquet / .txt files (empty, bad UTF-8, wrong types,
missing fields, NaN, deep nesting, huge lines, lone surrogates, ...) goes through the three places a
user file enters: `eval --tasks file:F`, `eval --text F` and `pretrain data.corpus=F`. Each must exit
with 2, end stderr with one `shapedce CMD: error:` line naming the file (and the row and field where
there is one), and print no traceback. Issue 34 found a 20 KB .jsonl nested 10,000 deep killing
`shapedce eval` with SIGSEGV; the first case here is that file, run in a fresh process.
Also: chat templates with heavy loops are refused in bounded time (`tasks/chat.py`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shapedce.cli import main

DEEP = "[" * 10000 + "]" * 10000

# name -> (suffix, bytes, what the error line must contain besides the file name)
TASK_FILES: dict[str, tuple[str, bytes, str]] = {
    "empty": (".jsonl", b"", "holds no rows"),
    "blank lines": (".jsonl", b"\n \n\t\n", "holds no rows"),
    "bad utf-8": (".jsonl", b'{"problem": "caf\xe9", "answer": "1"}\n', "line 1: not UTF-8"),
    "truncated utf-8": (
        ".jsonl",
        b'{"problem": "a", "answer": "1"}\n{"problem": "\xe2\x82',
        "line 2: not UTF-8",
    ),
    "not json": (".jsonl", b"hello world\n", "line 1: not valid JSON"),
    "trailing garbage": (".jsonl", b'{"problem": "a", "answer": "1"} x\n', "line 1: not valid JSON"),
    "bom": (".jsonl", b'\xef\xbb\xbf{"problem": "a", "answer": "1"}\n', "line 1: not valid JSON"),
    "nul bytes": (".jsonl", b"\x00\x00\x00\n", "line 1: not valid JSON"),
    "array row": (".jsonl", b"[1, 2]\n", "line 1: a row must be a JSON object"),
    "null row": (".jsonl", b"null\n", "line 1: a row must be a JSON object"),
    "missing question": (
        ".jsonl",
        b'{"q": "a", "answer": "1"}\n',
        "no question field ('problem' or 'question')",
    ),
    "missing answer": (".jsonl", b'{"problem": "a"}\n', "no answer field 'answer'"),
    "missing in row 2": (
        ".jsonl",
        b'{"problem": "a", "answer": "1"}\n{"problem": "b"}\n',
        "line 2: has no field 'answer'",
    ),
    "list answer": (".jsonl", b'{"problem": "a", "answer": [1]}\n', "field 'answer' must be a string"),
    "dict question": (".jsonl", b'{"problem": {"x": 1}, "answer": "1"}\n', "field 'problem' must be"),
    "null answer": (".jsonl", b'{"problem": "a", "answer": null}\n', "field 'answer' must be"),
    "nan answer": (".jsonl", b'{"problem": "a", "answer": NaN}\n', "line 1: NaN is not a JSON value"),
    "infinity": (".jsonl", b'{"problem": "a", "answer": -Infinity}\n', "-Infinity is not a JSON value"),
    "empty answer": (".jsonl", b'{"problem": "a", "answer": "  "}\n', "field 'answer' is empty"),
    "deep other field": (
        ".jsonl",
        b'{"problem": "a", "answer": "1", "x": ' + DEEP.encode() + b"}\n",
        "nested deeper than",
    ),
    "deep answer": (".jsonl", b'{"problem": "a", "answer": ' + DEEP.encode() + b"}\n", "nested deeper than"),
    "deep object": (".jsonl", b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"\n", "nested deeper than"),
    "huge int": (".jsonl", b'{"problem": "a", "answer": ' + b"9" * 5000 + b"}\n", "line 1:"),
    "lone surrogate": (".jsonl", b'{"problem": "\\ud800", "answer": "1"}\n', "invalid character"),
    "huge line": (".jsonl", b'{"problem": "' + b"x" * 100_000 + b'", "answer": "1"}\n', "longer than"),
    "json not array": (
        ".json",
        b'[{"problem": "a", "answer": "1"}, 3]',
        "row 1: a row must be a JSON object",
    ),
    "json truncated": (".json", b'[{"problem": "a", "answer": "1"},', "not valid JSON"),
    "json deep": (".json", DEEP.encode(), "nested deeper than"),
    "parquet garbage": (".parquet", b"PAR1 this is not parquet", "not a readable parquet file"),
    "parquet empty": (".parquet", b"", "not a readable parquet file"),
}

CORPUS_FILES: dict[str, tuple[str, bytes, str]] = {
    "empty": (".jsonl", b"", "is empty"),
    "bad utf-8": (".jsonl", b'{"text": "caf\xe9"}\n', "line 1: not UTF-8"),
    "int text": (".jsonl", b'{"text": 5}\n', "line 1: field 'text' must be a string; got int"),
    "null text": (".jsonl", b'{"text": null}\n', "field 'text' must be a string; got None"),
    "nan text": (".jsonl", b'{"text": NaN}\n', "NaN is not a JSON value"),
    "missing field": (".jsonl", b'{"body": "x"}\n', "has no field 'text'; available fields: body"),
    "deep": (".jsonl", b'{"text": "a", "x": ' + DEEP.encode() + b"}\n", "nested deeper than"),
    "huge line": (".jsonl", b'{"text": "' + b"y" * 100_000 + b'"}\n', "line 1: longer than"),
    "txt bad utf-8": (".txt", b"caf\xe9 au lait\n", "not UTF-8 text"),
    "txt blank": (".txt", b"\n\n  \n", "is empty"),
    "parquet garbage": (".parquet", b"not parquet at all", "not a readable parquet file"),
}


@pytest.fixture(autouse=True)
def small_lines(monkeypatch):
    """Lines longer than 64 KB count as huge here, so "huge line" cases stay small files."""
    import shapedce.data.userjson as userjson

    monkeypatch.setattr(userjson, "MAX_LINE_BYTES", 1 << 16)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("userfiles") / "run"
    assert main(["pretrain", "--preset", "smoke", "--out", str(out), "train.steps=1"]) == 0
    return out / "final"


def error_line(capsys, args: list, needle: str, path: Path) -> str:
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert "Traceback" not in err and "internal error" not in err, err
    assert lines and lines[-1].startswith(f"shapedce {args[0]}: error: "), err
    assert [ln for ln in lines if "error" in ln.lower()] == [lines[-1]], err  # one error line
    assert str(path) in lines[-1] and needle in lines[-1], lines[-1]
    return lines[-1]


def write(tmp_path: Path, name: str, suffix: str, data: bytes) -> Path:
    path = tmp_path / (name.replace(" ", "_").replace("-", "_") + suffix)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", list(TASK_FILES))
def test_malformed_task_file_is_one_line(model, tmp_path, capsys, case):
    suffix, data, needle = TASK_FILES[case]
    path = write(tmp_path, case, suffix, data)
    args = [
        "eval",
        model,
        "--tasks",
        f"file:{path}",
        "--samples",
        "1",
        "--problems",
        "1",
        "--out",
        tmp_path / "e",
    ]
    error_line(capsys, args, needle, path)


@pytest.mark.parametrize("case", list(CORPUS_FILES))
def test_malformed_text_file_is_one_line_in_eval_and_pretrain(model, tmp_path, capsys, case):
    suffix, data, needle = CORPUS_FILES[case]
    path = write(tmp_path, case, suffix, data)
    args = ["eval", model, "--tasks", "arith-compare", "--samples", "1", "--problems", "1"]
    error_line(capsys, [*args, "--text", path, "--out", tmp_path / "e"], needle, path)
    pretrain = ["pretrain", "--preset", "smoke", "--out", tmp_path / "p", f"data.corpus={path}"]
    error_line(capsys, pretrain, needle, path)


def test_parquet_rows_with_bad_values_name_row_and_field(model, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "nested.parquet"
    pq.write_table(pa.table({"text": [[1, 2], [3]]}), path)
    args = ["eval", model, "--tasks", "arith-compare", "--samples", "1", "--problems", "1"]
    error_line(
        capsys, [*args, "--text", path, "--out", tmp_path / "e"], "field 'text' is a nested column", path
    )
    path = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"problem": ["a", None], "answer": ["1", "2"]}), path)
    task = [
        "eval",
        model,
        "--tasks",
        f"file:{path}",
        "--samples",
        "1",
        "--problems",
        "1",
        "--out",
        tmp_path / "e",
    ]
    error_line(capsys, task, "row 1: field 'problem' must be a string or a finite number; got None", path)


def test_good_files_still_read(tmp_path):
    from shapedce.data.packing import read_texts
    from shapedce.tasks import get_task

    rows = [{"problem": "1 + 1?", "answer": 2}, {"problem": "half?", "answer": 0.5}]
    (tmp_path / "t.json").write_text(json.dumps(rows))
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    for name in ("t.json", "t.jsonl"):
        prompts = get_task(f"file:{tmp_path / name}").prompts("test", 2)
        assert [p.answer for p in prompts] == ["2", "0.5"]
    (tmp_path / "c.jsonl").write_text('{"text": "a\\u00e9 \\ud83d\\ude00", "deep": [[[[1]]]]}\n')
    assert read_texts(tmp_path / "c.jsonl") == ["a\u00e9 \U0001f600"]


@pytest.mark.slow
def test_deep_jsonl_no_longer_kills_eval_in_a_fresh_process(model, tmp_path):
    """The issue's reproduction: before, SIGSEGV (exit -11) and no message."""
    path = tmp_path / "deep.jsonl"
    path.write_text(json.dumps({"problem": "1+1", "answer": "2"})[:-1] + ', "x": ' + DEEP + "}\n")
    src = str(Path(__file__).resolve().parent.parent / "src")
    proc = subprocess.run(
        [sys.executable, "-m", "shapedce", "eval", str(model), "--tasks", f"file:{path}", "--samples", "1"]
        + ["--problems", "1", "--out", str(tmp_path / "e")],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("shapedce eval: error: ")
    assert "nested deeper than 64 levels" in proc.stderr and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- chat templates


@pytest.mark.parametrize(
    "template, needle",
    [
        ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "longer than"),
        ("{{ 'x' * 10000000000 }}", "memory"),
        ("{{ raise_exception('template says no') }}", "template says no"),
        ("{% for m in messages %}{{ m['content'] }", "TemplateSyntaxError"),
    ],
)
def test_hostile_chat_templates_are_refused_in_bounded_time(model, template, needle):
    import time

    from shapedce.data.tokenizer import load_tokenizer
    from shapedce.errors import UserError
    from shapedce.tasks.chat import render_conversations

    tok = load_tokenizer(model)
    tok.chat_template = template
    start = time.monotonic()
    with pytest.raises(UserError, match=needle) as info:
        render_conversations(tok, [[{"role": "user", "content": "hi"}]] * 2, where=str(model), timeout_s=2)
    assert time.monotonic() - start < 30 and str(model) in str(info.value) and "\n" not in str(info.value)


def test_chat_template_rendered_in_the_child_equals_the_direct_one(model):
    from shapedce.data.tokenizer import load_tokenizer
    from shapedce.tasks.chat import render_conversations

    tok = load_tokenizer(model)
    convs = [[{"role": "user", "content": f"q{i} \u00e9"}] for i in range(5)]
    direct = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in convs]
    assert render_conversations(tok, convs) == direct and direct[0].endswith("assistant\n")


def test_run_folder_json_nested_past_the_parser_is_one_line_or_skipped(tmp_path):
    """Files a run folder holds (metrics rows, results, DCP metadata) nested 10,000 deep: a metrics
    row is skipped like a torn one; a results or metadata file is one UserError line."""
    from shapedce.errors import UserError
    from shapedce.report.load import _read_object
    from shapedce.rundir import read_jsonl
    from shapedce.train.checkpoint.dcp_metadata import read_metadata_json
    from shapedce.train.metrics import read_metrics

    rows = tmp_path / "metrics.jsonl"
    rows.write_text('{"step": 1}\n' + DEEP + "\n" + '{"step": 2}\n')
    assert read_jsonl(rows) == [{"step": 1}, {"step": 2}]
    assert [r["step"] for r in read_metrics(rows) if isinstance(r, dict)] == [1, 2]
    (tmp_path / "results.json").write_text(DEEP)
    with pytest.raises(UserError, match="results.json is not valid JSON"):
        _read_object(tmp_path / "results.json")
    (tmp_path / "dcp").mkdir()
    (tmp_path / "dcp" / "metadata.json").write_text(DEEP)
    with pytest.raises(UserError, match="metadata.json is corrupt"):
        read_metadata_json(tmp_path / "dcp")
