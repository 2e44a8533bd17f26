"""`shapedce readiness`: on a checkpoint this project trained and on a foreign HF model, against a
hand-made reference grid (cached signals, correlations with n), the statistics, and bad input.

    python -m pytest tests/test_readiness.py -q        # ~30 s on 2 CPU cores
"""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from shapedce.cli import main
from shapedce.readiness.compare import pearson, permutation_p, ranks, spearman, verdict

SMALL = [
    "--tasks",
    "knowledge,arith-add",
    "--problems",
    "3",
    "--samples",
    "2",
    "--max-new-tokens",
    "8",
    "--text-tokens",
    "200",
]
FIGS = ("passk", "entropy", "coverage")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: one thread is fastest, and does not stall when the cores are shared."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models(tmp_path_factory, one_thread):
    """A smoke-trained run of ours, and a Llama with its own config, init and tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from shapedce.data.corpus import builtin_corpus
    from shapedce.data.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("readiness")
    assert main(["pretrain", "--preset", "smoke", "--out", str(root / "ours"), "train.steps=3"]) == 0
    foreign = {}
    for seed in (1, 2):
        tok = train_tokenizer(builtin_corpus("pretrain-v2", 200, seed=seed), vocab_size=300)
        cfg = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            initializer_range=0.05 * seed,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        import torch

        torch.manual_seed(seed)
        path = root / f"llama{seed}"
        LlamaForCausalLM(cfg).save_pretrained(path)
        tok.save_pretrained(path)
        foreign[seed] = path
    return root / "ours", foreign[1], foreign[2]


def _check_report(out, text_has=()):
    text = (out / "readiness.md").read_text()
    for fig in FIGS:
        assert (out / f"{fig}.png").read_bytes()[:4] == b"\x89PNG" and f"({fig}.png)" in text
    data = json.loads((out / "readiness.json").read_text())
    for task in ("knowledge", "arith-add"):
        t = data["signals"]["tasks"][task]
        assert (
            set(t["coverage"]) == {"1", "5", "20"}
            and t["coverage"]["1"] <= t["coverage"]["5"] <= t["coverage"]["20"]
        )
        assert set(t["pass_at_k"]) == {"1", "2"} and t["tokens"] > 0
    assert 0 <= data["signals"]["text"]["forking_share"] <= 1
    for phrase in text_has:
        assert phrase in text
    return text, data


def test_readiness_on_our_checkpoint_and_on_a_foreign_model(models, tmp_path):
    ours, llama, _ = models
    assert main(["readiness", str(ours), "--out", str(tmp_path / "a"), *SMALL]) == 0  # a run dir: uses final/
    _check_report(tmp_path / "a", ["Signals on knowledge", "No --reference given"])
    assert main(["readiness", str(llama), "--out", str(tmp_path / "b"), *SMALL]) == 0
    _, data = _check_report(tmp_path / "b")
    assert data["signals"]["model"] == str(llama)


def _reference_grid(root, models, gains):
    """A reproduce directory by hand: one run per (config, model) with midtrain/final and the
    midtrain / RL evaluations that define the RL gain."""
    root.mkdir()
    (root / "grid.yaml").write_text(
        yaml.safe_dump(
            {
                "configs": ",".join(gains),
                "models": "tiny",
                "seeds": 1,
                "eval_tasks": "knowledge,arith-add",
                "eval_samples": 2,
            }
        )
    )
    for (config, gain), model in zip(gains.items(), models):
        run = root / "runs" / "tiny" / config / "s0"
        shutil.copytree(model / "final" if (model / "final").is_dir() else model, run / "midtrain" / "final")
        (run / "rl").mkdir()
        (run / "rl" / "config.yaml").write_text("task: knowledge\n")
        for stage, avg in (("midtrain", 0.2), ("rl", 0.2 + gain)):
            (run / stage / "eval").mkdir(parents=True)
            (run / stage / "eval" / "results.json").write_text(
                json.dumps({"tasks": {"knowledge": {"avg_at_m": avg}}})
            )
    return root


def test_readiness_against_references_caches_and_correlates(models, tmp_path, monkeypatch):
    ours, llama1, llama2 = models
    grid = _reference_grid(
        tmp_path / "grid", [ours, llama1, llama2], {"ce": 0.05, "precision": 0.10, "diversity": -0.02}
    )
    out = tmp_path / "r"
    assert main(["readiness", str(llama1), "--out", str(out), "--reference", str(grid), *SMALL[2:]]) == 0
    text, data = _check_report(
        out,
        [
            "Closest reference prior",
            "| signal | n | Pearson r",
            "weak evidence",
            "ce/s0 +0.050",
            "precision/s0 +0.100",
        ],
    )
    assert (out / "predictors.png").is_file()
    assert {row["n"] for row in data["correlations"]} == {3}
    assert [r["config"] for r in data["references"]] == ["ce", "precision", "diversity"]
    caches = sorted(grid.glob("runs/tiny/*/s0/midtrain/readiness.json"))
    assert len(caches) == 3
    # a second report reuses every cached reference signal
    import shapedce.readiness.compare as compare

    monkeypatch.setattr(
        compare, "compute_signals", lambda *a, **k: pytest.fail("recomputed a cached reference")
    )
    assert (
        main(["readiness", str(llama1), "--out", str(tmp_path / "r2"), "--reference", str(grid), *SMALL[2:]])
        == 0
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["/nonexistent/model"], "is not a model directory"),
        (["MODEL", "--samples", "0"], "--samples must be >= 1"),
        (["MODEL", "--tasks", "nope"], "unknown task"),
        (["MODEL", "--reference", "/nonexistent/grid"], "not a reproduce directory"),
    ],
)
def test_bad_input_is_one_line(models, tmp_path, capsys, args, message):
    args = [str(models[1]) if a == "MODEL" else a for a in args]
    assert main(["readiness", *args, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_correlation_statistics():
    assert ranks([3.0, 1.0, 2.0, 2.0]) == [4.0, 1.0, 2.5, 2.5]
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 1, 1], [1, 2, 3]) is None
    assert spearman([1, 2, 3, 4], [1, 8, 27, 64]) == pytest.approx(1.0)  # monotone, not linear
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert permutation_p(spearman, x, [2.0, 3.0, 5.0, 7.0, 11.0]) == pytest.approx(2 / 120)  # exact at n = 5
    assert permutation_p(pearson, x, [1.0, -1.0, 1.0, -1.0, 1.0]) > 0.5
    assert verdict(0.95, 1.0, 0.01).startswith("predicted")
    assert verdict(0.8, 0.7, 0.15).startswith("weak lead")
    assert verdict(0.8, -0.7, 0.01) == "did not predict"  # Pearson and Spearman disagree in sign
    assert verdict(0.1, -0.2, 0.8) == "did not predict"
