"""The report's findings and verdicts.json from a hand-written grid: paper-like numbers hold, contrary
ones do not, absent effects are shown absent, and the schema of verdicts.json.

    PYTHONPATH=$PWD/src OMP_NUM_THREADS=1 python -m pytest -q tests/test_report.py
"""

from __future__ import annotations

import json

import pytest

from report_grid import by_finding, make_grid, paper_like
from shapedce.errors import UserError
from shapedce.report.checks import passk_k
from shapedce.report.load import load_grid_dir
from shapedce.report.stats import HELD, INCONCLUSIVE, NOT_HELD, NOT_TESTED
from shapedce.report.verdicts import judged_findings, verdicts_json


def test_findings_on_paper_like_numbers_hold(tmp_path):
    # 4 seeds: with 3 (t on 2 degrees of freedom) the RL gains' p ~ 0.01 miss Holm's bar once the
    # entropy and tail checks' absence nulls (true here: their effects are beyond the margin) join the family
    by = by_finding(load_grid_dir(make_grid(tmp_path / "g", paper_like(4))))
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
    by = by_finding(load_grid_dir(make_grid(tmp_path / "g", spec)))
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
    by = by_finding(load_grid_dir(make_grid(tmp_path / "g", spec)))
    prec = next(c for c in by["entropy_order"].checks if c.a == "precision")
    assert prec.null_margin == pytest.approx(0.01 * prec.b_mean) and prec.p_adjusted > 0.05
    assert prec.verdict == NOT_HELD and prec.p_absent_adjusted < 0.05
    assert by["entropy_order"].verdict == NOT_HELD and by["tail_mass"].verdict == HELD


def test_rl_gain_is_judged_apart_from_the_level(tmp_path):
    """precision is above ce after RL only because it was above before RL: the level holds, the gain not."""
    spec = paper_like(3)
    spec["precision"] = [dict(v, mid_avg=v["mid_avg"] + 0.1) for v in spec["precision"]]
    checks = by_finding(load_grid_dir(make_grid(tmp_path / "g", spec)))["rl_precision_tail"].checks
    prec_avg = {c.metric: c for c in checks if c.a == "precision" and c.metric.startswith("Avg@")}
    assert prec_avg["Avg@8 after RL"].verdict == HELD
    gain = prec_avg["Avg@8 RL gain (after RL - after midtrain)"]
    assert gain.verdict == INCONCLUSIVE and abs(gain.estimate) < 0.01


def test_response_length_is_judged_against_ce(tmp_path):
    """diversity's length shrinks 30%, but so does ce's: not a finding about diversity."""
    spec = paper_like(3)
    for config in spec:
        spec[config] = [dict(v, length=(60 + i, 42 + i * 0.7)) for i, v in enumerate(spec[config])]
    c = by_finding(load_grid_dir(make_grid(tmp_path / "g", spec)))["rl_length"].checks[0]
    assert c.verdict == INCONCLUSIVE and abs(c.estimate) < 0.01 and c.a_mean < -0.25 and c.b_mean < -0.25


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
        # issue 29: seeds needed as a range over the SD's 95% interval; the primary flag and the label;
        # the parity checks' did_not_hold claim (d beyond the margin), Holm-adjusted with the rest
        "seeds_needed_range",
        "primary",
        "label",
        "p_outside",
        "p_outside_adjusted",
    }
    direction, parity = [], []
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
                parity.append(c)
    # Holm over all direction checks of both models, the absence tests of the pre-training entropy
    # and tail-mass checks (3 per model) and the parity checks' did_not_hold claims; a check's two nulls
    # exclude each other, so the first step multiplies by the number of checks
    assert len(direction) == 2 * 14 + 4 and len(parity) == 2 * 6  # ppl: 4 configs vs ce; Pass@k: 2 stages
    absence = [c for c in direction if c["null_margin"] is not None]
    assert len(absence) == 2 * 3 and all(c["p_absent_adjusted"] >= c["p_absent"] for c in absence)
    assert all(c["p_adjusted"] >= c["p"] for c in direction)
    family = [c["p"] for c in direction] + [c["p_absent"] for c in absence] + [c["p_outside"] for c in parity]
    adjusted = (
        [c["p_adjusted"] for c in direction]
        + [c["p_absent_adjusted"] for c in absence]
        + [c["p_outside_adjusted"] for c in parity]
    )
    assert min(adjusted) == pytest.approx(min(1.0, (len(direction) + len(parity)) * min(family)))
    assert all(c["primary"] is False for c in direction) and doc["plan"] is None
    ranged = [(c["seeds_needed_range"], c["seeds_needed"]) for c in direction if c["seeds_needed"]]
    assert ranged and all(lo <= n and (hi is None or n <= hi) for (lo, hi), n in ranged)
    # read first at 2 seeds, then grown to 3: the old second look (0.025 after a full 0.05) is refused
    # without a spending plan naming that look (issue 29: its family error exceeds 5%)
    grid.settings["first_look_seeds"] = 2
    with pytest.raises(UserError, match="first_look_seeds=2 that no spending plan names"):
        judged_findings(grid)


def test_unfinished_stages_are_not_tested(tmp_path):
    root = make_grid(tmp_path / "g", paper_like(3))
    (
        root / "runs" / "tiny" / "precision" / "s0" / "pretrain" / "final" / "config.json"
    ).unlink()  # still training
    entropy = by_finding(load_grid_dir(root))["entropy_order"]
    assert [c.verdict for c in entropy.checks] == [NOT_TESTED, HELD] and entropy.verdict == NOT_TESTED
    assert entropy.checks[0].n == 2


def test_passk_k():
    assert [passk_k(m) for m in (1, 2, 8, 16, 128, 100)] == [1, 1, 4, 8, 64, 32]


def test_moe_is_recognised_from_the_config_our_moe_flavor_saves():
    # Regression: the report looked for num_experts only, but Qwen3-MoE saves num_local_experts, so a
    # real tiny-moe grid had no "(MoE)" section and no MoE-vs-dense finding.
    from shapedce.models import build_model
    from shapedce.report.load import MOE_KEYS

    assert any(build_model("tiny-moe", seed=0).config.to_dict().get(k) for k in MOE_KEYS)
    assert not any(build_model("tiny", seed=0).config.to_dict().get(k) for k in MOE_KEYS)
