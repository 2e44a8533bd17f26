"""The report: findings and verdicts.json from fixture metrics files, the full render, one-line errors on
broken files, and that `shapedce.report` loads without torch.

    PYTHONPATH=$PWD/src OMP_NUM_THREADS=1 python -m pytest -q tests/test_report.py
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import yaml

from shapedce.cli import main
from shapedce.report import write_report
from shapedce.report.checks import passk_k
from shapedce.report.load import load_grid_dir
from shapedce.report.stats import HELD, INCONCLUSIVE, NOT_HELD, NOT_TESTED
from shapedce.report.verdicts import judged_findings, verdicts_json

# --- a fixture grid written by hand ---------------------------------------------------------------


def _eval(avg: float, entropy: float, ppl: float, m: int = 8, prompts: int = 40) -> dict:
    correct = round(avg * m * prompts)
    counts = [m] * (correct // m) + ([correct % m] if correct % m else [])
    counts += [0] * (prompts - len(counts))
    curve = {
        str(k): sum(
            1.0 - math.prod(1 - k / i for i in range(m - c + 1, m + 1)) if m - c >= k else 1.0 for c in counts
        )
        / prompts
        for k in (1, 2, 4, 8)
    }
    task = {
        "prompts": prompts,
        "samples": m,
        "avg_at_m": sum(counts) / (m * prompts),
        "cons_at_m": avg,
        "pass_at_k": curve,
        "correct_per_prompt": counts,
        "response_length": {"mean": 50.0},
    }
    return {
        "schema_version": 1,
        "tasks": {"arith-compare": task, "knowledge": dict(task, correct_per_prompt=None)},
        "text": {"ppl": ppl, "entropy_mean": entropy, "tail_mass": 0.01},
    }


def make_grid(root, spec: dict[str, list[dict]], models=("tiny",), moe=("tiny-moe",)):
    """spec: config -> per seed {ppl, entropy, mid_avg, rl_avg, rl_h: (start, end), length: (start, end)}."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "grid.yaml").write_text(
        yaml.safe_dump(
            {
                "configs": ",".join(spec),
                "models": ",".join(models),
                "seeds": len(next(iter(spec.values()))),
                "eval_samples": 8,
                "eval_tasks": "knowledge,arith-compare",
            }
        )
    )
    for model in models:
        for config, seeds in spec.items():
            for seed, v in enumerate(seeds):
                run = root / "runs" / model / config / f"s{seed}"
                for stage in ("pretrain", "midtrain", "rl"):
                    (run / stage / "eval").mkdir(parents=True)
                    (run / stage / "final").mkdir()
                    hf = {"num_local_experts": 4, "num_experts_per_tok": 2} if model in moe else {}
                    (run / stage / "final" / "config.json").write_text(json.dumps(hf))
                    rows = []
                    if stage == "rl":
                        for step in range(1, 9):
                            f = (step - 1) / 7
                            rows.append(
                                {
                                    "stage": "rl",
                                    "step": step,
                                    "tokens": step,
                                    "split": "train",
                                    "reward": 0.1 * f,
                                    "entropy": v["rl_h"][0] + f * (v["rl_h"][1] - v["rl_h"][0]),
                                    "response_length": v["length"][0] + f * (v["length"][1] - v["length"][0]),
                                }
                            )
                        rows.append(
                            {
                                "stage": "rl",
                                "step": 8,
                                "tokens": 8,
                                "split": "val",
                                "avg_at_k": v["rl_avg"],
                                "cons_at_k": v["rl_avg"],
                                "pass_at_k": v["rl_avg"],
                            }
                        )
                    else:
                        rows += [
                            {
                                "stage": stage,
                                "step": s,
                                "tokens": 100 * s,
                                "split": "val",
                                "ppl": v["ppl"] + 0.1 / s,
                                "entropy": v["entropy"],
                                "tail_mass": v.get("tail_mass", 0.2),
                            }
                            for s in (1, 2, 3)
                        ]
                    (run / stage / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
                    avg = v["rl_avg"] if stage == "rl" else v.get("mid_avg", 0.1)
                    (run / stage / "eval" / "results.json").write_text(
                        json.dumps(_eval(avg, v["entropy"], v["ppl"]))
                    )
                (run / "timings.json").write_text(json.dumps({"pretrain": 60.0, "rl": 30.0}))
    return root


def paper_like(n_seeds: int, noise: float = 0.001, seed: int = 0):
    """Numbers shaped like the paper's findings, with small independent noise per config, seed and value."""
    rng = np.random.default_rng(seed)

    def cfg(ppl, h, mid_avg, rl_avg, rl_h, length, tail_mass=0.2):
        def e(scale=1.0):
            return float(rng.normal(0.0, noise * scale))

        return [
            dict(
                ppl=ppl + e(),
                entropy=h + e(),
                tail_mass=tail_mass + e(),
                mid_avg=mid_avg + e(4),
                rl_avg=rl_avg + e(4),
                rl_h=(rl_h[0] + e(), rl_h[1] + e()),
                length=(length[0] + 100 * e(), length[1] + 100 * e()),
            )
            for _ in range(n_seeds)
        ]

    return {
        "ce": cfg(2.00, 1.00, 0.10, 0.300, (1.0, 0.8), (60, 58)),
        "precision": cfg(2.02, 0.90, 0.10, 0.400, (0.9, 0.75), (60, 59)),
        "diversity": cfg(1.99, 1.20, 0.05, 0.250, (1.3, 0.6), (60, 40)),
        "tail": cfg(2.01, 0.98, 0.10, 0.380, (1.0, 0.8), (60, 58), tail_mass=0.18),
        "head": cfg(2.03, 1.02, 0.10, 0.300, (1.0, 0.8), (60, 58)),
    }


def _by(grid) -> dict[str, object]:
    return {f.id.split(":")[1]: f for f in judged_findings(grid)}


def test_findings_on_paper_like_numbers_hold(tmp_path):
    # 4 seeds: with 3 (t on 2 degrees of freedom) the RL gains' p ~ 0.01 miss Holm's bar once the
    # entropy and tail checks' absence nulls (true here: their effects are beyond the margin) join the family
    by = _by(load_grid_dir(make_grid(tmp_path / "g", paper_like(4))))
    assert {k: f.verdict for k, f in by.items()} == dict.fromkeys(by, HELD)
    assert (
        len(by) == 7 and len(by["rl_precision_tail"].checks) == 8
    )  # level and RL gain, Avg and Pass, 2 configs


def test_findings_on_contrary_numbers_do_not_hold(tmp_path):
    spec = paper_like(3)
    spec["precision"] = [
        dict(v, entropy=v["entropy"] + 0.2, rl_avg=v["rl_avg"] - 0.2, ppl=v["ppl"] * 1.3)
        for v in spec["precision"]
    ]
    spec["tail"] = [dict(v, tail_mass=0.22 + i / 1000) for i, v in enumerate(spec["tail"])]
    spec["diversity"] = [
        dict(v, length=(60 + i, 70 + i), mid_avg=0.3 + i / 1000) for i, v in enumerate(spec["diversity"])
    ]
    by = _by(load_grid_dir(make_grid(tmp_path / "g", spec)))
    for key in (
        "ppl_parity",
        "entropy_order",
        "tail_mass",
        "rl_precision_tail",
        "rl_length",
        "passk_entropy",
    ):
        assert by[key].verdict == NOT_HELD, key


def test_a_knob_that_does_not_move_entropy_is_shown_absent(tmp_path):
    """precision's entropy equals ce's to within 0.1% on 6 seeds: the check did not hold (absent), where
    the direction test alone would stay inconclusive for ever."""
    spec = paper_like(6)
    spec["precision"] = [
        dict(v, entropy=c["entropy"] + 0.0005 * (-1) ** i)
        for i, (v, c) in enumerate(zip(spec["precision"], spec["ce"]))
    ]
    by = _by(load_grid_dir(make_grid(tmp_path / "g", spec)))
    prec = next(c for c in by["entropy_order"].checks if c.a == "precision")
    assert prec.null_margin == pytest.approx(0.01 * prec.b_mean) and prec.p_adjusted > 0.05
    assert prec.verdict == NOT_HELD and prec.p_absent_adjusted < 0.05
    assert by["entropy_order"].verdict == NOT_HELD and by["tail_mass"].verdict == HELD


def test_rl_gain_is_judged_apart_from_the_level(tmp_path):
    """precision is above ce after RL only because it was above before RL: the level holds, the gain not."""
    spec = paper_like(3)
    spec["precision"] = [dict(v, mid_avg=v["mid_avg"] + 0.1) for v in spec["precision"]]
    checks = _by(load_grid_dir(make_grid(tmp_path / "g", spec)))["rl_precision_tail"].checks
    prec_avg = {c.metric: c for c in checks if c.a == "precision" and c.metric.startswith("Avg@")}
    assert prec_avg["Avg@8 after RL"].verdict == HELD
    gain = prec_avg["Avg@8 RL gain (after RL - after midtrain)"]
    assert gain.verdict == INCONCLUSIVE and abs(gain.estimate) < 0.01


def test_response_length_is_judged_against_ce(tmp_path):
    """diversity's length shrinks 30%, but so does ce's: not a finding about diversity."""
    spec = paper_like(3)
    for config in spec:
        spec[config] = [dict(v, length=(60 + i, 42 + i * 0.7)) for i, v in enumerate(spec[config])]
    c = _by(load_grid_dir(make_grid(tmp_path / "g", spec)))["rl_length"].checks[0]
    assert c.verdict == INCONCLUSIVE and abs(c.estimate) < 0.01 and c.a_mean < -0.25 and c.b_mean < -0.25


def test_one_seed_grids_give_only_not_tested(tmp_path):
    root = make_grid(tmp_path / "g", paper_like(1))
    assert main(["report", str(root)]) == 0
    doc = json.loads((root / "verdicts.json").read_text())
    assert doc["seeds"] == 1 and doc["correction"] == "holm" and doc["schema_version"] == 1
    checks = [c for f in doc["findings"] for c in f["checks"]]
    assert {f["verdict"] for f in doc["findings"]} == {c["verdict"] for c in checks} == {NOT_TESTED}
    assert all(c["p"] is None and c["mde"] is None for c in checks)
    # accuracy checks still show an indicative interval over the evaluation's prompts
    assert any(c["ci"] is not None and "prompts" in c["test"] for c in checks)
    assert "no finding is tested" in (root / "report.md").read_text()


def test_verdicts_json_schema_with_three_seeds(tmp_path):
    grid = load_grid_dir(make_grid(tmp_path / "g", paper_like(3), models=("tiny", "tiny-moe")))
    doc = json.loads(json.dumps(verdicts_json(grid, judged_findings(grid))))
    assert (
        doc["seeds"] == 3
        and doc["first_look_seeds"] == 0
        and [f["id"] for f in doc["findings"]][-1] == "tiny-moe:moe_gains"
    )
    keys = {
        "metric",
        "a",
        "b",
        "kind",
        "test",
        "estimate",
        "ci",
        "p",
        "p_adjusted",
        "margin",
        "null_margin",
        "p_absent",
        "p_absent_adjusted",
        "mde",
        "seeds_needed",
        "level",
        "verdict",
    }
    direction = []
    for f in doc["findings"]:
        assert set(f) >= {"id", "claim", "verdict", "checks"} and f["verdict"] in (
            HELD,
            NOT_HELD,
            INCONCLUSIVE,
        )
        for c in f["checks"]:
            assert (
                set(c) == keys
                and c["kind"] in ("direction", "parity")
                and c["mde"] >= 0
                and c["level"] == 0.05
            )
            assert c["ci"][0] <= c["estimate"] <= c["ci"][1]
            if c["kind"] == "direction":
                direction.append(c)
            else:
                assert c["margin"] > 0 and c["p_adjusted"] is None
    # Holm over all direction checks of both models and the absence tests of the pre-training entropy
    # and tail-mass checks (3 per model); a check's two nulls exclude each other, so the first step
    # multiplies by the number of checks
    assert len(direction) == 2 * 14 + 4
    absence = [c for c in direction if c["null_margin"] is not None]
    assert len(absence) == 2 * 3 and all(c["p_absent_adjusted"] >= c["p_absent"] for c in absence)
    assert all(c["p_adjusted"] >= c["p"] for c in direction)
    family = [c["p"] for c in direction] + [c["p_absent"] for c in absence]
    adjusted = [c["p_adjusted"] for c in direction] + [c["p_absent_adjusted"] for c in absence]
    assert min(adjusted) == pytest.approx(min(1.0, len(direction) * min(family)))
    # read first at 2 seeds, then grown to 3: every check is a second look, at level 0.025
    grid.settings["first_look_seeds"] = 2
    grown = verdicts_json(grid, judged_findings(grid))
    assert grown["first_look_seeds"] == 2 and {
        c["level"] for f in grown["findings"] for c in f["checks"]
    } == {0.025}


def test_report_renders_from_fixture_metrics(tmp_path, capsys):
    root = make_grid(tmp_path / "g", paper_like(3), models=("tiny", "tiny-moe"))
    assert main(["report", str(root)]) == 0
    text = (root / "report.md").read_text()
    for model in ("tiny", "tiny-moe"):
        for fig in ("pretrain", "shaping", "midtrain", "rl", "passk", "effects"):
            png = root / f"{fig}-{model}.png"
            assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
            assert f"]({fig}-{model}.png)" in text
    assert "## tiny (dense)" in text and "## tiny-moe (MoE)" in text
    assert text.count("### After rl") == 2 and "**held**" in text
    assert "Holm-adjusted" in text and "log 1.05" in text and "## How the findings are judged" in text
    row = next(line for line in text.splitlines() if line.startswith("| precision | 3 |"))
    assert " ± " in row
    assert "held-out prompts" not in text and "Second look" not in text
    (root / "grid.yaml").write_text((root / "grid.yaml").read_text() + "first_look_seeds: 2\n")
    assert main(["report", str(root)]) == 0
    assert "**Second look**: this study was first read at 2 seeds" in (root / "report.md").read_text()


def test_knowledge_is_called_recall_never_held_out(tmp_path):
    root = make_grid(tmp_path / "g", paper_like(3))
    for run in (root / "runs" / "tiny").glob("*/s*"):
        (run / "rl" / "config.yaml").write_text("task: knowledge\n")
    text = write_report(root).read_text()
    assert "recall of facts seen in pre-training" in text and "not held out" in text


def test_unfinished_stages_are_not_tested(tmp_path):
    root = make_grid(tmp_path / "g", paper_like(3))
    (
        root / "runs" / "tiny" / "precision" / "s0" / "pretrain" / "final" / "config.json"
    ).unlink()  # still training
    entropy = _by(load_grid_dir(root))["entropy_order"]
    assert [c.verdict for c in entropy.checks] == [NOT_TESTED, HELD] and entropy.verdict == NOT_TESTED
    assert entropy.checks[0].n == 2


def test_report_errors_are_one_line(tmp_path, capsys):
    def err() -> str:
        assert main(["report", str(tmp_path)]) == 2
        text = capsys.readouterr().err
        assert text.count("\n") == 1 and "Traceback" not in text
        return text

    assert "not a reproduce directory" in err()
    (tmp_path / "grid.yaml").write_text("configs: ce\nmodels: tiny\neval_tasks: knowledge\neval_samples: 8\n")
    assert "holds no runs yet" in err()


@pytest.mark.parametrize(
    "text, message",
    [
        ("configs: ce,precision\nmodels: [tiny,\n", "not valid YAML"),  # cut inside a flow list
        ("configs: ce,precision\nmodels: tiny\n", "lacks eval_tasks, eval_samples"),  # cut after a line
        ("", "holds NoneType"),
        ("configs: ce\nmodels: tiny\neval_tasks: knowledge\neval_samples: x\n", "eval_samples must be"),
    ],
)
def test_a_truncated_grid_yaml_is_a_one_line_error(tmp_path, capsys, text, message):
    root = make_grid(tmp_path / "g", paper_like(1))
    (root / "grid.yaml").write_text(text)
    assert main(["report", str(root)]) == 2
    out = capsys.readouterr().err
    assert message in out and out.count("\n") == 1, out


@pytest.mark.parametrize(
    "content, message",
    [
        ("[]", "holds list"),
        ('{"tasks": [1]}', "holds dict"),
        ('{"tas', "not valid JSON"),
        ('{"tasks": {"k": 3}}', "must be an object"),
    ],
)
def test_a_broken_results_json_is_a_one_line_error(tmp_path, capsys, content, message):
    root = make_grid(tmp_path / "g", paper_like(1))
    (root / "runs" / "tiny" / "tail" / "s0" / "rl" / "eval" / "results.json").write_text(content)
    assert main(["report", str(root)]) == 2
    out = capsys.readouterr().err
    assert message in out and "results.json" in out and out.count("\n") == 1, out


def test_report_has_an_auto_row_when_the_grid_runs_auto(tmp_path):
    spec = paper_like(3)
    spec["auto"] = [dict(v, entropy=0.85) for v in spec["ce"]]
    text = write_report(make_grid(tmp_path / "g", spec)).read_text()
    assert (
        sum(line.startswith("| auto | 3 |") for line in text.splitlines()) == 3
    )  # after pretrain, midtrain, rl
    assert (
        "| auto vs ce: final validation log-perplexity" in text
    )  # every configuration's perplexity is judged


def test_report_package_imports_no_torch():
    code = (
        "import sys, shapedce.report, shapedce.report.render, shapedce.report.verdicts; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, "
        "sorted(m for m in sys.modules if m.startswith(('torch', 'transformers')))[:5]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_passk_k():
    assert [passk_k(m) for m in (1, 2, 8, 16, 128, 100)] == [1, 1, 4, 8, 64, 32]


def test_moe_is_recognised_from_the_config_our_moe_flavor_saves():
    # Regression: the report looked for num_experts only, but Qwen3-MoE saves num_local_experts, so a
    # real tiny-moe grid had no "(MoE)" section and no MoE-vs-dense finding.
    from shapedce.models import build_model
    from shapedce.report.load import MOE_KEYS

    assert any(build_model("tiny-moe", seed=0).config.to_dict().get(k) for k in MOE_KEYS)
    assert not any(build_model("tiny", seed=0).config.to_dict().get(k) for k in MOE_KEYS)


def test_runs_csv_holds_the_values_the_checks_pair(tmp_path):
    import csv

    spec = paper_like(3)
    root = make_grid(tmp_path / "g", spec)
    assert main(["report", str(root)]) == 0
    rows = list(csv.DictReader((root / "runs.csv").open()))
    assert len(rows) == 3 * len(spec)
    ce1 = next(r for r in rows if r["config"] == "ce" and r["seed"] == "1")
    assert float(ce1["pretrain_entropy"]) == pytest.approx(spec["ce"][1]["entropy"])
    assert float(ce1["pretrain_tail_mass"]) == pytest.approx(spec["ce"][1]["tail_mass"])
    assert float(ce1["rl_avg_at_m"]) > 0 and "midtrain_pass_at_4" in ce1
    assert float(ce1["midtrain_ppl"]) == pytest.approx(spec["ce"][1]["ppl"] + 0.1 / 3)  # last val point
