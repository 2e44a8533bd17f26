"""The README keeps its promises: short, its Python examples run, its commands are the ones CI runs,
its links resolve, and neither it nor the docs cite a document outside the repository.

    python -m pytest -q tests/test_readme.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
# pages other helpers write; they are linked from the README and the nav before they land
OTHERS = {"docs/guides/scaling.md", "docs/guides/huggingface.md", "docs/guides/trust.md"}


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, re.S)


def test_readme_is_short():
    assert README.count("\n") <= 250


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_example_runs(index):
    code = blocks("python")[index]
    assert len([line for line in code.splitlines() if line.strip()]) <= 13, "a README example stays ~10 lines"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "loss" in out.stdout


def test_there_are_two_python_examples():
    assert len(blocks("python")) == 2


def test_quick_start_is_what_ci_runs():
    """One command sets up and runs `shapedce reproduce` (default preset), one sets up and runs the tests;
    .ci/run ends with the README's test command, verbatim."""
    lines = [line for block in blocks("bash") for line in block.splitlines()]
    commands = [line for line in lines if line.startswith("pip install")]
    main_job = [c for c in commands if c.endswith("shapedce reproduce")]
    tests = [c for c in commands if "pytest" in c]
    assert len(main_job) == 1 and len(tests) == 1
    for command in (main_job[0], tests[0]):
        assert command.startswith("pip install torch==2.13.0 && pip install -e ")
    assert '".[all]"' in main_job[0]
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == tests[0]


def test_local_links_resolve():
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [link for link in links if not link.startswith(("http://", "https://"))]
    assert local
    missing = [link for link in local if not (ROOT / link).exists() and link not in OTHERS]
    assert not missing


def test_readme_and_docs_cite_nothing_outside_the_repository():
    code = [
        p
        for folder in ("src", "tests", "benchmarks", "scripts", "examples")
        for p in sorted((ROOT / folder).rglob("*.py"))
        if p != Path(__file__).resolve()
    ]
    pages = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").rglob("*.md")), *code]
    outside = re.compile(r"\bSPEC\b|SPEC\.md|/work/")
    citing = [str(p.relative_to(ROOT)) for p in pages if outside.search(p.read_text())]
    assert not citing
