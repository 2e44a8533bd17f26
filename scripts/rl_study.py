"""The confirmatory RL study (docs/rl-study/preregistration.md): run it across sessions and machines,
keep its ledger, and judge it from the ledger alone.

    python scripts/rl_study.py run --out runs/rl-study      # train the next seeds the ledger lacks
    python scripts/rl_study.py harvest --out runs/rl-study  # copy finished seeds into the ledger
    python scripts/rl_study.py report                       # verdicts.json, report.md, primary.png
    shapedce report --recheck docs/rl-study/runs.csv --plan docs/rl-study/analysis-plan.yaml

The ledger is docs/rl-study/runs.csv: one row per run (the columns `shapedce report` writes, plus the
CPU, torch and commit it ran on), committed as seeds finish, because run folders do not outlive a
machine. A seed enters the ledger only when every configuration of it finished (the checks pair by
seed). `run` starts `shapedce reproduce --preset rl-study` at the first seed the ledger lacks
(`first_seed`), harvests every minute, and stops the grid when the ledger reaches a planned look at
which every primary check is decided (the stopping rule); an interrupted `run` resumes its folder.
`report` judges the primary family from the ledger with `shapedce.report.primary`; the re-check
recomputes it with separately written code and must agree.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

from shapedce.report.load import grid_from_runs_csv, load_grid_dir
from shapedce.report.plan import load_plan
from shapedce.report.primary import primary_finding
from shapedce.report.render import runs_rows
from shapedce.report.stats import HELD, NOT_HELD
from shapedce.report.verdicts import verdicts_json
from shapedce.reproduce.grid import load_grid
from shapedce.reproduce.stages import obey_interrupts

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "docs" / "rl-study"
PRESET = "rl-study"
PROVENANCE = ("cpu", "torch", "commit", "finished")
"""Ledger columns after the report's: where and when the run was trained."""


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance() -> dict:
    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "commit": commit.stdout.strip(),
    }


