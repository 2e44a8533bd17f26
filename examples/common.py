"""Shared by the examples: a model to train (any local Hugging Face causal LM, or a tiny one built here)
and text from the project's arithmetic task. No downloads unless --model names a Hub id.

    from common import model_and_tokenizer, task_texts
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen3ForCausalLM

from shapedce.data.tokenizer import train_tokenizer
from shapedce.models import flavor_config
from shapedce.tasks import get_task


def task_texts(n: int, task: str = "arith", split: str = "train") -> list[str]:
    """n worked problems of a `shapedce.tasks` task: prompt, worked solution, final answer line."""
    rows = get_task(task).prompts(split, n, seed=0)
    return [p.text + p.meta.get("solution", f"The answer is {p.answer}.") for p in rows]


def model_and_tokenizer(model: str | None, texts: list[str], seed: int = 0):
    """(model, tokenizer): `model` loaded with transformers, or (None) a 2-layer Qwen3 of the project's
    "tiny" flavor with a byte-level BPE trained on `texts` (seconds on a CPU)."""
    if model:
        tok = AutoTokenizer.from_pretrained(model)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return AutoModelForCausalLM.from_pretrained(model), tok
    tok = train_tokenizer(texts, vocab_size=400)
    config = flavor_config("tiny", vocab_size=len(tok), num_hidden_layers=2)
    for name in ("eos_token_id", "bos_token_id", "pad_token_id"):
        setattr(config, name, getattr(tok, name))
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(config).float(), tok


class TokenRows(torch.utils.data.Dataset):
    """Texts tokenized to at most `seq_len` tokens; labels = input ids (padding masked by the collator)."""

    def __init__(self, tokenizer, texts: list[str], seq_len: int = 64):
        self.rows = [tokenizer(t + tokenizer.eos_token, truncation=True, max_length=seq_len) for t in texts]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.rows[i]["input_ids"]}
