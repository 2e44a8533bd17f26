"""Write docs/reference/config-fields.md: every config field, its type, default and docstring.

    python scripts/gen_config_docs.py            # rewrite docs/reference/config-fields.md
    python scripts/gen_config_docs.py --check    # exit 1 if the committed page is out of date (CI, tests)

The field docstrings (the string literal under each field) are read from the source with `ast`;
types and defaults come from `dataclasses.fields`. Nothing is executed beyond importing the config
modules. tests/test_config_docs.py checks that the committed page equals this script's output.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import re
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "reference" / "config-fields.md"
sys.path.insert(0, str(ROOT / "src"))

from shapedce.config import RunConfig  # noqa: E402
from shapedce.report.plan import AnalysisPlan  # noqa: E402
from shapedce.reproduce.grid import GridConfig  # noqa: E402
from shapedce.train.rl_config import RLConfig  # noqa: E402

HEAD = """# Config reference

Every field of every config, generated from the dataclasses by `python scripts/gen_config_docs.py`
(do not edit by hand; `tests/test_config_docs.py` fails when this page is out of date). Set any
field on the command line as `key=value` over a preset (`train.steps=100`, `loss=precision`,
`loss.beta=-0.25`); the value is parsed as YAML. Unknown keys get a "did you mean", bad values a
one-line error naming the field and its allowed range. The resolved config is saved in the run
folder (`RUN/config.yaml`, `OUT/grid.yaml`) and `--resume` reads it back.
"""

SECTIONS = [
    (
        "Pre-training and mid-training: `shapedce pretrain`, `shapedce midtrain`",
        RunConfig,
        "",
        "Presets in `src/shapedce/presets/*.yaml` (`--preset smoke | tiny | small | paper`). "
        "`loss=NAME` sets the whole `loss` section to a named setting (`shapedce losses`).",
    ),
    (
        "RL: `shapedce rl`",
        RLConfig,
        "",
        "Presets in `src/shapedce/presets/rl/*.yaml` (`--preset smoke | tiny | long | paper`).",
    ),
    (
        "The grid: `shapedce reproduce`",
        GridConfig,
        "",
        "Presets in `src/shapedce/presets/reproduce/*.yaml` "
        "(`--preset smoke | tiny | study | small | paper`).",
    ),
    (
        "The analysis plan: `shapedce report DIR --plan FILE`",
        AnalysisPlan,
        "",
        "A YAML or JSON file of these fields, committed before the runs it judges "
        "(DIR/analysis-plan.yaml is read when no --plan is given); the rules are in "
        "[statistics](../method/statistics.md).",
    ),
]


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of the dataclass `cls`, read from its source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:] + [None]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            value = nxt.value if isinstance(nxt, ast.Expr) else None
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                docs[node.target.id] = inspect.cleandoc(value.value)
    return docs


def default_of(f: dataclasses.Field) -> object:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def links(text: str) -> str:
    """Docs paths in a docstring become links from this page (docs/method/loss.md -> ../method/loss.md)."""
    return re.sub(r"`?docs/((?:method|guides)/[\w-]+\.md)`?", r"[docs/\1](../\1)", text)


def cell(text: str) -> str:
    return links(" ".join(text.split()).replace("|", "\\|"))


def type_name(f: dataclasses.Field) -> str:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return kind.replace("|", "or")


def table(cls: type, prefix: str) -> list[str]:
    """Rows for the plain fields of `cls`, then one table per nested config section."""
    docs = field_docs(cls)
    rows, nested = [], []
    for f in dataclasses.fields(cls):
        value = default_of(f)
        if dataclasses.is_dataclass(value):
            nested.append((f.name, type(value)))
            continue
        rows.append(f"| `{prefix}{f.name}` | {type_name(f)} | `{value!r}` | {cell(docs.get(f.name, ''))} |")
    out = []
    if rows:
        out += ["| field | type | default | meaning |", "|---|---|---|---|", *rows, ""]
    for name, sub in nested:
        own = sub.__doc__ or ""
        doc = "" if own.startswith(sub.__name__ + "(") else inspect.cleandoc(own)  # not dataclass's default
        out += [f"### `{prefix}{name}` ({sub.__name__})", ""]
        if doc:
            out += [cell(doc), ""]
        out += table(sub, f"{prefix}{name}.")
    return out


def render() -> str:
    lines = [HEAD]
    for title, cls, prefix, note in SECTIONS:
        lines += [f"## {title}", "", note, ""]
        lines += table(cls, prefix)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed page differs")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != text:
            print(f"{PAGE.relative_to(ROOT)} is out of date: run python scripts/gen_config_docs.py")
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
