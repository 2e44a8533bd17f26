"""Command-line flags generated from a settings dataclass: its fields, types, defaults and docstrings.

    from shapedce.flags import add_flags, flag_values
    add_flags(parser, EvalSettings)                     # --tasks, --samples, --top-p, ... with help
    settings = EvalSettings(**flag_values(EvalSettings, parser.parse_args()))

The dataclass is the one source of every flag: the help text is the docstring under the field and
ends with the field's default, and a flag left out keeps that default (`flag_values` returns only
the flags given), so the command line can never drift from the dataclass. Used by `shapedce eval`
and `shapedce readiness`; python -m pytest tests/test_flags.py checks it.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import textwrap
from typing import Any, get_type_hints


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> the docstring written under it in the class body, on one line ("" if none)."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def flag(name: str) -> str:
    """The flag of a field: `max_new_tokens` -> `--max-new-tokens`."""
    return "--" + name.replace("_", "-")


def add_flags(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One flag per field of dataclass `cls` (but `skip`): its type, its docstring and default as help.

    Every flag defaults to None, so `flag_values` tells a flag given from one left at the default."""
    hints = get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        typ, default = hints[f.name], _default(f)
        shown = f"{default!r}" if isinstance(default, str) else f"{default}"
        text = f"{docs.get(f.name, '')} (default: {shown})".strip().replace("%", "%%")
        if typ is bool:
            parser.add_argument(flag(f.name), action=argparse.BooleanOptionalAction, default=None, help=text)
        elif typ in (int, float, str):
            metavar = {int: "N", float: "X", str: "TEXT"}[typ]
            parser.add_argument(flag(f.name), type=typ, default=None, metavar=metavar, help=text)
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: no flag for type {typ!r}")


def flag_values(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The fields of `cls` whose flags were given on the command line (the rest keep their defaults)."""
    return {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cls)
        if getattr(args, f.name, None) is not None
    }
