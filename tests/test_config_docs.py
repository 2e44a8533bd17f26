"""The config reference (docs/reference/config-fields.md) is generated, current, and documents every field.

python -m pytest -q tests/test_config_docs.py
python scripts/gen_config_docs.py          # regenerate the page after changing a config
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("gen_config_docs", ROOT / "scripts" / "gen_config_docs.py")
gen = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gen)


def all_fields(cls, prefix=""):
    for f in dataclasses.fields(cls):
        value = gen.default_of(f)
        if dataclasses.is_dataclass(value):
            yield from all_fields(type(value), f"{prefix}{f.name}.")
        else:
            yield cls, f"{prefix}{f.name}", f.name


def test_committed_page_is_up_to_date():
    assert gen.main(["--check"]) == 0, "run: python scripts/gen_config_docs.py"


def test_every_field_is_on_the_page_with_its_docstring():
    page = gen.PAGE.read_text()
    missing = []
    for _, cls, _, _ in gen.SECTIONS:
        for owner, key, name in all_fields(cls):
            doc = gen.field_docs(owner).get(name, "")
            if not doc:
                missing.append(key)
            assert f"| `{key}` |" in page, key
    assert not missing, f"fields without a docstring: {missing}"


def test_field_docs_reads_the_string_under_each_field():
    @dataclasses.dataclass
    class Example:
        a: int = 1
        """First."""
        b: int = 2
        c: str = "x"
        """Third,
        on two lines."""

    assert gen.field_docs(Example) == {"a": "First.", "c": "Third,\non two lines."}
