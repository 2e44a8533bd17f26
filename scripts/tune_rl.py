"""Tune one RL setting on the validation split, every configuration alike (docs/rl-study/design.md).

For each candidate value and each base (a mid-trained run of one configuration), run
`shapedce rl --preset tiny` from the base with that value, and read the held-out curve RL logs on
the `val` split (never the evaluation's `test` prompts). The chosen value is the one with the
highest mean, over the bases, of the mean val Avg@k of the last `--last` evaluations: one value
for every configuration, decided by a rule fixed before the runs.

    python scripts/tune_rl.py --out runs/tune-rl --key lr --values 3e-6,1e-5,3e-5 \\
        --bases runs/reproduce/runs/tiny/{ce,precision,diversity,tail,head}/s0/midtrain -- eval_problems=95

Each run goes to OUT/KEY=VALUE/NAME (NAME: the base's configuration folder name); a finished run is
reused, an interrupted one resumes. Writes OUT/tune-KEY.csv and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path


def base_name(base: Path) -> str:
    """runs/.../tiny/precision/s0/midtrain -> precision-s0 (the config and seed folders)."""
    parts = base.resolve().parts
    return f"{parts[-3]}-{parts[-2]}" if base.name == "midtrain" else base.name


def val_scores(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [
        float(r["avg_at_k"])
        for r in rows
        if r.get("split") == "val" and r.get("prompts_split", "val") == "val"
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--key", default="lr", help="the RL setting to tune (a field of shapedce.train.rl_config)"
    )
    ap.add_argument("--values", required=True, help="comma-separated candidates")
    ap.add_argument("--bases", type=Path, nargs="+", required=True, help="mid-trained run folders")
    ap.add_argument("--last", type=int, default=2, help="val evaluations averaged at the end of each run")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("overrides", nargs="*", help="further RL overrides (after --)")
    args = ap.parse_args()
    rows = []
    for value in args.values.split(","):
        for base in args.bases:
            run = args.out / f"{args.key}={value}" / base_name(base)
            if not (run / "final").exists():
                cmd = [sys.executable, "-m", "shapedce", "rl", "--preset", args.preset, "--from", str(base)]
                cmd += ["--out", str(run), f"{args.key}={value}", *args.overrides]
                subprocess.run(cmd + (["--resume"] if (run / "checkpoints").exists() else []), check=True)
            scores = val_scores(run)
            end = statistics.fmean(scores[-args.last :])
            rows.append({"value": value, "base": base_name(base), "val_start": scores[0], "val_end": end})
            print(f"{args.key}={value} {base_name(base)}: val Avg {scores[0]:.4f} -> {end:.4f}", flush=True)
    with (args.out / f"tune-{args.key}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    means = {
        v: statistics.fmean(r["val_end"] for r in rows if r["value"] == v) for v in args.values.split(",")
    }
    gains = {
        v: statistics.fmean(r["val_end"] - r["val_start"] for r in rows if r["value"] == v) for v in means
    }
    print(
        f"\n| {args.key} | mean val Avg@k at the end (last {args.last} evaluations) | mean gain during RL |"
    )
    print("|---|---:|---:|")
    for v in means:
        print(f"| {v} | {means[v]:.4f} | {gains[v]:+.4f} |")
    print(
        f"\nchosen: {args.key}={max(means, key=lambda v: means[v])} "
        f"(highest mean over {len(args.bases)} bases)"
    )


if __name__ == "__main__":
    main()
