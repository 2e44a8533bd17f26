"""shapedce.data: tokenizer, built-in corpora, held-out problems, user files, memmap cache, packing.

python -m pytest tests/test_data.py -q        # CPU, ~5 s
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from shapedce.data import (
    ALL_FAMILIES,
    CORPORA,
    PROBLEM_FAMILIES,
    SPECIAL_TOKENS,
    PackedSequences,
    builtin_corpus,
    check_tokenizer_fits,
    extract_answer,
    fact_base,
    generate_problem,
    heldout_problems,
    is_heldout,
    is_reasoning_doc,
    knowledge_probes,
    load_tokenizer,
    problem_key,
    read_texts,
    tokenize_to_memmap,
    train_tokenizer,
)
from shapedce.data.corpus import MIXES

VOCAB = 512
ODD_TEXTS = [
    "Problem: What is 487 + 356?\nSolution:\nThe answer is 843.",
    "  two  spaces, tabs\tand 1,234.56 -7 (x) [y] {z}!? \"q\" 'a' ~`@#$%^&*_=|\\/<>;:\n\n\n",
    "Unicode: café naïve Ærø — “quotes” 日本語 한국어 🙂👍🏽 ∑ π≈3.14159",
    "<|im_start|>user\nhi<|im_end|>",
]


def one_line(excinfo: pytest.ExceptionInfo, *needles: str) -> None:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(builtin_corpus("pretrain-v2", 400) + builtin_corpus("midtrain-v2", 200), VOCAB)


# ----------------------------------------------------------------------------- tokenizer


def test_round_trip_and_specials(tok):
    assert len(tok) == VOCAB
    for text in ODD_TEXTS:
        assert tok.decode(tok(text)["input_ids"]) == text
    assert tok.bos_token == SPECIAL_TOKENS["bos_token"] and tok.eos_token == SPECIAL_TOKENS["eos_token"]
    assert tok.pad_token == SPECIAL_TOKENS["pad_token"] and tok.padding_side == "left"
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS.values()] == [0, 1, 2, 3, 4]
    assert tok(ODD_TEXTS[3])["input_ids"][0] == tok.convert_tokens_to_ids("<|im_start|>")  # one special token
    assert tok("abc")["input_ids"] == tok("abc", add_special_tokens=True)["input_ids"]  # no bos/eos added


def test_digits_one_per_token(tok):
    ids = tok("1234567890 and 2024, 37.5")["input_ids"]
    pieces = tok.convert_ids_to_tokens(ids)
    assert all(sum(c.isdigit() for c in p) <= 1 for p in pieces)
    assert sum(p.isdigit() for p in pieces) == 10 + 4 + 3
    assert tok.convert_ids_to_tokens(tok("905")["input_ids"]) == ["9", "0", "5"]


def test_save_load_keeps_padding_specials_template(tok, tmp_path):
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    expected = "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
    for loaded in (AutoTokenizer.from_pretrained(str(tmp_path)), load_tokenizer(tmp_path)):
        assert loaded.padding_side == "left"
        assert (loaded.bos_token, loaded.eos_token, loaded.pad_token) == ("<|bos|>", "<|eos|>", "<|pad|>")
        assert loaded.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == expected
        assert loaded.apply_chat_template(messages, tokenize=False).endswith("<|im_end|>\n")
        assert loaded.model_max_length >= 1 << 20
        assert loaded(ODD_TEXTS[2])["input_ids"] == tok(ODD_TEXTS[2])["input_ids"]
        batch = loaded(["a", "a b c d"], padding=True)["input_ids"]
        assert batch[0][0] == loaded.pad_token_id  # padded on the left


def test_tokenizer_bad_input(tok, tmp_path):
    from transformers import PreTrainedTokenizerFast

    with pytest.raises(ValueError) as e:
        load_tokenizer(tmp_path / "nope")
    one_line(e, "tokenizer directory not found")
    with pytest.raises(ValueError) as e:
        load_tokenizer(tmp_path)
    one_line(e, "no tokenizer.json")
    no_pad = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, eos_token="<|eos|>")
    no_pad.save_pretrained(tmp_path / "nopad")
    with pytest.raises(ValueError) as e:
        load_tokenizer(tmp_path / "nopad")
    one_line(e, "no pad token")
    with pytest.raises(ValueError) as e:
        check_tokenizer_fits(no_pad, 10_000)
    one_line(e, "no pad token")
    check_tokenizer_fits(tok, VOCAB)
    check_tokenizer_fits(tok, VOCAB + 64)
    with pytest.raises(ValueError) as e:
        check_tokenizer_fits(tok, VOCAB - 1)
    one_line(e, f"{VOCAB} token ids", f"vocab_size is {VOCAB - 1}")
    for bad in (100, 300.0, True):
        with pytest.raises(ValueError) as e:
            train_tokenizer(["abc"], bad)
        one_line(e, "vocab_size must be an integer >= 261")
    with pytest.raises(ValueError) as e:
        train_tokenizer([], 300)
    one_line(e, "texts is empty")


# ----------------------------------------------------------------------------- corpora


def test_corpora_deterministic_by_seed():
    for name in CORPORA:
        docs = builtin_corpus(name, 120, seed=3)
        assert docs == builtin_corpus(name, 120, seed=3)
        assert docs != builtin_corpus(name, 120, seed=4)
        assert len(docs) == 120 and all(isinstance(d, str) and 0 < len(d) < 600 for d in docs)
    assert fact_base(5) == fact_base(5) != fact_base(6)
    with pytest.raises(ValueError) as e:
        builtin_corpus("posttrain", 10)
    one_line(e, "unknown corpus 'posttrain'", "pretrain-v2, midtrain-v2")
    with pytest.raises(ValueError) as e:
        builtin_corpus("pretrain-v2", 0)
    one_line(e, "n_docs must be an integer >= 1")


def test_reasoning_share_midtrain_above_pretrain():
    share = {name: np.mean([is_reasoning_doc(d) for d in builtin_corpus(name, 400)]) for name in CORPORA}
    assert set(CORPORA) == {"pretrain-v2", "midtrain-v2"}  # world v1 is gone
    assert share["pretrain-v2"] == pytest.approx(0.22) and share["midtrain-v2"] == pytest.approx(0.80)
    worked = {name: np.mean(["\nSolution:\n" in d for d in builtin_corpus(name, 400)]) for name in CORPORA}
    assert worked == {name: pytest.approx(mix["worked"]) for name, mix in MIXES.items()}


def test_problems_are_correct():
    rng = __import__("random").Random(0)
    for family in ALL_FAMILIES:
        for _ in range(40):
            p = generate_problem(family, rng)
            assert (
                p.solution.endswith(f"The answer is {p.answer}.") and extract_answer(p.solution) == p.answer
            )
            nums = [int(n) for n in re.findall(r"\d+", p.prompt)]
            if family in ("add", "sub", "mul", "chain", "small"):
                assert int(p.answer) == eval(p.prompt[len("What is ") : -1])  # noqa: S307 - digits and + - * only
            elif family == "linear":
                a, b, c = nums
                x = int(p.answer)
                assert (a * x + b if "+" in p.prompt else a * x - b) == c
            else:
                assert int(p.answer) == max(nums) and nums[0] != nums[1]
    with pytest.raises(ValueError) as e:
        generate_problem("division", rng)
    one_line(e, "unknown problem family 'division'", "add, sub")


def test_heldout_disjoint_from_corpora():
    docs = builtin_corpus("pretrain-v2", 600) + builtin_corpus("midtrain-v2", 600)
    prompts = [d.split("\n", 1)[0][len("Problem: ") :] for d in docs if is_reasoning_doc(d)]
    assert len(prompts) > 500 and not any(is_heldout(p) for p in prompts)
    corpus_keys = {problem_key(p) for p in prompts}
    for family in PROBLEM_FAMILIES:
        held = heldout_problems(family, 40, seed=0)
        assert held == heldout_problems(family, 40, seed=0) != heldout_problems(family, 40, seed=1)
        keys = [problem_key(p.prompt) for p in held]
        assert len(set(keys)) == 40 and all(is_heldout(p.prompt) for p in held)
        assert not corpus_keys & set(keys)
        assert {p.family for p in held} == {family}
    assert problem_key("What is  3+4 ?") == problem_key("what is 3 + 4?")
    assert 0.1 < np.mean([is_heldout(f"What is {i} + 1?") for i in range(2000)]) < 0.3


def test_knowledge_probes_are_stated_in_pretrain():
    n_docs = 300
    docs = builtin_corpus("pretrain-v2", n_docs)
    facts = {f.probe(): f for f in fact_base(0)}
    probes = knowledge_probes(0, 30, n_docs=n_docs)
    assert len(set(probes)) == 30 and probes == knowledge_probes(0, 30, n_docs=n_docs)
    for prompt, answer in probes:
        fact = facts[(prompt, answer)]
        assert prompt.startswith("Question: ") and prompt.endswith("\nAnswer:") and answer == fact.value
        assert any(fact.statement(v) in d for v in range(3) for d in docs), fact
    with pytest.raises(ValueError) as e:
        knowledge_probes(0, 10_000)
    one_line(e, "n (at most the facts the corpus states) must be an integer in [0, ")


# ----------------------------------------------------------------------------- user files


def test_read_texts_formats(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.txt").write_text(
        "first doc\nsecond line\n\nsecond doc\n\n\n\nthird doc ü\n", encoding="utf-8"
    )
    (tmp_path / "b.jsonl").write_text(
        "\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(["j1", "j2"]))
    )
    pq.write_table(pa.table({"body": ["p1", "p2", "p3"]}), tmp_path / "c.parquet")
    cache = str(tmp_path / "hf")
    assert read_texts(tmp_path / "a.txt", cache_dir=cache) == [
        "first doc\nsecond line",
        "second doc",
        "third doc ü",
    ]
    assert read_texts(tmp_path / "b.jsonl", cache_dir=cache) == ["j1", "j2"]
    assert read_texts(tmp_path / "c.parquet", text_field="body", cache_dir=cache) == ["p1", "p2", "p3"]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.jsonl").write_text('{"text": "x1"}\n')
    (tmp_path / "d" / "y.txt").write_text("y1\n\ny2\n")
    (tmp_path / "d" / "notes.md").write_text("ignored")
    assert read_texts(tmp_path / "d", cache_dir=cache) == ["x1", "y1", "y2"]


def test_read_texts_bad_input(tmp_path):
    cache = str(tmp_path / "hf")
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.jsonl").write_text("\n  \n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (tmp_path / "nofield.jsonl").write_text('{"body": "x", "id": 1}\n')
    (tmp_path / "data.csv").write_text("text\nx\n")
    (tmp_path / "emptydir").mkdir()
    cases = [
        ("missing.txt", "data path not found"),
        ("empty.txt", "is empty"),
        ("blank.jsonl", "is empty"),
        ("latin1.txt", "is not UTF-8 text (bad byte at offset 3)"),
        ("nofield.jsonl", "has no field 'text'; available fields: body, id"),
        ("data.csv", "allowed suffixes: .txt, .jsonl, .parquet"),
        ("emptydir", "holds no data files"),
    ]
    for name, needle in cases:
        with pytest.raises(ValueError) as e:
            read_texts(tmp_path / name, cache_dir=cache)
        one_line(e, needle)


# ----------------------------------------------------------------------------- memmap and packing


def test_memmap_cached_once(tok, tmp_path):
    docs = builtin_corpus("pretrain-v2", 50)
    tokens = tokenize_to_memmap(docs, tok, tmp_path, key="pre")
    files = list(tmp_path.glob("pre-*.bin"))
    assert len(files) == 1 and tokens.dtype == np.uint16 and not list(tmp_path.glob("*.tmp"))
    mtime = files[0].stat().st_mtime_ns
    calls = []
    original = type(tok).__call__
    try:
        type(tok).__call__ = lambda self, *a, **k: calls.append(1) or original(self, *a, **k)
        again = tokenize_to_memmap(docs, tok, tmp_path, key="pre")
    finally:
        type(tok).__call__ = original
    assert calls == [] and files[0].stat().st_mtime_ns == mtime
    assert np.array_equal(again, tokens)
    tokenize_to_memmap(docs[:-1], tok, tmp_path, key="pre")  # other texts -> another file
    assert len(list(tmp_path.glob("pre-*.bin"))) == 2
    # EOS after every document, and the pieces between EOS decode back to the documents
    eos = np.flatnonzero(np.asarray(tokens) == tok.eos_token_id)
    assert len(eos) == len(docs) and eos[-1] == len(tokens) - 1
    pieces = np.split(np.asarray(tokens), eos + 1)[:-1]
    assert [tok.decode(p[:-1].tolist()) for p in pieces] == docs
    for bad_key in ("", "a/b", "x y"):
        with pytest.raises(ValueError) as e:
            tokenize_to_memmap(docs, tok, tmp_path, key=bad_key)
        one_line(e, "key must be")
    with pytest.raises(ValueError) as e:
        tokenize_to_memmap([], tok, tmp_path, key="k")
    one_line(e, "texts must be a non-empty sequence")


def test_packed_sequences(tok, tmp_path):
    docs = ["a b", "1 2 3", "x"] * 20
    tokens = tokenize_to_memmap(docs, tok, tmp_path, key="pack")
    seq_len = 16
    data = PackedSequences(tokens, seq_len)
    assert len(data) == (len(tokens) - 1) // seq_len
    item = data[0]
    assert item.dtype == torch.long and item.shape == (seq_len + 1,)
    assert torch.equal(item, torch.from_numpy(np.asarray(tokens[: seq_len + 1], dtype=np.int64)))
    assert data[1][0] == data[0][-1] and torch.equal(data[-1], data[len(data) - 1])
    batch = data.batch([0, 2, 1])
    assert batch.shape == (3, seq_len + 1) and torch.equal(batch[1], data[2])
    inputs, targets = batch[:, :-1], batch[:, 1:]
    assert inputs.shape == targets.shape == (3, seq_len)
    assert int((torch.cat([data[i][:-1] for i in range(len(data))]) == tok.eos_token_id).sum()) >= 3
    with pytest.raises(IndexError):
        data[len(data)]
    with pytest.raises(ValueError) as e:
        PackedSequences(tokens[:10], seq_len)
    one_line(e, "seq_len=16", "need 17, got 10")
    with pytest.raises(ValueError) as e:
        PackedSequences(tokens, 0)
    one_line(e, "seq_len must be an integer >= 1")
