"""The dtype of the evaluation's weights (`shapedce eval --dtype`, grid `eval.dtype`): bf16 on CUDA by
default, float32 on CPU (CPU results unchanged), bf16 parameters with float32 buffers.

    python -m pytest tests/test_eval_dtype.py -q
"""

from __future__ import annotations

import pytest
import torch

from conftest import untrained_model_dir
from shapedce.data.corpus import builtin_corpus
from shapedce.errors import UserError
from shapedce.eval.loading import load_model
from shapedce.eval.settings import EvalSettings, weights_bf16
from shapedce.eval.text import text_stats
from shapedce.reproduce.grid import load_grid


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return untrained_model_dir(tmp_path_factory.mktemp("eval-dtype"))


def test_auto_is_bf16_on_cuda_and_float32_on_cpu():
    assert EvalSettings().dtype == "auto" and load_grid("paper").eval.dtype == "auto"
    assert weights_bf16("auto", "cuda") and not weights_bf16("auto", "cpu")
    assert weights_bf16("bf16", "cpu") and not weights_bf16("fp32", "cuda")
    with pytest.raises(UserError, match="--dtype must be one of auto, bf16, fp32; got 'fp16'"):
        EvalSettings(dtype="fp16").validate()
    with pytest.raises(UserError, match="eval.dtype"):
        load_grid("tiny", ["eval.dtype=half"])


def test_bf16_load_casts_parameters_not_buffers_and_scores_close(model_dir):
    cpu = torch.device("cpu")
    full, tok = load_model(model_dir, cpu)
    half, _ = load_model(model_dir, cpu, dtype=torch.bfloat16)
    assert {p.dtype for p in full.parameters()} == {torch.float32}  # the CPU default: unchanged
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    assert {b.dtype for b in half.buffers()} == {torch.float32}  # RoPE's inv_freq is not rounded
    docs = builtin_corpus("pretrain-v2", 8)
    a, b = (text_stats(m, tok, docs, max_tokens=600) for m in (full, half))
    assert b["ppl"] == pytest.approx(a["ppl"], rel=0.02)  # bf16 weights, the head still in float32
    assert b["ppl"] != a["ppl"]  # it did run in bf16
