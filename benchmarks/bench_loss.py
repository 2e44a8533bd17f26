"""Benchmark of the lm-head loss: forward+backward wall time and extra peak memory.

Providers (float32 hidden [N, H] and weight [V, H], both requires_grad; ~5% targets = -100):
  floor            the three bare GEMMs: logits = h @ W.T, grad_h = G @ W, grad_W = G.T @ h
                   (G a preallocated logits-shaped gradient): what every lm-head loss pays
  torch_ce         F.linear + F.cross_entropy, backward (unfused)
  shaped_ref       F.linear + shaped_cross_entropy(beta=-0.25), backward (unfused reference)
  fused_ce         fused_linear_shaped_cross_entropy with all knobs zero
  fused_precision  fused, beta=-0.25
  fused_tail       fused, lambda_tail=-0.1, k=100

Each provider x shape runs in a fresh subprocess (`--worker`), so its peak memory is its own:
on CPU the growth of ru_maxrss over the run (baseline taken once the inputs exist), on CUDA
max_memory_allocated minus the inputs' bytes. Time is the median of --repeats after a warm-up.
Shapes whose estimated need exceeds --mem-budget-gib are printed as "skipped (needs X GiB)".

Run on CPU (from the repository root):
    python benchmarks/bench_loss.py --quick              # N=4096, V=32768 only: ~1-3 min on 2 cores
    python benchmarks/bench_loss.py                      # all shapes (long on CPU)
    python benchmarks/bench_loss.py --topk               # k-th largest logit: topk vs kthvalue vs exp
    python benchmarks/bench_loss.py --chunks             # fused_precision chunk_size sweep
    python benchmarks/bench_loss.py --stats --repeats 3  # return_stats=True vs False: ~1 min
On GPU add `--device cuda` (and e.g. `--mem-budget-gib 70`).
Other flags: --shapes 4096x32768,16384x151936  --repeats R  --chunk-size C  --csv PATH
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from shapedce.loss import fused_linear_shaped_cross_entropy, shaped_cross_entropy
from shapedce.loss.fused import default_chunk_rows
from shapedce.loss.rows import negative_sums, top_k

SHAPES = [(4096, 32768), (4096, 151936), (16384, 32768), (16384, 151936)]  # (N, V)
QUICK_SHAPES = [(4096, 32768)]
CHUNK_SIZES = [64, 128, 256, 512, 1024]
GIB, MIB = 1 << 30, 1 << 20


def _fused(stats: bool = False, **knobs):
    def make(h, w, x, args):
        def step():
            out = fused_linear_shaped_cross_entropy(
                h, w, x, chunk_size=args.chunk_size, return_stats=stats, **knobs
            )
            (out[0] if stats else out).backward()

        return step

    return make


def _floor(h, w, x, args):
    g = torch.randn(h.shape[0], w.shape[0], device=h.device)  # allocated after the baseline: counted

    def step():
        with torch.no_grad():
            logits = h @ w.t()
            grad_h, grad_w = g @ w, g.t() @ h
        return logits, grad_h, grad_w

    return step


PROVIDERS = {
    "floor": _floor,
    "torch_ce": lambda h, w, x, args: (
        lambda: F.cross_entropy(F.linear(h, w), x, ignore_index=-100).backward()
    ),
    "shaped_ref": lambda h, w, x, args: (
        lambda: shaped_cross_entropy(F.linear(h, w), x, beta=-0.25).backward()
    ),
    "fused_ce": _fused(),
    "fused_precision": _fused(beta=-0.25),
    "fused_tail": _fused(lambda_tail=-0.1, k=100),
}
STATS_PROVIDERS = {  # --stats: each fused setting without and with return_stats=True
    name + suffix: _fused(stats=bool(suffix), **knobs)
    for name, knobs in (
        ("fused_ce", {}),
        ("fused_precision", dict(beta=-0.25)),
        ("fused_tail", dict(lambda_tail=-0.1, k=100)),
    )
    for suffix in ("", "+stats")
}
UNFUSED_COPIES = {
    "floor": 2,
    "torch_ce": 3,
    "shaped_ref": 4,
}  # live [N, V] float32 tensors at peak (measured)


def estimate_bytes(provider: str, n: int, h: int, v: int, chunk: int | None) -> int:
    """Rough peak need: inputs + their grads + the provider's logits-shaped working set."""
    base = 2 * 4 * (n * h + v * h)
    if provider in UNFUSED_COPIES:  # +10% headroom for the allocator and the process itself
        return int(1.1 * (base + UNFUSED_COPIES[provider] * 4 * n * v))
    c = chunk or default_chunk_rows(n, v)
    return base + 4 * n * h + 9 * c * v  # h index_select copy, the chunk buffer and its temporaries


