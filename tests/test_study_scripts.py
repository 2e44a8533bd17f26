"""scripts/calibrate_priors.py and scripts/tune_rl.py: the parts that decide something (config and
seed parsing, the seed-paired table, which val rows the tuning reads), without training.

    PYTHONPATH=$PWD/src python -m pytest -q tests/test_study_scripts.py
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from shapedce.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


calibrate = _load("calibrate_priors")
tune = _load("tune_rl")


def test_configs_by_name_and_by_knobs():
    assert calibrate.parse_configs("ce,tail-strong") == [
        ("ce", ["loss=ce"]),
        ("tail-strong", ["loss=tail-strong"]),
    ]
    (label, loss), (label2, _) = calibrate.parse_configs("beta=-1,lambda_tail=-0.5;lambda_tail=-1,k=20")
    assert label == "beta-1_lambda_tail-0.5" and label2 == "lambda_tail-1_k20"
    assert loss == ["loss=ce", "loss.beta=-1", "loss.lambda_tail=-0.5"]


@pytest.mark.parametrize("spec", ["ce,sharpest", "beta=-1,temperature=2"])
def test_bad_configs_are_one_line_errors(spec):
    with pytest.raises(UserError, match="--configs"):
        calibrate.parse_configs(spec)


def test_seeds():
    assert calibrate.parse_seeds("100") == [100]
    assert calibrate.parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert calibrate.parse_seeds("0,7-8") == [0, 7, 8]


def test_paired_differences_pair_by_seed():
    rows = [
        {"label": "ce", "seed": 0, "h": 2.0},
        {"label": "ce", "seed": 1, "h": 4.0},
        {"label": "x", "seed": 1, "h": 3.6},  # -10% against seed 1's ce, not seed 0's
        {"label": "x", "seed": 0, "h": 1.8},
    ]
    out = calibrate.paired(rows, "x", "h")
    assert out.startswith("-10.00% [")  # both seeds -10%: a zero-width interval
    assert calibrate.paired(rows[:3], "x", "h") == "-10.00%"  # one seed: no interval
    assert calibrate.paired(rows, "y", "h") == "-"


def test_tuning_reads_val_rows_only(tmp_path):
    rows = [
        {"split": "val", "avg_at_k": 0.2, "prompts_split": "val"},
        {"split": "train", "reward": 0.9},
        {"split": "val", "avg_at_k": 0.7, "prompts_split": "test"},  # a test-split curve never counts
        {"split": "val", "avg_at_k": 0.3, "prompts_split": "val"},
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert tune.val_scores(tmp_path) == [0.2, 0.3]
    assert tune.base_name(tmp_path / "tiny" / "tail" / "s0" / "midtrain") == "tail-s0"


pilot = _load("pilot_design")


def _pilot_rows(sd_base: float, sd_rl: float, sd_eval: float, bases: int = 300, seed: int = 0) -> list[dict]:
    import random

    rng = random.Random(seed)
    rows = []
    for config, mu in (("ce", 0.10), ("tail-strong", 0.05)):
        for b in range(bases):
            base = rng.gauss(0, sd_base)
            for r in range(3):
                rl = rng.gauss(0, sd_rl)
                for e in range(2):
                    gain = mu + base + rl + rng.gauss(0, sd_eval)
                    rows.append(
                        {
                            "config": config,
                            "base": b,
                            "rl_seed": r,
                            "eval_seed": e,
                            "midtrain_avg": 0.3,
                            "rl_avg": 0.3 + gain,
                            "gain": gain,
                        }
                    )
    return rows


def test_pilot_components_recover_known_variances():
    comp = pilot.components(_pilot_rows(0.04, 0.03, 0.01))
    p = comp["pooled"]
    assert p["base"] == pytest.approx(0.04**2, rel=0.15)
    assert p["rl"] == pytest.approx(0.03**2, rel=0.15)
    assert p["eval"] == pytest.approx(0.01**2, rel=0.15)
    assert comp["df"] == {"eval": 2 * 300 * 3, "rl": 2 * 300 * 2, "base": 2 * 299}
    means = {c["config"]: c["mean_gain"] for c in comp["per_config"]}
    assert means["ce"] == pytest.approx(0.10, abs=0.01)
    assert means["tail-strong"] == pytest.approx(0.05, abs=0.01)


def test_pilot_design_variance_falls_with_rl_seeds_only_for_the_rl_part():
    comp = {"pooled": {"base": 1e-4, "rl": 4e-4, "eval": -1e-5}, "df": {"base": 4, "rl": 6, "eval": 12}}
    assert pilot.design_var(comp, 1, 1.0) == pytest.approx(2 * (1e-4 + 4e-4))  # a negative part counts 0
    assert pilot.design_var(comp, 4, 1.0) == pytest.approx(2 * (1e-4 + 1e-4))
    comp["pooled"]["eval"] = 4e-4
    assert pilot.design_var(comp, 1, 4.0) == pytest.approx(2 * (1e-4 + 4e-4 + 1e-4))  # 4x the samples


def test_pilot_design_table_prices_each_design(tmp_path):
    costs = tmp_path / "costs.csv"
    costs.write_text(
        "config,base,rl_seed,step,core_s\nce,0,,pretrain,200\nce,0,,midtrain,160\nce,0,0,rl,90\n"
        "ce,0,0,eval,10\nce,0,,eval,10\n"
    )
    comp = pilot.components(_pilot_rows(0.04, 0.03, 0.01, bases=4))
    table = pilot.design_table(comp, costs, n_configs=3, samples=(32,))
    rows = [line.split("|") for line in table.splitlines()[2:]]
    assert [int(r[1]) for r in rows] == [1, 2, 3, 4]
    # 3 configs x (base 360 + mid eval 10 + R x (rl 90 + eval 10)) core-seconds per seed
    assert [float(r[-2]) for r in rows] == [round(3 * (370 + k * 100) / 3600, 2) for k in (1, 2, 3, 4)]
    sds = [float(r[3]) for r in rows]
    assert sds == sorted(sds, reverse=True)


study = _load("rl_study")


def _ledger(path: Path, diffs: dict[str, list[float]], seeds: int) -> Path:
    """A ledger of ce plus configurations whose RL gain exceeds ce's by diffs[config][seed]."""
    import csv
    import random

    rng = random.Random(1)
    rows = []
    for s in range(seeds):
        mid, ce_gain = 0.5 + rng.gauss(0, 0.03), 0.05 + rng.gauss(0, 0.02)
        rows.append(
            {
                "model": "tiny",
                "config": "ce",
                "seed": s,
                "pretrain_entropy": 3.6,
                "midtrain_avg_at_m": mid,
                "rl_avg_at_m": mid + ce_gain,
                "rl_pass_at_8": 0.9,
            }
        )
        for config, d in diffs.items():
            rows.append(
                {
                    "model": "tiny",
                    "config": config,
                    "seed": s,
                    "pretrain_entropy": 3.2,
                    "midtrain_avg_at_m": mid,
                    "rl_avg_at_m": mid + ce_gain + d[s],
                    "rl_pass_at_8": "",
                }
            )
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_ledger_seeds_pair_and_stay_contiguous():
    rows = [
        {"config": c, "seed": str(s), "midtrain_avg_at_m": "0.5", "rl_avg_at_m": "0.6"}
        for s in (0, 1, 3)
        for c in ("ce", "tail-strong")
    ]
    rows.append({"config": "ce", "seed": "2", "midtrain_avg_at_m": "0.5", "rl_avg_at_m": "0.6"})
    rows.append({"config": "tail-strong", "seed": "2", "midtrain_avg_at_m": "0.5", "rl_avg_at_m": ""})
    assert study.complete_seeds(rows, ["ce", "tail-strong"]) == [0, 1, 3]
    zero = [{**r, "rl_avg_at_m": 0.0} for r in rows if r["seed"] == "0"]  # an Avg of 0 is a value
    assert study.complete_seeds(zero, ["ce", "tail-strong"]) == [0]
    assert study.next_seed(rows, ["ce", "tail-strong"]) == 2  # seed 2 lacks tail-strong's RL value
    assert study.next_seed([], ["ce"]) == 0


