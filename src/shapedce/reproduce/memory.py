"""The memory check of `shapedce reproduce`: every stage of the grid against the device, before any run.

    from shapedce.reproduce.memory import check_grid
    check_grid(load_grid("paper"), device_gib=80)      # one-line UserError naming the stage and term

One run per model flavor is planned (`shapedce.train.plan`): pre-training, mid-training, RL and the
evaluation with the grid's settings (its weights in bf16 on CUDA, `eval.dtype`). On CPU the runs
trained at the same time share the RAM.
"""

from __future__ import annotations

from pathlib import Path

from ..train.plan import bf16_of, lm_parallel, plan_eval, plan_lm, plan_rl, run_shape
from ..train.preflight import budget_of, check, device_of, world_size
from .grid import eval_settings, midtrain_config, plan, pretrain_config, rl_config
from .scheduler import resolve_jobs


def check_grid(grid, *, force: bool = False, device_gib: float | None = None) -> None:
    """`shapedce reproduce`: every stage of one run per model flavor; on CPU the RAM is shared by the
    runs trained at the same time (the grid's jobs)."""
    if force:
        return
    runs = plan(grid, Path("."))
    seen = set()
    for run in runs:
        pre = pretrain_config(grid, run)
        if pre.model.flavor in seen:
            continue
        seen.add(pre.model.flavor)
        device = device_of(pre.train.device)
        budget, where = budget_of(device, device_gib)
        if device == "cpu":
            jobs = resolve_jobs(grid.jobs, len(runs))
            budget, where = budget / jobs, f"{where} / {jobs} jobs"
        shape = run_shape(pre)
        mid = midtrain_config(grid, run)
        world = world_size()
        for cfg in (pre, mid):
            check(
                plan_lm(cfg, shape, world, device, lm_parallel(cfg, device)),
                budget,
                where,
                False,
                "train.",
                "train.micro_batch",
            )
        check(plan_rl(rl_config(grid, run), shape, world, device), budget, where, False, "", "micro_batch")
        ev = eval_settings(grid)
        check(
            plan_eval(shape, ev.batch_size, ev.max_new_tokens, bf16=bf16_of(ev.dtype, device)),
            budget,
            where,
            False,
            "",
            "the eval batch size",
        )
