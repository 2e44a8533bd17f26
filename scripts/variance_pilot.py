"""Variance pilot of the RL study: where the RL gain's spread comes from, and the design needing the
fewest seeds (docs/rl-study/design.md, "Variance pilot").

The RL gain of a run (Avg@m after RL minus after mid-training) varies for three reasons: the base
(the pre-training seed, which also sets mid-training's data order), the RL seed, and the
evaluation's sampling. The pilot trains `--configs` on `--bases` pre-training seeds, runs RL from
each base with every `--rl-seeds` seed, and scores every mid-trained and RL model on the `val`
prompts (never the evaluation's `test` prompts) with each `--eval-seeds` seed, so that each source
is seen on its own:

    python scripts/variance_pilot.py --out runs/pilot --configs ce,tail-strong --bases 200-202 \\
        --rl-seeds 0,1 --eval-seeds 0,1 --samples 32 --jobs 2

Layout: OUT/CONFIG/bBASE/{pretrain,midtrain,rl-rR}, evaluations in OUT/CONFIG/bBASE/eval/MODEL-eE.
Every step is a `shapedce` command, skipped when its output exists (a rerun resumes). Writes
OUT/pilot.csv (one row per config, base, RL seed, eval seed), OUT/costs.csv (core-seconds of each
step) and prints the variance components and the seeds each design needs (`pilot_design`).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibrate_priors import parse_seeds as seeds  # noqa: E402  "200-202" -> [200, 201, 202]

TASK = "arith-small"


class Pilot:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.costs: list[dict] = []

    def shapedce(self, out: Path, argv: list[str], label: dict) -> None:
        """Run `shapedce ARGV` unless OUT is finished; one thread per job; its core-seconds to costs."""
        done = out / ("results.json" if argv[0] == "eval" else "final")
        if done.exists():
            return
        resume = ["--resume"] if argv[0] != "eval" and (out / "checkpoints").exists() else []
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        t0 = time.perf_counter()
        log = out.parent / f"{out.name}.log"
        out.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as f:
            subprocess.run(
                [sys.executable, "-m", "shapedce", *argv, *resume], check=True, env=env, stdout=f, stderr=f
            )
        self.costs.append({**label, "step": argv[0], "core_s": round(time.perf_counter() - t0, 1)})
        print(f"{label} {argv[0]}: {self.costs[-1]['core_s']} s", flush=True)

    def evaluate(self, model: Path, out: Path, seed: int, label: dict) -> float:
        a = self.args
        argv = ["eval", str(model), "--out", str(out), "--tasks", TASK, "--split", "val"]
        argv += ["--problems", str(a.problems), "--samples", str(a.samples), "--seed", str(seed)]
        argv += ["--temperature", str(a.temperature), "--max-new-tokens", "48", "--text-tokens", "500"]
        self.shapedce(out, argv, label)
        return json.loads((out / "results.json").read_text())["tasks"][TASK]["avg_at_m"]

    def chain(self, config: str, base: int) -> list[dict]:
        """Every step of one (config, base): pretrain, midtrain, its evaluations, RL and theirs."""
        a, root = self.args, self.args.out / config / f"b{base}"
        label = {"config": config, "base": base}
        self.shapedce(
            root / "pretrain",
            [
                "pretrain",
                "--preset",
                "tiny",
                "--out",
                str(root / "pretrain"),
                f"loss={config}",
                f"train.seed={base}",
            ],
            label,
        )
        self.shapedce(
            root / "midtrain",
            ["midtrain", "--from", str(root / "pretrain"), "--out", str(root / "midtrain")],
            label,
        )
        mid = {
            e: self.evaluate(root / "midtrain", root / "eval" / f"midtrain-e{e}", e, label)
            for e in a.eval_seeds
        }
        rows = []
        for r in a.rl_seeds:
            rl = root / f"rl-r{r}"
            self.shapedce(
                rl,
                ["rl", "--preset", "tiny", "--from", str(root / "midtrain"), "--out", str(rl), f"seed={r}"],
                {**label, "rl_seed": r},
            )
            for e in a.eval_seeds:
                after = self.evaluate(rl, root / "eval" / f"rl-r{r}-e{e}", e, {**label, "rl_seed": r})
                rows.append(
                    {
                        **label,
                        "rl_seed": r,
                        "eval_seed": e,
                        "midtrain_avg": mid[e],
                        "rl_avg": after,
                        "gain": after - mid[e],
                    }
                )
        return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--configs", default="ce,tail-strong")
    ap.add_argument("--bases", type=seeds, default=seeds("200-202"), help="pre-training seeds, e.g. 200-202")
    ap.add_argument("--rl-seeds", type=seeds, default=[0, 1])
    ap.add_argument("--eval-seeds", type=seeds, default=[0, 1])
    ap.add_argument("--problems", type=int, default=95, help="val prompts scored (arith-small's val has 95)")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--jobs", type=int, default=2, help="(config, base) chains at once, one thread each")
    args = ap.parse_args()
    pilot = Pilot(args)
    units = [(c, b) for b in args.bases for c in args.configs.split(",")]
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = [row for chunk in pool.map(lambda u: pilot.chain(*u), units) for row in chunk]
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "pilot.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if pilot.costs:  # steps run by this invocation (a resumed one times only what it ran)
        with (args.out / "costs.csv").open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["config", "base", "rl_seed", "step", "core_s"])
            if f.tell() == 0:
                writer.writeheader()
            writer.writerows(pilot.costs)
    from pilot_design import components, design_table

    comp = components(rows)
    print(json.dumps(comp, indent=1))
    print(design_table(comp, args.out / "costs.csv", n_configs=len(args.configs.split(","))))


if __name__ == "__main__":
    main()
