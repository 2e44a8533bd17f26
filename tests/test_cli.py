"""The `shapedce` entry point: listing commands and argument errors."""

from __future__ import annotations

import subprocess
import sys

from shapedce.cli import main


def test_losses_and_models_tables(capsys):
    assert main(["losses"]) == 0
    out = capsys.readouterr().out
    assert "precision" in out and "-0.25" in out and "tail" in out
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "moe-20b-a1b" in out and "tiny-moe" in out


def test_console_script_module_entry():
    proc = subprocess.run([sys.executable, "-m", "shapedce", "losses"], capture_output=True, text=True)
    assert proc.returncode == 0 and "diversity" in proc.stdout


def test_override_without_equals_is_one_line(tmp_path, capsys):
    assert main(["pretrain", "--preset", "smoke", "--out", str(tmp_path / "r"), "train.steps"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "must look like key=value" in err
