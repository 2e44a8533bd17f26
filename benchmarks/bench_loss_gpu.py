"""GPU benchmark of the lm-head loss at the paper's vocabulary: ours vs Liger-Kernel vs unfused torch.

    pip install -e ".[gpu]"                       # liger-kernel (optional: its rows are skipped without it)
    python benchmarks/bench_loss_gpu.py           # one H100: well under 5 minutes
    python benchmarks/bench_loss_gpu.py --tokens 16384 --hidden 4096 \
        --csv benchmarks/results/bench_loss_gpu.csv

Shapes: V = 151936 (Qwen3), H in {2560, 4096} (the 4B model's hidden is 2560), N = --tokens rows,
bf16 hidden [N, H] and weight [V, H], both requiring grad, ~5% targets ignored (-100).
Providers, each timed as forward + backward (median of --repeats after --warmup, CUDA events)
with peak memory = torch.cuda.max_memory_allocated during the call minus what was allocated before:
  torch_ce         F.linear + F.cross_entropy (the [N, V] logits exist)
  liger_ce         liger_kernel's LigerFusedLinearCrossEntropyLoss (Triton, chunked)
  fused_ce         shapedce fused_linear_shaped_cross_entropy, all knobs zero (= cross-entropy)
  fused_precision  the same with beta = -0.25
  fused_tail       the same with lambda_tail = -0.1, k = 100 (needs a per-row top-k)
The fused rows run at the library's default chunk rows and at each --chunk-sizes value.
The table gives time and memory as ratios to Liger (speed = liger_ms / ms, so > 1 is faster;
mem = peak / liger peak, so < 1 is smaller). Issue target: fused_ce speed >= 0.9, mem <= 1.
Without CUDA it exits with one line.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from shapedce.loss import fused_linear_shaped_cross_entropy

VOCAB = 151936
MIB = 1 << 20


def _liger() -> Callable | None:
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except ImportError:
        return None
    loss = LigerFusedLinearCrossEntropyLoss(ignore_index=-100, reduction="mean")

    def run(h, w, x):
        out = loss(w, h, x)
        return out[0] if isinstance(out, tuple) else out

    return run


def _providers(chunk_sizes: list[int | None]) -> dict[str, Callable | None]:
    def fused(chunk: int | None, **knobs) -> Callable:
        return lambda h, w, x: fused_linear_shaped_cross_entropy(h, w, x, chunk_size=chunk, **knobs)

    out: dict[str, Callable | None] = {
        "torch_ce": lambda h, w, x: F.cross_entropy(F.linear(h, w).float(), x, ignore_index=-100),
        "liger_ce": _liger(),
    }
    for chunk in chunk_sizes:
        tag = "" if chunk is None else f"@{chunk}"
        out[f"fused_ce{tag}"] = fused(chunk)
        out[f"fused_precision{tag}"] = fused(chunk, beta=-0.25)
        out[f"fused_tail{tag}"] = fused(chunk, lambda_tail=-0.1, k=100)
    return out


def measure(fn: Callable, h, w, x, warmup: int, repeats: int) -> tuple[float, float, float]:
    """(median ms of forward + backward, peak MiB above the inputs, loss value)."""

    def once() -> float:
        h.grad = w.grad = None
        loss = fn(h, w, x)
        loss.backward()
        return float(loss)

    for _ in range(warmup):
        value = once()
    h.grad = w.grad = None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        value = once()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    peak = (torch.cuda.max_memory_allocated() - base) / MIB
    h.grad = w.grad = None
    return statistics.median(times), peak, value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=8192, help="rows N (default 8192)")
    p.add_argument("--hidden", default="2560,4096", help="comma-separated H values")
    p.add_argument("--chunk-sizes", default="1024", help="extra chunk rows for the fused rows ('' for none)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--csv", default="", help="also write long-format rows here")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit(
            "bench_loss_gpu: no CUDA device (torch.cuda.is_available() is False); "
            "on CPU run benchmarks/bench_loss.py instead"
        )
    for name, value in (("--tokens", args.tokens), ("--warmup", args.warmup), ("--repeats", args.repeats)):
        if value < (0 if name == "--warmup" else 1):
            raise SystemExit(
                f"bench_loss_gpu: {name} must be >= {0 if name == '--warmup' else 1}; got {value}"
            )
    hiddens = [int(v) for v in args.hidden.split(",") if v]
    chunks: list[int | None] = [None] + [int(v) for v in args.chunk_sizes.split(",") if v]
    providers = _providers(chunks)
    if providers["liger_ce"] is None:
        print(
            "liger_ce: skipped (liger-kernel is not installed; pip install -e '.[gpu]'); "
            "ratios are vs torch_ce"
        )
    print(f"# {torch.cuda.get_device_name()}  torch {torch.__version__}  N={args.tokens} V={VOCAB} bf16")
    rows = []
    for hidden in hiddens:
        g = torch.Generator(device="cuda").manual_seed(0)
        h = (torch.randn(args.tokens, hidden, device="cuda", generator=g) * 0.5).bfloat16().requires_grad_()
        w = (
            (torch.randn(VOCAB, hidden, device="cuda", generator=g) * hidden**-0.5)
            .bfloat16()
            .requires_grad_()
        )
        x = torch.randint(0, VOCAB, (args.tokens,), device="cuda", generator=g)
        x[torch.rand(args.tokens, device="cuda", generator=g) < 0.05] = -100
        for name, fn in providers.items():
            if fn is None:
                continue
            try:
                ms, mib, value = measure(fn, h, w, x, args.warmup, args.repeats)
            except torch.cuda.OutOfMemoryError:
                print(f"{name} H={hidden}: out of memory")
                continue
            rows.append(
                {
                    "provider": name,
                    "hidden": hidden,
                    "tokens": args.tokens,
                    "vocab": VOCAB,
                    "ms": ms,
                    "peak_mib": mib,
                    "loss": value,
                }
            )
        del h, w, x
        torch.cuda.empty_cache()

    ref_name = "liger_ce" if providers["liger_ce"] is not None else "torch_ce"
    print(f"| provider | H | ms | peak MiB | loss | speed vs {ref_name} | mem vs {ref_name} |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ref = next((q for q in rows if q["provider"] == ref_name and q["hidden"] == r["hidden"]), None)
        r["speed_vs_ref"] = ref["ms"] / r["ms"] if ref else float("nan")
        r["mem_vs_ref"] = r["peak_mib"] / ref["peak_mib"] if ref and ref["peak_mib"] > 0 else float("nan")
        print(
            f"| {r['provider']} | {r['hidden']} | {r['ms']:.2f} | {r['peak_mib']:.0f} | {r['loss']:.4f} | "
            f"{r['speed_vs_ref']:.2f}x | {r['mem_vs_ref']:.2f}x |"
        )
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["provider"])
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
