"""Bad input to pretrain / midtrain: one line on stderr, exit code 2, nothing written is lost."""

from __future__ import annotations

import pytest

from shapedce.cli import main
from shapedce.data.tokenizer import train_tokenizer


def fails(capsys, *args, needle: str) -> None:
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


@pytest.mark.parametrize(
    "override,needle",
    [
        ("train.stpes=3", "did you mean 'train.steps'"),
        ("train.steps=many", "train.steps must be of type int"),
        ("optim.lr=-1e-3", "optim.lr must be a finite number > 0"),
        ("loss=precise", "unknown loss setting 'precise'"),
        ("loss.beta=-2", "loss.beta must be a number >= -1"),
        ("train.micro_batch=3", "must be a multiple of train.micro_batch * data.seq_len"),
        ("midtrain.warmup_steps=-1", "midtrain.warmup_steps must be in [0, midtrain.steps)"),
    ],
)
def test_bad_config(tmp_path, capsys, override, needle):
    fails(capsys, "pretrain", "--preset", "smoke", "--out", tmp_path / "run", override, needle=needle)
    assert not (tmp_path / "run").exists()


def test_unknown_preset(tmp_path, capsys):
    fails(
        capsys,
        "pretrain",
        "--preset",
        "huge",
        "--out",
        tmp_path / "r",
        needle="unknown preset 'huge'; choose one of",
    )


def test_sequence_longer_than_the_model_allows(tmp_path, capsys):
    fails(
        capsys,
        "pretrain",
        "--preset",
        "smoke",
        "--out",
        tmp_path / "r",
        "model.max_position_embeddings=16",
        needle="data.seq_len (32) exceeds the model's max_position_embeddings (16)",
    )


@pytest.mark.parametrize(
    "content,needle", [(b"", "is empty"), (b"\n \n", "is empty"), (b"caf\xe9 au lait\n", "is not UTF-8")]
)
def test_bad_data_files(tmp_path, capsys, content, needle):
    path = tmp_path / "corpus.txt"
    path.write_bytes(content)
    fails(
        capsys, "pretrain", "--preset", "smoke", "--out", tmp_path / "r", f"data.corpus={path}", needle=needle
    )


def test_missing_data_path(tmp_path, capsys):
    fails(
        capsys,
        "pretrain",
        "--preset",
        "smoke",
        "--out",
        tmp_path / "r",
        f"data.corpus={tmp_path / 'nope.jsonl'}",
        needle="nope.jsonl",
    )


def test_tokenizer_larger_than_the_model_vocabulary(tmp_path, capsys):
    import random

    rng = random.Random(0)
    words = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))
        for _ in range(6000)
    ]
    tok = train_tokenizer([" ".join(words[i : i + 20]) for i in range(0, 6000, 20)] * 3, 4096)
    assert len(tok) > 2048
    tok.save_pretrained(tmp_path / "tok")
    fails(
        capsys,
        "pretrain",
        "--preset",
        "smoke",
        "--out",
        tmp_path / "r",
        f"data.tokenizer={tmp_path / 'tok'}",
        needle="2048",
    )


def test_resume_without_a_run_or_checkpoint(tmp_path, capsys):
    fails(capsys, "pretrain", "--out", tmp_path / "none", "--resume", needle="no run config at")
    # a run with a config but no checkpoint starts again: tests/test_trust.py


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["pretrain", "--preset", "smoke", "--out", str(out), "train.steps=3"]) == 0
    return out


def test_existing_run_is_not_overwritten(finished_run, capsys):
    before = (finished_run / "metrics.jsonl").read_text()
    fails(
        capsys, "pretrain", "--preset", "smoke", "--out", finished_run, needle="already holds a finished run"
    )
    assert (finished_run / "metrics.jsonl").read_text() == before


def test_corrupt_checkpoint(finished_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished_run, run)
    ckpt = sorted((run / "checkpoints").iterdir())[-1]
    (ckpt / "trainer_state.pt").write_bytes(b"not a checkpoint")
    fails(capsys, "pretrain", "--out", run, "--resume", needle="is corrupt")
    assert (run / "checkpoints" / f"corrupt-{ckpt.name}").is_dir()  # moved aside, never deleted
    shutil.copytree(finished_run / "checkpoints" / ckpt.name, ckpt)
    (ckpt / "trainer_state.pt").unlink()
    fails(capsys, "pretrain", "--out", run, "--resume", needle="is not a complete checkpoint")


def test_midtrain_from_a_directory_without_a_finished_run(tmp_path, capsys):
    fails(capsys, "midtrain", "--from", tmp_path, "--out", tmp_path / "mid", needle="no finished run there")


def test_midtrain_overrides_of_the_derivation_take_effect(tmp_path):
    # Regression: `midtrain.*` overrides were applied after the derivation, so
    # `midtrain.rope_theta=1e4` was saved in config.yaml but the model kept RoPE base 1e6.
    from shapedce.config import load_config
    from shapedce.train.lm import midtrain_config

    pre = load_config("smoke")
    cfg = midtrain_config(
        pre,
        tmp_path,
        [
            "midtrain.rope_theta=1e4",
            "midtrain.final_lr_ratio=1.0",
            "midtrain.seq_len_multiplier=2",
            "midtrain.warmup_steps=3",
            "midtrain.global_batch_tokens=1024",
        ],
    )
    assert cfg.train.global_batch_tokens == 1024
    assert cfg.optim.warmup_steps == 3 and cfg.optim.decay_fraction == 1.0
    assert cfg.model.rope_theta == 1e4 and cfg.midtrain.rope_theta == 1e4
    assert cfg.optim.final_lr_ratio == 1.0
    assert cfg.data.seq_len == 2 * pre.data.seq_len
    assert midtrain_config(pre, tmp_path, ["optim.final_lr_ratio=0.5"]).optim.final_lr_ratio == 0.5
    assert midtrain_config(pre, tmp_path).model.rope_theta == pre.midtrain.rope_theta
