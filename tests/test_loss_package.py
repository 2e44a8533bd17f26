"""The loss package's shape: no import cycle, no function-level imports, a torch-free config module,
and the public names of `shapedce.loss`.

    PYTHONPATH=src python -m pytest -q tests/test_loss_package.py      # CPU, < 5 s
"""

from __future__ import annotations

import ast
from pathlib import Path

import shapedce.loss as loss_pkg
from shapedce.loss import PRESETS, SETTINGS, LossConfig, ShapedLoss
from shapedce.loss import config as config_module

PACKAGE = Path(loss_pkg.__file__).parent
# each may import only earlier ones
ORDER = ["config", "rows", "chunks", "reference", "fused", "shaped", "control", "token_head"]


def parsed(name: str) -> ast.Module:
    return ast.parse((PACKAGE / f"{name}.py").read_text())


def test_every_module_is_listed_documented_and_small():
    names = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    assert names == sorted(ORDER)
    for name in ORDER + ["__init__"]:
        text = (PACKAGE / f"{name}.py").read_text()
        assert ast.get_docstring(ast.parse(text)), name
        assert len(text.splitlines()) < 400, name


def test_imports_go_one_way_and_only_at_module_level():
    for i, name in enumerate(ORDER):
        tree = parsed(name)
        top = set(id(node) for node in tree.body)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                assert id(node) in top, f"{name}.py line {node.lineno}: import inside a function or block"
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                target = node.module or node.names[0].name
                assert target in ORDER[:i], f"{name}.py imports .{target}, which is not below it"


def test_config_module_imports_no_torch():
    """config.py imports the standard library and shapedce.errors only (which imports nothing)."""
    for name, allowed in (("config", {"__future__", "math", "dataclasses", "typing", "..errors"}),):
        for node in parsed(name).body:
            if isinstance(node, ast.Import):
                assert {a.name.split(".")[0] for a in node.names} <= allowed, ast.dump(node)
            elif isinstance(node, ast.ImportFrom):
                assert "." * node.level + (node.module or "") in allowed, ast.dump(node)
    errors = ast.parse((PACKAGE.parent / "errors.py").read_text())
    assert all(n.module == "__future__" for n in errors.body if isinstance(n, ast.ImportFrom))
    assert all(a.name == "math" for n in errors.body if isinstance(n, ast.Import) for a in n.names)


def test_public_names_and_named_settings():
    for name in (
        "ShapedLoss",
        "PRESETS",
        "SETTINGS",
        "shaped_cross_entropy",
        "fused_linear_shaped_cross_entropy",
        "EntropyController",
        "STAT_NAMES",
    ):
        assert name in loss_pkg.__all__ and hasattr(loss_pkg, name)
    assert list(SETTINGS) == list(config_module.SETTINGS) and list(PRESETS) == list(config_module.PRESETS)
    for name, cfg in SETTINGS.items():
        assert isinstance(cfg, ShapedLoss) and cfg.settings() == config_module.SETTINGS[name].settings()
    assert isinstance(ShapedLoss.named("tail"), ShapedLoss) and type(LossConfig.named("tail")) is LossConfig
    assert ShapedLoss.named("precision").at_beta(0.5).beta == 0.5
