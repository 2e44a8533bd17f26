"""Data: the tokenizer, the built-in synthetic corpora, and user data packed into sequences.

    from shapedce.data import builtin_corpus, train_tokenizer, tokenize_to_memmap, PackedSequences
    docs = builtin_corpus("pretrain-v2", n_docs=5000, seed=0)
    tok = train_tokenizer(docs, vocab_size=512)
    tokens = tokenize_to_memmap(docs, tok, "runs/cache", key="pretrain")
    data = PackedSequences(tokens, seq_len=128)      # data.batch([0, 5]) -> LongTensor [2, 129]

Each module runs a small CPU demo: `python -m shapedce.data.corpus` (or .problems, .tokenizer, .packing).
Names are imported lazily, so `corpus` alone does not pull in transformers or datasets.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "corpus": ("CORPORA", "Fact", "builtin_corpus", "fact_base", "is_reasoning_doc", "knowledge_probes"),
    "problems": (
        "ALL_FAMILIES",
        "PROBLEM_FAMILIES",
        "Problem",
        "extract_answer",
        "generate_problem",
        "heldout_problems",
        "is_heldout",
        "problem_key",
    ),
    "packing": ("PackedSequences", "read_texts", "tokenize_to_memmap"),
    "tokenizer": (
        "SPECIAL_TOKENS",
        "check_special_tokens",
        "check_tokenizer_fits",
        "load_tokenizer",
        "train_tokenizer",
    ),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)

if TYPE_CHECKING:
    from .corpus import CORPORA, Fact, builtin_corpus, fact_base, is_reasoning_doc, knowledge_probes
    from .packing import PackedSequences, read_texts, tokenize_to_memmap
    from .problems import (
        ALL_FAMILIES,
        PROBLEM_FAMILIES,
        Problem,
        extract_answer,
        generate_problem,
        heldout_problems,
        is_heldout,
        problem_key,
    )
    from .tokenizer import (
        SPECIAL_TOKENS,
        check_special_tokens,
        check_tokenizer_fits,
        load_tokenizer,
        train_tokenizer,
    )


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
