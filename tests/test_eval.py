"""`shapedce eval` end to end on a tiny checkpoint, and its bad input.

python -m pytest tests/test_eval.py -q       # CPU, ~2 min (trains a smoke model once)
"""

from __future__ import annotations

import json
import shutil

import pytest

from shapedce.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "run"
    assert main(["pretrain", "--preset", "smoke", "--out", str(out)]) == 0
    return out


def test_eval_writes_results_and_prints_the_table(run_dir, capsys):
    args = [
        "eval",
        str(run_dir),
        "--tasks",
        "arith-add,rg-chain_sum",
        "--samples",
        "4",
        "--problems",
        "3",
        "--max-new-tokens",
        "16",
        "--temperature",
        "1.0",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| arith-add |" in printed and "Avg@4" in printed and "Pass@4" in printed and "PPL" in printed
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    assert results["schema_version"] == 1
    assert set(results["tasks"]) == {"arith-add", "rg-chain_sum"}
    overall = results["overall"]
    assert overall["prompts"] == 6 and overall["samples"] == 4
    assert set(overall["pass_at_k"]) == {"1", "2", "4"}
    assert 0.0 <= overall["avg_at_m"] <= overall["pass_at_k"]["4"] <= 1.0
    assert overall["pass_at_k"]["1"] == pytest.approx(overall["avg_at_m"])
    assert 1 <= overall["response_length"]["max"] <= 16
    text = results["text"]
    assert (
        text["ppl"] > 1
        and 0 <= text["forking_share"] <= 1
        and sum(text["entropy_hist"]["counts"]) == text["tokens"]
    )
    assert (run_dir / "eval" / "results.md").read_text().startswith("Model:")


def fails(capsys, *args, needle: str) -> None:
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_unknown_task_lists_the_tasks(run_dir, capsys):
    fails(capsys, "eval", run_dir, "--tasks", "arith-add,nope", needle="arith-mul")


def test_k_above_samples_and_zero_samples(run_dir, capsys):
    fails(
        capsys,
        "eval",
        run_dir,
        "--samples",
        "4",
        "--pass-k",
        "1,8",
        needle="--pass-k 8 is outside [1, --samples=4]",
    )
    fails(capsys, "eval", run_dir, "--samples", "0", needle="--samples must be an integer >= 1")


def test_path_that_is_not_a_model(tmp_path, capsys):
    fails(capsys, "eval", tmp_path, needle="is not a model directory")


def test_tokenizer_without_a_pad_token(run_dir, tmp_path, capsys):
    """Evaluation pads with eos when the tokenizer has no pad (released models); with neither: refused."""
    model = tmp_path / "model"
    shutil.copytree(run_dir / "final", model)
    cfg_path = model / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("pad_token", None)
    cfg_path.write_text(json.dumps(cfg))
    assert main(["eval", str(model), "--samples", "2", "--problems", "1", "--max-new-tokens", "4"]) == 0
    cfg.pop("eos_token", None)
    cfg_path.write_text(json.dumps(cfg))
    capsys.readouterr()
    fails(capsys, "eval", model, "--samples", "2", "--problems", "1", needle="pad")


def test_eval_on_code_logic_and_a_user_file(run_dir, tmp_path, capsys):
    from test_tasks_files import write_math500

    spec = write_math500(tmp_path / "my.jsonl")
    out = tmp_path / "out"
    args = [
        "eval",
        str(run_dir),
        "--tasks",
        f"humaneval,logic,{spec}",
        "--samples",
        "4",
        "--problems",
        "4",
        "--max-new-tokens",
        "24",
        "--pass-k",
        "1,2,4",
        "--batch-size",
        "8",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| humaneval | 4 |" in printed and "| logic | 4 |" in printed and f"| {spec} | 3 |" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["overall"]["prompts"] == 11 and set(results["overall"]["pass_at_k"]) == {"1", "2", "4"}
    for name, r in results["tasks"].items():
        assert len(r["correct_per_prompt"]) == r["prompts"], name
        assert 0 <= r["avg_at_m"] <= r["pass_at_k"]["4"] <= 1, name


def test_model_with_nan_weights_is_refused_in_one_line(run_dir, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    model = tmp_path / "nan"
    shutil.copytree(run_dir / "final", model)
    weights = model / "model.safetensors"
    tensors = load_file(str(weights))
    name = next(k for k, v in tensors.items() if v.is_floating_point() and v.dim() == 2)
    tensors[name][0, 0] = float("nan")
    save_file(tensors, str(weights), metadata={"format": "pt"})
    assert main(["eval", str(model), "--samples", "2", "--problems", "1"]) == 2
    err = capsys.readouterr().err  # transformers' "Loading weights" bar may precede the error
    assert "Traceback" not in err and "IndexError" not in err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("shapedce eval:")]
    assert len(lines) == 1 and "non-finite values" in lines[0] and name in lines[0], err


def test_tasks_command_lists_one_line_each(capsys):
    assert main(["tasks"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = [line.split()[0] for line in lines]
    expected = {"arith", "knowledge", "logic", "humaneval", "math-boxed", "rg-<dataset>", "file:PATH"}
    assert expected <= set(names)
    assert len(names) == len(set(names))
    knowledge = next(line for line in lines if line.startswith("knowledge "))
    assert "pre-training" in knowledge and "held out" not in knowledge
    assert main(["tasks", "--rg"]) == 0
    rg = capsys.readouterr().out.split()
    assert "rg-knights_knaves" in rg and len(rg) > 100


def test_held_out_text_is_the_built_in_world_by_default():
    """World v1 is gone: the default held-out text is world v2's, for every model and every grid stage."""
    from shapedce.errors import UserError
    from shapedce.eval.run import EvalSettings
    from shapedce.eval.scoring import BUILTIN_TEXTS, default_text_docs
    from shapedce.reproduce.grid import eval_settings, load_grid

    assert EvalSettings().text == "builtin-v2" and set(BUILTIN_TEXTS) == {"builtin-v2"}
    v2 = default_text_docs(50)
    assert v2 == default_text_docs(50, "builtin-v2")
    assert sum(d.startswith(("The ", "A ", "When ", "There ")) for d in v2) > 10  # general text
    assert eval_settings(load_grid("tiny")).text == eval_settings(load_grid("smoke")).text == "builtin-v2"
    with pytest.raises(UserError, match="--text must be builtin-v2 or a local"):
        EvalSettings(text="").validate()
