"""Cost of `token_weights=` on the fused shaped loss: time and saved-for-backward bytes, against the
same call without weights, in one process (ratios, not absolute times).

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_token_weights.py --rows 2048 --vocab 32768

Saved bytes are counted exactly with autograd's saved-tensor hooks; the chunk buffers are the same
for both calls by construction (the weights are one number per row, applied to the row scale).
"""

from __future__ import annotations

import argparse
import time

import torch

from shapedce.loss import fused_linear_shaped_cross_entropy


def run(h, w, t, tw, reduction, reps):
    saved = []

    def pack(x):
        saved.append(x.numel() * x.element_size())
        return x

    best = float("inf")
    for _ in range(reps):
        saved.clear()
        start = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            loss = fused_linear_shaped_cross_entropy(
                h, w, t, beta=-0.25, lambda_tail=-0.1, k=100, reduction=reduction, token_weights=tw
            )
        gout = torch.ones_like(loss) if reduction == "none" else None
        torch.autograd.grad(loss, (h, w), grad_outputs=gout)
        best = min(best, time.perf_counter() - start)
    return best, sum(saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    h = torch.randn(args.rows, args.hidden, generator=g, requires_grad=True)
    w = (torch.randn(args.vocab, args.hidden, generator=g) * 0.05).requires_grad_()
    t = torch.randint(0, args.vocab, (args.rows,), generator=g)
    tw = torch.rand(args.rows, generator=g)
    print(f"rows={args.rows} hidden={args.hidden} vocab={args.vocab}, best of {args.reps}")
    print("| reduction | time ratio (weighted / plain) | saved bytes plain | saved bytes weighted |")
    print("|---|---:|---:|---:|")
    for reduction in ("mean", "none"):
        t0, b0 = run(h, w, t, None, reduction, args.reps)
        t1, b1 = run(h, w, t, tw, reduction, args.reps)
        print(f"| {reduction} | {t1 / t0:.3f} | {b0} | {b1} |")


if __name__ == "__main__":
    main()