# ------------------------------------------------------------------------------------ worker
def make_inputs(n: int, h: int, v: int, device: str):
    torch.manual_seed(0)
    hidden = torch.randn(n, h, device=device).requires_grad_()
    weight = torch.randn(v, h, device=device).mul_(0.02).requires_grad_()
    targets = torch.randint(0, v, (n,), device=device)
    targets[torch.rand(n, device=device) < 0.05] = -100
    return hidden, weight, targets


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def worker(args) -> None:
    """Run one provider on one shape in this (fresh) process; print a JSON line."""
    provider, n, v = args.worker[0], int(args.worker[1]), int(args.worker[2])
    dev = args.device
    hidden, weight, targets = make_inputs(n, args.hidden, v, dev)
    sync(dev)
    if dev.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    step = {**PROVIDERS, **STATS_PROVIDERS}[provider](hidden, weight, targets, args)
    times = []
    for i in range(args.warmup + args.repeats):
        hidden.grad = weight.grad = None
        sync(dev)
        t0 = time.perf_counter()
        step()
        sync(dev)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    if dev.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    print(
        json.dumps(
            {
                "time_ms": 1e3 * statistics.median(times),
                "time_min_ms": 1e3 * min(times),
                "peak_mib": peak / MIB,
            }
        )
    )


