"""Seeds per core-hour: what each stage of one full tiny run costs, against the core's own GEMM rate.

One process, one thread (`torch.set_num_threads(1)`): every stage of the default run (pre-training,
mid-training, RL with its held-out evaluations, the evaluation after a stage) runs at reduced step
and problem counts, each piece is timed in CPU seconds of this process (= core-seconds on one
thread, robust to other processes on the machine), and the costs are extrapolated to the tiny
presets' counts (200 pre-training steps, 320 mid-training steps, 64 RL steps, 3 evaluations of
2 tasks x 128 problems x 8 samples). Model FLOPs: 6 x matmul weights (the lm head included) per
trained token plus causal attention (6 x layers x attention width x mean context), 2x of each for
a forward-only token (sampling, perplexity); the sampler's tokens are its prompts' and completions'.
"GEMM share" = those FLOPs over the core-seconds, as a share of the fp32 torch.mm rate measured in
the same process on the tiny model's shapes (before and after the stages: the drift shows).

Run from the repository root (a few minutes on one core):
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_pipeline.py --trained runs/perf
where runs/perf holds a finished `shapedce pretrain --preset tiny` run pre/ and its `shapedce midtrain`
mid/ (late pre-training steps then resume from pre/'s checkpoint, with a same-process A/B of the
loss's entropy row sums; RL and the evaluation sample from mid/). Caveats, printed with the table:
without --trained the models trained for a few steps sample until max_new_tokens (a real run's
stop earlier at EOS: sampling costs are then upper bounds), and RL runs without dynamic sampling (a
real run's extra sampling rounds add to RL sampling).
--log-every N / --val-every N cost the LM stages at that train.log_every / train.val_every (steps
without a log row compute no loss statistics, as in a real run; docs/guides/performance.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tempfile
import time
from pathlib import Path

import torch

from shapedce.config import load_config
from shapedce.eval import run as eval_run
from shapedce.loss import chunks
from shapedce.models import flavor_config
from shapedce.rundir import StageDir
from shapedce.train import lm_trainer, rl, rl_rollout
from shapedce.train.lm import midtrain_config
from shapedce.train.rl_config import load_rl_config
from shapedce.train.rl_trainer import RLTrainer

GEMM_SHAPES = [(2048, 128, 384), (2048, 384, 128), (2048, 128, 128), (1024, 128, 8192), (1024, 8192, 128)]
"""(M, K, N) of torch.mm: the tiny model's MLP, attention projections and lm head (and its gradient)."""


def gemm_rate(repeats: int = 5) -> float:
    """fp32 FLOP/s of torch.mm: the best of GEMM_SHAPES (each its best of `repeats` x 4 calls)."""
    best_rate = 0.0
    for m, k, n in GEMM_SHAPES:
        a, b, out = torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)
        torch.mm(a, b, out=out)
        best = math.inf
        for _ in range(repeats):
            t0 = time.process_time()
            for _ in range(4):
                torch.mm(a, b, out=out)
            best = min(best, (time.process_time() - t0) / 4)
        best_rate = max(best_rate, 2 * m * k * n / best)
    return best_rate


def model_shape(vocab: int) -> tuple[int, int, int]:
    """(matmul weights incl. the lm head, layers, attention width) of the tiny flavor at `vocab`."""
    c = flavor_config("tiny")
    h, q, kv = c.hidden_size, c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    per_layer = h * (2 * q + 2 * kv) + 3 * h * c.intermediate_size
    return c.num_hidden_layers * per_layer + vocab * h, c.num_hidden_layers, q


class Meter:
    """Core-seconds and FLOPs per stage, with the full run's multipliers."""

    def __init__(self, vocab: int):
        self.n, self.layers, self.width = model_shape(vocab)
        self.rows: dict[str, dict[str, float]] = {}

    def train_flops(self, tokens: int, ctx: float) -> float:
        return tokens * (6 * self.n + 6 * self.layers * self.width * ctx / 2)

    def fwd_flops(self, tokens: int, ctx: float, causal: bool = True) -> float:
        return tokens * (2 * self.n + 2 * self.layers * self.width * (ctx / 2 if causal else ctx))

    def add(self, stage: str, secs: float, flops: float, scale: float) -> None:
        row = self.rows.setdefault(stage, {"secs": 0.0, "flops": 0.0, "full_secs": 0.0, "full_flops": 0.0})
        row["secs"] += secs
        row["flops"] += flops
        row["full_secs"] += secs * scale
        row["full_flops"] += flops * scale


