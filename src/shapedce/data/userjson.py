"""Files the user gives (.jsonl / .json / .parquet rows, JSON settings), parsed with size and depth limits.

    from shapedce.data.userjson import read_rows, row_text
    for where, row in read_rows("data/math500.jsonl"):        # where = "data/math500.jsonl line 3"
        question = row_text(row, "problem", where)              # UserError: "... line 3: field ..."

    python -m pytest -q tests/test_user_files.py                # the malformed-file fuzz suite

Why not `datasets` / pyarrow: pyarrow's JSON reader dies with SIGSEGV on a row nested 10,000 deep
(20 KB), and its errors name no row. Here every fault is one `UserError` line naming the file, the
row (or line) and the field:
  - bytes must be UTF-8 (the offset of the first bad byte is named);
  - a .jsonl line is at most `MAX_LINE_BYTES`; a whole .json file at most `MAX_JSON_BYTES`;
  - values nest at most `MAX_DEPTH` deep (the C parser's own recursion guard is caught too);
  - NaN and Infinity are refused in data rows (they are not JSON, and a NaN answer matches nothing);
  - each row must be an object; `row_text` wants a string (or a finite number / bool, as text).
Parquet is read with pyarrow, only the columns asked for, and a nested column is refused.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import UserError

MAX_DEPTH = 64
"""Deepest nesting of lists/objects accepted in one value (real data rows use 2-4)."""
MAX_LINE_BYTES = 64 << 20
"""Longest .jsonl line (one document or row)."""
MAX_JSON_BYTES = 512 << 20
"""Largest .json file parsed whole (a JSON array); bigger data should be .jsonl, read line by line."""


def _depth_ok(value: Any, limit: int = MAX_DEPTH) -> bool:
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > limit:
                return False
            items = node.values() if isinstance(node, dict) else node
            stack.extend((item, depth + 1) for item in items if isinstance(item, (dict, list)))
    return True


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def parse_json_bytes(data: bytes, where: str, allow_nan: bool = True) -> Any:
    """`data` as JSON, or one UserError line starting with `where` (bad UTF-8, syntax, too deep, NaN)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{where}: not UTF-8 text (bad byte at offset {err.start})") from None
    try:
        value = json.loads(text) if allow_nan else json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise UserError(f"{where}: values nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as err:
        at = f"line {err.lineno} column {err.colno}"
        raise UserError(f"{where}: not valid JSON ({err.msg} at {at})") from None
    except ValueError as err:  # a NaN / Infinity constant when they are refused
        raise UserError(f"{where}: {err}") from None
    if not _depth_ok(value):
        raise UserError(f"{where}: values nested deeper than {MAX_DEPTH} levels")
    return value


def _as_row(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UserError(f"{where}: a row must be a JSON object {{...}}; got {type(value).__name__}")
    return value


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with open(path, "rb") as f:
        number = 0
        while True:
            line = f.readline(MAX_LINE_BYTES + 1)
            if not line:
                return
            number += 1
            if len(line) > MAX_LINE_BYTES:
                raise UserError(f"{path} line {number}: longer than {MAX_LINE_BYTES} bytes")
            if not line.strip():
                continue
            where = f"{path} line {number}"
            yield where, _as_row(parse_json_bytes(line, where, allow_nan=False), where)


def _json_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise UserError(f"{path}: {size} bytes is more than {MAX_JSON_BYTES} for a .json file; use .jsonl")
    data = path.read_bytes()
    if data.lstrip()[:1] != b"[":  # JSON lines in a .json file
        yield from _jsonl_rows(path)
        return
    value = parse_json_bytes(data, str(path), allow_nan=False)
    for i, row in enumerate(value):
        yield f"{path} row {i}", _as_row(row, f"{path} row {i}")


def _parquet_rows(path: Path, columns: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as err:
        raise UserError(f"{path}: not a readable parquet file ({_first_line(err)})") from None
    names = list(schema.names)
    for name in columns:
        if name not in names:
            raise UserError(f"{path} has no field {name!r}; available fields: {', '.join(names) or 'none'}")
        typ = schema.field(name).type
        if pa.types.is_nested(typ):
            raise UserError(f"{path}: field {name!r} is a nested column ({typ}); it must hold text")
    try:
        table = pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as err:
        raise UserError(f"{path}: not a readable parquet file ({_first_line(err)})") from None
    for i, row in enumerate(table.to_pylist()):
        yield f"{path} row {i}", row


def read_rows(path: str | Path, columns: list[str] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, row) for every row of a .jsonl, .json or .parquet file; `where` names file and row.

    `columns` (parquet) limits what is read; JSON rows are whole objects."""
    path = Path(path)
    suffix = path.suffix
    readers = {
        ".parquet": lambda: _parquet_rows(path, list(columns or [])),
        ".json": lambda: _json_rows(path),
    }
    reader = readers.get(suffix, lambda: _jsonl_rows(path))
    if suffix not in (".parquet", ".json", ".jsonl"):
        raise UserError(f"{path}: unsupported suffix {suffix!r}; allowed: .jsonl, .json, .parquet")
    try:
        yield from reader()
    except OSError as err:  # unreadable, a directory, vanished while read
        raise UserError(f"cannot read {path}: {err.strerror or err}") from None


def row_text(row: dict[str, Any], field: str, where: str, numbers: bool = False) -> str:
    """The row's `field` as text: a string (or, with `numbers`, a finite number or bool written out)."""
    if field not in row:
        known = ", ".join(map(str, row)) or "none"
        raise UserError(f"{where}: has no field {field!r}; available fields: {known}")
    value = row[field]
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:  # a lone surrogate such as "\\ud800"
            raise UserError(f"{where}: field {field!r} holds an invalid character at {err.start}") from None
        return value
    if numbers and isinstance(value, (int, float)) and math.isfinite(value):
        return str(value)
    kind = "a string or a finite number" if numbers else "a string"
    shown = repr(value) if isinstance(value, float) or value is None else type(value).__name__
    raise UserError(f"{where}: field {field!r} must be {kind}; got {shown}")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
