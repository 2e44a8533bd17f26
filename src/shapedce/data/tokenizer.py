"""Tokenizers: a byte-level BPE trained locally on the run's corpus, or a local tokenizer directory.

    from shapedce.data import builtin_corpus, train_tokenizer, load_tokenizer, check_tokenizer_fits
    tok = train_tokenizer(builtin_corpus("pretrain-v2", 2000), vocab_size=512)
    tok.save_pretrained("runs/tok")                 # AutoTokenizer.from_pretrained("runs/tok") works too
    tok = load_tokenizer("runs/tok")
    check_tokenizer_fits(tok, model.config.vocab_size)

Try it on a CPU (a few seconds):

    python -m shapedce.data.tokenizer

The trained tokenizer:
  - byte-level BPE, so every UTF-8 string round-trips: decode(encode(text)) == text;
  - digits are split one per token before BPE (pre-tokenizer Digits(individual_digits=True)), so
    numbers are spelled digit by digit, as arithmetic wants;
  - special tokens `SPECIAL_TOKENS`: bos, eos, pad, and <|im_start|> / <|im_end|> for a small chat
    template (`CHAT_TEMPLATE`, with add_generation_prompt support);
  - encode() adds no special tokens: packing puts EOS between documents itself;
  - padding_side="left" (generation pads prompts on the left). It is passed to the constructor,
    because only constructor arguments survive save_pretrained / from_pretrained.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from ..errors import UserError, check, check_int, is_int
from .pretrained import load_auto_tokenizer

SPECIAL_TOKENS: dict[str, str] = {
    "bos_token": "<|bos|>",
    "eos_token": "<|eos|>",
    "pad_token": "<|pad|>",
    "im_start": "<|im_start|>",
    "im_end": "<|im_end|>",
}
"""Special tokens of the trained tokenizer; they take ids 0..4 in this order."""

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""ChatML-style template: `<|im_start|>role\\ncontent<|im_end|>\\n` per message."""

MODEL_MAX_LENGTH = 1 << 30
"""No practical limit: the trainer, not the tokenizer, decides the sequence length."""

MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)
"""256 byte symbols plus the special tokens: the smallest byte-level vocabulary."""


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE of `vocab_size` tokens (specials included) on `texts`.

    Deterministic for the same texts and vocab_size. The result may hold fewer than vocab_size
    tokens when the texts offer too few merges; use len(tokenizer) for the real size.
    """
    check(
        is_int(vocab_size) and vocab_size >= MIN_VOCAB_SIZE,
        "vocab_size",
        f"an integer >= {MIN_VOCAB_SIZE} (256 bytes + specials)",
        vocab_size,
    )
    if isinstance(texts, str):
        raise UserError("texts must be an iterable of documents, not a single string")
    specials = list(SPECIAL_TOKENS.values())
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    seen = 0

    def counted() -> Iterable[str]:
        nonlocal seen
        for text in texts:
            if not isinstance(text, str):
                raise UserError(f"texts must hold strings; item {seen} is {type(text).__name__}")
            seen += 1
            yield text

    bpe.train_from_iterator(counted(), trainer=trainer)
    if seen == 0:
        raise UserError("texts is empty: the tokenizer needs at least one document to train on")
    return _wrap(bpe)


def _wrap(bpe: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=SPECIAL_TOKENS["bos_token"],
        eos_token=SPECIAL_TOKENS["eos_token"],
        pad_token=SPECIAL_TOKENS["pad_token"],
        additional_special_tokens=[SPECIAL_TOKENS["im_start"], SPECIAL_TOKENS["im_end"]],
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
        model_max_length=MODEL_MAX_LENGTH,
        clean_up_tokenization_spaces=False,
    )


def load_tokenizer(path: str | Path, pad_from_eos: bool = False) -> PreTrainedTokenizerFast:
    """Load a fast tokenizer from a local directory (never the hub); it must define a pad token, or with
    `pad_from_eos` (evaluation: every pad position is masked) one is taken from its eos token."""
    directory = Path(path)
    if not directory.is_dir():
        raise UserError(f"tokenizer directory not found: {str(directory)!r} (a local directory is required)")
    if not (directory / "tokenizer.json").is_file():
        raise UserError(
            f"no tokenizer.json in {str(directory)!r}: a fast tokenizer (save_pretrained) is required"
        )
    tokenizer = load_auto_tokenizer(directory)  # refuses a folder asking to run its own code
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise UserError(
            f"tokenizer in {str(directory)!r} is not a fast tokenizer ({type(tokenizer).__name__})"
        )
    if pad_from_eos and tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token  # many released models ship without a pad token
    check_special_tokens(tokenizer, where=str(directory))
    return tokenizer


def check_special_tokens(tokenizer: PreTrainedTokenizerFast, where: str = "tokenizer") -> None:
    """Raise a one-line ValueError when the tokenizer lacks the pad or eos token training needs."""
    if tokenizer.pad_token_id is None:
        raise UserError(
            f"{where} has no pad token; set one (e.g. tokenizer.pad_token = tokenizer.eos_token) "
            "and save it again"
        )
    if tokenizer.eos_token_id is None:
        raise UserError(f"{where} has no eos token; packing needs one to separate documents")


def check_tokenizer_fits(tokenizer: PreTrainedTokenizerFast, vocab_size: int) -> None:
    """Raise a one-line UserError unless every token id is < the model's `vocab_size`.

    Also checks pad and eos exist (see `check_special_tokens`). A model vocabulary larger than
    the tokenizer (e.g. rounded up to a multiple of 64) is fine.
    """
    check_int("vocab_size", vocab_size, 1)
    check_special_tokens(tokenizer)
    needed = max(len(tokenizer), max(tokenizer.get_vocab().values(), default=-1) + 1)
    if needed > vocab_size:
        raise UserError(
            f"tokenizer does not fit the model: it has {needed} token ids but the model's vocab_size is "
            f"{vocab_size}; use a model with vocab_size >= {needed} or a smaller tokenizer"
        )


def _demo() -> None:
    from .corpus import builtin_corpus

    tok = train_tokenizer(builtin_corpus("pretrain-v2", 500), vocab_size=384)
    text = "Problem: What is 487 + 356?\nThe answer is 843."
    ids = tok(text)["input_ids"]
    print(f"vocab {len(tok)}, {len(ids)} tokens: {tok.convert_ids_to_tokens(ids)}")
    print(
        tok.apply_chat_template(
            [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
        )
    )


if __name__ == "__main__":
    _demo()