def timed(fn, *args, **kw):
    t0 = time.process_time()
    out = fn(*args, **kw)
    return out, time.process_time() - t0


def lm_stage(meter: Meter, name: str, cfg, out: Path, steps: int, init_from, resume_from=None) -> Path:
    """Build an LMTrainer, run `steps` optimizer steps, one validation and one checkpoint; extrapolate.

    With `resume_from` (a checkpoint of a finished run of this stage) the steps are measured twice,
    from the start and from that checkpoint, and the full run's steps are costed at their mean: the
    loss's top-k and entropy cost more per token once the logits have spread out."""
    full, t, dev, one = cfg.train.steps, cfg.train, torch.device("cpu"), lm_trainer.Dist()
    args = (dev, None, "ddp", cfg.grad_accum, init_from)  # one process runs all the step's micro-batches
    trainer, setup = timed(lm_trainer.LMTrainer, cfg, StageDir(out), one, *args, None)
    every = t.log_every  # steps without a log row compute no loss statistics, as in fit()
    _, step_s = timed(lambda: [trainer.train_step(stats=(i + 1) % every == 0) for i in range(steps)])
    scale = full / steps
    if resume_from is not None:
        late = lm_trainer.LMTrainer(cfg, StageDir(out.with_name(out.name + "-late")), one, *args, resume_from)
        _, late_s = timed(lambda: [late.train_step(stats=(i + 1) % every == 0) for i in range(steps)])
        print(f"{name}: {step_s / steps:.3f} core-s/step from the start, {late_s / steps:.3f} at {late.step}")
        if hasattr(chunks, "xlogx_row_sums"):  # absent before the blocked entropy
            print(ab_entropy(late))
        step_s, scale = step_s + late_s, scale / 2
    model, val_seqs = trainer.model, trainer.val_seqs
    val = lambda: lm_trainer.evaluate_lm(model, val_seqs, t.val_sequences, t.micro_batch, dev, None)  # noqa: E731
    _, val_s = timed(val)
    _, ckpt_s = timed(trainer.save_checkpoint)
    final, final_s = timed(trainer.write_final)
    seq = cfg.data.seq_len
    n_val = full // t.val_every + (full % t.val_every != 0)
    n_ckpt = full // t.ckpt_every + (full % t.ckpt_every != 0)
    measured = steps * (2 if resume_from is not None else 1)
    meter.add(name, step_s, meter.train_flops(measured * t.global_batch_tokens, seq), scale)
    val_tokens = min(t.val_sequences, len(trainer.val_seqs)) * seq
    meter.add(name + " (validation)", val_s, meter.fwd_flops(val_tokens, seq), n_val)
    meter.add(name + " (setup, checkpoints)", setup + ckpt_s + final_s, 0.0, 1.0)
    meter.rows[name + " (setup, checkpoints)"]["full_secs"] += ckpt_s * (n_ckpt - 1)
    return final


class SampleMeter:
    """Wraps a module's `sample` to time it and count its tokens and FLOPs into one stage."""

    def __init__(self, meter: Meter, module, stage: str, scale: float):
        self.meter, self.module, self.stage, self.scale = meter, module, stage, scale
        self.inner = module.sample
        module.sample = self

    def __call__(self, model, tokenizer, texts, cfg, **kw):
        out, secs = timed(self.inner, model, tokenizer, texts, cfg, **kw)
        prompt = [len(ids) for ids in tokenizer(list(texts))["input_ids"]]
        flops = sum(self.meter.fwd_flops(p, p) for p in prompt)
        for p, group in zip(prompt, out):
            for c in group:  # token t of a completion attends to p + t positions
                flops += sum(self.meter.fwd_flops(1, 2 * (p + t)) for t in range(c.num_tokens))
        self.meter.add(self.stage, secs, flops, self.scale)
        return out

    def restore(self) -> None:
        self.module.sample = self.inner


