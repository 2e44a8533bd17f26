"""`shapedce reproduce`: the smoke grid end to end (every stage, every configuration, the report),
reruns that skip finished stages, resume of an unfinished stage, the dry run, and bad input."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from shapedce.cli import main
from shapedce.errors import UserError
from shapedce.reproduce.grid import STAGES, load_grid, plan
from shapedce.reproduce.stages import main as stages_main

CONFIGS = ("ce", "precision", "diversity", "tail", "head")


@pytest.fixture(scope="module")
def smoke_grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("grid") / "smoke"
    assert main(["reproduce", "--preset", "smoke", "--out", str(out)]) == 0
    return out


def _timings(out):
    return {c: json.loads((out / "runs" / "tiny" / c / "s0" / "timings.json").read_text()) for c in CONFIGS}


def test_smoke_grid_runs_every_stage_and_writes_the_report(smoke_grid):
    runs = plan(load_grid("smoke"), smoke_grid)
    assert [r.config for r in runs] == list(CONFIGS)
    for run in runs:
        assert all(run.is_done(s) for s in STAGES), run.name
        assert set(json.loads((run.dir / "timings.json").read_text())) == set(STAGES)
        cfg = (run.stage_dir("pretrain") / "config.yaml").read_text()
        assert "flavor: tiny" in cfg
        results = json.loads((run.stage_dir("eval-rl") / "results.json").read_text())
        assert set(results["tasks"]) == {"knowledge", "arith-add"}
    # each run trained with its own configuration's loss
    beta = {
        c: (smoke_grid / "runs" / "tiny" / c / "s0" / "pretrain" / "config.yaml").read_text() for c in CONFIGS
    }
    assert (
        "beta: -0.25" in beta["precision"]
        and "beta: 0.5" in beta["diversity"]
        and "lambda_tail: -0.1" in beta["tail"]
    )
    report = (smoke_grid / "report.md").read_text()
    for fig in ("pretrain", "shaping", "midtrain", "rl", "passk"):
        assert (smoke_grid / f"{fig}-tiny.png").is_file()
    for verdict_row in (
        "Pre-training perplexity",
        "Pre-training entropy",
        "After RL",
        "starts RL with higher entropy",
        "response length shrinks",
        "does not give higher Pass@k",
    ):
        assert verdict_row in report


def test_rerun_skips_finished_stages_and_redoes_missing_ones(smoke_grid, capsys):
    before = _timings(smoke_grid)
    assert main(["reproduce", "--preset", "smoke", "--out", str(smoke_grid)]) == 0
    assert _timings(smoke_grid) == before  # nothing ran again
    run = smoke_grid / "runs" / "tiny" / "tail" / "s0"
    shutil.rmtree(run / "rl")  # as if RL had been interrupted before its first checkpoint
    assert main(["reproduce", "--preset", "smoke", "--out", str(smoke_grid)]) == 0
    after = _timings(smoke_grid)
    assert {c: after[c] for c in CONFIGS if c != "tail"} == {c: before[c] for c in CONFIGS if c != "tail"}
    assert (
        after["tail"]["rl"] > before["tail"]["rl"] and after["tail"]["pretrain"] == before["tail"]["pretrain"]
    )
    assert (run / "rl" / "eval" / "results.json").is_file()


def test_stage_resumes_from_its_checkpoint(tmp_path):
    """A pre-training stage killed after a checkpoint continues from it, not from scratch."""
    out = tmp_path / "g"
    assert (
        main(
            [
                "reproduce",
                "--preset",
                "smoke",
                "--configs",
                "ce",
                "--out",
                str(out),
                "pretrain.train.steps=6",
                "pretrain.train.ckpt_every=3",
            ]
        )
        == 0
    )
    pre = out / "runs" / "tiny" / "ce" / "s0" / "pretrain"
    first = [json.loads(line) for line in (pre / "metrics.jsonl").read_text().splitlines()]
    shutil.rmtree(pre / "final")
    shutil.rmtree(sorted((pre / "checkpoints").glob("step_*"))[-1])  # the last one, step 6
    for stage in ("midtrain", "rl"):
        shutil.rmtree(pre.parent / stage)
    threads = torch.get_num_threads()
    assert stages_main([str(out), "tiny/ce/s0", "--threads", "1"]) == 0
    assert torch.get_num_threads() == threads  # the worker's setting does not leak into its caller
    again = [json.loads(line) for line in (pre / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in again] == [(r["step"], r["split"]) for r in first]
    # the same curve; not bit for bit, as the first run had 2 torch threads and this one 1
    assert [r["loss"] for r in again] == pytest.approx([r["loss"] for r in first], rel=1e-5)


def test_dry_run_validates_the_paper_grid(tmp_path, capsys):
    assert main(["reproduce", "--preset", "paper", "--dry-run", "--out", str(tmp_path / "p")]) == 0
    text = capsys.readouterr().out
    assert "15 runs" in text and "moe-20b-a1b" in text and "524,288,000,000 tokens" in text
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--configs", "ce,bogus"], "configs: unknown configuration 'bogus'"),
        (["--models", "tiny,huge"], "models: unknown flavor 'huge'"),
        (["--seeds", "0"], "seeds must be in [1, 1000]"),
        (["rl.steps=0"], "rl.steps must be >= 1; got 0"),
        (["rl.micro_batch=3"], "rl.prompts_per_step * group_size (2 * 4 = 8) must divide by"),
        (["rl.stepz=3"], "unknown config key 'rl.stepz'; did you mean 'rl.steps'?"),
        (["pretrain.train.stepz=3"], "did you mean 'pretrain.train.steps'"),
        (["pretrain.optim.lr=-1"], "pretrain.optim.lr must be a finite number > 0"),
        (["pretrain.loss=precision"], "pretrain.loss is set per run"),
        (["pretrain.model.flavor=small"], "pretrain.model.flavor is set per run"),
        (["rl.seed=3"], "rl.seed is set per run"),
        (["pretrain.preset=huge"], "unknown pretrain.preset 'huge'; choose one of"),
        (["pretrain.data.corpus=builtin"], "pretrain.data.corpus must be builtin-v2"),
        (["eval.tasks=nope"], "eval.tasks: unknown task 'nope'"),
        (["eval.samples=0"], "eval.samples must be >= 1"),
        (["rl.task=nope"], "rl.task: unknown task 'nope'"),
        (["pretrain_overrides=train.steps=3"], "unknown config key 'pretrain_overrides'"),
        (
            ["--configs", "ce,tail", "pretrain_configs=ce,head"],
            "pretrain_configs: head not in configs (ce, tail)",
        ),
        (["pretrain_models=tiny-moe"], "pretrain_models: tiny-moe not in models (tiny)"),
        (["first_look_seeds=-1"], "first_look_seeds must be >= 0"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
    assert main(["reproduce", "--preset", "smoke", "--dry-run", "--out", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_other_settings_in_the_same_directory_are_refused(smoke_grid, capsys):
    assert main(["reproduce", "--preset", "smoke", "--out", str(smoke_grid), "eval.samples=2"]) == 2
    assert "holds a grid with eval.samples=4, not 2" in capsys.readouterr().err


def test_failed_run_names_its_stage(tmp_path, capsys):
    # dynamic sampling that can never fill a batch: the RL stage fails with its own one-line error
    args = [
        "reproduce",
        "--preset",
        "smoke",
        "--configs",
        "ce",
        "--out",
        str(tmp_path / "f"),
        "rl.dynamic_sampling=true",
        "rl.max_sampling_rounds=1",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "run tiny/ce/s0 failed in stage rl" in err and "log:" in err and len(err.splitlines()) == 1


def test_auto_jobs_keep_every_core_busy_to_the_end():
    from shapedce.reproduce.scheduler import resolve_jobs

    if torch.cuda.is_available():
        pytest.skip("on GPU the automatic choice is 1")
    assert resolve_jobs(3, 5, cores=2) == 3  # asked for: kept
    assert resolve_jobs(0, 5, cores=2) == 5  # not 2 + 2 + 1 with an idle core for the last run
    assert resolve_jobs(0, 1, cores=2) == 1 and resolve_jobs(0, 8, cores=2) == 8
    assert resolve_jobs(0, 24, cores=2) == 2  # a large grid: one per core


def test_pretrain_seeds_plan_only_pretraining_and_its_eval(tmp_path):
    from shapedce.reproduce.grid import PRETRAIN_ONLY

    runs = plan(load_grid("smoke", ["seeds=2", "pretrain_seeds=2", "configs=ce,tail"]), tmp_path)
    assert [(r.seed, r.config) for r in runs] == [(s, c) for s in range(4) for c in ("ce", "tail")]
    assert all(r.stages == (STAGES if r.seed < 2 else PRETRAIN_ONLY) for r in runs)
    assert PRETRAIN_ONLY == ("pretrain", "eval-pretrain")


def test_first_seed_starts_the_grid_later_with_the_same_per_seed_configs(tmp_path):
    from shapedce.reproduce.grid import PRETRAIN_ONLY, pretrain_config, rl_config

    later = load_grid("smoke", ["first_seed=5", "seeds=2", "pretrain_seeds=1", "configs=ce"])
    runs = plan(later, tmp_path)
    assert [(r.seed, r.stages) for r in runs] == [(5, STAGES), (6, STAGES), (7, PRETRAIN_ONLY)]
    assert runs[0].dir.name == "s5"
    whole = load_grid("smoke", ["seeds=7", "configs=ce"])
    same = {r.seed: r for r in plan(whole, tmp_path)}
    for r in runs[:2]:
        assert pretrain_config(later, r) == pretrain_config(whole, same[r.seed])
        assert rl_config(later, r) == rl_config(whole, same[r.seed])
    with pytest.raises(UserError, match="first_seed must be in"):
        load_grid("smoke", ["first_seed=-1"])


def test_pretrain_seeds_grow_a_finished_grid_with_pretraining_only_runs(smoke_grid):
    before = _timings(smoke_grid)
    args = ["reproduce", "--preset", "smoke", "--out", str(smoke_grid), "pretrain_seeds=1", "configs=ce,tail"]
    assert main(args) == 0
    assert _timings(smoke_grid) == before  # the full seed-0 runs are untouched
    for config in ("ce", "tail"):
        run = smoke_grid / "runs" / "tiny" / config / "s1"
        assert set(json.loads((run / "timings.json").read_text())) == {"pretrain", "eval-pretrain"}
        assert (run / "pretrain" / "eval" / "results.json").is_file() and not (run / "midtrain").exists()
    assert "1 of them pre-training only" in (smoke_grid / "report.md").read_text()
    # a rerun that plans none of them (pretrain_seeds=0) trains nothing and still counts them
    assert main(args[:-2] + ["pretrain_seeds=0", "configs=ce,tail"]) == 0
    assert _timings(smoke_grid) == before
    assert "1 of them pre-training only" in (smoke_grid / "report.md").read_text()
    # more seeds for one configuration only: the report says how many seeds each one has
    assert main(args[:-2] + ["pretrain_seeds=2", "configs=ce,tail", "pretrain_configs=ce"]) == 0
    runs = smoke_grid / "runs" / "tiny"
    assert (runs / "ce" / "s2" / "pretrain" / "eval" / "results.json").is_file()
    assert not (runs / "tail" / "s2").exists()
    text = (smoke_grid / "report.md").read_text()
    assert (
        "2 of them pre-training only" in text
        and "seeds per model and configuration: tiny: ce 3, tail 2" in text
    )


def test_pretrain_configs_and_models_choose_who_runs_the_pretraining_only_seeds(tmp_path):
    over = ["seeds=1", "pretrain_seeds=2", "configs=ce,precision,tail", "models=tiny,tiny-moe"]
    grid = load_grid("smoke", [*over, "pretrain_configs=ce,precision", "pretrain_models=tiny"])
    runs = {(r.model, r.config, r.seed) for r in plan(grid, tmp_path)}
    full = {(m, c, 0) for m in ("tiny", "tiny-moe") for c in ("ce", "precision", "tail")}
    assert runs == full | {("tiny", c, s) for c in ("ce", "precision") for s in (1, 2)}
    assert len(plan(load_grid("smoke", over), tmp_path)) == 6 * 3  # empty: every model and config


def test_first_look_seeds_is_kept_once_recorded(tmp_path):
    from shapedce.errors import UserError
    from shapedce.reproduce.scheduler import _check_same_grid

    load_grid("smoke").save(tmp_path / "grid.yaml")
    first = load_grid("smoke", ["first_look_seeds=2"])
    _check_same_grid(first, tmp_path)  # recorded the first time
    first.save(tmp_path / "grid.yaml")
    rerun = load_grid("smoke", ["pretrain_seeds=3"])
    _check_same_grid(rerun, tmp_path)
    assert rerun.first_look_seeds == 2  # a rerun that leaves it out keeps the record
    with pytest.raises(UserError, match="first read at first_look_seeds=2"):
        _check_same_grid(load_grid("smoke", ["first_look_seeds=3"]), tmp_path)


def test_rl_study_harvest_copies_finished_seeds_once_with_provenance(smoke_grid, tmp_path):
    import csv
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "rl_study.py"
    spec = importlib.util.spec_from_file_location("rl_study", path)
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "from-0").symlink_to(smoke_grid)
    ledger = tmp_path / "runs.csv"
    from shapedce.report.load import load_grid_dir

    configs = load_grid_dir(smoke_grid).configs  # an earlier test may have grown it with fewer configs
    assert study.harvest(tmp_path / "out", ledger, configs) == [0]
    assert study.harvest(tmp_path / "out", ledger, configs) == [0]  # a second harvest adds nothing
    rows = list(csv.DictReader(ledger.open()))
    assert sorted(r["config"] for r in rows) == sorted(configs)
    assert all(r["cpu"] and r["torch"] and r["finished"] and float(r["rl_avg_at_m"]) >= 0 for r in rows)
    assert study.folder_starts(tmp_path / "out") == [0]
    assert study.harvest(tmp_path / "out", ledger, [*configs, "tail-strong"]) == []  # a config without runs
