"""Batched sampling from any Hugging Face causal LM: our KV-cache loop on torch, or vLLM on a GPU.

    from shapedce.eval.sample import SamplingConfig, sample
    cfg = SamplingConfig(temperature=0.7, top_p=0.95, max_new_tokens=256, samples=8, seed=0)
    results = sample(model, tokenizer, prompts, cfg, progress=True)   # results[i][j]: prompt i, sample j
    c = results[0][0]; c.text, c.token_ids, c.num_tokens, c.finished, c.entropy

Try it on a CPU (a random tiny model, a few seconds): python -m shapedce.eval.sample

The torch path (`backend="torch"`, and "auto" without vLLM + CUDA):
  - prompts are tokenized once, left-padded by hand (the tokenizer's padding side does not matter),
    position ids come from the attention mask (cumsum - 1), as `generate` makes them;
  - the (prompt, sample) sequences are sorted by prompt length (less padding) and cut into batches
    of `batch_size`; a batch prefills each distinct prompt once and copies its cache rows to the
    samples (`DynamicCache.batch_select_indices`), then decodes one token per step;
  - the cache goes in as `cache=` (transformers 5.x renamed `past_key_values`; the old name is
    deprecated until 5.40); a forward without `cache` gets `past_key_values`;
  - a row stops at EOS (the EOS token is kept in `token_ids`; `finished` is True) or at
    `max_new_tokens`; finished rows leave the batch, so the batch shrinks as it goes;
  - temperature 0 is greedy (argmax of the raw logits, top_p ignored), token for token what
    `generate(do_sample=False)` gives on the same left-padded batch.

Counter-based randomness: a sampled token depends only on (seed, prompt index, sample index, step)
and the logits, never on batch size, batch composition or order. Sampling is Gumbel-max over the
nucleus: token = argmax_v [z_v / T + G_v] with G_v = -log(-log u_v), u_v from a 64-bit hash
(splitmix64 finalizer) of (seed, prompt, sample, step, v), top 24 bits -> u in (0, 1). With the
noise tied to token ids, two models sampled with the same seed share their random numbers (common
random numbers), so checkpoints compare with less noise. Batch invariance holds up to the float32
logits themselves: another padding width can move a logit by ~1e-6, which flips a sample only
when two perturbed scores are that close.

`Completion.entropy`: mean over the sampled positions of the entropy (nats) of softmax(logits) at
temperature 1, the policy entropy RL papers track, from the logits each step already has.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import tempfile
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ..errors import TEMPERATURE_MIN, UserError, check, check_int, is_int, is_real, temperature_ok
from .sample_step import (  # noqa: F401 - counter_uniform, pick_tokens and _mix are part of this API
    NUCLEUS_GUESS,
    _mix,
    _row_keys,
    counter_uniform,
    pick_tokens,
)

Backend = Literal["auto", "torch", "vllm"]
BACKENDS = ("auto", "torch", "vllm")
VLLM_LOGPROBS = 20
"""Top-k logprobs vLLM returns per token; its entropy is the truncated sum over them (a lower bound)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SamplingConfig:
    """How to sample; validated on construction (one-line ValueErrors)."""

    temperature: float = 0.7
    """Softmax temperature. 0 = greedy (argmax, top_p ignored). Allowed: 0 or finite >= 1e-3."""
    top_p: float = 0.95
    """Nucleus: keep the most likely tokens whose mass before them is < top_p. Allowed: (0, 1]."""
    max_new_tokens: int = 256
    """Length cap per completion (the EOS token counts). Allowed: >= 1."""
    samples: int = 1
    """Completions per prompt (m). Allowed: >= 1."""
    seed: int = 0
    """Key of the counter-based random numbers. Allowed: 0 <= seed < 2**63."""
    batch_size: int = 64
    """Sequences per forward pass (torch path). Changes speed and memory, never the samples."""

    def __post_init__(self) -> None:
        t, p, s = self.temperature, self.top_p, self.seed
        allowed = f"0 (greedy) or a finite number >= {TEMPERATURE_MIN}"  # 1e-300 gave NaN
        check(temperature_ok(t, greedy=True), "temperature", allowed, t)
        check(is_real(p) and 0 < p <= 1, "top_p", "a number in (0, 1]", p)
        for name in ("max_new_tokens", "samples", "batch_size"):
            check_int(name, getattr(self, name), 1)
        check(is_int(s) and 0 <= s < 2**63, "seed", "an integer in [0, 2**63)", s)


