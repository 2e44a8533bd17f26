"""`shapedce plan` and the memory check of the training commands (`shapedce.train.plan`, `.preflight`).

    PYTHONPATH=src OMP_NUM_THREADS=1 python -m pytest -q tests/test_plan.py

The activation formula against the bytes autograd really saves (saved-tensor hooks, tiny models);
the paper presets within 80 GiB at 8 GPUs; the JSON shape; one-line refusals naming the stage and
the overflowing term for pretrain, midtrain, rl and reproduce; --force.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from shapedce.cli import main
from shapedce.config import load_config
from shapedce.models import flavor_config
from shapedce.train.plan import GIB, Shape, plan_preset, plan_rl, run_shape
from shapedce.train.rl_config import load_rl_config


def saved_bytes(config, tokens: int) -> int:
    """Bytes of the distinct non-parameter tensors autograd saves in the decoder's forward."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).float().train()
    params = {p.untyped_storage().data_ptr() for p in [*model.parameters(), *model.buffers()]}
    seen = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[s.data_ptr()] = s.nbytes()
        return t

    ids = torch.randint(0, config.vocab_size, (2, tokens // 2))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.model(input_ids=ids, use_cache=False)
    return sum(seen.values())


@pytest.mark.parametrize("flavor", ["tiny", "small", "tiny-moe", "small-moe"])
def test_activation_formula_matches_what_autograd_saves(flavor):
    one, two = (flavor_config(flavor, num_hidden_layers=n) for n in (1, 2))
    tokens = 128
    per_layer = (saved_bytes(two, tokens) - saved_bytes(one, tokens)) / tokens
    planned = Shape.of(flavor_config(flavor)).act_bytes(amp=False)
    assert planned == pytest.approx(per_layer, rel=0.03)


def test_paper_presets_fit_80_gib_at_8_gpus_and_json_shape(capsys):
    assert main(["plan", "--preset", "paper", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["world_size"] == 8 and plan["device_gib"] == 80.0
    assert set(plan["stages"]) == {"pretrain", "midtrain", "rl", "eval"}
    for name in ("pretrain", "midtrain", "rl", "eval"):
        assert plan["stages"][name]["fits"], name
        assert 0 < plan["stages"][name]["peak_gib"] <= 80
    assert plan["stages"]["pretrain"]["activation_checkpointing"] is True
    # RL fits because its parameters, gradients and AdamW state are sharded (FSDP2, `parallel=auto` on
    # CUDA): under DDP a 4B replica's state alone is 16 B per parameter on every GPU, and it does not fit
    rl = load_rl_config("paper")
    assert rl.parallel in ("auto", "fsdp")
    ddp = dataclasses.replace(rl, parallel="ddp")
    shape = run_shape(load_config("paper"))
    assert plan_rl(rl, shape, 8, "cuda").peak <= 80 * GIB < plan_rl(ddp, shape, 8, "cuda").peak


def test_plan_terms_follow_the_settings():
    base = plan_preset("paper", [])["stages"]["pretrain"]
    off = plan_preset("paper", ["train.activation_checkpointing=false"])["stages"]["pretrain"]
    assert not off["fits"] and off["activations_gib"] == base["activations_no_ckpt_gib"]
    wide = plan_preset("paper", [], world_size=16)["stages"]["pretrain"]
    assert wide["optimizer_gib"] == pytest.approx(base["optimizer_gib"] / 2, rel=1e-3)
    moe = plan_preset("paper", ["model.flavor=moe-10b-a0.5b"])["stages"]
    assert all(moe[s]["fits"] for s in ("pretrain", "midtrain", "eval"))
    kv = [plan_preset("paper", [f"eval.batch_size={b}"])["stages"]["eval"]["kv_cache_gib"] for b in (4, 16)]
    assert kv[0] == pytest.approx(kv[1] / 4, rel=1e-3)


ABSURD = ["train.micro_batch=4096", "train.global_batch_tokens=131072"]


def test_pretrain_refuses_a_plan_over_budget_with_one_line(tmp_path, capsys):
    code = main(["pretrain", "--preset", "smoke", "--out", str(tmp_path / "x"), "--device-gib", "1", *ABSURD])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "pretrain will not fit" in err and "largest term activations" in err
    assert "train.activation_checkpointing=true" in err and "--force" in err
    assert not (tmp_path / "x").exists()  # stopped before anything was written


def test_force_runs_it_anyway(tmp_path):
    out = tmp_path / "run"
    assert main(["pretrain", "--preset", "smoke", "--out", str(out), "--device-gib", "0.001", "--force"]) == 0
    assert (out / "final" / "config.json").is_file()


def test_midtrain_rl_and_reproduce_check_too(tmp_path, capsys):
    pre = tmp_path / "pre"
    load_config("smoke").save(tmp_path / "config.yaml")
    pre.mkdir()
    (pre / "config.yaml").write_text((tmp_path / "config.yaml").read_text())
    code = main(["midtrain", "--from", str(pre), "--out", str(tmp_path / "mid"), "--device-gib", "0.0001"])
    assert code == 2 and "midtrain will not fit" in capsys.readouterr().err
    model_dir = tmp_path / "model"
    flavor_config("tiny").save_pretrained(model_dir)
    code = main(
        [
            "rl",
            "--from",
            str(model_dir),
            "--out",
            str(tmp_path / "rl"),
            "--preset",
            "smoke",
            "--device-gib",
            "1e-4",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "rl will not fit" in err and len(err.strip().splitlines()) == 1
    code = main(["reproduce", "--preset", "smoke", "--out", str(tmp_path / "grid"), "--device-gib", "1e-4"])
    assert code == 2 and "will not fit" in capsys.readouterr().err