def test_ledger_judgement_agrees_with_the_plain_recheck(tmp_path):
    from shapedce.report.load import grid_from_runs_csv
    from shapedce.report.plan import AnalysisPlan
    from shapedce.report.primary import primary_finding
    from shapedce.report.recheck import primary_verdicts, read_gains

    n = 12
    ledger = _ledger(
        tmp_path / "runs.csv",
        {
            "precision-strong": [0.04 + 0.01 * (s % 3) for s in range(n)],
            "tail-strong": [-0.03 + 0.01 * (s % 2) for s in range(n)],
        },
        n,
    )
    plan = AnalysisPlan(primary="precision-strong,tail-strong", margin=0.01, effect=0.03, seeds=n).validate()
    record = grid_from_runs_csv(ledger, task="arith-small", samples=32)
    assert record.settings["eval_samples"] == 32 and record.runs[0].evals["rl"]["tasks"]["arith-small"]
    finding = primary_finding(record, plan)
    verdicts = {c.a: c.verdict for c in finding.checks}
    assert verdicts == {"precision-strong": "held", "tail-strong": "did_not_hold"}
    plain = {r["config"]: r["verdict"] for r in primary_verdicts(read_gains(ledger), plan, "tiny")}
    assert plain == verdicts
    assert [c.margin for c in finding.checks] == [0.01, 0.01] and all(c.primary for c in finding.checks)


def test_ledger_with_a_bad_number_is_one_line(tmp_path):
    from shapedce.report.load import grid_from_runs_csv

    bad = tmp_path / "runs.csv"
    bad.write_text("model,config,seed,midtrain_avg_at_m,rl_avg_at_m\ntiny,ce,0,0.5,high\n")
    with pytest.raises(UserError, match="rl_avg_at_m must be a number; got 'high'"):
        grid_from_runs_csv(bad, task="arith-small", samples=8)
    with pytest.raises(UserError, match="not found"):
        grid_from_runs_csv(tmp_path / "none.csv", task="arith-small", samples=8)


