"""The `shapedce` command line.

    shapedce --version                                    # the installed version
    shapedce losses                                       # the named reward settings (paper's five, dft)
    shapedce models                                       # model flavors and parameter counts
    shapedce pretrain --preset tiny --out runs/ce [a.b=value ...] [--resume]
    shapedce midtrain --from runs/ce --out runs/ce-mid [a.b=value ...] [--resume]
    shapedce rl --from runs/ce-mid --out runs/ce-rl --preset tiny [key=value ...] [--resume]
    shapedce eval runs/ce-mid --tasks arith,humaneval,logic,file:my.jsonl --samples 128 --pass-k 1,8,64
    shapedce tasks [--rg]                                 # the registered tasks (--rg: all reasoning-gym)
    shapedce reproduce [--preset tiny] [--configs ce,precision] [--models tiny,tiny-moe]
                       [--seeds N] [--out DIR] [rl.steps=32 eval.samples=16 ...]
    shapedce report DIR [--plan PLAN]                     # re-render DIR/report.md from its metrics files
    shapedce report --recheck RUNS_CSV --plan PLAN [--verdicts JSON]  # primary verdicts by a plain t-test
    shapedce plan --preset paper [--world-size 8] [--device-gib 80] [--json]   # memory per device, per stage
    shapedce readiness PATH --out DIR [--reference GRID]  # RL readiness of any HF causal LM

Overrides are `key=value` pairs over the preset (`loss=precision`, `loss.beta=-0.25`,
`train.steps=100`); see `shapedce.config` for every key. Bad input prints one line and exits 2;
an internal error prints one line naming OUT/error.log, which holds its traceback (exit 1).
`shapedce --debug CMD ...` prints every traceback on the terminal. Training commands check the
memory plan first (`shapedce.train.preflight`); `--force` runs a plan that does not fit. What each
subcommand does is in `shapedce.commands`; this module parses and handles errors.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

from . import __version__
from .commands import (
    cmd_eval,
    cmd_losses,
    cmd_midtrain,
    cmd_models,
    cmd_plan,
    cmd_pretrain,
    cmd_readiness,
    cmd_report,
    cmd_reproduce,
    cmd_rl,
    cmd_tasks,
)
from .errors import UserError
from .flags import add_flags


def _memory_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="run even when the memory plan says it will not fit")
    p.add_argument("--device-gib", type=float, help="memory budget per device in GiB (default: the device's)")


def build_parser() -> argparse.ArgumentParser:
    from .eval.settings import EvalSettings
    from .readiness.settings import ReadinessSettings

    parser = argparse.ArgumentParser(prog="shapedce", description="Reward-shaped next-token pre-training.")
    parser.add_argument("--debug", action="store_true", help="print the full traceback of every error")
    parser.add_argument("--version", action="version", version=f"shapedce {__version__}")
    parser.add_argument(
        "--allow-unisolated-code",
        action="store_true",
        help="run model-written code where it cannot be fully isolated (docs/guides/trust.md); any position",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("losses", help="print the named reward settings (the paper's five and dft)").set_defaults(
        func=cmd_losses
    )
    sub.add_parser("models", help="print the model flavors and their parameter counts").set_defaults(
        func=cmd_models
    )

    p = sub.add_parser("pretrain", help="pre-train a model with the shaped loss")
    p.add_argument("--preset", default="tiny", help="smoke | tiny | small | paper (default tiny)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    _memory_flags(p)
    p.set_defaults(func=cmd_pretrain)

    m = sub.add_parser(
        "midtrain", help="mid-train a pre-trained run (longer context, RoPE 1e6, reasoning mix)"
    )
    m.add_argument("--from", dest="from_dir", required=True, help="pre-training run directory")
    m.add_argument("--out", required=True, help="run directory")
    m.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    m.add_argument("overrides", nargs="*", help="key=value config overrides")
    _memory_flags(m)
    m.set_defaults(func=cmd_midtrain)

    r = sub.add_parser(
        "rl", help="RLVR: DAPO-style GRPO (no KL, clip-higher, token-level loss, dynamic sampling)"
    )
    r.add_argument(
        "--from",
        dest="from_dir",
        required=True,
        help="a run directory (its final/) or any HF model directory",
    )
    r.add_argument("--out", required=True, help="run directory")
    r.add_argument("--preset", default="tiny", help="smoke | tiny | long | paper (default tiny)")
    r.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    r.add_argument("overrides", nargs="*", help="key=value config overrides (see shapedce.train.rl_config)")
    _memory_flags(r)
    r.set_defaults(func=cmd_rl)

    e = sub.add_parser("eval", help="Avg@m / Cons@m / Pass@k on verifiable tasks, perplexity and entropy")
    e.add_argument("path", help="a run directory (uses its final/) or any Hugging Face model directory")
    add_flags(e, EvalSettings)
    e.add_argument("--device", default="auto", help="auto | cpu | cuda")
    e.add_argument("--out", default="", help="output directory (default PATH/eval)")
    e.set_defaults(func=cmd_eval)

    t = sub.add_parser("tasks", help="list the registered tasks, one line each")
    t.add_argument("--rg", action="store_true", help="list every reasoning-gym dataset usable as rg-<name>")
    t.set_defaults(func=cmd_tasks)

    g = sub.add_parser(
        "reproduce", help="the paper's grid: configs x models x seeds through every stage, then the report"
    )
    g.add_argument("--preset", default="tiny", help="smoke | tiny | small | paper (default tiny)")
    g.add_argument(
        "--configs", help="comma-separated configurations (default: ce,precision,diversity,tail,head)"
    )
    g.add_argument("--models", help="comma-separated model flavors, e.g. tiny,tiny-moe")
    g.add_argument("--seeds", type=int, help="seeds per (model, config)")
    g.add_argument("--jobs", type=int, help="runs trained at the same time (0 = auto)")
    g.add_argument("--out", default="runs/reproduce", help="output directory (default runs/reproduce)")
    g.add_argument(
        "--dry-run", action="store_true", help="print the plan and validate every config; train nothing"
    )
    g.add_argument(
        "overrides",
        nargs="*",
        help="key=value grid overrides, nested: rl.steps=32 (shapedce.reproduce.grid)",
    )
    _memory_flags(g)
    g.set_defaults(func=cmd_reproduce)

    pl = sub.add_parser("plan", help="memory per device of every stage of a preset, and whether it fits")
    pl.add_argument("--preset", default="paper", help="smoke | tiny | small | paper (default paper)")
    pl.add_argument("--world-size", type=int, default=8, help="devices (default 8, one node)")
    pl.add_argument("--device-gib", type=float, default=80.0, help="memory per device in GiB (default 80)")
    pl.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cuda: bf16, FSDP2")
    pl.add_argument("--json", action="store_true", help="print JSON instead of the table")
    pl.add_argument(
        "overrides", nargs="*", help="key=value run overrides; rl.KEY=V for RL, eval.batch_size=N"
    )
    pl.set_defaults(func=cmd_plan)

    rp = sub.add_parser("report", help="re-render DIR/report.md and its figures from the metrics files alone")
    rp.add_argument("dir", nargs="?", help="a `shapedce reproduce` output directory")
    rp.add_argument("--plan", help="analysis plan (YAML/JSON; default DIR/analysis-plan.yaml when there)")
    rp.add_argument(
        "--recheck", metavar="RUNS_CSV", help="re-check the plan's primary verdicts from runs.csv"
    )
    rp.add_argument("--verdicts", help="with --recheck: verdicts.json to compare (default: beside RUNS_CSV)")
    rp.set_defaults(func=cmd_report)

    rd = sub.add_parser(
        "readiness",
        help="RL readiness of any HF causal LM: Pass@k, entropy, top-k coverage, vs reference runs",
    )
    rd.add_argument("path", help="a Hugging Face causal LM directory, or a run directory holding final/")
    rd.add_argument("--out", required=True, help="output directory for readiness.md, readiness.json and PNGs")
    rd.add_argument(
        "--reference",
        help="a `shapedce reproduce` directory whose midtrain models and RL gains to compare with",
    )
    rd.add_argument(
        "--cache-dir", help="where reference signals are cached (default RUN/midtrain/readiness.json)"
    )
    add_flags(rd, ReadinessSettings)
    rd.set_defaults(func=cmd_readiness)
    return parser


def _run_dir(args: argparse.Namespace) -> Path | None:
    """The folder this command writes to, if it exists (where an internal error's traceback goes)."""
    out = getattr(args, "out", None) or getattr(args, "dir", None)
    if not out:
        return None
    path = Path(out)
    return path if path.is_dir() else None


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. A `UserError` prints one line (exit 2); any other exception is a bug or an
    environment fault: its traceback goes to OUT/error.log (when OUT exists) and, with --debug or
    when there is no run folder, to the terminal (exit 1)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    unisolated = "--allow-unisolated-code" in argv  # accepted after the command too
    args = build_parser().parse_args([a for a in argv if a != "--allow-unisolated-code"])
    if unisolated:
        from .tasks.sandbox import allow_unisolated

        allow_unisolated()
    try:
        return args.func(args)
    except UserError as err:
        if args.debug:
            traceback.print_exc()
        print(f"shapedce {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # noqa: BLE001 - the last resort: keep the traceback, name where it is
        text = traceback.format_exc()
        run = _run_dir(args)
        log = None
        if run is not None:
            try:
                log = run / "error.log"
                with open(log, "a") as f:
                    f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} shapedce {args.command}\n{text}\n")
            except OSError:
                log = None
        if args.debug or log is None:
            sys.stderr.write(text)
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        where = f" (traceback in {log})" if log is not None else ""
        print(
            f"shapedce {args.command}: internal error: {type(err).__name__}: {first[:300]}{where}",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
