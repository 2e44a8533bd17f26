"""Sampling throughput: new tokens/s of `shapedce.eval.sample` (our KV-cache loop) vs `model.generate`.

Both sample the same prompts from the same randomly initialised flavor, in one process, with the
same temperature / top_p (generate: do_sample=True, top_k=0 so that its warpers are exactly
temperature + top-p like ours, num_return_sequences=m, its default dynamic cache; ours: one batch
of prompts x m sequences). EOS is suppressed for both (a hook sets its logit to -inf), so every
sequence makes exactly max_new_tokens tokens and the work is equal. Rounds alternate the two
providers, so machine drift hits both alike; the table shows the median tokens/s and the ratio.

Run on CPU (from the repository root, ~2 minutes on 2 cores):
    python benchmarks/bench_sample.py
    python benchmarks/bench_sample.py --flavors tiny --prompts 8 --samples 4 --new-tokens 32 --rounds 1
On GPU: --device cuda.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from shapedce.data import builtin_corpus, train_tokenizer
from shapedce.data.problems import heldout_problems
from shapedce.eval.sample import SamplingConfig, sample
from shapedce.models import build_model


def suppress_token(model, token: int):
    """Forward hook on lm_head that makes `token` impossible; returns the handle."""

    def hook(_module, _inputs, output):
        output[..., token] = -math.inf
        return output

    return model.lm_head.register_forward_hook(hook)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_generate(model, tok, prompts, cfg: SamplingConfig, device) -> int:
    enc = tok(prompts, padding=True, return_tensors="pt").to(device)
    with torch.inference_mode():
        out = model.generate(
            **enc,
            do_sample=True,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_k=0,
            max_new_tokens=cfg.max_new_tokens,
            num_return_sequences=cfg.samples,
            pad_token_id=tok.pad_token_id,
            eos_token_id=None,
        )
    sync(device)
    return out[:, enc["input_ids"].shape[1] :].numel()  # no EOS, so nothing is padding (pad may be sampled)


def run_ours(model, tok, prompts, cfg: SamplingConfig, device) -> int:
    results = sample(model, tok, prompts, cfg, backend="torch")
    sync(device)
    return sum(c.num_tokens for row in results for c in row)


def bench_flavor(flavor: str, tok, prompts, args, device) -> dict[str, float]:
    model = build_model(flavor, seed=0).to(device).eval()
    handle = suppress_token(model, tok.eos_token_id)
    cfg = SamplingConfig(
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.new_tokens,
        samples=args.samples,
        batch_size=args.batch_size,
    )
    providers = {"generate": run_generate, "ours": run_ours}
    short = SamplingConfig(
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_new_tokens=4,
        samples=cfg.samples,
        batch_size=cfg.batch_size,
    )
    for fn in providers.values():  # warm-up
        fn(model, tok, prompts, short, device)
    rates: dict[str, list[float]] = {name: [] for name in providers}
    expected = len(prompts) * cfg.samples * cfg.max_new_tokens
    for _ in range(args.rounds):
        for name, fn in providers.items():
            t0 = time.perf_counter()
            tokens = fn(model, tok, prompts, cfg, device)
            elapsed = time.perf_counter() - t0
            if tokens != expected:
                raise RuntimeError(f"{name} made {tokens} tokens, expected {expected}")
            rates[name].append(tokens / elapsed)
    handle.remove()
    return {name: statistics.median(r) for name, r in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flavors", default="tiny,small")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=4, help="m completions per prompt")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    tok = train_tokenizer(builtin_corpus("pretrain-v2", 1000), vocab_size=2048)  # fits every CPU flavor
    prompts = [p.query for p in heldout_problems("add", n=args.prompts, seed=0)]
    lengths = [len(tok(p)["input_ids"]) for p in prompts]
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, {len(prompts)} prompts "
        f"({min(lengths)}-{max(lengths)} tokens) x {args.samples} samples x {args.new_tokens} new tokens, "
        f"T={args.temperature}, top_p={args.top_p}, median of {args.rounds} rounds\n"
    )
    rows = [
        "| flavor | sequences | new tokens | generate tok/s | ours tok/s | ours / generate |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for flavor in args.flavors.split(","):
        r = bench_flavor(flavor, tok, prompts, args, device)
        rows.append(
            f"| {flavor} | {len(prompts) * args.samples} | {args.new_tokens} | {r['generate']:,.0f} | "
            f"{r['ours']:,.0f} | {r['ours'] / r['generate']:.2f} |"
        )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
