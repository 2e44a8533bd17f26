"""`shapedce eval` end to end on a tiny checkpoint, and its bad input."""

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
    args = ["eval", str(run_dir), "--tasks", "arith-add,rg-chain_sum", "--samples", "4", "--problems", "3",
            "--max-new-tokens", "16", "--temperature", "1.0"]
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
    assert text["ppl"] > 1 and 0 <= text["forking_share"] <= 1 and sum(text["entropy_hist"]["counts"]) == text["tokens"]
    assert (run_dir / "eval" / "results.md").read_text().startswith("Model:")


def fails(capsys, *args, needle: str) -> None:
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_unknown_task_lists_the_tasks(run_dir, capsys):
    fails(capsys, "eval", run_dir, "--tasks", "arith-add,nope", needle="arith-mul")


def test_k_above_samples_and_zero_samples(run_dir, capsys):
    fails(capsys, "eval", run_dir, "--samples", "4", "--pass-k", "1,8", needle="--pass-k 8 is outside [1, --samples=4]")
    fails(capsys, "eval", run_dir, "--samples", "0", needle="--samples must be >= 1")


def test_path_that_is_not_a_model(tmp_path, capsys):
    fails(capsys, "eval", tmp_path, needle="is not a model directory")


def test_tokenizer_without_a_pad_token(run_dir, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(run_dir / "final", model)
    cfg_path = model / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("pad_token", None)
    cfg_path.write_text(json.dumps(cfg))
    fails(capsys, "eval", model, "--samples", "2", "--problems", "1", needle="pad")