# ------------------------------------------------------------------------------------ parent
def run_worker(args, provider: str, n: int, v: int, chunk: int | None) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        provider,
        str(n),
        str(v),
        "--hidden",
        str(args.hidden),
        "--repeats",
        str(args.repeats),
        "--warmup",
        str(args.warmup),
        "--device",
        args.device,
    ] + (["--chunk-size", str(chunk)] if chunk else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        err = (proc.stderr.strip().splitlines() or ["?"])[-1][:80]
        return {"note": f"failed (rc={proc.returncode}: {err})"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(args, provider: str, n: int, v: int, chunk: int | None) -> dict:
    need = estimate_bytes(provider, n, args.hidden, v, chunk)
    if need > args.mem_budget_gib * GIB:
        return {"note": f"skipped (needs {need / GIB:.1f} GiB)"}
    r = run_worker(args, provider, n, v, chunk)
    print(
        f"  {provider:16s} N={n} V={v}: "
        + (r.get("note") or f"{r['time_ms']:.1f} ms, {r['peak_mib']:.0f} MiB"),
        file=sys.stderr,
        flush=True,
    )
    return r


def fmt(x, spec=".1f") -> str:
    return "n/a" if x is None else format(x, spec)


def ratio(a, b) -> str:
    return "n/a" if a is None or b is None or b <= 0 else f"{a / b:.2f}"


def main_bench(args) -> None:
    results = {}  # (N, V) -> provider -> dict
    for n, v in args.shapes:
        print(f"\n### N={n}, H={args.hidden}, V={v} ({args.device}, {torch.get_num_threads()} threads)\n")
        res = results[(n, v)] = {p: measure(args, p, n, v, args.chunk_size) for p in PROVIDERS}
        print("| provider | time (ms) | extra peak mem (MiB) |\n|---|---:|---:|")
        for p, r in res.items():
            print(
                f"| {p} | {r['note']} | |"
                if "note" in r
                else f"| {p} | {r['time_ms']:.1f} | {r['peak_mib']:.0f} |"
            )
    print("\n### Summary (time ratios vs floor and torch_ce; memory ratios vs torch_ce's extra peak)\n")
    print(
        "| N | V | fused_ce/floor | fused_precision/floor | fused_tail/floor | fused_precision/torch_ce "
        "| mem fused_ce/torch_ce | mem fused_precision/torch_ce | mem fused_tail/torch_ce |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (n, v), res in results.items():
        t = {p: r.get("time_ms") for p, r in res.items()}
        m = {p: r.get("peak_mib") for p, r in res.items()}
        cells = [
            ratio(t["fused_ce"], t["floor"]),
            ratio(t["fused_precision"], t["floor"]),
            ratio(t["fused_tail"], t["floor"]),
            ratio(t["fused_precision"], t["torch_ce"]),
            ratio(m["fused_ce"], m["torch_ce"]),
            ratio(m["fused_precision"], m["torch_ce"]),
            ratio(m["fused_tail"], m["torch_ce"]),
        ]
        print(f"| {n} | {v} | " + " | ".join(cells) + " |")
    rows = [
        [p, n, args.hidden, v, fmt(r.get("time_ms"), ".3f"), fmt(r.get("peak_mib"), ".1f")]
        for (n, v), res in results.items()
        for p, r in res.items()
        if "note" not in r
    ]
    write_csv(args.csv, ["provider", "N", "H", "V", "time_ms", "peak_mib"], rows)


def main_stats(args) -> None:
    """Cost of return_stats=True (ce, entropy, top-k masses, w mean/max, grad_shift) per fused setting.
    Times are the minimum over --repeats (robust to other load on shared cores)."""
    shapes = args.shapes if args.shapes_given else [(2048, 32768)]
    rows = []
    for n, v in shapes:
        print(f"\n### return_stats overhead, N={n}, H={args.hidden}, V={v} ({args.device})\n")
        print("| setting | min time (ms) | min time +stats (ms) | ratio | extra peak (MiB) | +stats (MiB) |")
        print("|---|---:|---:|---:|---:|---:|")
        for name in ("fused_ce", "fused_precision", "fused_tail"):
            a, b = (measure(args, name + sfx, n, v, args.chunk_size) for sfx in ("", "+stats"))
            if "note" in a or "note" in b:
                print(f"| {name} | {a.get('note', '')} | {b.get('note', '')} | | | |")
                continue
            print(
                f"| {name} | {a['time_min_ms']:.1f} | {b['time_min_ms']:.1f} "
                f"| {ratio(b['time_min_ms'], a['time_min_ms'])} "
                f"| {a['peak_mib']:.0f} | {b['peak_mib']:.0f} |"
            )
            rows += [
                [name + sfx, n, args.hidden, v, f"{r['time_ms']:.3f}", f"{r['peak_mib']:.1f}"]
                for sfx, r in (("", a), ("+stats", b))
            ]
    write_csv(
        args.csv.with_name(args.csv.stem + "_stats.csv"),
        ["provider", "N", "H", "V", "time_ms", "peak_mib"],
        rows,
    )
    stats_pieces(args, shapes[0][1])


def stats_pieces(args, v: int, k: int = 100) -> None:
    """In-process, min of 15: what each piece of the stats costs on one [C, V] chunk, beside one exp
    pass and the chunk's logits GEMM (the fused pass does three such GEMMs per chunk)."""
    c = args.chunk_size or default_chunk_rows(4096, v)
    torch.manual_seed(0)
    z = torch.randn(c, v, device=args.device)
    e = z.exp()
    top, sum_neg = top_k(z, k), e.sum(1)
    h, w = torch.randn(c, args.hidden, device=args.device), torch.randn(v, args.hidden, device=args.device)
    out = torch.empty_like(z)
    pieces = {
        "logits GEMM [C,H]x[H,V] (x3 per chunk)": lambda: torch.mm(h, w.t(), out=out),
        "exp pass": lambda: torch.exp(z, out=out),
        "top-k (stats need it for CE / beta settings)": lambda: top_k(z, k),
        "entropy: xlogy + sum": lambda: torch.special.xlogy(e, e).sum(1),
        "grad_shift rows: top/tail sums and squares": lambda: negative_sums(e, top, sum_neg),
    }
    print(f"\n### stats pieces on one [{c}, {v}] float32 chunk, H={args.hidden} ({args.device}, min of 15)\n")
    print("| piece | ms |\n|---|---:|")
    for name, fn in pieces.items():
        ts = []
        for _ in range(15):
            sync(args.device)
            t0 = time.perf_counter()
            fn()
            sync(args.device)
            ts.append(time.perf_counter() - t0)
        print(f"| {name} | {1e3 * min(ts):.2f} |")


def main_chunks(args) -> None:
    """fused_precision at N=4096 for each chunk_size, one subprocess each."""
    shapes = args.shapes if args.shapes_given or args.quick else [(4096, 32768), (4096, 151936)]
    rows = []
    for n, v in shapes:
        print(
            f"\n### fused_precision, N={n}, H={args.hidden}, V={v} "
            f"(default chunk = {default_chunk_rows(n, v)})\n"
        )
        print("| chunk_size | time (ms) | extra peak mem (MiB) |\n|---:|---:|---:|")
        for c in CHUNK_SIZES:
            r = measure(args, "fused_precision", n, v, c)
            print(
                f"| {c} | {r['note']} | |"
                if "note" in r
                else f"| {c} | {r['time_ms']:.1f} | {r['peak_mib']:.0f} |"
            )
            if "note" not in r:
                rows.append(
                    ["fused_precision", n, args.hidden, v, c, f"{r['time_ms']:.3f}", f"{r['peak_mib']:.1f}"]
                )
    write_csv(
        args.csv.with_name(args.csv.stem + "_chunks.csv"),
        ["provider", "N", "H", "V", "chunk_size", "time_ms", "peak_mib"],
        rows,
    )


def main_topk(args, k: int = 100) -> None:
    """In-process: ways to get each row's k-th largest logit on one [C, V] float32 chunk."""
    vocabs = sorted({v for _, v in args.shapes})
    for v in vocabs:
        c = args.chunk_size or default_chunk_rows(4096, v)
        torch.manual_seed(0)
        z = torch.randn(c, v, device=args.device)
        out = torch.empty_like(z)
        ways = {
            "exp pass (reference)": lambda z=z, out=out: torch.exp(z, out=out),
            "topk sorted": lambda z=z: torch.topk(z, k, dim=-1).values[:, -1],
            "topk unsorted + amin": lambda z=z: torch.topk(z, k, dim=-1, sorted=False).values.amin(-1),
            "kthvalue": lambda z=z, v=v: torch.kthvalue(z, v - k + 1, dim=-1).values,
        }
        ref = torch.topk(z, k, dim=-1).values[:, -1]
        assert torch.equal(ways["kthvalue"](), ref) and torch.equal(ways["topk unsorted + amin"](), ref)
        times = {}
        for name, fn in ways.items():
            ts = []
            for _i in range(2 + 5 * args.repeats):
                sync(args.device)
                t0 = time.perf_counter()
                fn()
                sync(args.device)
                ts.append(time.perf_counter() - t0)
            times[name] = 1e3 * statistics.median(ts[2:])
        print(f"\n### k-th largest (k={k}) on a [{c}, {v}] float32 chunk ({args.device})\n")
        print("| method | time (ms) | vs exp pass |\n|---|---:|---:|")
        for name, t in times.items():
            print(f"| {name} | {t:.3f} | {t / times['exp pass (reference)']:.2f} |")


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header] + rows)
    print(f"\nwrote {path}")


def parse_shapes(text: str) -> list[tuple[int, int]]:
    return [tuple(int(x) for x in s.lower().split("x")) for s in text.split(",") if s]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N=4096, V=32768 only, fewer repeats")
    ap.add_argument("--shapes", type=parse_shapes, help="comma-separated NxV, e.g. 4096x32768,16384x151936")
    ap.add_argument("--hidden", type=int, default=512, help="H (default 512)")
    ap.add_argument("--repeats", type=int, help="timed repeats (default 5, --quick 2)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument(
        "--chunk-size", type=int, help="chunk_size for the fused providers (default: the library's)"
    )
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--mem-budget-gib", type=float, default=20.0, help="skip shapes estimated to need more")
    ap.add_argument(
        "--csv", type=Path, default=Path(__file__).resolve().parent / "results" / "bench_loss.csv"
    )
    ap.add_argument("--topk", action="store_true", help="micro-benchmark the k-th largest logit")
    ap.add_argument("--chunks", action="store_true", help="sweep chunk_size for fused_precision")
    ap.add_argument(
        "--stats", action="store_true", help="time with vs without return_stats (default N=2048 V=32768)"
    )
    ap.add_argument("--worker", nargs=3, metavar=("PROVIDER", "N", "V"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.repeats = args.repeats or (2 if args.quick else 5)
    if args.worker:
        return worker(args)
    args.shapes_given = args.shapes is not None
    args.shapes = args.shapes or (QUICK_SHAPES if args.quick else SHAPES)
    if args.topk:
        main_topk(args)
    elif args.chunks:
        main_chunks(args)
    elif args.stats:
        main_stats(args)
    else:
        main_bench(args)


if __name__ == "__main__":
    main()
