"""The analysis plan and its primary family: loading and validating a plan, alpha-spending boundaries
against published values, held / did_not_hold / inconclusive on hand-made differences, Holm-Shaffer's
ordering, interim looks, seeds needed as a range, labels, the refused unplanned look, the plain re-check
from runs.csv, and the family error of both claims by simulation.

    PYTHONPATH=$PWD/src OMP_NUM_THREADS=1 python -m pytest -q tests/test_report_plan.py
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from report_grid import make_grid, paper_like
from shapedce.cli import main
from shapedce.errors import UserError
from shapedce.report import spending, tdist
from shapedce.report.load import load_grid_dir
from shapedce.report.plan import AnalysisPlan, load_plan
from shapedce.report.primary import decide_primary, family_rejections, look_pvalues
from shapedce.report.recheck import recheck
from shapedce.report.stats import HELD, INCONCLUSIVE, NOT_APPLICABLE, NOT_HELD, NOT_TESTED, Check
from shapedce.report.verdicts import judged_findings, verdicts_json

Z = [-1.2, 0.4, 1.5, -0.6, 0.1, -0.9, 1.1, -0.3, 0.6, -0.7]
"""Ten fixed values, standardised below to mean 0 and SD 1: d = mean + sd * z has exactly that mean and SD."""


def diffs(mean: float, sd: float, n: int = 10) -> list[float]:
    z = np.array(Z[:n]) - np.mean(Z[:n])
    return list(mean + sd * z / z.std(ddof=1))


def check(d: list[float], base_gain: float = 0.1) -> Check:
    return Check(
        "Avg@8 RL gain", "x", "ce", "direction", d, 1, primary=True, extra={"b_values": [base_gain] * len(d)}
    )


# --- the plan -----------------------------------------------------------------------------------------


def test_a_plan_loads_from_yaml_and_json(tmp_path):
    (tmp_path / "p.yaml").write_text(
        "primary: [precision, tail]\nalpha: 0.025\nmargin: 0.01\nseeds: 20\nlooks: 10\n"
    )
    (tmp_path / "p.json").write_text(json.dumps({"seeds": 12, "margin_kind": "relative", "margin": 0.1}))
    plan = load_plan(tmp_path / "p.yaml")
    assert (
        plan.configs == ["precision", "tail"]
        and plan.looks_seeds == (10, 20)
        and plan.margin_for(5.0) == 0.01
    )
    rel = load_plan(tmp_path / "p.json")
    assert rel.looks_seeds == (12,) and rel.margin_for(0.08) == pytest.approx(0.008)


@pytest.mark.parametrize(
    "text, message",
    [
        ("alpha: 0.7\n", "alpha must be in (0, 0.5)"),
        ("looks: 10,5\nseeds: 20\n", "looks must be increasing"),
        ("looks: 20\nseeds: 20\n", "looks must be increasing"),
        ("looks: 2\nseeds: 20\n", "looks must be increasing seed counts >= 3"),
        ("margin_kind: percent\n", "margin_kind must be absolute or relative"),
        ("spending: haybittle\n", "spending must be obrien-fleming or pocock"),
        ("primary: ce\n", "baseline must be not in primary"),
        ("not_applicable: rl_length\n", "not_applicable_reason must be a reason"),
        ("alpah: 0.05\n", "did you mean 'alpha'"),
        ("- 1\n", "a mapping"),
    ],
)
def test_a_bad_plan_is_a_one_line_error(tmp_path, text, message):
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        load_plan(tmp_path / "p.yaml")
    assert "\n" not in str(err.value)


# --- alpha spending -----------------------------------------------------------------------------------


def test_classic_boundaries_spend_their_published_level():
    # Jennison & Turnbull Table 2.1/4.1 (two-sided 0.05, i.e. one-sided 0.025): Pocock C = 2.178 (K=2),
    # 2.289 (K=3); O'Brien-Fleming C = 1.977 (K=2: 2.797, 1.977), 2.004 (K=3)
    assert spending.crossing_probability([2.797, 1.977], [0.5, 1.0]) == pytest.approx(0.025, abs=1e-4)
    assert spending.crossing_probability([2.178, 2.178], [0.5, 1.0]) == pytest.approx(0.025, abs=1e-4)
    assert spending.crossing_probability([2.289] * 3, [1 / 3, 2 / 3, 1]) == pytest.approx(0.025, abs=1e-4)
    obf3 = [2.004 * math.sqrt(3 / k) for k in (1, 2, 3)]
    assert spending.crossing_probability(obf3, [1 / 3, 2 / 3, 1]) == pytest.approx(0.025, abs=1e-4)
    lo, hi = 1.9, 2.1  # solve O'Brien-Fleming's constant for K = 2 by bisection
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (
            (mid, hi) if spending.crossing_probability([mid * 2**0.5, mid], [0.5, 1]) > 0.025 else (lo, mid)
        )
    assert lo == pytest.approx(1.977, abs=1e-3)


def test_lan_demets_boundaries():
    # O'Brien-Fleming-type spending, one-sided 0.025: the first boundary in closed form, and the three-look
    # design gsDesign prints by default (3.71, 2.51, 1.99)
    b = spending.boundaries((10, 20), 0.025, "obrien-fleming")
    assert b[0] == pytest.approx(
        spending.norm_ppf(1 - spending.spent("obrien-fleming", 0.5, 0.025)), abs=1e-6
    )
    assert b[0] == pytest.approx(2.963, abs=2e-3) and b[1] == pytest.approx(1.969, abs=2e-3)
    assert spending.boundaries((5, 10, 15), 0.025, "obrien-fleming") == pytest.approx(
        (3.710, 2.511, 1.993), abs=3e-3
    )
    pocock = spending.boundaries((10, 20), 0.025, "pocock")
    assert spending.spent("pocock", 1.0, 0.025) == pytest.approx(0.025)
    # independent check: simulate the z process and count crossings
    rng = np.random.default_rng(0)
    s1 = rng.normal(0, math.sqrt(0.5), 400_000)
    s2 = s1 + rng.normal(0, math.sqrt(0.5), s1.size)
    for bound in (b, pocock):
        rate = np.mean((s1 / math.sqrt(0.5) >= bound[0]) | (s2 >= bound[1]))
        assert rate == pytest.approx(0.025, abs=3 * math.sqrt(0.025 * 0.975 / s1.size))
    assert spending.nominal_levels((12,), 0.025, "pocock") == (0.025,)


# --- the primary rules on hand-made differences -------------------------------------------------------


@pytest.mark.parametrize(
    "mean, sd, verdict",
    [
        (0.05, 0.02, HELD),  # t = 7.9 on 9 df
        (-0.02, 0.01, NOT_HELD),  # far below the margin 0.01
        (0.004, 0.03, INCONCLUSIVE),  # neither 0 nor the margin excluded
        (0.005, 0.0005, HELD),  # both: positive but below the margin, held and said so
    ],
)
def test_primary_rules(mean, sd, verdict):
    c = decide_primary([check(diffs(mean, sd))], AnalysisPlan(seeds=10).validate())[0]
    assert c.verdict == verdict and c.primary and c.margin == 0.01 and c.ci[0] < c.estimate < c.ci[1]
    assert ("smaller than the margin" in c.test) == (mean == 0.005)
    t = mean / (sd / math.sqrt(10))  # one check: the adjusted p is the one-sided p itself
    assert c.p == pytest.approx(tdist.t_sf(t, 9)) and c.p_adjusted == pytest.approx(c.p)
    assert c.p_absent == pytest.approx(tdist.t_cdf((mean - 0.01) / (sd / math.sqrt(10)), 9))


def test_relative_margin_is_a_fraction_of_the_baseline_gain():
    plan = AnalysisPlan(seeds=10, margin=0.1, margin_kind="relative").validate()
    c = decide_primary([check(diffs(0.004, 0.002), base_gain=0.08)], plan)[0]
    assert c.margin == pytest.approx(0.008) and c.verdict == HELD and "smaller than the margin" in c.test
    c = decide_primary([check(diffs(0.004, 0.002), base_gain=0.02)], plan)[0]
    assert c.margin == pytest.approx(0.002) and c.verdict == HELD and "smaller" not in c.test


def test_holm_shaffer_order_across_the_family():
    """B's one-sided p is 0.018: above alpha/2, below alpha. B holds only when A's both nulls fall first
    (A shown positive and below the margin: no true null left in A), never when A is only held."""
    b = diffs(2.6 * 0.1 / math.sqrt(10), 0.1)  # t = 2.6 on 9 df
    p_b = tdist.t_sf(2.6, 9)
    assert 0.0125 < p_b < 0.025
    plan = AnalysisPlan(seeds=10).validate()
    closed = decide_primary([check(diffs(0.005, 0.0005)), check(b)], plan)
    assert [c.verdict for c in closed] == [HELD, HELD] and closed[1].p_adjusted == pytest.approx(p_b)
    open_ = decide_primary([check(diffs(0.2, 0.05)), check(b)], plan)
    assert [c.verdict for c in open_] == [HELD, INCONCLUSIVE] and open_[1].p_adjusted == pytest.approx(
        2 * p_b
    )


def test_interim_looks_use_the_spending_boundaries():
    plan = AnalysisPlan(seeds=10, looks="5").validate()
    nominal = spending.nominal_levels((5, 10), 0.025 / 2, "obrien-fleming")
    assert nominal[0] < 0.001 and 0.0125 > nominal[1] > 0.01
    strong = decide_primary([check(diffs(0.1, 0.01, 7)), check(diffs(0.1, 0.01, 7))], plan)
    assert all(
        c.verdict == HELD and c.n == 5 and "look 1 of 2" in c.test for c in strong
    )  # seeds 6, 7 unused
    # p = 0.006 at 5 seeds: enough for a fixed design at alpha / 2, not for the first look's boundary
    weak = check(diffs(4.6 * 0.05 / math.sqrt(5), 0.05, 5))
    first = decide_primary([weak, check(diffs(0.1, 0.2, 5))], plan)[0]
    assert (
        first.p < 0.0125 and first.verdict == INCONCLUSIVE and "continue to the next look at 10" in first.test
    )
    early = decide_primary([check(diffs(0.1, 0.01, 4))], plan)[0]
    assert early.verdict == NOT_TESTED and "before the plan's first look at 5" in early.test


def test_seeds_needed_is_a_range_around_the_point_estimate():
    c = decide_primary(
        [check(diffs(0.01, 0.05)), check(diffs(0.0, 0.05))], AnalysisPlan(seeds=10).validate()
    )[0]
    lo, hi = c.seeds_range
    assert lo < c.seeds_needed < hi and c.mde > 0
    sd_lo, sd_hi = tdist.sd_interval(0.05, 10)
    assert (sd_lo, sd_hi) == pytest.approx(
        (0.05 * math.sqrt(9 / 19.023), 0.05 * math.sqrt(9 / 2.700)), rel=1e-3
    )
    assert tdist.seeds_text((lo, hi)) == f"{lo}-{hi}" and tdist.seeds_text((4, None)) == "4-> 10000"


def test_chi2_quantiles_match_the_table():
    for q, df, value in ((0.975, 2, 7.378), (0.025, 2, 0.0506), (0.975, 9, 19.023), (0.025, 19, 8.907)):
        assert tdist.chi2_ppf(q, df) == pytest.approx(value, abs=1e-3)


def test_both_claims_keep_the_family_error_at_alpha():
    """Two checks, 8 seeds, one-sided family level 0.025: with true d = 0 any held is wrong, with true d =
    margin any did_not_hold is wrong; with an interim look at 4 seeds (O'Brien-Fleming) as well."""
    rng, reps = np.random.default_rng(3), 3000
    for looks in ((8,), (4, 8)):
        for truth, wrong_claim in ((0.0, 0), (0.5, 1)):  # margin 0.5 seed spreads
            errors = 0
            for x in rng.normal(truth, 1.0, size=(reps, 2, 8)):
                pv = [look_pvalues(list(d), looks, 0.5) for d in x]
                errors += any(
                    h == wrong_claim for _, h in family_rejections(pv, 0.025, looks, "obrien-fleming")
                )
            assert errors / reps <= 0.025 + 3 * math.sqrt(0.025 * 0.975 / reps), (looks, truth)


# --- on a grid: verdicts.json, labels, refused looks, the re-check --------------------------------------


def _study(tmp_path, n=8):
    spec = paper_like(n)
    spec["tail"] = [
        dict(v, rl_avg=c["rl_avg"], mid_avg=c["mid_avg"]) for v, c in zip(spec["tail"], spec["ce"])
    ]
    return make_grid(tmp_path / "g", spec)


def test_verdicts_json_marks_the_primary_family(tmp_path):
    grid = load_grid_dir(_study(tmp_path))
    plan = AnalysisPlan(seeds=8).validate()
    doc = json.loads(json.dumps(verdicts_json(grid, judged_findings(grid, plan), plan)))
    first = doc["findings"][0]
    assert first["id"] == "tiny:primary" and first["primary"] and doc["plan"]["looks_seeds"] == [8]
    by = {c["a"]: c for c in first["checks"]}
    assert by["precision"]["verdict"] == HELD and by["tail"]["verdict"] == NOT_HELD  # tail's gain = ce's
    assert all(
        c["primary"] and c["margin"] == 0.01 and "-" not in str(c["seeds_needed_range"]) for c in by.values()
    )
    secondary = [c for f in doc["findings"][1:] for c in f["checks"]]
    assert not any(c["primary"] for c in secondary)
    assert not any(c["a"] == "precision" and c["metric"].startswith("Avg@8 RL gain") for c in secondary)
    labels = {f["id"]: f["label"] for f in doc["findings"]}
    assert labels["tiny:entropy_order"] == labels["tiny:tail_mass"] == "manipulation"


def test_not_applicable_from_the_data_and_from_the_plan(tmp_path):
    spec = paper_like(3)
    for config in spec:
        spec[config] = [dict(v, length=(26, 26)) for v in spec[config]]  # a fixed answer template
    grid = load_grid_dir(make_grid(tmp_path / "g", spec))
    by = {f.id: f for f in judged_findings(grid)}
    assert (
        by["tiny:rl_length"].verdict == NOT_APPLICABLE and "26 tokens" in by["tiny:rl_length"].checks[0].test
    )
    plan = AnalysisPlan(
        seeds=3, not_applicable="passk_entropy", not_applicable_reason="no sampling"
    ).validate()
    by = {f.id: f for f in judged_findings(grid, plan)}
    assert by["tiny:passk_entropy"].verdict == NOT_APPLICABLE and all(
        c.p is None for c in by["tiny:passk_entropy"].checks
    )


def test_a_look_not_in_the_plan_is_refused(tmp_path):
    grid = load_grid_dir(_study(tmp_path, 4))
    grid.settings["first_look_seeds"] = 3
    assert judged_findings(grid, AnalysisPlan(seeds=4, looks="3").validate())[0].checks[0].n == 4
    with pytest.raises(UserError, match="first_look_seeds=3 that no spending plan names"):
        judged_findings(grid, AnalysisPlan(seeds=4).validate())


def test_the_plain_recheck_agrees_with_the_report(tmp_path, capsys):
    root = _study(tmp_path)
    (root / "analysis-plan.yaml").write_text("seeds: 8\nlooks: 4\n")
    assert main(["report", str(root)]) == 0
    assert "## The primary family" in (root / "report.md").read_text()
    lines, agree = recheck(root / "runs.csv", load_plan(root / "analysis-plan.yaml"), root / "verdicts.json")
    assert (
        agree
        and "precision - ce: 8 seeds" in lines[1]
        and lines[1].endswith("held; verdicts.json: held (agrees)")
    )
    capsys.readouterr()
    plan = str(root / "analysis-plan.yaml")
    assert main(["report", "--recheck", str(root / "runs.csv"), "--plan", plan]) == 0
    assert "every primary verdict agrees" in capsys.readouterr().out
    doc = json.loads((root / "verdicts.json").read_text())
    doc["findings"][0]["checks"][1]["verdict"] = HELD  # tamper: tail "held"
    (root / "verdicts.json").write_text(json.dumps(doc))
    assert main(["report", "--recheck", str(root / "runs.csv"), "--plan", plan]) == 1
    assert "DISAGREES" in capsys.readouterr().out


def test_recheck_on_a_hand_written_runs_csv(tmp_path):
    rows = ["model,config,seed,midtrain_avg_at_m,rl_avg_at_m"]
    for s, (up, flat) in enumerate(zip(diffs(0.08, 0.01, 6), diffs(0.0, 0.003, 6))):
        rows += [
            f"tiny,ce,{s},0.3,0.4",
            f"tiny,precision,{s},0.3,{0.4 + up}",
            f"tiny,tail,{s},0.3,{0.4 + flat}",
        ]
    rows.append("tiny,precision,6,0.3,")  # an unfinished RL stage is skipped
    (tmp_path / "runs.csv").write_text("\n".join(rows) + "\n")
    lines, agree = recheck(tmp_path / "runs.csv", AnalysisPlan(seeds=6).validate())
    assert agree and lines[1].endswith(": held") and lines[2].endswith(": did_not_hold")
    (tmp_path / "bad.csv").write_text("model,config,seed\n")
    with pytest.raises(UserError, match="lacks the column"):
        recheck(tmp_path / "bad.csv", AnalysisPlan().validate())


def test_recheck_and_report_agree_under_a_relative_margin_and_interim_looks(tmp_path):
    """The two implementations on the same random tables: a relative margin (measured at each look)
    and O'Brien-Fleming looks at 4 and 8 seeds (some tables stop at 5 seeds: the interim look), over
    truths from none to clearly positive; every verdict kind occurs."""
    rng = np.random.default_rng(11)
    plan = AnalysisPlan(seeds=8, looks="4", margin=0.25, margin_kind="relative").validate()
    seen = set()
    for trial in range(12):
        n = 5 if trial % 3 == 0 else 9
        base = rng.normal(0.08, 0.02, 9)
        shifts = (("precision", (0.0, 0.008, 0.02, 0.1)[trial % 4]), ("tail", 0.01))
        gains = {c: (base + rng.normal(shift, 0.015, 9))[:n] for c, shift in shifts}
        base = base[:n]
        rows = ["model,config,seed,midtrain_avg_at_m,rl_avg_at_m"]
        rows += [f"tiny,ce,{s},0.3,{float(0.3 + base[s])!r}" for s in range(n)]
        rows += [f"tiny,{c},{s},0.3,{float(0.3 + g[s])!r}" for c, g in gains.items() for s in range(n)]
        (tmp_path / "runs.csv").write_text("\n".join(rows) + "\n")
        lines, _ = recheck(tmp_path / "runs.csv", plan)
        mine = [
            Check("g", c, "ce", "direction", list(g - base), 1, primary=True, extra={"b_values": list(base)})
            for c, g in gains.items()
        ]
        decide_primary(mine, plan)
        assert [line.rsplit(": ", 1)[1] for line in lines[1:]] == [c.verdict for c in mine], trial
        seen |= {(c.verdict, c.n) for c in mine}
    assert {(HELD, 4), (HELD, 8), (NOT_HELD, 8), (INCONCLUSIVE, 4), (INCONCLUSIVE, 8)} <= seen
