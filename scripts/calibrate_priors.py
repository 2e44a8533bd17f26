"""Calibrate the study's priors: train pre-training runs of candidate reward settings and measure how far
each moves held-out entropy and perplexity from CE's, paired by seed (docs/rl-study/design.md).

The paper's knob values move a small model's pre-training entropy by about 1%; the study needs priors
that differ by at least 10% at perplexity within 5% of CE's (docs/method/statistics.md). The procedure:
`benchmarks/fixed_point.py --settings ...` predicts each candidate's shift on a CE model's own
distributions (no training); this script then trains the candidates and measures them. Knobs are
chosen on the `tune` text sample and on seeds outside the study's (100+); the chosen settings are
then measured once, on the evaluation's held-out text (`val`) and the study's seeds 0-4.

    # choose (tuning text, tuning seeds)
    python scripts/calibrate_priors.py --out runs/calib --split tune --seeds 100 \\
        --configs "ce;beta=-1,lambda_tail=-0.5;beta=-1,lambda_tail=-0.5,k=20"
    # confirm (the evaluation's text, the study's seeds)
    python scripts/calibrate_priors.py --out runs/calib --split val --seeds 0-4 --configs ce,sharp,flat

A configuration is a name of `shapedce losses` or inline knobs `beta=B,lambda_top=T,lambda_tail=L,k=K`
(configurations are separated by `;`, or by `,` when every one is a name). Each run is
`shapedce pretrain --preset tiny` (`--preset` and further `key=value` overrides after `--`) in
OUT/LABEL/sSEED; a finished run is reused, an interrupted one resumes. Results go to
OUT/calibration-SPLIT.csv (one row per run; rows of earlier invocations are kept) and a table of
seed-paired differences against ce.
"""

from __future__ import annotations

import argparse
import csv
import math
import subprocess
import sys
from pathlib import Path

from shapedce.data.corpus import builtin_corpus
from shapedce.errors import UserError
from shapedce.eval.loading import load_model, pick_device
from shapedce.eval.text import text_stats
from shapedce.loss.config import SETTINGS
from shapedce.report.tdist import t975

KNOBS = ("beta", "lambda_top", "lambda_tail", "k")


def parse_configs(spec: str) -> list[tuple[str, list[str]]]:
    """(label, loss overrides) per configuration of `spec`."""
    parts = [p.strip() for p in (spec.split(";") if ";" in spec or "=" in spec else spec.split(","))]
    out = []
    for part in filter(None, parts):
        if "=" not in part:
            if part not in SETTINGS:
                raise UserError(
                    f"--configs: unknown configuration {part!r}; choose from {', '.join(SETTINGS)}"
                )
            out.append((part, [f"loss={part}"]))
            continue
        pairs = [kv.split("=", 1) for kv in part.split(",")]
        bad = [k for k, _ in pairs if k not in KNOBS]
        if bad:
            raise UserError(f"--configs: unknown knob {bad[0]!r} in {part!r}; knobs are {', '.join(KNOBS)}")
        label = "_".join(f"{k}{v}" for k, v in pairs)
        out.append((label, ["loss=ce", *(f"loss.{k}={v}" for k, v in pairs)]))
    return out


def parse_seeds(spec: str) -> list[int]:
    """'3' -> [3]; '0-4' -> [0, 1, 2, 3, 4]; '0,7' -> [0, 7]."""
    seeds: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        seeds += range(int(lo), int(hi or lo) + 1)
    return seeds


def train(run: Path, preset: str, overrides: list[str]) -> None:
    """`shapedce pretrain` into `run` unless it has finished; resume an interrupted one."""
    if (run / "final" / "config.json").exists():
        return
    cmd = [sys.executable, "-m", "shapedce", "pretrain", "--preset", preset, "--out", str(run), *overrides]
    if (run / "checkpoints").exists():
        cmd.append("--resume")
    subprocess.run(cmd, check=True)


def measure(run: Path, split: str, tokens: int) -> dict:
    model, tok = load_model(run / "final", pick_device("cpu"))
    docs = builtin_corpus("pretrain-v2", 400, seed=0, split=split)
    return text_stats(model, tok, docs, max_tokens=tokens)


def paired(rows: list[dict], label: str, key: str) -> str:
    """Mean seed-paired relative difference (%) of `key` against ce, with its 95% t-interval."""
    ce = {r["seed"]: r[key] for r in rows if r["label"] == "ce"}
    d = [100 * (r[key] / ce[r["seed"]] - 1) for r in rows if r["label"] == label and r["seed"] in ce]
    if not d:
        return "-"
    mean = sum(d) / len(d)
    if len(d) < 2:
        return f"{mean:+.2f}%"
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1))
    half = t975(len(d) - 1) * sd / math.sqrt(len(d))
    return f"{mean:+.2f}% [{mean - half:+.2f}, {mean + half:+.2f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--configs", required=True, help="names or inline knobs; see the module docstring")
    ap.add_argument("--seeds", default="100", help="e.g. 100, 0-4, 0,3")
    ap.add_argument("--split", default="tune", help="held-out text sample to measure on (tune | val)")
    ap.add_argument("--tokens", type=int, default=20000, help="held-out tokens per measurement")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("overrides", nargs="*", help="further pretrain overrides (after --)")
    args = ap.parse_args()
    configs, seeds = parse_configs(args.configs), parse_seeds(args.seeds)
    rows = []
    for seed in seeds:
        for label, loss in configs:
            run = args.out / label / f"s{seed}"
            train(run, args.preset, [*loss, f"train.seed={seed}", *args.overrides])
            stats = measure(run, args.split, args.tokens)
            rows.append(
                {"label": label, "seed": seed, **{k: stats[k] for k in ("ppl", "entropy_mean", "tail_mass")}}
            )
            print(f"{label} s{seed}: ppl {stats['ppl']:.3f} entropy {stats['entropy_mean']:.4f}", flush=True)
    path = args.out / f"calibration-{args.split}.csv"
    mine = {(r["label"], r["seed"]) for r in rows}
    if path.exists():  # earlier invocations' rows stay, this one's replace theirs
        with path.open(newline="") as f:
            old = [{**r, "seed": int(r["seed"])} for r in csv.DictReader(f)]
        rows = [r for r in old if (r["label"], r["seed"]) not in mine] + rows
    for r in rows:
        for key in ("ppl", "entropy_mean", "tail_mass"):
            r[key] = float(r[key])
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(
        f"\n{len(seeds)} seed(s), held-out text `{args.split}`; "
        f"differences paired by seed against ce ({path})"
    )
    print("| configuration | entropy vs ce | perplexity vs ce | tail mass vs ce |")
    print("|---|---:|---:|---:|")
    for label in dict.fromkeys(r["label"] for r in rows):
        if label != "ce":
            cells = [paired(rows, label, k) for k in ("entropy_mean", "ppl", "tail_mass")]
            print(f"| {label} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
