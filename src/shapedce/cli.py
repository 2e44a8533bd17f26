"""The `shapedce` command line.

    shapedce losses            # the paper's five reward settings and their knobs

Later stages (pretrain, midtrain, rl, eval, reproduce, report) register their subcommands here.
"""

from __future__ import annotations

import argparse
import sys

from .loss import PRESETS


def cmd_losses(_: argparse.Namespace) -> int:
    print(f"{'name':<10} {'beta':>6} {'lambda_top':>10} {'lambda_tail':>11} {'k':>4}")
    for name, cfg in PRESETS.items():
        print(f"{name:<10} {cfg.beta:>6g} {cfg.lambda_top:>10g} {cfg.lambda_tail:>11g} {cfg.k:>4d}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shapedce", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("losses", help="print the paper's five reward settings").set_defaults(func=cmd_losses)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
