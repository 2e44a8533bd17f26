"""Command-line flags generated from the settings dataclasses: `shapedce eval` and `shapedce readiness`
offer one flag per field, with the field's docstring and default as help, and a flag left out keeps
the dataclass default, so the command line cannot drift from the dataclass.

    OMP_NUM_THREADS=1 PYTHONPATH=src python -m pytest tests/test_flags.py -q
"""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from shapedce.cli import build_parser
from shapedce.eval.settings import EvalSettings
from shapedce.flags import add_flags, field_docs, flag, flag_values
from shapedce.readiness.settings import ReadinessSettings


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize("command, cls", [("eval", EvalSettings), ("readiness", ReadinessSettings)])
def test_every_field_is_a_flag_with_its_docstring_and_default(command, cls):
    actions = {a.dest: a for a in _subparser(command)._actions}
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        action = actions[f.name]
        assert action.option_strings == [flag(f.name)]
        assert action.default is None  # left out: the dataclass default applies
        assert docs[f.name] and action.help.startswith(docs[f.name].replace("%", "%%"))
        shown = repr(f.default) if isinstance(f.default, str) else str(f.default)
        assert action.help.endswith(f"(default: {shown})")


@pytest.mark.parametrize("command, cls", [("eval", EvalSettings), ("readiness", ReadinessSettings)])
def test_flags_left_out_keep_the_defaults_and_given_ones_are_typed(command, cls):
    parser = _subparser(command)
    extra = ["--out", "o"] if command == "readiness" else []
    assert cls(**flag_values(cls, parser.parse_args(["m", *extra]))) == cls()
    args = parser.parse_args(["m", *extra, "--samples", "3", "--temperature", "0.5", "--tasks", "logic"])
    values = flag_values(cls, args)
    assert values == {"samples": 3, "temperature": 0.5, "tasks": "logic"}
    assert type(values["samples"]) is int and type(values["temperature"]) is float
    assert cls(**values) == dataclasses.replace(cls(), samples=3, temperature=0.5, tasks="logic")


def test_help_text_comes_from_the_field_docstring():
    @dataclasses.dataclass(kw_only=True)
    class Demo:
        steps: int = 4
        """Optimizer steps: 100% of them."""
        name: str = "x"
        fast: bool = False
        """Skip  the
        slow parts."""

    parser = argparse.ArgumentParser()
    add_flags(parser, Demo, skip=("name",))
    actions = {a.dest: a for a in parser._actions}
    assert "name" not in actions
    assert actions["steps"].help == "Optimizer steps: 100%% of them. (default: 4)"
    assert actions["fast"].help == "Skip the slow parts. (default: False)"  # whitespace folded
    assert flag_values(Demo, parser.parse_args(["--no-fast", "--steps", "7"])) == {"steps": 7, "fast": False}
    assert "100% of them" in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["--steps", "x"])


def test_a_field_of_an_unsupported_type_is_refused():
    @dataclasses.dataclass
    class Bad:
        ks: list = dataclasses.field(default_factory=list)

    with pytest.raises(TypeError, match="Bad.ks"):
        add_flags(argparse.ArgumentParser(), Bad)


def test_eval_and_readiness_commands_build_their_settings_from_the_flags(monkeypatch, tmp_path):
    import shapedce.eval.run as run
    import shapedce.readiness as readiness
    from shapedce.cli import main

    seen = {}
    monkeypatch.setattr(run, "evaluate", lambda path, settings, out, device: seen.update(eval=settings) or {})
    monkeypatch.setattr(run, "markdown", lambda results: "")
    assert main(["eval", str(tmp_path), "--samples", "4", "--pass-k", "1,2"]) == 0
    assert seen["eval"] == EvalSettings(samples=4, pass_k="1,2")
    monkeypatch.setattr(
        readiness, "run_readiness", lambda path, out, settings, ref, cache: seen.update(r=settings) or "x"
    )
    assert main(["readiness", str(tmp_path), "--out", str(tmp_path / "r"), "--problems", "5"]) == 0
    assert seen["r"] == ReadinessSettings(problems=5)