@dataclass(frozen=True, slots=True, kw_only=True)
class Completion:
    """One sampled continuation of one prompt."""

    text: str
    """Decoded continuation, special tokens skipped."""
    token_ids: list[int]
    """Sampled token ids, the stopping EOS included when `finished`."""
    num_tokens: int
    """len(token_ids)."""
    finished: bool
    """True when it stopped at EOS (then token_ids[-1] is EOS), False when it hit max_new_tokens."""
    entropy: float
    """Mean policy entropy (nats, temperature 1) over the sampled positions."""


# ----------------------------------------------------------------------------- torch backend


def _encode(tokenizer: Any, prompts: list[str]) -> list[list[int]]:
    encoded = tokenizer(prompts)["input_ids"]
    for i, ids in enumerate(encoded):
        if not ids:
            raise UserError(f"prompts[{i}] encodes to no tokens; give every prompt at least one token")
    return encoded


@torch.inference_mode()
def _decode_batch(
    model: Any,
    prompt_ids: list[list[int]],
    keys: torch.Tensor,
    cfg: SamplingConfig,
    eos: torch.Tensor,
    pad: int,
    cache_arg: str,
    extra: dict[str, Any],
) -> list[tuple[list[int], bool, float]]:
    """Sample one batch. prompt_ids: the distinct prompts; keys: [B, 3] (prompt row, prompt idx, sample
    idx)."""
    from transformers import DynamicCache

    device = keys.device
    width = max(len(ids) for ids in prompt_ids)
    ids = torch.full((len(prompt_ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    for i, row in enumerate(prompt_ids):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    cache = DynamicCache(config=model.config)
    out = model(
        input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **{cache_arg: cache}, **extra
    )
    src = keys[:, 0]
    cache.batch_select_indices(src)  # each distinct prompt's cache rows, copied to its samples
    logits, mask, pos = out.logits[src, -1].float(), mask[src], pos[src, -1]
    row_keys = _row_keys(cfg.seed, keys[:, 1], keys[:, 2])

    n, guess = keys.shape[0], NUCLEUS_GUESS
    tokens = torch.full((n, cfg.max_new_tokens), pad, dtype=torch.long, device=device)
    lengths = torch.zeros(n, dtype=torch.long, device=device)
    ent_sum = torch.zeros(n, dtype=torch.float64, device=device)
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    alive = torch.arange(n, device=device)  # rows of this batch still decoding
    for step in range(cfg.max_new_tokens):
        tok, ent, width = pick_tokens(logits, cfg, row_keys, step, guess)
        guess = max(NUCLEUS_GUESS, 2 * width)
        tokens[alive, step] = tok
        lengths[alive] += 1
        ent_sum[alive] += ent.double()
        done = torch.isin(tok, eos)
        finished[alive[done]] = True
        if step == cfg.max_new_tokens - 1:
            break
        if bool(done.any()):
            keep = (~done).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            cache.batch_select_indices(keep)
            alive, tok, mask, pos, row_keys = alive[keep], tok[keep], mask[keep], pos[keep], row_keys[keep]
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        pos = pos + 1
        out = model(
            input_ids=tok[:, None],
            attention_mask=mask,
            position_ids=pos[:, None],
            use_cache=True,
            **{cache_arg: cache},
            **extra,
        )
        logits = out.logits[:, -1].float()
    lengths_l, ent_l, fin_l, tok_l = lengths.tolist(), ent_sum.tolist(), finished.tolist(), tokens.tolist()
    return [(tok_l[i][: lengths_l[i]], fin_l[i], ent_l[i] / lengths_l[i]) for i in range(n)]


def _sample_torch(
    model: Any, tokenizer: Any, prompts: list[str], cfg: SamplingConfig, progress: Any, keys_of: list[int]
) -> list[list[Completion]]:
    from tqdm.auto import tqdm

    encoded = _encode(tokenizer, prompts)
    device = next(model.parameters()).device
    eos = torch.tensor(
        [t for t in (tokenizer.eos_token_id,) if t is not None], dtype=torch.long, device=device
    )
    params = inspect.signature(model.forward).parameters
    extra: dict[str, Any] = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
    if "output_router_logits" in params:  # MoE: no router logits / aux loss (its mask math breaks on decode)
        extra["output_router_logits"] = False
    cache_arg = "cache" if "cache" in params else "past_key_values"  # renamed to `cache` in transformers 5.x
    # all (prompt, sample) pairs, longest prompts first: less padding, and any OOM comes early
    work = sorted(
        ((p, s) for p in range(len(prompts)) for s in range(cfg.samples)),
        key=lambda ps: (-len(encoded[ps[0]]), ps[0], ps[1]),
    )
    results: list[list[Completion | None]] = [[None] * cfg.samples for _ in prompts]
    was_training = model.training
    model.eval()
    own_bar = isinstance(progress, bool)  # else a tqdm-like bar of the caller, counting samples
    bar = tqdm(total=len(work), desc="sampling", unit="sample", disable=not progress) if own_bar else progress
    try:
        for start in range(0, len(work), cfg.batch_size):
            chunk = work[start : start + cfg.batch_size]
            distinct = list(dict.fromkeys(p for p, _ in chunk))
            row_of = {p: i for i, p in enumerate(distinct)}
            keys = torch.tensor(
                [(row_of[p], keys_of[p], s) for p, s in chunk], dtype=torch.long, device=device
            )
            outs = _decode_batch(
                model,
                [encoded[p] for p in distinct],
                keys,
                cfg,
                eos,
                tokenizer.pad_token_id,
                cache_arg,
                extra,
            )
            texts = tokenizer.batch_decode([ids for ids, _, _ in outs], skip_special_tokens=True)
            for (p, s), (ids, fin, ent), text in zip(chunk, outs, texts):
                results[p][s] = Completion(
                    text=text, token_ids=ids, num_tokens=len(ids), finished=fin, entropy=ent
                )
            bar.update(len(chunk))
    finally:
        if own_bar:
            bar.close()
        model.train(was_training)
    return results  # type: ignore[return-value]


# ----------------------------------------------------------------------------- vLLM backend


def vllm_available() -> bool:
    """True when vLLM is importable and CUDA is available: what backend="auto" needs to pick vLLM."""
    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def _sample_vllm(
    model: Any, tokenizer: Any, prompts: list[str], cfg: SamplingConfig, progress: bool, keys_of: list[int]
) -> list[list[Completion]]:
    """Sample with vLLM's `LLM.generate` (`SamplingParams(n=m, temperature, top_p, max_tokens, seed)`).

    NOT TESTED: the development machine has neither vLLM nor CUDA; written against vLLM's documented
    offline API. `model` is a `vllm.LLM`, or a Hugging Face model saved (with the tokenizer) to a
    temporary directory and loaded by a fresh `vllm.LLM` for this call: slow, so for repeated
    evaluations build the `vllm.LLM` once and pass it. Prompts go in as token ids of `tokenizer`,
    which also decodes. Each prompt's seed is derived from (seed, prompt index), so its samples do
    not depend on the other prompts; vLLM's random numbers are its own (samples differ from the torch
    path's). Entropy: truncated to the top `VLLM_LOGPROBS` raw logprobs per token (a lower bound).
    """
    from vllm import LLM, SamplingParams

    tmp = None
    if not isinstance(model, LLM):
        tmp = tempfile.TemporaryDirectory(prefix="shapedce-vllm-")
        model.save_pretrained(tmp.name)
        tokenizer.save_pretrained(tmp.name)
        model = LLM(
            model=tmp.name, seed=cfg.seed, gpu_memory_utilization=0.5
        )  # the HF model keeps its memory
    try:
        encoded = _encode(tokenizer, prompts)
        stop = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else None
        index = torch.tensor(keys_of, dtype=torch.long)  # per-prompt 31-bit seeds, hashed as torch's
        seeds = [k & 0x7FFFFFFF for k in _row_keys(cfg.seed, index, torch.zeros_like(index)).tolist()]
        params = [
            SamplingParams(
                n=cfg.samples,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                max_tokens=cfg.max_new_tokens,
                seed=seeds[i],
                stop_token_ids=stop,
                logprobs=VLLM_LOGPROBS,
                detokenize=False,
            )
            for i in range(len(prompts))
        ]
        outputs = model.generate(
            [{"prompt_token_ids": ids} for ids in encoded], params, use_tqdm=progress is True
        )
        results = []
        for request in outputs:
            row = []
            for out in sorted(request.outputs, key=lambda o: o.index):
                ids = list(out.token_ids)
                ents = [
                    -sum(math.exp(lp.logprob) * lp.logprob for lp in top.values())
                    for top in (out.logprobs or [])
                ]
                row.append(
                    Completion(
                        text=tokenizer.decode(ids, skip_special_tokens=True),
                        token_ids=ids,
                        num_tokens=len(ids),
                        finished=out.finish_reason == "stop",
                        entropy=sum(ents) / len(ents) if ents else float("nan"),
                    )
                )
            results.append(row)
        if not isinstance(progress, bool):
            progress.update(len(prompts) * cfg.samples)
        return results
    finally:
        if tmp is not None:
            del model
            tmp.cleanup()


# ----------------------------------------------------------------------------- API


def sample(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    cfg: SamplingConfig | None = None,
    *,
    progress: Any = False,
    backend: Backend = "auto",
    prompt_keys: list[int] | None = None,
) -> list[list[Completion]]:
    """Sample `cfg.samples` completions per prompt: result[i] holds prompt i's, in sample order.

    prompt_keys: the counter key of each prompt (default: its index in `prompts`); prompt i's samples
    depend only on (seed, prompt_keys[i], sample index), so a caller that splits one prompt list over
    several calls or processes gets the same samples by passing each prompt's global index.

    backend: "torch" = our KV-cache loop; "vllm" = vLLM (needs vLLM and CUDA); "auto" = vLLM when
    `vllm_available()` (or when `model` is already a `vllm.LLM`), else torch.
    """
    cfg = SamplingConfig() if cfg is None else cfg
    if not isinstance(cfg, SamplingConfig):
        raise UserError(f"cfg must be a SamplingConfig; got {type(cfg).__name__}")
    if backend not in BACKENDS:
        raise UserError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)):
        raise UserError(f"prompts must be a list of strings; got {type(prompts).__name__}")
    if not prompts:
        raise UserError("prompts is empty: give at least one prompt")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise UserError(f"prompts must hold strings; prompts[{i}] is {type(prompt).__name__}")
    if prompt_keys is None:
        prompt_keys = list(range(len(prompts)))
    if len(prompt_keys) != len(prompts) or not all(is_int(k) and 0 <= k < 2**62 for k in prompt_keys):
        raise UserError("prompt_keys must hold one integer in [0, 2**62) per prompt")
    if getattr(tokenizer, "pad_token_id", None) is None:
        raise UserError(
            "tokenizer has no pad token; set one (e.g. tokenizer.pad_token = tokenizer.eos_token)"
        )
    is_llm = type(model).__module__.startswith("vllm")
    if backend == "vllm" or (backend == "auto" and (is_llm or vllm_available())):
        if not vllm_available():
            raise UserError("backend='vllm' needs vLLM installed and a CUDA device; use backend='torch'")
        return _sample_vllm(model, tokenizer, list(prompts), cfg, progress, list(prompt_keys))
    if is_llm:
        raise UserError("backend='torch' needs a Hugging Face model, not a vllm.LLM")
    return _sample_torch(model, tokenizer, list(prompts), cfg, progress, list(prompt_keys))


def _demo() -> None:
    from shapedce.data import builtin_corpus, train_tokenizer
    from shapedce.models import build_model

    tok = train_tokenizer(builtin_corpus("pretrain-v2", 300), vocab_size=2048)
    model = build_model("tiny", seed=0)
    cfg = SamplingConfig(samples=2, max_new_tokens=16)
    for i, row in enumerate(
        sample(model, tok, ["Problem: What is 2 + 3?\n", "The city of"], cfg, backend="torch")
    ):
        for j, c in enumerate(row):
            print(
                f"[{i}.{j}] {c.num_tokens} tokens, finished={c.finished}, entropy={c.entropy:.2f}: {c.text!r}"
            )


if __name__ == "__main__":
    _demo()
