"""No model folder runs code: a hostile folder through every command that loads one, stdin answering yes.

    python -m pytest -q tests/test_pretrained.py

The hostile folder is a real model folder whose config.json / tokenizer_config.json asks transformers
for the folder's own `evil.py` (`auto_map`), an unknown `model_type` or a custom tokenizer class;
`evil.py` creates a marker file when imported. Before `shapedce.data.pretrained`, transformers asked
"Do you wish to run the custom code?" and `yes | shapedce eval DIR` ran it. Every command must end
with one error line naming the file and the key, and the marker must not exist.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shapedce.cli import main
from shapedce.data.pretrained import check_model_folder, load_auto_config
from shapedce.errors import UserError

EVIL = """import pathlib
pathlib.Path({marker!r}).write_text("ran")
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM
class EvilConfig(Qwen3Config):
    model_type = "evil"
class EvilModel(Qwen3ForCausalLM):
    config_class = EvilConfig
class EvilTok(PreTrainedTokenizerFast):
    pass
"""

POISONS = {
    # (file, edit, key named in the error)
    "auto_map+unknown type": (
        "config.json",
        {
            "model_type": "evil",
            "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"},
        },
        "auto_map",
    ),
    "auto_map+known type": ("config.json", {"auto_map": {"AutoModelForCausalLM": "evil.M"}}, "auto_map"),
    "tokenizer auto_map": (
        "tokenizer_config.json",
        {"auto_map": {"AutoTokenizer": [None, "evil.EvilTok"]}},
        "auto_map",
    ),
    "unknown model_type": ("config.json", {"model_type": "evil"}, "model_type"),
    "custom tokenizer_class": ("tokenizer_config.json", {"tokenizer_class": "EvilTok"}, "tokenizer_class"),
    "custom pipeline": ("config.json", {"custom_pipelines": {"x": {"impl": "evil.P"}}}, "custom_pipelines"),
    "hub kernel": ("config.json", {"_attn_implementation": "kernels-community/evil"}, "_attn_implementation"),
}


def poison(folder: Path, kind: str, marker: Path) -> None:
    """Make the model folder `folder` hostile in the way `kind` names."""
    file, edit, _ = POISONS[kind]
    (folder / "evil.py").write_text(EVIL.format(marker=str(marker)))
    data = json.loads((folder / file).read_text())
    data.update(edit)
    (folder / file).write_text(json.dumps(data))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A 2-step smoke pre-training run (checkpoints at steps 1 and 2) and a 2-step RL run from it."""
    root = tmp_path_factory.mktemp("pretrained")
    pre = root / "pre"
    steps = ["train.steps=2", "train.ckpt_every=1"]
    assert main(["pretrain", "--preset", "smoke", "--out", str(pre), *steps]) == 0
    rl = root / "rl"
    assert main(["rl", "--from", str(pre), "--out", str(rl), "--preset", "smoke"]) == 0
    return {"pre": pre, "rl": rl}


