"""The package's import structure: data flows one way, no import cycles, the report loads no torch.

    python -m pytest -q tests/test_layers.py

Every `import` in a module (top-level or inside a function) is an edge; a module may import only
from its own layer or the layers below it (STYLE.md's order), and the module graph has no cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "shapedce"

LAYERS = [
    ["errors", "rundir"],  # imports nothing from the project
    # typed configs (the loss knobs are a config section), their flags and the YAML -> dataclass machinery
    ["config", "loss.config", "flags", "dataclass_io"],
    ["data"],
    ["models"],
    ["loss"],
    ["hf"],
    ["tasks"],
    ["eval"],
    ["train"],
    ["report"],  # reads run folders only
    ["readiness"],  # may compare against a reproduce grid read through report.load
    ["reproduce"],
    ["cli", "commands", "__main__", "__init__"],
]


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> int:
    best, depth = None, -1
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and prefix.count(".") > depth:
                best, depth = i, prefix.count(".")
    assert best is not None, f"module {module} is in no layer of tests/test_layers.py"
    return best


def imports_of(path: Path, module: str) -> set[str]:
    """Project modules imported anywhere in the file (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("shapedce."):
                target = node.module[len("shapedce.") :]
            else:
                continue
            names = [f"{target}.{a.name}" if target else a.name for a in node.names]
            for name in [target, *names]:
                if name and _exists(name):
                    found.add(name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("shapedce."):
                    found.add(alias.name[len("shapedce.") :])
    return {m for m in found if m != module}


def _exists(name: str) -> bool:
    path = SRC.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p, module_name(p)) for p in SRC.rglob("*.py")}


def test_no_module_imports_from_a_higher_layer():
    upward = []
    for module, targets in graph().items():
        for target in targets:
            if layer_of(target) > layer_of(module):
                upward.append(f"{module} -> {target}")
    assert not upward, "imports against the data flow:\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    g = graph()
    # a package's __init__ re-exports its modules: edges into a package mean its __init__
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in g.get(node, ()):
            if nxt.startswith(node + "."):  # a package importing its own modules is not a cycle
                continue
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_report_and_rundir_load_no_torch():
    code = (
        "import sys, shapedce.report, shapedce.report.render, shapedce.rundir; "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
