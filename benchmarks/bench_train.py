"""Training throughput: tokens/s of a full optimizer step, CE against each shaped loss setting.

For each model flavor, a patched model (`shapedce.hf.patch_causal_lm`, fused loss with the
statistics the trainer logs) runs forward + backward + AdamW step on random token batches. The
five loss settings are measured in interleaved rounds in one process, so machine drift hits all
of them alike; the table reports the median tokens/s and the ratio to CE (target: >= 0.95).

Run on CPU (from the repository root, ~5 minutes on 2 cores):
    python benchmarks/bench_train.py
    python benchmarks/bench_train.py --flavors tiny,tiny-moe --rounds 3
On GPU: --device cuda (bf16 autocast).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from shapedce.hf import patch_causal_lm
from shapedce.loss import PRESETS
from shapedce.models import build_model

SEQ = {"tiny": 128, "tiny-moe": 128, "small": 256, "small-moe": 256}


def step_fn(model, batch, opt, device):
    amp = device.type == "cuda"

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(input_ids=batch[:, :-1], shift_labels=batch[:, 1:])
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if amp:
            torch.cuda.synchronize()

    return step


def bench_flavor(flavor: str, args, device) -> dict[str, float]:
    seq = SEQ.get(flavor, 256)
    model = build_model(flavor, seed=0).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, model.config.vocab_size, (args.micro_batch, seq + 1), generator=g).to(device)
    tokens = args.micro_batch * seq
    times: dict[str, list[float]] = {name: [] for name in PRESETS}
    for name in PRESETS:  # warm-up, one step each
        patch_causal_lm(model, name, return_stats=True)
        step_fn(model, batch, opt, device)()
    for _ in range(args.rounds):
        for name in PRESETS:
            patch_causal_lm(model, name, return_stats=True)
            step = step_fn(model, batch, opt, device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - t0) / args.steps)
    return {name: tokens / statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flavors", default="tiny,small,tiny-moe,small-moe")
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the five settings")
    ap.add_argument("--steps", type=int, default=2, help="optimizer steps per setting per round")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    names = list(PRESETS)
    print(
        f"tokens/s of forward + backward + AdamW ({device}, {torch.get_num_threads()} threads, "
        f"micro-batch {args.micro_batch}, median of {args.rounds} rounds x {args.steps} steps)\n"
    )
    print("| flavor | seq | " + " | ".join(names) + " | " + " | ".join(f"{n}/ce" for n in names[1:]) + " |")
    print("|---|---:|" + "---:|" * (2 * len(names) - 1))
    for flavor in args.flavors.split(","):
        tps = bench_flavor(flavor, args, device)
        cells = [f"{tps[n]:,.0f}" for n in names] + [f"{tps[n] / tps['ce']:.2f}" for n in names[1:]]
        print(f"| {flavor} | {SEQ.get(flavor, 256)} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