def read_ledger(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def complete_seeds(rows: list[dict], configs: list[str]) -> list[int]:
    """Seeds whose every configuration has both Avg@m values, in order."""
    done: dict[int, set[str]] = {}
    for r in rows:
        if all(r.get(k) not in (None, "") for k in ("midtrain_avg_at_m", "rl_avg_at_m")):  # 0.0 counts
            done.setdefault(int(r["seed"]), set()).add(r["config"])
    return sorted(s for s, have in done.items() if set(configs) <= have)


def next_seed(rows: list[dict], configs: list[str]) -> int:
    """The first seed (from 0) the ledger lacks: seeds stay contiguous, looks read the first n."""
    done, seed = set(complete_seeds(rows, configs)), 0
    while seed in done:
        seed += 1
    return seed


def harvest(out: Path, ledger: Path, configs: list[str], stamp: dict | None = None) -> list[int]:
    """Append the seeds finished in OUT/from-*/ that the ledger lacks, with `stamp` (default: this
    machine and commit now) as their provenance; returns the ledger's seeds."""
    rows = read_ledger(ledger)
    have = set(complete_seeds(rows, configs))
    for root in sorted(out.glob("from-*")):
        if not (root / "grid.yaml").is_file() or not (root / "runs").is_dir():
            continue
        new = [{k: ("" if v is None else v) for k, v in r.items()} for r in runs_rows(load_grid_dir(root))]
        for seed in complete_seeds(new, configs):
            if seed not in have:
                stamp = stamp or provenance()
                done = {**stamp, "finished": datetime.date.today().isoformat()}
                rows += [{**r, **done} for r in new if int(r["seed"]) == seed and r["config"] in configs]
                have.add(seed)
                print(f"ledger: seed {seed} added ({len(configs)} runs)", flush=True)
    if rows:
        rows.sort(key=lambda r: (r["model"], r["config"], int(r["seed"])))
        fields = list(dict.fromkeys(k for r in rows for k in r))
        with ledger.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    return sorted(have)


def judged(ledger: Path, plan, grid):
    """(grid record, primary finding) from the ledger under the AnalysisPlan `plan`, on the first n
    seeds of the last planned look the ledger reaches (a seed finished past a look is not judged)."""
    record = grid_from_runs_csv(ledger, task=grid.rl.task, samples=grid.eval.samples)
    seeds = sorted({r.seed for r in record.runs})
    reached = [n for n in plan.looks_seeds if n <= len(seeds)]
    if reached:
        keep = set(seeds[: reached[-1]])
        record.runs = [r for r in record.runs if r.seed in keep]
    return record, primary_finding(record, plan)


def decided(ledger: Path, plan_path: Path, grid) -> bool:
    """The stopping rule: the ledger reached a planned look whose judgement decides every primary
    check, or the last look. Judged on the look's first n seeds, so two seeds harvested in one minute
    (or while no driver ran) cannot skip a look."""
    plan = load_plan(plan_path)
    n = len(complete_seeds(read_ledger(ledger), [plan.baseline, *plan.configs]))
    if n < plan.looks_seeds[0]:
        return False
    _, finding = judged(ledger, plan, grid)
    return all(c.verdict in (HELD, NOT_HELD) for c in finding.checks) or n >= plan.seeds


def folder_starts(out: Path) -> list[int]:
    """First seeds of the grid folders OUT/from-K on this machine."""
    return sorted(int(p.name[5:]) for p in out.glob("from-*") if p.name[5:].isdigit())


def run(args, grid) -> None:
    obey_interrupts()  # started in the background, SIGINT would be ignored here and in the grid below
    configs, plan = grid.config_names, load_plan(args.plan)
    start = next_seed(read_ledger(args.ledger), configs)
    if start >= plan.seeds or decided(args.ledger, args.plan, grid):
        print(f"the study is complete in {args.ledger}: `python scripts/rl_study.py report`")
        return
    # a folder of this machine that already covers `start` is resumed (its unfinished runs continue)
    first = max((k for k in folder_starts(args.out) if k <= start), default=start)
    out = args.out / f"from-{first}"
    cmd = [sys.executable, "-m", "shapedce", "reproduce", "--preset", PRESET, "--out", str(out)]
    cmd += [f"first_seed={first}", f"seeds={plan.seeds - first}", *args.overrides]
    stamp = provenance()  # the commit whose code trains these runs, taken before they start
    print("running:", " ".join(cmd[1:]), flush=True)
    proc = subprocess.Popen(cmd, start_new_session=True)
    try:
        while proc.poll() is None:
            time.sleep(60)
            harvest(args.out, args.ledger, configs, stamp)
            if decided(args.ledger, args.plan, grid):
                print(
                    "the ledger reached the final look, or a look decided every primary check: "
                    "stopping the grid",
                    flush=True,
                )
                proc.send_signal(signal.SIGINT)
                proc.wait()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait()
        harvest(args.out, args.ledger, configs, stamp)


def primary_figure(record, finding, plan, path: Path) -> Path:
    """Left: per primary check the per-seed gain differences, their mean and interval, 0 and the margin.
    Right: every configuration's RL gain per seed against its mid-trained Avg@m (the base's strength)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from shapedce.report.checks import Accuracy

    acc = Accuracy(record)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for i, c in enumerate(finding.checks):
        left.scatter([i] * len(c.diffs), c.diffs, s=14, alpha=0.6)
        if c.ci is not None and c.estimate is not None:
            left.errorbar(
                [i + 0.25],
                [c.estimate],
                yerr=[[c.estimate - c.ci[0]], [c.ci[1] - c.estimate]],
                fmt="o",
                color="black",
                capsize=4,
            )
    left.axhline(0, color="gray", lw=1)
    if finding.checks and finding.checks[0].margin is not None:
        left.axhline(finding.checks[0].margin, color="gray", lw=1, ls="--", label="absence margin")
        left.legend(loc="best", fontsize=8)
    left.set_xticks(range(len(finding.checks)), [f"{c.a} - {c.b}" for c in finding.checks])
    left.set_ylabel(f"RL gain difference ({acc.name('avg')})")
    left.set_title("Primary checks: per seed, mean and interval", fontsize=10)
    for config in record.configs:
        runs = [r for r in record.runs if r.config == config and acc.gain(r, "avg") is not None]
        right.scatter(
            [acc.value(r, "midtrain", "avg") for r in runs],
            [acc.gain(r, "avg") for r in runs],
            s=14,
            label=config,
        )
    right.set_xlabel(f"{acc.name('avg')} after mid-training")
    right.set_ylabel(f"RL gain ({acc.name('avg')})")
    right.set_title("RL gain against the base's strength", fontsize=10)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def descriptive_lines(record, plan) -> list[str]:
    """Secondary, descriptive: per prior against the baseline, paired by seed, the relative difference in
    pre-training entropy (the manipulation check), in mid-trained Avg@m (the base), and, added after
    the verdicts (so exploratory), in Avg@m after RL and in the Pass@k gain."""
    from shapedce.report.checks import Accuracy
    from shapedce.report.stats import mean_ci

    acc = Accuracy(record)

    def entropy(r):
        return r.last("pretrain", "val", "entropy")

    def relative(f):
        return lambda a, b: None if not f(a) or not f(b) else f(a) / f(b) - 1

    def difference(f):
        return lambda a, b: None if f(a) is None or f(b) is None else f(a) - f(b)

    avg, passk = acc.name("avg"), acc.name("pass")
    columns = [  # (header, paired difference, format)
        ("pre-training entropy *(manipulation)*", relative(entropy), "{:+.1%}"),
        (f"{avg} after mid-training", difference(lambda r: acc.value(r, "midtrain", "avg")), "{:+.3f}"),
        (f"{avg} after RL *(added later)*", difference(lambda r: acc.value(r, "rl", "avg")), "{:+.3f}"),
        (f"{passk} RL gain *(added later)*", difference(lambda r: acc.gain(r, "pass")), "{:+.3f}"),
    ]
    lines = [
        "## Secondary and descriptive (not judged)",
        "",
        f"| prior vs {plan.baseline}, paired by seed | seeds | " + " | ".join(c[0] for c in columns) + " |",
        "|---|---:|" + "---:|" * len(columns),
    ]
    base = {r.seed: r for r in record.select(record.models[0], plan.baseline)}
    for config in plan.configs:
        pairs = [(r, base[r.seed]) for r in record.select(record.models[0], config) if r.seed in base]
        cells = []
        for _, paired, fmt in columns:
            values = [v for v in (paired(a, b) for a, b in pairs) if v is not None]
            mean, half = mean_ci(values) if values else (None, None)
            cells.append(
                "-"
                if mean is None
                else fmt.format(mean) + ("" if half is None else f" ± {fmt.format(half)[1:]}")
            )
        lines.append(f"| {config} | {len(pairs)} | " + " | ".join(cells) + " |")
    return lines + [
        "",
        "(mean ± the 95% t half-width over seeds; the columns marked *added later* were chosen after "
        "the verdicts were read, to show the level after RL and the gain in Pass@k as well, and are "
        "exploratory)",
    ]


def deviation_lines(path: Path) -> list[str]:
    """The study's log of deviations from the plan (its page without the title), for report.md."""
    if not path.is_file():
        return ["", "## Deviations and incidents", "", "None recorded."]
    body = path.read_text().split("\n", 1)[1].strip()
    return ["", "## Deviations and incidents", "", body]


def report(args, grid) -> None:
    from shapedce.report.render import plan_lines, verdict_lines

    plan = load_plan(args.plan)
    record, finding = judged(args.ledger, plan, grid)
    doc = verdicts_json(record, [finding], plan)
    (args.ledger.parent / "verdicts.json").write_text(json.dumps(doc, indent=1) + "\n")
    figure = primary_figure(record, finding, plan, args.ledger.parent / "primary.png")
    lines = [
        "# The RL study: report",
        "",
        f"Judged from the ledger `{args.ledger.name}` ({len({r.seed for r in record.runs})} seeds) by "
        "`python scripts/rl_study.py report`, as `preregistration.md` fixed it. Re-check with separately "
        "written code: `shapedce report --recheck docs/rl-study/runs.csv --plan "
        "docs/rl-study/analysis-plan.yaml`.",
        "",
        *plan_lines(plan, [finding])[:-2],
        "",
        f"**{finding.claim}: {finding.verdict}**",
        "",
        *verdict_lines([finding]),
        "",
        f"![primary checks]({figure.name})",
        "",
        *descriptive_lines(record, plan),
        *deviation_lines(args.ledger.parent / "deviations.md"),
    ]
    (args.ledger.parent / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("run", "harvest", "report"))
    ap.add_argument("--out", type=Path, default=Path("runs/rl-study"), help="run folders (never committed)")
    ap.add_argument("--ledger", type=Path, default=STUDY / "runs.csv")
    ap.add_argument("--plan", type=Path, default=STUDY / "analysis-plan.yaml")
    ap.add_argument("overrides", nargs="*", help="grid overrides for `run` (e.g. jobs=2); never a setting")
    args = ap.parse_args()
    grid = load_grid(PRESET)
    if args.action == "run":
        run(args, grid)
    elif args.action == "harvest":
        print(f"ledger seeds: {harvest(args.out, args.ledger, grid.config_names)}")
    else:
        report(args, grid)


if __name__ == "__main__":
    main()
