"""Untrusted and broken run state: crafted checkpoints never run code, NaN stops a run, no folder gets stuck.

    python -m pytest -q tests/test_trust.py

Each test is one reproduction of issue 13 (smoke preset) and the recovery or one-line error it must give.
"""

from __future__ import annotations

import os
import pickle
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from conftest import kill, spawn_cli, wait_for
from shapedce.cli import main
from shapedce.train.metrics import read_metrics

MARKER_NAME = "PWNED"


class Payload:
    """Unpickling this runs `touch MARKER`: what a crafted checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def fails(capsys, *args, needle: str, rc: int = 2) -> str:
    assert main([str(a) for a in args]) == rc
    err = capsys.readouterr().err.strip()
    assert needle in err, err
    assert "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def run3(tmp_path_factory) -> Path:
    """A finished 4-step smoke run with checkpoints at steps 2 and 4."""
    out = tmp_path_factory.mktemp("trust") / "run"
    assert (
        main(
            [
                "pretrain",
                "--preset",
                "smoke",
                "--out",
                str(out),
                "train.steps=4",
                "train.ckpt_every=2",
                "train.keep_last=3",
            ]
        )
        == 0
    )
    return out


def copy_run(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(run, dst)
    shutil.rmtree(dst / "final")
    return dst


def test_crafted_dcp_metadata_is_refused_and_never_run(run3, tmp_path, capsys):
    run = copy_run(run3, tmp_path)
    marker = tmp_path / MARKER_NAME
    newest = run / "checkpoints" / "step_0000004"
    (newest / "dcp").mkdir()
    (newest / "dcp" / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    assert main(["pretrain", "--out", str(run), "--resume", "train.steps=4"]) == 0  # falls back to step 2
    err = capsys.readouterr().err
    assert "skipping corrupt checkpoint step_0000004" in err and "metadata.json is missing" in err
    assert not marker.exists()
    assert (run / "checkpoints" / "corrupt-step_0000004").is_dir()  # moved aside, never deleted
    assert (run / "final" / "config.json").is_file()


def test_load_sharded_refuses_crafted_metadata_and_items(tmp_path):
    import json

    import torch.distributed.checkpoint as dcp

    from shapedce.errors import UserError
    from shapedce.train.checkpoint.dcp_metadata import write_metadata_json
    from shapedce.train.checkpoint.sharded import _SafePlanner, _SafeReader, load_sharded

    marker = tmp_path / MARKER_NAME
    (tmp_path / "ck" / "dcp").mkdir(parents=True)
    (tmp_path / "ck" / "dcp" / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    with pytest.raises(UserError, match="metadata.json is missing"):  # the pickle is never read
        load_sharded(tmp_path / "ck", model, opt)
    # a metadata.json naming a class that checkpoint metadata never holds: refused, nothing built
    crafted = {"class": "system", "fields": {"command": f"touch {marker}"}}
    (tmp_path / "ck" / "dcp" / "metadata.json").write_text(json.dumps(crafted))
    with pytest.raises(UserError, match="refusing to build 'system'"):
        load_sharded(tmp_path / "ck", model, opt)
    (tmp_path / "ck" / "dcp" / "metadata.json").write_text(json.dumps({"torch": "load"}))
    with pytest.raises(UserError, match="refusing torch.load"):
        load_sharded(tmp_path / "ck", model, opt)
    # a non-tensor item (DCP stores those with torch.save) holding a payload: refused, not run
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        md = dcp.save({"x": Payload(marker), "w": torch.ones(2)}, checkpoint_id=tmp_path / "items")
        write_metadata_json(md, tmp_path / "items")
        target = {"x": None, "w": torch.zeros(2)}
        with pytest.raises(BaseException) as info:
            dcp.load(target, storage_reader=_SafeReader(tmp_path / "items"), planner=_SafePlanner())
    assert "refusing checkpoint item x" in repr(info.value) or "refusing checkpoint item x" in str(info.value)
    assert not marker.exists()


def test_dcp_metadata_json_round_trips_and_loads(tmp_path):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    from shapedce.train.checkpoint.dcp_metadata import read_metadata_json, write_metadata_json
    from shapedce.train.checkpoint.sharded import load_sharded

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model_sd, optim_sd = get_state_dict(model, opt)
        md = dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=tmp_path / "ck" / "dcp")
    write_metadata_json(md, tmp_path / "ck" / "dcp")
    back = read_metadata_json(tmp_path / "ck" / "dcp")
    assert back.state_dict_metadata == md.state_dict_metadata
    assert back.storage_data == md.storage_data and back.planner_data == md.planner_data
    other = torch.nn.Linear(3, 2)
    other_opt = torch.optim.AdamW(other.parameters())
    load_sharded(tmp_path / "ck", other, other_opt)
    assert torch.equal(other.weight, model.weight) and torch.equal(other.bias, model.bias)
    assert other_opt.state_dict()["param_groups"][0]["lr"] == opt.state_dict()["param_groups"][0]["lr"]
    assert torch.equal(other_opt.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def _fill(path: Path, offset_from_end: int = 4096) -> None:
    data = bytearray(path.read_bytes())
    start = max(len(data) - offset_from_end, 0)
    data[start:] = b"\xff" * (len(data) - start)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("victim", ["model.safetensors", "trainer_state.pt"])
def test_corrupt_newest_checkpoint_falls_back_to_an_intact_one(run3, tmp_path, capsys, victim):
    run = copy_run(run3, tmp_path)
    _fill(run / "checkpoints" / "step_0000004" / victim)
    assert main(["pretrain", "--out", str(run), "--resume", "train.steps=4"]) == 0
    err = capsys.readouterr().err
    assert "skipping corrupt checkpoint step_0000004" in err
    rows = [r for r in read_metrics(run / "metrics.jsonl") if r["split"] == "train"]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)


def test_every_checkpoint_corrupt_is_one_line(run3, tmp_path, capsys):
    run = copy_run(run3, tmp_path)
    for ckpt in (run / "checkpoints").glob("step_*"):
        _fill(ckpt / "model.safetensors")
    fails(capsys, "pretrain", "--out", run, "--resume", needle="no intact checkpoint in")


def test_diverging_run_stops_with_one_line_and_no_final(tmp_path, capsys):
    out = tmp_path / "nan"
    err = fails(
        capsys,
        "pretrain",
        "--preset",
        "smoke",
        "--out",
        out,
        "optim.lr=1e4",
        "optim.grad_clip=0",
        "train.ckpt_every=1",
        needle="non-finite",
    )
    assert "step " in err and "last good checkpoint" in err or "no checkpoint was saved" in err
    assert not (out / "final").exists()
    rows = read_metrics(out / "metrics.jsonl")
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)  # no NaN row was logged
    for ckpt in (out / "checkpoints").glob("step_*"):  # every kept checkpoint is a good one
        from shapedce.train.checkpoint.policy import check_checkpoint

        check_checkpoint(ckpt)


def test_midtrain_refuses_a_non_finite_model(run3, tmp_path, capsys):
    pre = tmp_path / "pre"
    shutil.copytree(run3, pre)
    _fill(pre / "final" / "model.safetensors")
    fails(capsys, "midtrain", "--from", pre, "--out", tmp_path / "mid", needle="non-finite values")


def test_folder_without_checkpoint_can_start_again_or_resume(tmp_path, capsys):
    out = tmp_path / "early"
    proc = spawn_cli(
        "pretrain", "--preset", "smoke", "--out", out, "train.steps=500", "train.ckpt_every=1000"
    )
    wait_for(lambda: (out / "metrics.jsonl").is_file(), proc)
    kill(proc)  # before its first checkpoint
    assert not list((out / "checkpoints").glob("step_*")) if (out / "checkpoints").is_dir() else True
    assert main(["pretrain", "--out", str(out), "--resume", "train.steps=2"]) == 0
    assert "starting the run from the beginning" in capsys.readouterr().err
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if r["split"] == "train"] == [1, 2]
    shutil.rmtree(out / "checkpoints")
    shutil.rmtree(out / "final")
    assert main(["pretrain", "--preset", "smoke", "--out", str(out), "train.steps=1"]) == 0  # a fresh start
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if r["split"] == "train"] == [1]


def test_config_checks_run_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "bad"
    fails(
        capsys,
        "pretrain",
        "--preset",
        "smoke",
        "--out",
        out,
        "data.seq_len=512",
        "train.global_batch_tokens=2048",
        needle="max_position_embeddings",
    )
    assert not out.exists()


@pytest.mark.parametrize("kind", ["file", "proc"])
def test_bad_out_paths_are_one_line(tmp_path, capsys, kind):
    if kind == "file":
        target = tmp_path / "a-file"
        target.write_text("x")
        needle = "is an existing file"
    else:
        target = Path("/proc/shapedce-x")
        needle = "cannot create this folder"
    fails(capsys, "pretrain", "--preset", "smoke", "--out", target, needle=needle)
    fails(
        capsys,
        "reproduce",
        "--preset",
        "smoke",
        "--out",
        target / "sub" if kind == "proc" else target,
        needle="--out",
    )


def test_stale_temporary_checkpoints_are_removed(run3, tmp_path):
    run = copy_run(run3, tmp_path)
    stale = run / "checkpoints" / ".tmp-step_0000006-4242"
    shutil.copytree(run / "checkpoints" / "step_0000004", stale)
    assert main(["pretrain", "--out", str(run), "--resume", "train.steps=4"]) == 0
    assert not stale.exists()


def test_internal_errors_keep_their_traceback_in_the_run_log(tmp_path, capsys, monkeypatch):
    import shapedce.train.lm as lm

    def boom(*_a, **_k):
        raise RuntimeError("deep inside")

    monkeypatch.setattr(lm.LMTrainer, "fit", boom)
    out = tmp_path / "run"
    assert main(["pretrain", "--preset", "smoke", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: deep inside" in err and "Traceback" not in err
    assert "Traceback" in (out / "error.log").read_text()
    assert main(["--debug", "pretrain", "--preset", "smoke", "--out", str(tmp_path / "run2")]) == 1
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["eval", "rl", "readiness"])
def test_every_stage_refuses_a_non_finite_model(run3, tmp_path, capsys, command):
    model = tmp_path / "nan-model"
    shutil.copytree(run3 / "final", model)
    _fill(model / "model.safetensors")
    args = {
        "eval": [
            "eval",
            model,
            "--tasks",
            "arith-compare",
            "--samples",
            "2",
            "--problems",
            "2",
            "--out",
            tmp_path / "e",
        ],
        "rl": ["rl", "--from", model, "--out", tmp_path / "r", "--preset", "smoke"],
        "readiness": ["readiness", model, "--out", tmp_path / "d"],
    }[command]
    fails(capsys, *args, needle="non-finite")


@pytest.mark.parametrize("command", ["eval", "rl", "readiness"])
def test_bad_out_of_every_command_is_one_line(run3, tmp_path, capsys, command):
    target = tmp_path / "a-file"
    target.write_text("x")
    args = {
        "eval": [
            "eval",
            run3,
            "--tasks",
            "arith-compare",
            "--samples",
            "2",
            "--problems",
            "2",
            "--out",
            target,
        ],
        "rl": ["rl", "--from", run3, "--out", target, "--preset", "smoke"],
        "readiness": ["readiness", run3, "--out", target],
    }[command]
    fails(capsys, *args, needle="is an existing file")


def test_rl_folder_without_checkpoint_starts_again(run3, tmp_path, capsys):
    out = tmp_path / "rl"
    out.mkdir()
    (out / "config.yaml").write_text("task: arith\n")  # an earlier start that saved nothing
    (out / "metrics.jsonl").write_text('{"stage": "rl", "step": 1, "split": "train"}\n')
    assert (
        main(
            [
                "rl",
                "--from",
                str(run3),
                "--out",
                str(out),
                "--preset",
                "smoke",
                "steps=1",
                "dynamic_sampling=false",
                "eval_every=0",
            ]
        )
        == 0
    )
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows if r["split"] == "train"] == [1] and (
        out / "final" / "config.json"
    ).is_file()
