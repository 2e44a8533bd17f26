"""shapedce.eval.sample: batched KV-cache sampling, counter-based randomness, bad inputs.

python -m pytest tests/test_sample.py -q        # CPU, ~10 s
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from shapedce.data import builtin_corpus, train_tokenizer
from shapedce.eval.sample import (
    Completion,
    SamplingConfig,
    _mix,
    counter_uniform,
    pick_tokens,
    sample,
)
from shapedce.models import build_model

PROMPTS = [
    "Problem: What is 487 + 356?\n",
    "The city of",
    "Question: Who founded Belmora?\nAnswer:",
    "Ana",
    "Mila Vell has a pet",
]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(builtin_corpus("pretrain-v2", 300), vocab_size=2048)


@pytest.fixture(scope="module")
def model():
    return build_model("tiny", seed=0)


def _eos_bias_hook(model, eos: int, bias: float):
    """Add `bias` to the EOS logit (a forward hook on lm_head); returns the hook handle."""

    def hook(_module, _inputs, output):
        output[..., eos] += bias
        return output

    return model.lm_head.register_forward_hook(hook)


def _check_completion(c: Completion, tok, max_new: int) -> None:
    eos = tok.eos_token_id
    assert c.num_tokens == len(c.token_ids) and 1 <= c.num_tokens <= max_new
    assert c.text == tok.decode(c.token_ids, skip_special_tokens=True)
    if c.finished:  # stopped at EOS: it is the last token and the only EOS
        assert c.token_ids[-1] == eos and eos not in c.token_ids[:-1]
    else:  # hit the cap without an EOS
        assert c.num_tokens == max_new and eos not in c.token_ids
    assert math.isfinite(c.entropy) and 0 <= c.entropy <= math.log(2048) + 1e-4


def _ids(results):
    return [[c.token_ids for c in row] for row in results]


# ----------------------------------------------------------------------------- RNG


def _splitmix_ref(x: int) -> int:
    m = (1 << 64) - 1
    x &= m
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    return x ^ (x >> 31)


def test_mix_is_splitmix64_on_wrapping_int64():
    values = [0, 1, 2, 12345, 2**62 + 7, -1, -(2**63), 2**63 - 1, 0x9E3779B97F4A7C15 - 2**64]
    got = _mix(torch.tensor(values, dtype=torch.long)).tolist()
    assert [g & ((1 << 64) - 1) for g in got] == [_splitmix_ref(v) for v in values]


def test_counter_uniform_range_and_layout():
    keys = torch.tensor([3, -5, 2**40], dtype=torch.long)
    flat = counter_uniform(keys, 7, torch.arange(4096))
    assert flat.shape == (3, 4096) and flat.dtype == torch.float32
    assert bool((flat > 0).all()) and bool((flat < 1).all())
    assert abs(float(flat.mean()) - 0.5) < 0.02
    cand = torch.tensor([[5, 9], [4095, 0], [1, 2]])  # per-row token lists see the same numbers
    assert torch.equal(counter_uniform(keys, 7, cand), flat.gather(1, cand))
    assert not torch.equal(counter_uniform(keys, 8, torch.arange(4096)), flat)  # the step matters


def test_pick_tokens_tiny_top_p_is_greedy():
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(0))
    keys = torch.arange(6)
    tokens, entropy, width = pick_tokens(logits, SamplingConfig(temperature=1.3, top_p=1e-6), keys, 0)
    assert torch.equal(tokens, logits.argmax(-1)) and width == 1
    ref = -(torch.softmax(logits, -1) * torch.log_softmax(logits, -1)).sum(-1)
    torch.testing.assert_close(entropy, ref)


@pytest.mark.parametrize("scale", [8.0, 0.3])  # peaked rows (narrow nucleus) and flat rows (wide)
def test_nucleus_guess_changes_speed_only(scale):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(16, 3000, generator=g) * scale
    keys = torch.arange(16) * 7919
    cfg = SamplingConfig(temperature=0.9, top_p=0.9)
    for step in range(5):
        runs = [pick_tokens(logits, cfg, keys, step, guess) for guess in (4, 256, 3000)]  # 3000: always sort
        assert all(torch.equal(r[0], runs[-1][0]) and r[2] == runs[-1][2] for r in runs)
    # the nucleus is what top-p says: the sampled token's mass-before is < top_p
    probs = torch.softmax(logits / cfg.temperature, -1)
    tokens = runs[-1][0]
    before = (probs * (probs > probs.gather(1, tokens[:, None]))).sum(-1)
    assert bool((before < cfg.top_p).all())


def test_sampling_frequencies_follow_the_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(4000, 1)
    keys = torch.arange(4000)  # 4000 independent rows
    tokens, _, _ = pick_tokens(logits, SamplingConfig(temperature=1.0, top_p=1.0), keys, 0)
    freq = torch.bincount(tokens, minlength=4).double() / 4000
    torch.testing.assert_close(
        freq, torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64), atol=0.03, rtol=0
    )
    tokens, _, _ = pick_tokens(logits, SamplingConfig(temperature=1.0, top_p=0.7), keys, 0)  # keeps {0, 1}
    freq = torch.bincount(tokens, minlength=4).double() / 4000
    torch.testing.assert_close(
        freq, torch.tensor([0.625, 0.375, 0, 0], dtype=torch.float64), atol=0.03, rtol=0
    )


# ----------------------------------------------------------------------------- sampling


def test_shapes_order_and_fields(model, tok):
    model.train()
    cfg = SamplingConfig(samples=3, max_new_tokens=6, temperature=1.0)
    results = sample(model, tok, PROMPTS, cfg, backend="torch")
    assert model.training  # mode restored
    assert len(results) == len(PROMPTS) and all(len(row) == 3 for row in results)
    for row in results:
        for c in row:
            _check_completion(c, tok, 6)
        assert len({tuple(c.token_ids) for c in row}) > 1  # samples of one prompt differ
    # order: result i belongs to prompt i whatever the order of the list
    greedy = SamplingConfig(temperature=0, max_new_tokens=6)
    fwd = _ids(sample(model, tok, PROMPTS, greedy, backend="torch"))
    rev = _ids(sample(model, tok, PROMPTS[::-1], greedy, backend="torch"))
    assert fwd == rev[::-1]


@pytest.mark.parametrize("with_eos", [False, True])
def test_greedy_matches_generate(model, tok, with_eos):
    prompts = PROMPTS[:4]  # lengths differ: left padding
    enc = tok(prompts, padding=True, return_tensors="pt")
    assert len({len(tok(p)["input_ids"]) for p in prompts}) > 1
    handle = None
    if with_eos:  # bias EOS so that the greedy choice stops some rows at step 0 and not others
        pos = (enc["attention_mask"].cumsum(-1) - 1).clamp_min(0)  # positions as generate makes them
        with torch.no_grad():
            last = model(**enc, position_ids=pos).logits[:, -1].float()
        eos = tok.eos_token_id
        others = last.clone()
        others[:, eos] = -math.inf
        gaps = sorted((others.max(-1).values - last[:, eos]).tolist())
        handle = _eos_bias_hook(model, eos, (gaps[1] + gaps[2]) / 2)
    try:
        n = 10
        with torch.no_grad():
            gen = model.generate(
                **enc,
                do_sample=False,
                max_new_tokens=n,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            )
        ours = sample(model, tok, prompts, SamplingConfig(temperature=0, max_new_tokens=n), backend="torch")
    finally:
        if handle is not None:
            handle.remove()
    width = enc["input_ids"].shape[1]
    finished = 0
    for row, (c,) in zip(gen[:, width:].tolist(), ours):
        _check_completion(c, tok, n)
        assert row[: c.num_tokens] == c.token_ids
        assert all(t == tok.pad_token_id for t in row[c.num_tokens :])  # generate pads after EOS
        finished += c.finished
    if with_eos:
        assert 0 < finished < len(prompts)


def test_batch_size_does_not_change_samples(model, tok):
    handle = _eos_bias_hook(model, tok.eos_token_id, 6.0)  # EOS ~20 %/step: rows finish at different steps
    try:
        runs = [
            sample(
                model,
                tok,
                PROMPTS,
                SamplingConfig(samples=4, max_new_tokens=8, temperature=1.0, top_p=0.9, batch_size=b),
                backend="torch",
            )
            for b in (64, 1, 3, 7)
        ]
    finally:
        handle.remove()
    base = runs[0]
    flags = [c.finished for row in base for c in row]
    assert any(flags) and not all(flags)  # both stop kinds occur, so the batch shrank mid-way
    for row in base:
        for c in row:
            _check_completion(c, tok, 8)
    for other in runs[1:]:
        assert _ids(other) == _ids(base)
        assert [[c.text for c in row] for row in other] == [[c.text for c in row] for row in base]


def test_seed_changes_samples(model, tok):
    cfg = SamplingConfig(samples=2, max_new_tokens=6, temperature=1.0)
    a = _ids(sample(model, tok, PROMPTS, cfg, backend="torch"))
    b = _ids(
        sample(
            model,
            tok,
            PROMPTS,
            SamplingConfig(samples=2, max_new_tokens=6, temperature=1.0, seed=1),
            backend="torch",
        )
    )
    again = _ids(sample(model, tok, PROMPTS, cfg, backend="torch"))
    assert a == again
    assert sum(x != y for ra, rb in zip(a, b) for x, y in zip(ra, rb)) >= 8  # nearly all of 10 differ


def test_tiny_top_p_equals_greedy(model, tok):
    greedy = sample(model, tok, PROMPTS, SamplingConfig(temperature=0, max_new_tokens=8), backend="torch")
    nucleus = sample(
        model,
        tok,
        PROMPTS,
        SamplingConfig(temperature=0.7, top_p=1e-6, samples=2, max_new_tokens=8),
        backend="torch",
    )
    for (g,), row in zip(greedy, nucleus):
        assert all(c.token_ids == g.token_ids for c in row)
        assert all(c.entropy == pytest.approx(g.entropy, rel=1e-5) for c in row)


def test_tiny_moe(tok):
    moe = build_model("tiny-moe", seed=0)
    results = sample(
        moe,
        tok,
        PROMPTS[:3],
        SamplingConfig(samples=2, max_new_tokens=5, batch_size=4),
        progress=True,
        backend="torch",
    )
    assert [len(row) for row in results] == [2, 2, 2]
    for row in results:
        for c in row:
            _check_completion(c, tok, 5)
    again = sample(
        moe, tok, PROMPTS[:3], SamplingConfig(samples=2, max_new_tokens=5, batch_size=64), backend="torch"
    )
    assert _ids(again) == _ids(results)


# ----------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "field, value, needle",
    [
        ("samples", 0, "samples must be an integer >= 1"),
        ("samples", 2.0, "samples must be an integer >= 1"),
        ("temperature", -0.1, "temperature must be 0 (greedy) or a finite number >= 0.001"),
        ("temperature", math.nan, "temperature must be 0 (greedy) or a finite number >= 0.001"),
        ("temperature", 1e-300, "temperature must be 0 (greedy) or a finite number >= 0.001"),
        ("temperature", math.inf, "temperature must be 0 (greedy) or a finite number >= 0.001"),
        ("top_p", 0.0, "top_p must be a number in (0, 1]"),
        ("top_p", 1.5, "top_p must be a number in (0, 1]"),
        ("max_new_tokens", 0, "max_new_tokens must be an integer >= 1"),
        ("batch_size", 0, "batch_size must be an integer >= 1"),
        ("seed", -1, "seed must be an integer in [0, 2**63)"),
    ],
)
def test_bad_config(field, value, needle):
    with pytest.raises(ValueError) as err:
        SamplingConfig(**{field: value})
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_bad_sample_inputs(model, tok):
    no_pad = copy.deepcopy(tok)
    no_pad.pad_token = None
    assert no_pad.pad_token_id is None
    cases = [
        (dict(prompts=[]), "prompts is empty"),
        (dict(prompts="a prompt"), "prompts must be a list of strings"),
        (dict(prompts=["ok", 3]), "prompts[1] is int"),
        (dict(prompts=[""]), "prompts[0] encodes to no tokens"),
        (dict(tokenizer=no_pad), "tokenizer has no pad token"),
        (dict(backend="bogus"), "backend must be one of auto, torch, vllm"),
        (dict(cfg={"samples": 2}), "cfg must be a SamplingConfig"),
    ]
    if not torch.cuda.is_available():
        cases.append((dict(backend="vllm"), "backend='vllm' needs vLLM installed and a CUDA device"))
    for overrides, needle in cases:
        kwargs = (
            dict(
                model=model,
                tokenizer=tok,
                prompts=["hi"],
                cfg=SamplingConfig(max_new_tokens=2),
                backend="torch",
            )
            | overrides
        )
        with pytest.raises(ValueError) as err:
            sample(
                kwargs.pop("model"),
                kwargs.pop("tokenizer"),
                kwargs.pop("prompts"),
                kwargs.pop("cfg"),
                **kwargs,
            )
        assert needle in str(err.value) and "\n" not in str(err.value), (overrides, str(err.value))