def rl_stage(meter: Meter, mid: Path, out: Path, steps: int, problems: int) -> None:
    full = load_rl_config("tiny", [])
    n_eval = 1 + full.steps // full.eval_every + (full.steps % full.eval_every != 0)
    cfg = load_rl_config(
        "tiny",
        [f"steps={steps}", "eval_every=0", f"eval_problems={problems}", "dynamic_sampling=false"]
        + ["report_to=none", f"save_steps={steps}"],
    )
    roll = SampleMeter(meter, rl_rollout, "RL sampling", full.steps / steps)
    heldout = SampleMeter(meter, rl, "RL held-out evaluation", n_eval / 2 * full.eval_problems / problems)
    inner_step = RLTrainer.train_step

    def train_step(self, batch, lrs):
        res, secs = timed(inner_step, self, batch, lrs)
        groups = batch.groups
        tokens = sum(len(g.prompt_ids) * len(g.completion_ids) for g in groups)
        tokens += sum(sum(map(len, g.completion_ids)) for g in groups)
        meter.add("RL training", secs, meter.train_flops(tokens, 48), full.steps / steps)
        return res

    RLTrainer.train_step = train_step
    try:
        _, secs = timed(rl.run_rl, cfg, mid, out)
    finally:
        RLTrainer.train_step = inner_step
        roll.restore()
        heldout.restore()
    counted = sum(meter.rows[k]["secs"] for k in ("RL sampling", "RL held-out evaluation", "RL training"))
    meter.add("RL (setup, checkpoints)", secs - counted, 0.0, 1.0)


def eval_stage(meter: Meter, model_dir: Path, out: Path, problems: int, n_evals: int) -> None:
    from shapedce.reproduce.grid import EvalSection

    full = EvalSection()
    settings = eval_run.EvalSettings(**{**dataclasses.asdict(full), "problems": problems}, seed=0).validate()
    samp = SampleMeter(meter, eval_run, "evaluation sampling", n_evals * full.problems / problems)
    inner_text = eval_run.text_stats

    def text_stats(model, tokenizer, docs, **kw):
        res, secs = timed(inner_text, model, tokenizer, docs, **kw)
        meter.add("perplexity", secs, meter.fwd_flops(res["tokens"], 128), n_evals)  # ~128-token windows
        return res

    eval_run.text_stats = text_stats
    try:
        _, secs = timed(eval_run.evaluate, model_dir, settings, out, device="cpu")
    finally:
        eval_run.text_stats = inner_text
        samp.restore()
    counted = meter.rows["evaluation sampling"]["secs"] + meter.rows["perplexity"]["secs"]
    meter.add("evaluation (setup)", secs - counted, 0.0, n_evals)


def ab_entropy(trainer, rounds: int = 3, steps: int = 3) -> str:
    """Same-process A/B of the loss's entropy row sums: one-shot xlogy (before) against the blocked
    `xlogx_row_sums` (now), on whole pre-training steps, interleaved rounds."""
    blocked, one_shot = chunks.xlogx_row_sums, lambda e: torch.special.xlogy(e, e).sum(1)
    times: dict[str, float] = {"one-shot": 0.0, "blocked": 0.0}
    try:
        for _ in range(rounds):
            for name, fn in (("one-shot", one_shot), ("blocked", blocked)):
                chunks.xlogx_row_sums = fn
                times[name] += timed(lambda: [trainer.train_step() for _ in range(steps)])[1]
    finally:
        chunks.xlogx_row_sums = blocked
    n = rounds * steps
    return (
        f"A/B, pre-training step (same process, {rounds} interleaved rounds x {steps} steps): entropy "
        f"one-shot {times['one-shot'] / n:.3f} core-s, blocked {times['blocked'] / n:.3f} core-s "
        f"(x{times['one-shot'] / times['blocked']:.2f})"
    )