def test_study_report_writes_verdicts_the_recheck_agrees_with(tmp_path, capsys):
    import argparse

    from shapedce.cli import main
    from shapedce.reproduce.grid import load_grid

    n = 10
    ledger = _ledger(
        tmp_path / "runs.csv",
        {
            "precision-strong": [0.002 * (s % 5) - 0.004 for s in range(n)],
            "tail-strong": [0.05 + 0.01 * (s % 2) for s in range(n)],
        },
        n,
    )
    plan = tmp_path / "analysis-plan.yaml"
    plan.write_text("primary: precision-strong,tail-strong\nmargin: 0.03\neffect: 0.03\nseeds: 10\n")
    study.report(argparse.Namespace(ledger=ledger, plan=plan), load_grid("rl-study"))
    doc = json.loads((tmp_path / "verdicts.json").read_text())
    (primary,) = doc["findings"]
    assert primary["primary"] and doc["plan"]["margin"] == 0.03
    assert {c["a"]: (c["verdict"], c["margin"], c["primary"]) for c in primary["checks"]} == {
        "precision-strong": ("did_not_hold", 0.03, True),
        "tail-strong": ("held", 0.03, True),
    }
    assert (tmp_path / "primary.png").stat().st_size > 0 and "primary.png" in (
        tmp_path / "report.md"
    ).read_text()
    assert (
        "| tail-strong | 10 | -11.1% ± 0.0% | +0.000 ± 0.000 | +0.055 ± 0.004 | - |"
        in (tmp_path / "report.md").read_text()
    )
    assert "## Deviations and incidents\n\nNone recorded." in (tmp_path / "report.md").read_text()
    (tmp_path / "deviations.md").write_text("# Deviations\n\n- **Cost.** It took longer.\n")
    study.report(argparse.Namespace(ledger=ledger, plan=plan), load_grid("rl-study"))
    assert (
        (tmp_path / "report.md")
        .read_text()
        .endswith("## Deviations and incidents\n\n- **Cost.** It took longer.\n")
    )
    capsys.readouterr()
    assert main(["report", "--recheck", str(ledger), "--plan", str(plan)]) == 0
    assert "every primary verdict agrees" in capsys.readouterr().out


def test_the_stopping_rule_cannot_skip_a_look(tmp_path):
    """Seeds 6 and 7 harvested together (or while no driver ran) pass the look at 6 without sitting on
    it: the look is still judged, on its own first 6 seeds, and the report reads those seeds only."""
    import argparse

    from shapedce.reproduce.grid import load_grid

    grid = load_grid("rl-study")
    plan = tmp_path / "analysis-plan.yaml"
    plan.write_text(
        "primary: precision-strong,tail-strong\nmargin: 0.03\neffect: 0.03\nseeds: 12\nlooks: 6\n"
    )
    clear = {"precision-strong": 0.2, "tail-strong": 0.25}
    for n, stop in ((5, False), (6, True), (7, True)):
        ledger = _ledger(
            tmp_path / "runs.csv", {c: [d + 0.01 * (s % 3) for s in range(n)] for c, d in clear.items()}, n
        )
        assert study.decided(ledger, plan, grid) is stop, n
    study.report(argparse.Namespace(ledger=ledger, plan=plan), load_grid("rl-study"))
    doc = json.loads((tmp_path / "verdicts.json").read_text())
    assert {c["verdict"] for c in doc["findings"][0]["checks"]} == {"held"}
    assert "(6 seeds)" in (tmp_path / "report.md").read_text()
    unclear = {"precision-strong": [0.02, -0.02] * 4, "tail-strong": [0.03, -0.03] * 4}
    ledger = _ledger(tmp_path / "runs.csv", unclear, 7)
    assert not study.decided(ledger, plan, grid)  # inconclusive at the look: the grid goes on to 12


def test_the_driver_can_stop_its_grid_when_started_in_the_background(sigint_ignored, tmp_path, capsys):
    """`nohup python scripts/rl_study.py run &` starts with SIGINT ignored, which the grid inherits:
    the stopping rule's SIGINT would be lost. The driver restores it before it starts anything."""
    import argparse
    import signal

    from shapedce.reproduce.grid import load_grid

    plan = tmp_path / "analysis-plan.yaml"
    plan.write_text("primary: precision-strong,tail-strong\nmargin: 0.03\neffect: 0.03\nseeds: 3\n")
    ledger = _ledger(tmp_path / "runs.csv", {"precision-strong": [0.1] * 3, "tail-strong": [0.1] * 3}, 3)
    study.run(
        argparse.Namespace(ledger=ledger, plan=plan, out=tmp_path / "runs", overrides=[]),
        load_grid("rl-study"),
    )
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert "the study is complete" in capsys.readouterr().out
