"""Saved model folders name eos, bos and pad token ids (config.json and generation_config.json), and
`shapedce eval` runs on a plain Hugging Face `save_pretrained` folder (not a run folder).

    PYTHONPATH=src OMP_NUM_THREADS=1 python -m pytest -q tests/test_checkpoint_tokens.py
"""

from __future__ import annotations

import json

from transformers import AutoModelForCausalLM

from conftest import tiny_qwen3
from shapedce.train.checkpoint import write_model_dir


class _Config:
    def save(self, path):
        path.write_text("stub: true\n")


def test_write_model_dir_names_the_tokenizer_special_ids(tmp_path):
    from test_hf_integrations import tiny_tokenizer

    tok = tiny_tokenizer()
    tok.bos_token = "<user>"  # any token: the word-level tokenizer has no bos of its own
    model = tiny_qwen3(vocab=len(tok))
    model.generation_config.do_sample, model.generation_config.temperature = True, 0.7  # kept
    assert model.config.eos_token_id is None and model.config.pad_token_id is None
    out = write_model_dir(tmp_path / "final", model, tok, _Config())
    config = json.loads((out / "config.json").read_text())
    gen = json.loads((out / "generation_config.json").read_text())
    want = {name: getattr(tok, name) for name in ("eos_token_id", "bos_token_id", "pad_token_id")}
    assert None not in want.values()
    for name, value in want.items():
        assert config[name] == value and gen[name] == value, name
    assert gen["temperature"] == 0.7
    loaded = AutoModelForCausalLM.from_pretrained(out)
    assert loaded.generation_config.eos_token_id == tok.eos_token_id


def test_shapedce_eval_runs_on_a_plain_save_pretrained_folder_without_a_pad_token(tmp_path, capsys):
    """Not a run folder: no run_config.yaml, no final/; the tokenizer has eos but no pad (like many
    released models); evaluation pads with eos, which it masks."""
    from shapedce.cli import main
    from test_hf_integrations import tiny_tokenizer

    tok = tiny_tokenizer()
    tok.pad_token = None
    model = tiny_qwen3(vocab=len(tok))
    folder = tmp_path / "hf-model"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    args = ["eval", str(folder), "--tasks", "arith", "--samples", "2", "--problems", "2"]
    args += ["--max-new-tokens", "4", "--device", "cpu", "--out", str(tmp_path / "eval")]
    assert main(args) == 0
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    arith = results["tasks"]["arith"]
    assert arith["prompts"] == 2 and arith["samples"] == 2 and results["text"]["tokens"] > 0
    assert "arith" in capsys.readouterr().out
