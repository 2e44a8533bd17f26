"""The report: verdict statistics on hand-made numbers, and a full render from fixture metrics files."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from shapedce.cli import main
from shapedce.report import write_report
from shapedce.report.load import load_grid_dir
from shapedce.report.stats import (HELD, INCONCLUSIVE, NOT_HELD, NOT_RUN, combine, compare, compare_not_above,
                                   mean_ci, paired_se)
from shapedce.report.verdicts import findings, passk_k


# --- statistics -----------------------------------------------------------------------------------

def test_mean_ci_matches_t_interval():
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert mean_ci([5.0]) == (5.0, None)


@pytest.mark.parametrize("a, b, expect, verdict", [
    ([0.50, 0.52, 0.51], [0.40, 0.41, 0.40], 1, HELD),          # clearly above, 3 seeds
    ([0.50, 0.52, 0.51], [0.40, 0.41, 0.40], -1, NOT_HELD),     # claimed below, clearly above
    ([0.50, 0.40, 0.45], [0.45, 0.46, 0.44], 1, INCONCLUSIVE),  # interval straddles 0
    ([0.40, 0.41, 0.39], [0.50, 0.52, 0.51], -1, HELD),
])
def test_compare_over_seeds(a, b, expect, verdict):
    assert compare("claim", a, b, expect=expect, tolerance=0.0).verdict == verdict


def test_compare_one_seed_threshold_and_prompt_interval():
    assert compare("c", [0.53], [0.50], expect=1, tolerance=0.02).verdict == HELD
    assert compare("c", [0.51], [0.50], expect=1, tolerance=0.02).verdict == INCONCLUSIVE
    assert compare("c", [0.45], [0.50], expect=1, tolerance=0.02).verdict == NOT_HELD
    # the same 0.03 difference with an interval over prompts: significant only when se is small
    assert compare("c", [0.53], [0.50], expect=1, tolerance=0.0, prompt_se=0.01).verdict == HELD
    assert compare("c", [0.53], [0.50], expect=1, tolerance=0.0, prompt_se=0.02).verdict == INCONCLUSIVE
    assert compare("c", [], [0.5], expect=1, tolerance=0.0).verdict == NOT_RUN


def test_compare_not_above():
    assert compare_not_above("c", [0.40, 0.41, 0.42], [0.50, 0.51, 0.50], tolerance=0).verdict == HELD
    assert compare_not_above("c", [0.60, 0.61, 0.62], [0.50, 0.51, 0.50], tolerance=0).verdict == NOT_HELD
    assert compare_not_above("c", [0.52, 0.45, 0.55], [0.50, 0.49, 0.50], tolerance=0).verdict == INCONCLUSIVE


def test_combine_and_helpers():
    assert combine([HELD, HELD]) == HELD
    assert combine([HELD, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([HELD, NOT_HELD, INCONCLUSIVE]) == NOT_HELD
    assert combine([HELD, NOT_RUN]) == NOT_RUN
    assert [passk_k(m) for m in (1, 2, 8, 16, 128, 100)] == [1, 1, 4, 8, 64, 32]
    assert paired_se([1, 0, 1, 1], [0, 0, 1, 0]) == pytest.approx(math.sqrt(1 / 3) / 2)  # d = 1, 0, 0, 1
    with pytest.raises(ValueError, match="equal-length"):
        paired_se([1.0], [1.0, 2.0])


# --- a fixture grid written by hand ---------------------------------------------------------------

def _eval(avg: float, entropy: float, ppl: float, m: int = 8, prompts: int = 40) -> dict:
    correct = round(avg * m * prompts)
    counts = [m] * (correct // m) + ([correct % m] if correct % m else [])
    counts += [0] * (prompts - len(counts))
    curve = {str(k): sum(1.0 - math.prod(1 - k / i for i in range(m - c + 1, m + 1)) if m - c >= k else 1.0
                         for c in counts) / prompts for k in (1, 2, 4, 8)}
    task = {"prompts": prompts, "samples": m, "avg_at_m": sum(counts) / (m * prompts), "cons_at_m": avg,
            "pass_at_k": curve, "correct_per_prompt": counts, "response_length": {"mean": 50.0}}
    return {"schema_version": 1, "tasks": {"arith-compare": task, "knowledge": dict(task, correct_per_prompt=None)},
            "text": {"ppl": ppl, "entropy_mean": entropy, "tail_mass": 0.01}}


def make_grid(root, spec: dict[str, list[dict]], models=("tiny",)):
    """spec: config -> per seed {ppl, entropy, rl_avg, rl_h: (start, end), length: (start, end)}."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "grid.yaml").write_text(yaml.safe_dump({"configs": ",".join(spec), "models": ",".join(models),
                                                    "seeds": len(next(iter(spec.values()))), "eval_samples": 8,
                                                    "eval_tasks": "knowledge,arith-compare"}))
    for model in models:
        for config, seeds in spec.items():
            for seed, v in enumerate(seeds):
                run = root / "runs" / model / config / f"s{seed}"
                for stage in ("pretrain", "midtrain", "rl"):
                    (run / stage / "eval").mkdir(parents=True)
                    (run / stage / "final").mkdir()
                    (run / stage / "final" / "config.json").write_text("{}")
                    rows = []
                    if stage == "rl":
                        for step in range(1, 9):
                            f = (step - 1) / 7
                            rows.append({"stage": "rl", "step": step, "tokens": step, "split": "train", "reward": 0.1 * f,
                                         "entropy": v["rl_h"][0] + f * (v["rl_h"][1] - v["rl_h"][0]),
                                         "response_length": v["length"][0] + f * (v["length"][1] - v["length"][0])})
                        rows.append({"stage": "rl", "step": 8, "tokens": 8, "split": "val", "avg_at_k": v["rl_avg"],
                                     "cons_at_k": v["rl_avg"], "pass_at_k": v["rl_avg"]})
                    else:
                        rows += [{"stage": stage, "step": s, "tokens": 100 * s, "split": "val", "ppl": v["ppl"] + 1 / s,
                                  "entropy": v["entropy"]} for s in (1, 2, 3)]
                    (run / stage / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
                    avg = v["rl_avg"] if stage == "rl" else v.get("mid_avg", 0.1)
                    (run / stage / "eval" / "results.json").write_text(json.dumps(_eval(avg, v["entropy"], v["ppl"])))
                (run / "timings.json").write_text(json.dumps({"pretrain": 60.0, "rl": 30.0}))
    return root


def _seeds(n, **v):
    return [dict(v) for _ in range(n)]


def paper_like(n_seeds: int, jitter: float = 0.002):
    """Numbers shaped like the paper's findings, with a small per-seed jitter."""
    def cfg(ppl, h, rl_avg, rl_h, length):
        return [dict(ppl=ppl + s * jitter, entropy=h + s * jitter, rl_avg=rl_avg + s * jitter, rl_h=rl_h,
                     length=length) for s in range(n_seeds)]
    return {
        "ce": cfg(2.00, 1.00, 0.300, (1.0, 0.8), (60, 58)),
        "precision": cfg(2.02, 0.90, 0.400, (0.9, 0.75), (60, 59)),
        "diversity": cfg(1.99, 1.20, 0.250, (1.3, 0.6), (60, 40)),
        "tail": cfg(2.01, 0.98, 0.380, (1.0, 0.8), (60, 58)),
        "head": cfg(2.03, 1.02, 0.300, (1.0, 0.8), (60, 58)),
    }


def test_findings_on_paper_like_numbers_hold(tmp_path):
    grid = load_grid_dir(make_grid(tmp_path / "g", paper_like(3)))
    verdicts = {f.title.split()[0] + f.title.split()[1]: f.verdict for f in findings(grid, "tiny")}
    assert set(verdicts.values()) == {HELD}, verdicts


def test_findings_on_contrary_numbers_do_not_hold(tmp_path):
    spec = paper_like(3)
    spec["precision"] = [dict(v, entropy=1.10, rl_avg=0.20 + i * 0.002, ppl=2.5) for i, v in enumerate(spec["precision"])]
    spec["diversity"] = [dict(v, length=(60, 70)) for v in spec["diversity"]]
    grid = load_grid_dir(make_grid(tmp_path / "g", spec))
    by = {f.title: f for f in findings(grid, "tiny")}
    assert by["Pre-training perplexity converges to about the same value for every configuration"].verdict == NOT_HELD
    assert by["Pre-training entropy is ordered precision (beta=-0.25) < ce < diversity (beta=0.5)"].verdict == NOT_HELD
    assert by["After RL, precision (beta=-0.25) and tail suppression give higher Avg@m and Pass@k than ce"].verdict == NOT_HELD
    assert by["With diversity's entropy collapse, its response length shrinks over RL"].verdict == NOT_HELD


def test_one_seed_small_differences_are_inconclusive(tmp_path):
    spec = paper_like(1)
    for config in spec:  # everything equal to CE within noise
        spec[config] = [dict(spec["ce"][0])]
    grid = load_grid_dir(make_grid(tmp_path / "g", spec))
    by = {f.title: f.verdict for f in findings(grid, "tiny")}
    assert by["Pre-training entropy is ordered precision (beta=-0.25) < ce < diversity (beta=0.5)"] == INCONCLUSIVE
    assert by["After RL, precision (beta=-0.25) and tail suppression give higher Avg@m and Pass@k than ce"] == INCONCLUSIVE
    assert by["Higher global entropy (diversity) does not give higher Pass@k than ce"] == HELD


def test_moe_finding_needs_both_kinds(tmp_path):
    grid = load_grid_dir(make_grid(tmp_path / "g", paper_like(2), models=("tiny", "tiny-moe")))
    moe = findings(grid, "tiny-moe", "tiny", "tiny-moe")[-1]
    assert moe.title.startswith("RL gains over ce are larger on the MoE")
    assert moe.verdict == INCONCLUSIVE  # same gains on both models in this fixture
    assert len(findings(grid, "tiny")) == 6


def test_report_renders_from_fixture_metrics(tmp_path, capsys):
    root = make_grid(tmp_path / "g", paper_like(2), models=("tiny", "tiny-moe"))
    assert main(["report", str(root)]) == 0
    text = (root / "report.md").read_text()
    for model in ("tiny", "tiny-moe"):
        for fig in ("pretrain", "midtrain", "rl", "passk"):
            png = root / f"{fig}-{model}.png"
            assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
            assert f"]({fig}-{model}.png)" in text
    assert "## tiny (dense)" in text and "## tiny-moe (MoE)" in text
    assert text.count("### After rl") == 2 and "**held**" in text
    # the summary's mean and 95% half-width over the 2 seeds (RL Avg@8: 0.4 and 0.4 + jitter)
    row = next(line for line in text.splitlines() if line.startswith("| precision | 2 |"))
    assert " ± " in row


def test_unfinished_stages_are_not_judged(tmp_path):
    root = make_grid(tmp_path / "g", paper_like(1))
    (root / "runs" / "tiny" / "precision" / "s0" / "pretrain" / "final" / "config.json").unlink()  # still training
    by = {f.title: f for f in findings(load_grid_dir(root), "tiny")}
    entropy = by["Pre-training entropy is ordered precision (beta=-0.25) < ce < diversity (beta=0.5)"]
    assert [c.verdict for c in entropy.checks] == [NOT_RUN, HELD] and entropy.verdict == NOT_RUN


def test_report_errors_are_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a reproduce directory" in capsys.readouterr().err
    (tmp_path / "grid.yaml").write_text("configs: ce\nmodels: tiny\n")
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no runs yet" in capsys.readouterr().err


def test_report_has_an_auto_row_when_the_grid_runs_auto(tmp_path):
    spec = paper_like(2)
    spec["auto"] = [dict(v, entropy=0.85, rl_avg=0.35 + 0.001 * i) for i, v in enumerate(spec["ce"])]
    text = write_report(make_grid(tmp_path / "g", spec)).read_text()
    assert sum(line.startswith("| auto | 2 |") for line in text.splitlines()) == 3  # after pretrain, midtrain, rl
    assert "**held**" in text  # the paper's findings are still judged on the other configurations
