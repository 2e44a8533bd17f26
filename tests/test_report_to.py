"""`report_to` of the project's trainers: backend names, one-line errors, TensorBoard and trackio offline.

    PYTHONPATH=src OMP_NUM_THREADS=1 python -m pytest -q tests/test_report_to.py

metrics.jsonl is always written; trackio runs in a subprocess with TRACKIO_DIR in a temporary folder
(trackio reads it at import) and HF_HUB_OFFLINE=1, and is skipped when trackio is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from shapedce.config import load_config, report_backends
from shapedce.errors import UserError
from shapedce.train.metrics import MetricsLog, read_metrics
from shapedce.train.rl_config import load_rl_config

ROWS = [
    ("pretrain", 1, 64, "train", {"loss": 4.5, "entropy": 3.25}),
    ("pretrain", 2, 128, "val", {"loss": 4.0}),
]


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def test_names_and_one_line_errors():
    assert report_backends("none", "train.report_to") == ()
    assert report_backends("auto", "k") == (("tensorboard",) if installed("tensorboard") else ())
    with pytest.raises(UserError, match=r"^train.report_to must be auto, none or a comma-separated subset"):
        report_backends("tensorboard,comet", "train.report_to")
    with pytest.raises(UserError, match="train.report_to"):
        load_config("smoke", ["train.report_to=mlflow"])
    with pytest.raises(UserError, match="^report_to must be"):
        load_rl_config("smoke", ["report_to=mlflow"])


def test_a_named_backend_that_is_not_installed_is_a_one_line_error(tmp_path):
    missing = next((n for n in ("wandb", "trackio", "tensorboard") if not installed(n)), None)
    if missing is None:
        pytest.skip("every backend is installed here")
    with pytest.raises(UserError, match=rf"{missing} is not installed \(pip install {missing}") as err:
        MetricsLog(tmp_path, report_to=f"none,{missing}".removeprefix("none,"), key="train.report_to")
    assert "\n" not in str(err.value) and not (tmp_path / "metrics.jsonl").exists()
    with pytest.raises(UserError, match="train.report_to"):
        load_config("smoke", [f"train.report_to={missing}"])


def test_none_writes_only_metrics_jsonl(tmp_path):
    log = MetricsLog(tmp_path, report_to="none")
    for row in ROWS:
        log.write(*row)
    log.close()
    assert [r["loss"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [4.5, 4.0]
    assert not (tmp_path / "tb").exists()


def test_tensorboard_receives_every_number(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = MetricsLog(tmp_path, report_to="tensorboard")
    for row in ROWS:
        log.write(*row)
    log.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/entropy")] == [(64, 3.25)]
    assert [(e.step, e.value) for e in events.Scalars("val/loss")] == [(128, 4.0)]


@pytest.mark.slow
def test_trackio_logs_offline(tmp_path):
    if not installed("trackio"):
        pytest.skip("trackio is not installed (pip install trackio)")
    script = textwrap.dedent(
        f"""
        import json, sys
        from shapedce.train.metrics import MetricsLog
        log = MetricsLog(sys.argv[1], report_to="trackio", config={{"loss": {{"beta": -0.25}}}})
        for row in {ROWS!r}:
            log.write(*row)
        log.close()
        from trackio.sqlite_storage import SQLiteStorage
        print(json.dumps(SQLiteStorage.get_logs("shapedce-test", "run"), default=str))
        """
    )
    run = tmp_path / "run"
    run.mkdir()
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "TRACKIO_PROJECT": "shapedce-test"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    env["PYTHONPATH"] = os.pathsep.join([os.path.abspath("src"), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", script, str(run)], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    logs = json.loads(out.stdout.strip().splitlines()[-1])
    by_step = {r["step"]: r for r in logs}
    assert by_step[1]["train/entropy"] == 3.25 and by_step[2]["val/loss"] == 4.0
    assert (tmp_path / "trackio").is_dir() and (run / "metrics.jsonl").is_file()
