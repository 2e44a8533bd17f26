"""Our checkpoints evaluate unchanged with lm-evaluation-harness (`lm_eval --model hf`), offline,
on a task defined on local data (knowledge probes of the built-in world as multiple choice)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from shapedce.cli import main
from shapedce.data.corpus import knowledge_probes

pytest.importorskip("lm_eval")  # installed by the dev extra, so CI runs this

TASK_YAML = """task: shapedce_facts
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: question
doc_to_choice: choices
doc_to_target: label
metric_list:
  - metric: acc
"""


def test_lm_eval_cli_scores_a_pretrained_checkpoint(tmp_path):
    run = tmp_path / "run"
    assert main(["pretrain", "--preset", "smoke", "--out", str(run)]) == 0
    rows = [
        {"question": q, "choices": [f" {a}.", " Nowhere."], "label": 0} for q, a in knowledge_probes(0, 8)
    ]
    (tmp_path / "facts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "shapedce_facts.yaml").write_text(TASK_YAML.format(data=tmp_path / "facts.jsonl"))
    cmd = [
        sys.executable,
        "-m",
        "lm_eval",
        "--model",
        "hf",
        "--model_args",
        f"pretrained={run / 'final'},dtype=float32",
        "--tasks",
        "shapedce_facts",
        "--include_path",
        str(tmp_path),
        "--device",
        "cpu",
        "--batch_size",
        "4",
        "--output_path",
        str(tmp_path / "out"),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = [json.loads(p.read_text()) for p in (tmp_path / "out").rglob("results_*.json")]
    assert results, proc.stdout[-2000:]
    acc = results[0]["results"]["shapedce_facts"]["acc,none"]
    assert 0.0 <= acc <= 1.0
