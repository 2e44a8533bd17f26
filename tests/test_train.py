"""Pre-/mid-training through the CLI on the `smoke` preset: runs, learns, resumes exactly."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from conftest import kill, spawn_cli, wait_for
from shapedce.cli import main
from shapedce.models import get_rope_theta
from shapedce.train.lm import lr_factor
from shapedce.train.metrics import read_metrics

REQUIRED = {"stage", "step", "tokens", "split", "loss", "ce", "ppl", "entropy", "topk_mass", "tail_mass"}
TRAIN_ONLY = {"lr", "grad_norm", "tokens_per_s"}


def run_cli(*args: str) -> int:
    return main([str(a) for a in args])


def train_rows(run: Path) -> list[dict]:
    return [r for r in read_metrics(run / "metrics.jsonl") if r["split"] == "train"]


@pytest.mark.parametrize("flavor", ["tiny", "tiny-moe"])
def test_pretrain_then_midtrain_through_the_cli(tmp_path, flavor):
    pre, mid = tmp_path / "pre", tmp_path / "mid"
    assert (
        run_cli("pretrain", "--preset", "smoke", "--out", pre, f"model.flavor={flavor}", "loss=precision")
        == 0
    )
    rows = read_metrics(pre / "metrics.jsonl")
    assert {r["split"] for r in rows} == {"train", "val"}
    assert all(REQUIRED <= set(r) for r in rows)
    assert all(TRAIN_ONLY <= set(r) for r in rows if r["split"] == "train")
    assert [r["step"] for r in train_rows(pre)] == list(range(1, 7))
    model = AutoModelForCausalLM.from_pretrained(pre / "final")  # plain transformers, no project code
    assert type(model).__name__ == ("Qwen3MoeForCausalLM" if flavor == "tiny-moe" else "Qwen3ForCausalLM")
    assert (pre / "config.yaml").is_file() and (pre / "tokenizer" / "tokenizer.json").is_file()
    tok = AutoTokenizer.from_pretrained(pre / "final")
    gen = GenerationConfig.from_pretrained(pre / "final")  # generation_config.json: generate() stops at eos
    for name in ("eos_token_id", "bos_token_id", "pad_token_id"):
        assert getattr(model.config, name) == getattr(gen, name) == getattr(tok, name) is not None, name

    assert run_cli("midtrain", "--from", pre, "--out", mid) == 0
    mid_rows = train_rows(mid)
    assert {r["stage"] for r in mid_rows} == {"midtrain"}
    cfg = AutoModelForCausalLM.from_pretrained(mid / "final").config
    assert get_rope_theta(cfg) == 1e6
    text = (mid / "config.yaml").read_text()
    assert "seq_len: 128" in text and "beta: -0.25" in text  # 4 x 32, same loss as pre-training
    peak = 3e-3
    assert mid_rows[0]["lr"] == pytest.approx(peak * lr_factor(0, 4, 0, 1.0, 0.1))
    assert mid_rows[-1]["lr"] == pytest.approx(0.1 * peak)


def test_wsd_schedule_shape():
    lrs = [lr_factor(s, 100, 10, 0.2, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == 1.0 and lrs[50] == 1.0 and lrs[79] == 1.0
    assert lrs[-1] == pytest.approx(0.1) and all(a >= b for a, b in zip(lrs[80:], lrs[81:]))


def test_loss_falls_when_overfitting_one_batch():
    from shapedce.hf import patch_causal_lm
    from shapedce.models import build_model

    model = patch_causal_lm(build_model("tiny", seed=0), "precision")
    batch = torch.randint(0, 2048, (4, 33), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = model(input_ids=batch[:, :-1], shift_labels=batch[:, 1:]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]


def test_beta_orders_the_entropy_at_equal_steps(tmp_path):
    """On words drawn from a Zipf law (a skewed next-token distribution, where beta matters most),
    the same steps on the same data give entropy precision < CE < diversity at equal perplexity."""
    import random

    rng = random.Random(0)
    words = [
        a + b
        for a in ("ka", "lo", "mi", "ne", "su")
        for b in ("ta", "vo", "ri", "pe", "zu", "ga", "bo", "di")
    ]
    weights = [1 / (i + 1) for i in range(len(words))]
    corpus = tmp_path / "zipf.txt"
    corpus.write_text("".join(" ".join(rng.choices(words, weights, k=30)) + "\n\n" for _ in range(3000)))
    entropy, ce = {}, {}
    for name in ("precision", "ce", "diversity"):
        out = tmp_path / name
        assert (
            run_cli(
                "pretrain",
                "--preset",
                "smoke",
                "--out",
                out,
                f"loss={name}",
                f"data.corpus={corpus}",
                "data.val_docs=200",
                "train.steps=60",
                "train.val_every=60",
                "train.ckpt_every=60",
                "train.val_sequences=64",
                "optim.decay_fraction=0.5",
                "optim.final_lr_ratio=0",
            )
            == 0
        )
        val = [r for r in read_metrics(out / "metrics.jsonl") if r["split"] == "val"][-1]
        entropy[name], ce[name] = val["entropy"], val["ce"]
    assert entropy["precision"] < entropy["ce"] < entropy["diversity"], entropy
    assert max(ce.values()) < 1.01 * min(ce.values()), ce


def _comparable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]


def test_sigkill_then_resume_gives_the_same_loss_curve(tmp_path):
    common = ("train.ckpt_every=3", "train.val_every=3", "loss=tail")
    straight = tmp_path / "straight"
    assert run_cli("pretrain", "--preset", "smoke", "--out", straight, "train.steps=9", *common) == 0

    killed = tmp_path / "killed"
    proc = spawn_cli(
        "pretrain", "--preset", "smoke", "--out", killed, "train.steps=500", *common
    )  # outlives it
    wait_for(lambda: (killed / "checkpoints" / "step_0000003").is_dir(), proc)
    kill(proc)
    assert run_cli("pretrain", "--out", killed, "--resume", "train.steps=9") == 0
    assert _comparable(read_metrics(killed / "metrics.jsonl")) == _comparable(
        read_metrics(straight / "metrics.jsonl")
    )


def test_sigint_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    out = tmp_path / "run"
    proc = spawn_cli(
        "pretrain", "--preset", "smoke", "--out", out, "train.steps=500", "train.ckpt_every=1000"
    )
    wait_for(lambda: (out / "metrics.jsonl").is_file() and len(train_rows(out)) >= 2, proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    ckpts = sorted((out / "checkpoints").iterdir())
    assert len(ckpts) == 1 and ckpts[0].name.startswith("step_")
    step = int(ckpts[0].name.split("_")[1])
    assert step >= 2
    assert run_cli("pretrain", "--out", out, "--resume", f"train.steps={step + 1}") == 0
    assert [r["step"] for r in train_rows(out)] == list(range(1, step + 2))
