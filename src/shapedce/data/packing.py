"""User data: local text / jsonl / parquet files -> a cached memory-mapped token file -> packed sequences.

    from shapedce.data import read_texts, tokenize_to_memmap, PackedSequences
    texts = read_texts("my_corpus/")                  # .txt, .jsonl or .parquet, a file or a directory
    tokens = tokenize_to_memmap(texts, tok, "runs/cache", key="my_corpus")
    data = PackedSequences(tokens, seq_len=256)
    batch = data.batch([0, 1, 2])                    # LongTensor [3, 257]: inputs x[:, :-1], targets x[:, 1:]

Run the demo on a CPU (seconds): `python -m shapedce.data.packing`

File formats (bytes are checked as UTF-8 first; every malformed file is one line naming file, row, field):
  .txt      one document per paragraph (read through `datasets`, offline): documents are separated
            by a blank line, so a document may span several lines (worked solutions do).
            Paragraphs are stripped; empty ones dropped.
  .jsonl    one JSON object per line; the document is its `text_field` (default "text"), a string.
            Read by `data/userjson.py`: lines, nesting depth and NaN are limited/refused there.
  .parquet  one row per document; the document is its `text_field` column (pyarrow, that column only).
A directory is read as all of its files with these suffixes (not recursive), in sorted name order.

Token file: every document's ids followed by EOS, concatenated, as uint16 when the tokenizer has
<= 65536 ids else uint32, at cache_dir/<key>-<hash>.bin; the hash covers the texts and the whole
tokenizer (vocab, merges, normalisation), so a changed input gets a new file. It is written to a
temporary file and renamed (atomic), and reused when it exists: tokenised once.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError, check_installed, check_int, is_int
from .userjson import read_rows, row_text

SUFFIXES = {".txt": "text", ".jsonl": "json", ".parquet": "parquet"}
"""File suffix -> `datasets` builder."""
_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


def _check_utf8(path: Path) -> None:
    """One-line errors for an empty (or whitespace-only) or non-UTF-8 text file, read in chunks."""
    decoder, blank, offset = codecs.getincrementaldecoder("utf-8")(), True, 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as err:
                raise UserError(
                    f"{path} is not UTF-8 text (bad byte at offset {offset + err.start})"
                ) from None
            blank = blank and not text.strip()
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise UserError(f"{path} is not UTF-8 text (truncated character at its end)") from None
    if blank:
        raise UserError(f"{path} is empty: it holds no text")


def _files(path: Path) -> list[Path]:
    if not path.exists():
        raise UserError(f"data path not found: {str(path)!r}")
    allowed = ", ".join(SUFFIXES)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in SUFFIXES)
        if not files:
            raise UserError(f"directory {str(path)!r} holds no data files; allowed suffixes: {allowed}")
        return files
    if path.suffix not in SUFFIXES:
        raise UserError(f"unsupported data file {str(path)!r}; allowed suffixes: {allowed}")
    return [path]


def _read_one(path: Path, text_field: str, cache_dir: str | None) -> list[str]:
    builder = SUFFIXES[path.suffix]
    if builder != "text":  # JSON lines / parquet rows: size- and depth-limited, one line per fault
        texts = []
        if path.stat().st_size == 0:
            raise UserError(f"{path} is empty: it holds no data")
        for where, row in read_rows(path, columns=[text_field]):
            value = row_text(row, text_field, where)
            if value:
                texts.append(value)
        if not texts:
            raise UserError(f"{path} is empty: no non-empty {text_field!r} documents")
        return texts
    check_installed("datasets", "pipeline")
    from datasets import load_dataset
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    _check_utf8(path)
    try:
        data = load_dataset(
            "text", data_files=str(path), split="train", cache_dir=cache_dir, sample_by="paragraph"
        )
    except Exception as err:  # noqa: BLE001 - a malformed file becomes one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot read {path} as text: {first}") from err
    texts = [value.strip() for value in data["text"] if value.strip()]
    if not texts:
        raise UserError(f"{path} is empty: no non-empty 'text' documents")
    return texts


def read_texts(path: str | Path, text_field: str = "text", cache_dir: str | None = None) -> list[str]:
    """Documents of a local .txt / .jsonl / .parquet file or directory of them (see module docstring).

    `cache_dir` is the `datasets` cache (default: its usual one); nothing is downloaded.
    """
    texts: list[str] = []
    for file in _files(Path(path)):
        texts.extend(_read_one(file, text_field, cache_dir))
    return texts


def _fingerprint(texts: Sequence[str], tokenizer) -> str:
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # everything but the padding/truncation state a call may leave behind
        spec = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("padding", "truncation")}
        h.update(json.dumps(spec, sort_keys=True).encode("utf-8"))
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode("utf-8"))
    h.update(f"eos={tokenizer.eos_token_id};".encode())
    for text in texts:
        data = text.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:16]


def token_dtype(tokenizer) -> np.dtype:
    """uint16 when every id fits in 16 bits, else uint32."""
    n_ids = max(len(tokenizer), max(tokenizer.get_vocab().values(), default=0) + 1)
    return np.dtype(np.uint16) if n_ids <= 65536 else np.dtype(np.uint32)


def tokenize_to_memmap(
    texts: Sequence[str], tokenizer, cache_dir: str | Path, key: str, batch_size: int = 1000
) -> np.memmap:
    """Token ids of `texts`, EOS after each document, cached at cache_dir/<key>-<hash>.bin (read-only
    memmap)."""
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise UserError(f"key must be a non-empty name of letters, digits, '_', '.', '-'; got {key!r}")
    if isinstance(texts, str) or len(texts) == 0:
        raise UserError("texts must be a non-empty sequence of documents")
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise UserError(f"texts must hold strings; item {bad} is {type(texts[bad]).__name__}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise UserError("tokenizer has no eos token; packing needs one to separate documents")
    dtype = token_dtype(tokenizer)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{key}-{_fingerprint(texts, tokenizer)}.bin"
    if not target.exists():
        fd, tmp = tempfile.mkstemp(prefix=f".{key}-", suffix=".tmp", dir=cache)
        try:
            with os.fdopen(fd, "wb") as f:
                for start in range(0, len(texts), batch_size):
                    ids = tokenizer(list(texts[start : start + batch_size]), add_special_tokens=False)[
                        "input_ids"
                    ]
                    np.fromiter((t for doc in ids for t in (*doc, eos)), dtype=dtype).tofile(f)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return np.memmap(target, dtype=dtype, mode="r")


class PackedSequences(torch.utils.data.Dataset):
    """Fixed-length windows over a token stream: item i = tokens[i*L : i*L + L + 1] as a LongTensor.

    Consecutive windows share one token (the last target of i is the first input of i+1), so
    every token is predicted once. Documents run across window borders; EOS marks where they meet.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int) -> None:
        check_int("seq_len", seq_len, 1)
        tokens = tokens if isinstance(tokens, np.ndarray) else np.asarray(tokens)  # a memmap stays one
        if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
            raise UserError(
                f"tokens must be a 1-D integer array; got shape {tokens.shape} dtype {tokens.dtype}"
            )
        if len(tokens) < seq_len + 1:
            raise UserError(
                f"too few tokens for one sequence of seq_len={seq_len}: need {seq_len + 1}, got {len(tokens)}"
            )
        self.tokens, self.seq_len = tokens, seq_len
        self._n = (len(tokens) - 1) // seq_len

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> torch.Tensor:
        if not is_int(i):
            raise TypeError(f"index must be an integer; got {type(i).__name__}")
        if not -self._n <= i < self._n:
            raise IndexError(f"sequence index {i} out of range for {self._n} sequences")
        start = (int(i) % self._n) * self.seq_len
        return torch.from_numpy(np.asarray(self.tokens[start : start + self.seq_len + 1], dtype=np.int64))

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        """LongTensor [len(indices), seq_len + 1]."""
        if len(indices) == 0:
            raise UserError("indices must be non-empty")
        return torch.stack([self[int(i)] for i in indices])


def _demo() -> None:
    from .corpus import builtin_corpus
    from .tokenizer import train_tokenizer

    docs = builtin_corpus("pretrain-v2", 300)
    tok = train_tokenizer(docs, vocab_size=384)
    with tempfile.TemporaryDirectory() as cache:
        tokens = tokenize_to_memmap(docs, tok, cache, key="demo")
        data = PackedSequences(tokens, seq_len=64)
        print(f"{len(docs)} docs -> {len(tokens)} tokens ({tokens.dtype}) -> {len(data)} sequences of 64")
        print(repr(tok.decode(data[0][:40].tolist())))


if __name__ == "__main__":
    _demo()