def table(meter: Meter, rate: float) -> str:
    lines = [
        "| stage | measured core-s | model GFLOP | GEMM share | full run: core-s | full run: TFLOP |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    total_s = total_f = 0.0
    for name, r in meter.rows.items():
        share = f"{r['flops'] / r['secs'] / rate:.0%}" if r["flops"] and r["secs"] > 0 else "-"
        lines.append(
            f"| {name} | {r['secs']:.1f} | {r['flops'] / 1e9:.1f} | {share} | {r['full_secs']:.0f} | "
            f"{r['full_flops'] / 1e12:.2f} |"
        )
        total_s, total_f = total_s + r["full_secs"], total_f + r["full_flops"]
    lines.append(
        f"| **full tiny run** | | | {total_f / total_s / rate:.0%} | **{total_s:.0f} "
        f"({total_s / 60:.1f} core-min)** | {total_f / 1e12:.2f} |"
    )
    lines.append(f"\nFLOP floor at the GEMM rate: {total_f / rate / 60:.1f} core-min.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10, help="optimizer steps measured per LM stage")
    ap.add_argument("--rl-steps", type=int, default=2, help="RL steps measured")
    ap.add_argument("--problems", type=int, default=8, help="problems per task in the evaluations")
    ap.add_argument("--out", default="", help="folder for the runs (default: a temporary one)")
    ap.add_argument(
        "--trained",
        default="",
        help="a folder holding finished tiny runs pre/ (pretrain) and mid/ (its midtrain): late "
        "pre-training steps resume from pre/'s newest checkpoint, mid-training starts from pre/, "
        "RL and the evaluation from mid/ (sampling lengths as in a real run)",
    )
    for flag in ("log-every", "val-every"):
        key = flag.replace("-", "_")
        ap.add_argument(f"--{flag}", type=int, default=0, help=f"train.{key} of both LM stages (0: preset's)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rate0 = gemm_rate()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        cadence = [f"train.{k}={getattr(args, k)}" for k in ("log_every", "val_every") if getattr(args, k)]
        pre_cfg = load_config("tiny", ["train.report_to=none", *cadence])
        meter = Meter(pre_cfg.model.vocab_size)
        trained = Path(args.trained) if args.trained else None
        late = None
        if trained is not None:
            ckpts = sorted((trained / "pre" / "checkpoints").glob("step_*"), key=lambda p: int(p.name[5:]))
            late = ckpts[-2] if len(ckpts) > 1 else ckpts[-1]  # the newest before the run's last step
        torch.manual_seed(0)
        pre = lm_stage(meter, "pre-training", pre_cfg, root / "pretrain", args.steps, None, late)
        pre_dir = trained / "pre" if trained is not None else root / "pretrain"
        mid_cfg = midtrain_config(pre_cfg, pre_dir)
        mid_from = pre_dir / "final" if trained is not None else pre
        mid = lm_stage(meter, "mid-training", mid_cfg, root / "midtrain", args.steps, mid_from)
        mid_dir = trained / "mid" if trained is not None else root / "midtrain"
        rl_stage(meter, mid_dir, root / "rl", args.rl_steps, args.problems)
        eval_stage(meter, mid_dir / "final" if trained is not None else mid, root / "eval", args.problems, 3)
    rate1 = gemm_rate()
    rate = max(rate0, rate1)
    print(
        f"\nfp32 GEMM rate of this thread (torch.mm, tiny-model shapes): {rate0 / 1e9:.1f} GFLOP/s before, "
        f"{rate1 / 1e9:.1f} after the stages; shares use the higher. {torch.get_num_threads()} thread, "
        f"torch {torch.__version__}.\nMeasured: {args.steps} steps per LM stage, {args.rl_steps} RL steps, "
        f"{args.problems} problems per task; extrapolated to the tiny presets' counts. RL without dynamic "
        f"sampling{'' if trained else '; models trained for a few steps sample to max_new_tokens'}.\n"
    )
    print(table(meter, rate))


if __name__ == "__main__":
    main()
