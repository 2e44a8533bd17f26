"""benchmarks/gpu_check.py on a CPU: it exits at once with one line; a failing check is reported, not raised.

PYTHONPATH=src python -m pytest -q tests/test_gpu_check.py       # CPU, a few seconds
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_exits_at_once_with_one_line():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no CUDA device"), proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU behaviour")
def test_a_check_that_raises_is_reported_as_a_failed_row(gpu_check, tmp_path, capsys):
    gpu_check.run_one("grad", tmp_path)  # needs CUDA: raises inside, must come back as one JSON line
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["ok"] is False and row["figures"]


def test_unknown_check_name_is_one_line(gpu_check, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert gpu_check.main(["--only", "grad,nope"]) == 2
    assert (
        capsys.readouterr().out.strip() == "gpu_check: unknown check 'nope'; choose from "
        "bench, grad, pretrain, sample, rl, paper_pre, paper_rl, paper_mp"
    )


def test_every_check_has_a_time_limit_within_the_budget(gpu_check):
    assert set(gpu_check.LIMITS_S) == set(gpu_check.CHECKS)
    assert all(callable(getattr(gpu_check, f"check_{name}")) for name in gpu_check.CHECKS)
    assert gpu_check.TOTAL_S < 8 * 60
