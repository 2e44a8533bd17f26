"""The rendered report: figures and report.md from a hand-written grid, runs.csv, one-line errors on
broken files, and that `shapedce.report` loads without torch.

    PYTHONPATH=$PWD/src OMP_NUM_THREADS=1 python -m pytest -q tests/test_report_render.py
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from report_grid import make_grid, paper_like
from shapedce.cli import main
from shapedce.report import write_report
from shapedce.report.stats import NOT_TESTED


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
    # the old second look (0.025 after a full 0.05) is refused, in one line, without a spending plan
    (root / "grid.yaml").write_text((root / "grid.yaml").read_text() + "first_look_seeds: 2\n")
    capsys.readouterr()
    assert main(["report", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no spending plan names" in err


def test_knowledge_is_called_recall_never_held_out(tmp_path):
    root = make_grid(tmp_path / "g", paper_like(3))
    for run in (root / "runs" / "tiny").glob("*/s*"):
        (run / "rl" / "config.yaml").write_text("task: knowledge\n")
    text = write_report(root).read_text()
    assert "recall of facts seen in pre-training" in text and "not held out" in text


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
