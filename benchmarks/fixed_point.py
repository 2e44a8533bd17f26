"""How far each shaped loss would move entropy and tail mass at convergence, on a trained model's own
next-token distributions (docs/method/statistics.md: beta reshapes a distribution only where it has real
entropy; lambda_tail acts only where the tail holds mass).

Take a CE model's next-token distribution q on held-out text as the truth. The shaped loss's
expected gradient (docs/method/loss.md) under x ~ q vanishes where, for every token j,
    pi_j = q_j w(pi_j) / (W - lam_j (1 - q_j) + S - T),
    W = sum_x q_x w(pi_x),  S = sum_a lam_a pi_a,  T = sum_x q_x lam_x pi_x,
(lam from pi's own top-k; w and lam are stop-gradient, lam_x = 0 for the target). Iterating that
map finds the fixed point pi*. Printed per configuration: mean over positions of H(pi*) - H(q) and of
tail(pi*) - tail(q) (mass beyond the top-k), the asymptotic effect a fully converged model would show,
beside the effect the grid measured after its short pre-training; and the perplexity it would cost,
exp(KL(q || pi*)) - 1, if q were the truth.

    OMP_NUM_THREADS=1 python benchmarks/fixed_point.py --run runs/reproduce/runs/tiny/ce/s0/pretrain
    # candidate knobs for the study's priors (docs/rl-study/design.md), on the tuning text:
    python benchmarks/fixed_point.py --run RUN --split tune --settings=-1,0,-0.5,100 --settings=5,0,0,100

Each `--settings=` (repeatable; the `=` lets a value start with a minus) is
beta,lambda_top,lambda_tail,k. A setting whose stationarity map has no
positive normaliser on some row (a tail penalty too strong for that row's mass, e.g.
lambda_tail=-3) has no fixed point of this form: it is reported as such instead of iterated.
"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path

import torch

from shapedce.data.corpus import builtin_corpus
from shapedce.data.world import general_text
from shapedce.eval.loading import load_model, pick_device
from shapedce.loss.rows import ground_truth_weight

CONFIGS = {  # name: (beta, lambda_top, lambda_tail), the paper's settings (docs/method/loss.md)
    "precision": (-0.25, 0.0, 0.0),
    "diversity": (0.5, 0.0, 0.0),
    "tail": (0.0, 0.0, -0.1),
    "head": (0.0, 0.1, 0.0),
}


def fixed_point(q: torch.Tensor, beta: float, lam_top: float, lam_tail: float, k: int, iters: int = 200):
    """pi* for rows of q ([N, V], float64), by iterating the stationarity map above."""
    pi = q.clone()
    for _ in range(iters):
        w = ground_truth_weight(pi.clamp_min(1e-300).log(), torch.log1p(-pi.clamp(max=1 - 1e-16)), beta)
        lam = torch.full_like(pi, lam_tail)
        lam.scatter_(1, pi.topk(min(k, pi.shape[1]), dim=1).indices, lam_top)
        big_w = (q * w).sum(1, keepdim=True)
        s = (lam * pi).sum(1, keepdim=True)
        t = (q * lam * pi).sum(1, keepdim=True)
        den = big_w - lam * (1 - q) + s - t
        if not bool((den > 0).all()):
            raise ValueError("no fixed point: the stationarity map's normaliser is not positive")
        new = q * w / den
        new = new / new.sum(1, keepdim=True)
        if (new - pi).abs().max() < 1e-12:
            return new
        pi = new
    return pi


def stats(p: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row entropy (nats) and mass beyond the top-k."""
    ent = -(p * p.clamp_min(1e-300).log()).sum(1)
    return ent, 1 - p.topk(min(k, p.shape[1]), dim=1).values.sum(1)


@torch.inference_mode()
def distributions(run: Path, docs: list[str], max_tokens: int, max_len: int = 256):
    """Next-token distributions of the run's final model on `docs`, [N, V] float64 chunks."""
    model, tok = load_model(run / "final", pick_device("cpu"))
    model.eval()
    total = 0
    for doc in docs:
        ids = tok(doc, add_special_tokens=False)["input_ids"][:max_len]
        if len(ids) < 2 or total >= max_tokens:
            continue
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
        total += logits.shape[0]
        yield torch.softmax(logits.double(), -1)


def settings_table(args) -> dict[str, tuple[float, float, float, int]]:
    """name -> (beta, lambda_top, lambda_tail, k): the paper's settings, or --settings."""
    if not args.settings:
        return {name: (*knobs, args.k) for name, knobs in CONFIGS.items()}
    out = {}
    for spec in args.settings:
        beta, top, tail, k = spec.split(",")
        out[spec] = (float(beta), float(top), float(tail), int(k))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a CE pre-training stage folder (with final/)")
    ap.add_argument(
        "--k", type=int, default=100, help="k of the paper's settings and of the tail-mass column"
    )
    ap.add_argument("--tokens", type=int, default=4000)
    ap.add_argument("--text", choices=("mix", "general"), default="mix")
    ap.add_argument("--split", default="val", help="held-out sample of the mix (val: the evaluation's; tune)")
    ap.add_argument(
        "--settings", action="append", default=[], help="beta,lambda_top,lambda_tail,k (repeatable)"
    )
    args = ap.parse_args()
    docs = (
        builtin_corpus("pretrain-v2", 400, seed=0, split=args.split)
        if args.text == "mix"
        else [general_text(0).document(random.Random(f"heldout:{i}")) for i in range(400)]
    )
    table = settings_table(args)
    sums = {name: [0.0, 0.0, 0.0] for name in table}
    failed: set[str] = set()
    base, n = [0.0, 0.0], 0
    for q in distributions(args.run, docs, args.tokens):
        h_q, tail_q = stats(q, args.k)
        base[0] += float(h_q.sum())
        base[1] += float(tail_q.sum())
        n += q.shape[0]
        for name, (beta, top, tail, k) in table.items():
            if name in failed:
                continue
            try:
                pi = fixed_point(q, beta, top, tail, k)
            except ValueError:
                failed.add(name)
                continue
            h, t = stats(pi, args.k)
            kl = (q * (q.clamp_min(1e-300).log() - pi.clamp_min(1e-300).log())).sum(1)
            sums[name][0] += float((h - h_q).sum())
            sums[name][1] += float((t - tail_q).sum())
            sums[name][2] += float(kl.sum())
    h_mean = base[0] / n
    print(
        f"{args.run} on held-out {args.text} text ({args.split}): {n} positions, "
        "q = the CE model's distribution"
    )
    print(f"q: entropy {h_mean:.4f} nats, tail mass beyond top-{args.k} {base[1] / n:.4f}")
    print(
        "setting | beta | lam_top | lam_tail | k | H(pi*) - H(q) | relative | tail(pi*) - tail(q) | ppl cost"
    )
    print("---|---:|---:|---:|---:|---:|---:|---:|---:")
    for name, (beta, top, tail, k) in table.items():
        head = f"{name} | {beta:+.2f} | {top:+.2f} | {tail:+.2f} | {k}"
        if name in failed:
            print(f"{head} | no fixed point | | | ")
            continue
        dh, dt, kl = (v / n for v in sums[name])
        print(f"{head} | {dh:+.4f} | {100 * dh / h_mean:+.1f}% | {dt:+.5f} | {100 * math.expm1(kl):+.2f}%")


if __name__ == "__main__":
    main()
