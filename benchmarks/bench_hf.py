"""The drop-in shaped loss under `transformers.Trainer`, side by side with the Trainer's own loss.

One model (a Qwen3 decoder with a 32k vocabulary, random weights) and one fixed batch are trained
for a few steps by `transformers.Trainer` in each of these ways:

    trainer-ce          the Trainer and the model's own cross-entropy on logits (the baseline)
    compute_loss_func   the shaped loss on the logits (`shapedce.hf.compute_loss_func`)
    patched             the fused shaped loss (`shapedce.hf.patch_causal_lm`): no [B, T, V] logits
    lora-ce             PEFT LoRA (q, v projections), the model's own loss
    lora-patched        PEFT LoRA, patched: the frozen head computes no weight gradient
    lora-patched-head   the same with the head weight made trainable (what the frozen head saves)

Tokens/s is the median over the timed steps (the first step is warm-up); peak memory is CUDA's
`max_memory_allocated` on GPU and, on CPU, the peak resident memory above the start of each run,
which runs in a forked child of this process (CPU has no peak-reset). Ratios are to trainer-ce,
measured in the same invocation. Run from the repository root:

    PYTHONPATH=src python benchmarks/bench_hf.py                 # CPU, ~3 minutes on 2 cores
    PYTHONPATH=src python benchmarks/bench_hf.py --batch 8 --seq 1024 --steps 20   # GPU: bf16
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import statistics
import tempfile
import time

import torch
import transformers as tf

from shapedce.hf import compute_loss_func, patch_causal_lm
from shapedce.loss import ShapedLoss

KNOBS = ShapedLoss(beta=-0.25, lambda_tail=-0.1, k=100)
RUNS = ["trainer-ce", "compute_loss_func", "patched", "lora-ce", "lora-patched", "lora-patched-head"]


def build(args):
    cfg = tf.Qwen3Config(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=args.hidden // 4,
        intermediate_size=2 * args.hidden,
        max_position_embeddings=args.seq,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return tf.Qwen3ForCausalLM(cfg)


class Timer(tf.TrainerCallback):
    def __init__(self):
        self.times, self.t0 = [], 0.0

    def on_step_begin(self, *_, **__):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.t0 = time.perf_counter()

    def on_step_end(self, *_, **__):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self.t0)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_one(name: str, args) -> dict:
    from datasets import Dataset

    cuda = torch.cuda.is_available()
    start_rss = rss_mb()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=g).tolist()
    data = Dataset.from_dict({"input_ids": ids, "labels": ids})
    model = build(args)
    if name.startswith("lora"):
        import peft

        model = peft.get_peft_model(model, peft.LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
        if name == "lora-patched-head":
            model.get_base_model().lm_head.weight.requires_grad_(True)
    if name.endswith("patched") or name == "lora-patched-head":
        patch_causal_lm(model, KNOBS)
    timer = Timer()
    with tempfile.TemporaryDirectory() as out:
        targs = tf.TrainingArguments(
            output_dir=out,
            max_steps=args.steps + 1,
            per_device_train_batch_size=args.batch,
            learning_rate=1e-4,
            use_cpu=not cuda,
            bf16=cuda,
            report_to=[],
            save_strategy="no",
            disable_tqdm=True,
            logging_steps=1,
            dataloader_num_workers=0,
        )
        loss_fn = compute_loss_func(KNOBS) if name == "compute_loss_func" else None
        trainer = tf.Trainer(
            model=model, args=targs, train_dataset=data, compute_loss_func=loss_fn, callbacks=[timer]
        )
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        trainer.train()
    step = statistics.median(timer.times[1:])
    peak = (
        (torch.cuda.max_memory_allocated() - base) / 2**20
        if cuda
        else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - start_rss)
    )
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"run": name, "tokens_s": args.batch * args.seq / step, "peak_mb": peak, "loss0": losses[0]}


def _child(name, args, queue):
    torch.set_num_threads(args.threads) if args.threads else None
    queue.put(run_one(name, args))


def measure(name: str, args) -> dict:
    if torch.cuda.is_available():
        return run_one(name, args)
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(name, args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--steps", type=int, default=4, help="timed steps (one more runs first as warm-up)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--runs", default=",".join(RUNS))
    p.add_argument("--rounds", type=int, default=1, help="repeat all runs, report medians")
    args = p.parse_args()
    names = args.runs.split(",")
    rounds = [
        [measure(name, args) for name in names] for _ in range(args.rounds)
    ]  # interleaved: drift hits all
    rows = [
        {
            "run": name,
            **{key: statistics.median(r[i][key] for r in rounds) for key in ("tokens_s", "peak_mb")},
            "loss0": rounds[0][i]["loss0"],
        }
        for i, name in enumerate(names)
    ]
    base = rows[0]
    threads = args.threads or torch.get_num_threads()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {threads} thread(s)"
    print(
        f"\n{device}; Qwen3 2 layers, hidden {args.hidden}, vocab {args.vocab}; "
        f"batch {args.batch} x {args.seq}; "
        f"loss {KNOBS.knobs()}; ratios to {base['run']}"
    )
    print("| run | tokens/s | ratio | peak MB | ratio | first loss |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['run']} | {r['tokens_s']:.0f} | {r['tokens_s'] / base['tokens_s']:.2f} | "
            f"{r['peak_mb']:.0f} | "
            f"{r['peak_mb'] / base['peak_mb']:.2f} | {r['loss0']:.4f} |"
        )
    head_gradient_saving(args)


def head_gradient_saving(args, reps: int = 7) -> None:
    """The fused loss alone (forward + backward) with the head weight trainable or frozen, interleaved."""
    from shapedce.loss import fused_linear_shaped_cross_entropy

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    g = torch.Generator().manual_seed(2)
    n = args.batch * args.seq
    h0 = torch.randn(n, args.hidden, generator=g).to(dev)
    w0 = (torch.randn(args.vocab, args.hidden, generator=g) * 0.05).to(dev)
    x = torch.randint(0, args.vocab, (n,), generator=g).to(dev)
    times = {True: [], False: []}
    for _ in range(reps):
        for trainable in (True, False):
            h, w = h0.clone().requires_grad_(True), w0.clone().requires_grad_(trainable)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fused_linear_shaped_cross_entropy(h, w, x, **KNOBS.knobs()).backward()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times[trainable].append(time.perf_counter() - t0)
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(
        f"\nfused loss alone, {n} rows x vocab {args.vocab}, forward + backward (median of {reps}): "
        f"head trainable {on * 1e3:.0f} ms, head frozen {off * 1e3:.0f} ms ({off / on:.2f}x)"
    )


if __name__ == "__main__":
    main()
