"""The plan's terms follow the precision the code uses (`shapedce.train.plan`, docs/guides/scaling.md):
FSDP2's bf16 MixedPrecisionPolicy (no autocast copy, bf16 all-gathers, the reduce-scatter buffers),
autocast for one process and DDP, the bf16 RL rollout copy and its KV cache, bf16 evaluation weights;
float32 everywhere on CPU (CPU plans unchanged). Every paper model fits 80 GiB at 8 GPUs.

    PYTHONPATH=src OMP_NUM_THREADS=1 python -m pytest -q tests/test_plan_precision.py
"""

from __future__ import annotations

import pytest

from shapedce.config import load_config
from shapedce.data.pretrained import meta_model
from shapedce.models import flavor_config
from shapedce.reproduce.grid import load_grid
from shapedce.train.plan import Shape, plan_eval, plan_lm, plan_preset, plan_rl, run_shape
from shapedce.train.rl_config import load_rl_config

PAPER = load_config("paper")
SHAPE = run_shape(PAPER)
P, L, ROOT = SHAPE.params, SHAPE.layer_params, SHAPE.vocab * SHAPE.hidden


def lm(precision: str, parallel: str, world: int = 8, device: str = "cuda"):
    cfg = load_config("paper", [f"train.precision={precision}", f"train.parallel={parallel}"])
    return plan_lm(cfg, SHAPE, world, device, parallel)


def test_fsdp_bf16_is_the_policy_not_autocast():
    t = lm("auto", "fsdp").terms
    assert t["autocast_weights"] == 0  # no whole-model bf16 copy
    assert t["fsdp_unsharded"] == 2.0 * (2 * L + ROOT)  # bf16 all-gathers: two layers and the root
    assert t["fsdp_reduce_scatter"] == (2.0 + 4.0 + 4.0) * L  # bf16 grads, their fp32 copy, RS input
    assert t["parameters"] == t["gradients"] == 4.0 * P / 8 and t["optimizer"] == 8.0 * P / 8  # fp32 shards
    s = lm("auto", "fsdp").settings
    assert s["fsdp_mixed_precision"] and not s["bf16_autocast"]


def test_float32_fsdp_and_bf16_ddp_or_one_process():
    fp32 = lm("fp32", "fsdp").terms
    assert fp32["autocast_weights"] == 0 and fp32["fsdp_unsharded"] == 4.0 * (2 * L + ROOT)
    assert fp32["fsdp_reduce_scatter"] == 8.0 * L
    for plan in (lm("bf16", "ddp"), lm("bf16", "fsdp", world=1)):  # autocast: a bf16 copy of every weight
        assert plan.terms["autocast_weights"] == 2.0 * P and plan.terms["fsdp_reduce_scatter"] == 0
        assert plan.settings["bf16_autocast"] and not plan.settings["fsdp_mixed_precision"]
    assert lm("auto", "fsdp", device="cpu").terms["fsdp_unsharded"] == 4.0 * (2 * L + ROOT)  # CPU: fp32


def test_the_reduce_scatter_buffers_count_in_the_backward_only():
    plan = lm("auto", "fsdp")
    assert "fsdp_reduce_scatter" in plan.peak_terms and plan.phase == "backward"
    without = sum(plan.terms[k] for k in plan.peak_terms if k != "fsdp_reduce_scatter")
    assert plan.peak == pytest.approx(without + plan.terms["fsdp_reduce_scatter"])


def test_largest_parameter_is_read_from_the_model():
    config = flavor_config("tiny-moe")
    assert Shape.of(config).max_param == max(p.numel() for p in meta_model(config).parameters())


def test_rl_rollout_copy_is_bf16_on_cuda_and_float32_on_cpu():
    rl = load_rl_config("paper")
    gpu, cpu = (
        plan_rl(rl, SHAPE, 8, "cuda"),
        plan_rl(load_rl_config("paper", ["parallel=fsdp"]), SHAPE, 8, "cpu"),
    )
    fp32 = plan_rl(load_rl_config("paper", ["precision=fp32"]), SHAPE, 8, "cuda")
    assert gpu.terms["rollout_weights"] == 2.0 * P and gpu.settings["rollout_dtype"] == "bf16"
    assert cpu.terms["rollout_weights"] == fp32.terms["rollout_weights"] == 4.0 * P
    assert gpu.terms["kv_cache"] * 2 == cpu.terms["kv_cache"] == fp32.terms["kv_cache"]  # bf16 cache
    assert gpu.terms["rollout_refresh"] == 4.0 * SHAPE.max_param  # one fp32 parameter at a time
    assert gpu.terms["autocast_weights"] == 0 and gpu.settings["fsdp_mixed_precision"]
    ddp = plan_rl(load_rl_config("paper", ["parallel=ddp"]), SHAPE, 8, "cuda")
    assert (
        ddp.terms["rollout_weights"] == 0 and ddp.terms["autocast_weights"] == 2.0 * P
    )  # samples the policy


def test_eval_weights_are_bf16_on_cuda_and_float32_on_cpu():
    gpu, cpu = plan_eval(SHAPE, 16, 8192, bf16=True), plan_eval(SHAPE, 16, 8192)
    assert gpu.terms["parameters"] == 2.0 * P and cpu.terms["parameters"] == 4.0 * P
    assert gpu.terms["kv_cache"] * 2 == cpu.terms["kv_cache"]
    gpu_s, cpu_s, fp32_s = (
        plan_preset("paper", over, device=device)["stages"]["eval"]
        for device, over in (("cuda", []), ("cpu", []), ("cuda", ["eval.dtype=fp32"]))
    )
    assert gpu_s["weights_dtype"] == "bf16" and cpu_s["weights_dtype"] == fp32_s["weights_dtype"] == "fp32"
    assert gpu_s["parameters_gib"] == pytest.approx(cpu_s["parameters_gib"] / 2, rel=1e-3)


@pytest.mark.parametrize("flavor", load_grid("paper").models.split(","))
def test_every_paper_model_fits_80_gib_at_8_gpus(flavor):
    plan = plan_preset("paper", [f"model.flavor={flavor}"], world_size=8, device_gib=80.0)
    assert set(plan["stages"]) == {"pretrain", "midtrain", "rl", "eval"}
    for name, stage in plan["stages"].items():
        assert stage["fits"] and stage["peak_gib"] <= 80, (flavor, name, stage["peak_gib"])
