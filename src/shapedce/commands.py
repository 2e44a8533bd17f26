"""What each `shapedce` subcommand does, once `shapedce.cli` has parsed its arguments: one function per
subcommand, taking the parsed `argparse.Namespace` and returning the exit status. The parser, the
error handling and the entry point are in `shapedce.cli`; heavy imports stay inside each function,
so `shapedce --help` and `shapedce losses` load no torch model code.

    python -m shapedce losses          # runs cmd_losses through shapedce.cli.main
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .errors import UserError
from .loss.config import PRESETS, STUDY_SETTINGS
from .rundir import StageDir


def cmd_losses(_: argparse.Namespace) -> int:
    print(f"{'name':<16} {'beta':>6} {'lambda_top':>10} {'lambda_tail':>11} {'k':>4}")
    for name, cfg in {**PRESETS, **STUDY_SETTINGS}.items():
        print(f"{name:<16} {cfg.beta:>6g} {cfg.lambda_top:>10g} {cfg.lambda_tail:>11g} {cfg.k:>4d}")
    print("auto: beta steered towards loss.target_entropy; *-strong: the RL study's tiny-model priors")
    return 0


def cmd_models(_: argparse.Namespace) -> int:
    from .models import models_table

    print(models_table())
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from .config import load_config, load_run_config
    from .train.lm import train_lm
    from .train.preflight import check_lm

    if args.resume:
        cfg = load_run_config(StageDir(args.out).config, args.overrides)
    else:
        cfg = load_config(args.preset, args.overrides)
    check_lm(cfg, force=args.force, device_gib=args.device_gib)
    final = train_lm(cfg, Path(args.out), resume=args.resume)
    print(f"done: {final}")
    return 0


def cmd_midtrain(args: argparse.Namespace) -> int:
    from .config import load_run_config
    from .train.lm import midtrain_config, run_midtrain
    from .train.preflight import check_lm

    if not args.force:
        try:
            if args.resume:
                cfg = load_run_config(StageDir(args.out).config, args.overrides)
            else:
                pre = load_run_config(StageDir(args.from_dir).config)
                cfg = midtrain_config(pre, Path(args.from_dir), args.overrides)
        except UserError:
            cfg = None  # run_midtrain reports what is wrong with --from / --out in its own words
        if cfg is not None:
            check_lm(cfg, device_gib=args.device_gib)

    final = run_midtrain(Path(args.from_dir), Path(args.out), args.overrides, resume=args.resume)
    print(f"done: {final}")
    return 0


def cmd_rl(args: argparse.Namespace) -> int:
    from .train.preflight import check_rl
    from .train.rl import run_rl
    from .train.rl_config import load_rl_config, load_rl_run_config

    if args.resume:
        cfg = load_rl_run_config(StageDir(args.out).config, args.overrides)
    else:
        cfg = load_rl_config(args.preset, args.overrides)
    check_rl(cfg, args.from_dir, force=args.force, device_gib=args.device_gib)
    final = run_rl(cfg, Path(args.from_dir), Path(args.out), resume=args.resume)
    print(f"done: {final}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .eval.run import EvalSettings, evaluate, markdown
    from .flags import flag_values

    settings = EvalSettings(**flag_values(EvalSettings, args))
    results = evaluate(args.path, settings, Path(args.out) if args.out else None, device=args.device)
    print(markdown(results))
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from .tasks import rg_datasets, task_lines

    if args.rg:
        print("\n".join(f"rg-{name}" for name in rg_datasets()))
        return 0
    print(
        "\n".join(
            task_lines(
                {
                    "rg-<dataset>": f"any of the {len(rg_datasets())} reasoning-gym datasets "
                    "(`shapedce tasks --rg`)",
                    "file:PATH": "a local .jsonl/.json/.parquet benchmark (?question=F&answer=F&chat=1), "
                    "math-verify checked",
                }
            )
        )
    )
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from .reproduce.grid import check_grid, describe, load_grid

    flags = [
        f"{key}={value}"
        for key, value in (
            ("configs", args.configs),
            ("models", args.models),
            ("seeds", args.seeds),
            ("jobs", args.jobs),
        )
        if value is not None
    ]
    grid = load_grid(args.preset, [*flags, *args.overrides])
    out = Path(args.out)
    if not args.dry_run:
        from .reproduce.memory import check_grid as check_memory

        check_memory(grid, force=args.force, device_gib=args.device_gib)
    if args.dry_run:
        print(describe(grid, check_grid(grid, out), args.preset))
        return 0
    from .report import write_report
    from .reproduce.scheduler import reproduce

    t0 = time.perf_counter()
    reproduce(grid, out)
    report = write_report(out)
    print(f"done in {(time.perf_counter() - t0) / 60:.1f} min: {report}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    if args.recheck:
        from .report.plan import load_plan
        from .report.recheck import recheck

        if not args.plan:
            raise UserError("--recheck needs --plan: the analysis plan names the primary family")
        default = Path(args.recheck).with_name("verdicts.json")
        verdicts = args.verdicts or (default if default.is_file() else None)
        lines, agree = recheck(args.recheck, load_plan(args.plan), verdicts)
        print("\n".join(lines))
        return 0 if agree else 1
    if not args.dir:
        raise UserError("report needs DIR (a `shapedce reproduce` folder) or --recheck RUNS_CSV")
    print(f"written: {write_report(Path(args.dir), args.plan)}")
    return 0


def cmd_readiness(args: argparse.Namespace) -> int:
    from .flags import flag_values
    from .readiness import ReadinessSettings, run_readiness
    from .report.load import load_grid_dir

    values = flag_values(ReadinessSettings, args)
    if args.reference and "tasks" not in values:
        values["tasks"] = ",".join(load_grid_dir(args.reference).eval_tasks)
    settings = ReadinessSettings(**values)
    print(f"written: {run_readiness(args.path, args.out, settings, args.reference, args.cache_dir)}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    import json

    from .train.plan import plan_preset, render

    plan = plan_preset(
        args.preset,
        args.overrides,
        world_size=args.world_size,
        device_gib=args.device_gib,
        device=args.device,
    )
    print(json.dumps(plan, indent=1) if args.json else render(plan))
    return 0