@pytest.fixture
def yes_stdin(monkeypatch):
    """stdin answering "y" to any prompt (transformers' remote-code question reads input())."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 1000))
    monkeypatch.setenv("HF_MODULES_CACHE", str(Path(os.environ.get("TMPDIR", "/tmp")) / "shapedce-modules"))


def _command(entry: str, runs: dict[str, Path], tmp_path: Path) -> tuple[list[str], list[Path]]:
    """(the command line, the model folders it loads) for one entry point, on copies of the runs."""
    pre, rl = tmp_path / "pre", tmp_path / "rl"
    shutil.copytree(runs["pre"], pre)
    if entry == "eval":
        args = ["eval", pre / "final", "--tasks", "arith-compare", "--samples", "1", "--problems", "1"]
        return [*args, "--out", tmp_path / "e"], [pre / "final"]
    if entry == "readiness":
        return ["readiness", pre / "final", "--out", tmp_path / "d"], [pre / "final"]
    if entry == "midtrain --from":
        return ["midtrain", "--from", pre, "--out", tmp_path / "mid", "midtrain.steps=1"], [pre / "final"]
    if entry == "rl --from":
        return ["rl", "--from", pre, "--out", tmp_path / "r", "--preset", "smoke"], [pre / "final"]
    if entry == "pretrain --resume":
        shutil.rmtree(pre / "final")  # a stopped run: resumes from its newest checkpoint
        return ["pretrain", "--out", pre, "--resume", "train.steps=3"], sorted(pre.glob("checkpoints/step_*"))
    shutil.copytree(runs["rl"], rl)
    shutil.rmtree(rl / "final")
    return ["rl", "--from", pre, "--out", rl, "--resume", "--preset", "smoke", "steps=3"], sorted(
        rl.glob("checkpoints/step_*")
    )


ENTRIES = ["eval", "readiness", "midtrain --from", "rl --from", "pretrain --resume", "rl --resume"]


@pytest.mark.parametrize("kind", ["auto_map+unknown type", "tokenizer auto_map"])
@pytest.mark.parametrize("entry", ENTRIES)
def test_no_command_runs_a_model_folders_code(runs, tmp_path, capsys, yes_stdin, entry, kind):
    marker = tmp_path / "PWNED"
    args, folders = _command(entry, runs, tmp_path)
    for folder in folders:
        poison(folder, kind, marker)
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    line = err.splitlines()[-1]
    file, _, key = POISONS[kind]
    assert line.startswith(f"shapedce {args[0]}: error: ") and file in line and f"'{key}'" in line, err
    assert not marker.exists()


@pytest.mark.parametrize("kind", list(POISONS))
def test_every_hostile_setting_is_refused_with_the_file_and_key(runs, tmp_path, yes_stdin, kind):
    folder = tmp_path / "model"
    shutil.copytree(runs["pre"] / "final", folder)
    marker = tmp_path / "PWNED"
    poison(folder, kind, marker)
    file, _, key = POISONS[kind]
    with pytest.raises(UserError) as info:
        check_model_folder(folder)
    assert str(folder / file) in str(info.value) and f"'{key}'" in str(info.value)
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_nested_auto_map_and_malformed_settings_are_one_line(runs, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(runs["pre"] / "final", folder)
    data = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**data, "text_config": {"auto_map": {"x": "evil.X"}}}))
    with pytest.raises(UserError, match="'text_config.auto_map'"):
        check_model_folder(folder)
    (folder / "config.json").write_text("[" * 10000 + "]" * 10000)  # deeper than any parser's stack
    with pytest.raises(UserError, match="config.json: values nested deeper than"):
        load_auto_config(folder)
    (folder / "config.json").write_bytes(b'{"model_type": "qwen3\xff"}')
    with pytest.raises(UserError, match="config.json: not UTF-8"):
        load_auto_config(folder)
    with pytest.raises(UserError, match="not a local model folder"):
        load_auto_config("Qwen/Qwen3-0.6B")  # a hub name is never fetched


def test_an_intact_folder_still_loads(runs):
    from shapedce.data.pretrained import load_auto_tokenizer, load_causal_lm

    final = runs["pre"] / "final"
    assert check_model_folder(final) == final
    model = load_causal_lm(final)
    tok = load_auto_tokenizer(final)
    assert model.config.model_type == "qwen3" and tok.pad_token is not None


@pytest.mark.slow
def test_yes_piped_into_the_real_command(runs, tmp_path):
    """The issue's reproduction, literally: `yes | shapedce eval HOSTILE_DIR` in a fresh process."""
    folder = tmp_path / "model"
    shutil.copytree(runs["pre"] / "final", folder)
    marker = tmp_path / "PWNED"
    poison(folder, "auto_map+unknown type", marker)
    src = str(Path(__file__).resolve().parent.parent / "src")
    env = {**os.environ, "PYTHONPATH": src, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    proc = subprocess.run(
        [sys.executable, "-m", "shapedce", "eval", str(folder), "--tasks", "arith-compare", "--samples", "1"]
        + ["--problems", "1", "--out", str(tmp_path / "e")],
        input="yes\n" * 1000,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("shapedce")]
    assert len(lines) == 1 and "'auto_map'" in lines[0] and "Traceback" not in proc.stderr
    assert not marker.exists()


def test_every_from_pretrained_goes_through_the_checked_loader():
    """A static guard: no module but data/pretrained.py calls from_pretrained / from_config or names
    AutoTokenizer / AutoConfig, so a new loader cannot bypass the folder check."""
    import ast

    src = Path(__file__).resolve().parent.parent / "src" / "shapedce"
    found = []
    for path in src.rglob("*.py"):
        if path == src / "data" / "pretrained.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("from_pretrained", "from_config"):
                found.append(f"{path.relative_to(src)}:{node.lineno} .{node.attr}")
            if isinstance(node, ast.alias) and node.name in (
                "AutoTokenizer",
                "AutoConfig",
                "GenerationConfig",
            ):
                found.append(f"{path.relative_to(src)}:{node.name}")
    assert not found, "loaders outside shapedce.data.pretrained:\n" + "\n".join(found)
