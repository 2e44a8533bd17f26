"""Same-process A/B of the exact speed paths of docs/guides/performance.md, on trained tiny models.

Each pair runs the same work the plain way (A: what the code did before) and the fast way (B: now),
in interleaved rounds on one thread, timed in CPU seconds of this process; it prints B's speedup.
Both ways give the same numbers bit for bit (tests/test_perf_exact.py); the script checks it too.
    - validation (pre- and mid-training): the fused loss making gradients under no_grad (A) or not (B)
    - perplexity: the token head's entropy as one xlogy over [C, V] (A) or in 32-row blocks (B)
    - evaluation sampling: the nucleus from the top 256 (A) or the top 32 first (B)
and what train.log_every > 1 would buy: an optimizer step with the loss's statistics (A) and without
(B), as the steps between two log rows run now.

Run from the repository root (a few minutes on one core), with the folder of bench_pipeline.py's
--trained (a finished tiny pre-training run pre/ and its mid-training mid/):
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_exact_ab.py --trained runs/perf
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from shapedce.config import load_config
from shapedce.eval import run as eval_run
from shapedce.eval import sample as sample_mod
from shapedce.eval.loading import load_model
from shapedce.eval.sample import SamplingConfig
from shapedce.eval.scoring import default_text_docs
from shapedce.eval.text import text_stats
from shapedce.loss import fused
from shapedce.reproduce.grid import EvalSection
from shapedce.rundir import StageDir
from shapedce.tasks import get_tasks
from shapedce.train import lm_trainer
from shapedce.train.lm import midtrain_config

token_head_mod = importlib.import_module("shapedce.loss.token_head")  # the package's name is the function


@contextmanager
def grad_made_under_no_grad():
    """A: the fused loss as before, computing its gradients whatever the grad mode."""
    inner = fused._FusedLinearShapedCE.apply

    def apply(*args):
        return inner(*args[:-1], True)

    fused._FusedLinearShapedCE.apply = apply  # type: ignore[method-assign]
    try:
        yield
    finally:
        fused._FusedLinearShapedCE.apply = inner  # type: ignore[method-assign]


@contextmanager
def one_shot_entropy():
    """A: the token head's entropy row sums as one xlogy over the chunk."""
    inner = token_head_mod.xlogx_row_sums
    token_head_mod.xlogx_row_sums = lambda e: torch.special.xlogy(e, e).sum(1)
    try:
        yield
    finally:
        token_head_mod.xlogx_row_sums = inner


@contextmanager
def nucleus_from_256():
    """A: the nucleus from the top 256 tokens, no first try."""
    inner = sample_mod.pick_tokens
    sample_mod.pick_tokens = functools.partial(inner, first=False)
    try:
        yield
    finally:
        sample_mod.pick_tokens = inner


def ab(name: str, fn, plain, rounds: int) -> str:
    """Interleaved rounds of fn() the plain way (inside `plain()`) and the fast way; checks equality."""
    secs = {"A": 0.0, "B": 0.0}
    results = {}
    for _ in range(rounds):
        for way in ("A", "B"):
            t0 = time.process_time()
            if way == "A":
                with plain():
                    results[way] = fn()
            else:
                results[way] = fn()
            secs[way] += time.process_time() - t0
    same = results["A"] == results["B"]
    a, b = secs["A"] / rounds, secs["B"] / rounds
    return f"| {name} | {a:.2f} | {b:.2f} | x{a / b:.2f} | {'yes' if same else 'NO'} |"


def step_ab(name: str, trainer, rounds: int, steps: int = 3) -> str:
    """Optimizer steps with the loss's statistics (A: every step of log_every=1) and without (B: the
    steps between log rows when log_every > 1), interleaved; each way advances the same trainer."""
    secs = {True: 0.0, False: 0.0}
    for _ in range(rounds):
        for stats in (True, False):
            t0 = time.process_time()
            for _ in range(steps):
                trainer.train_step(stats=stats)
            secs[stats] += time.process_time() - t0
    a, b = secs[True] / (rounds * steps), secs[False] / (rounds * steps)
    return f"| {name} | {a:.3f} | {b:.3f} | x{a / b:.2f} | (same update: tests) |"


def trainer_of(cfg, init_from, out: Path, resume_from=None):
    one, dev, accum = lm_trainer.Dist(), torch.device("cpu"), cfg.grad_accum
    return lm_trainer.LMTrainer(cfg, StageDir(out), one, dev, None, "ddp", accum, init_from, resume_from)


def validation(cfg, init_from, out: Path):
    """evaluate_lm of one validation (its stats dict) on a model loaded from `init_from`."""
    trainer, dev = trainer_of(cfg, init_from, out), torch.device("cpu")
    t = cfg.train
    model, seqs = trainer.model, trainer.val_seqs
    return lambda: lm_trainer.evaluate_lm(model, seqs, t.val_sequences, t.micro_batch, dev, None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trained", required=True, help="folder with finished tiny runs pre/ and mid/")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds per pair")
    ap.add_argument("--problems", type=int, default=16, help="problems per task of the evaluation sampling")
    args = ap.parse_args()
    torch.set_num_threads(1)
    trained = Path(args.trained)
    pre_cfg = load_config("tiny", ["train.report_to=none"])
    mid_cfg = midtrain_config(pre_cfg, trained / "pre")
    rows = [
        "| work (one call) | A: before, core-s | B: now, core-s | speedup | same numbers |",
        "|---|---:|---:|---:|---|",
    ]
    full = EvalSection()
    settings = eval_run.EvalSettings(**{**dataclasses.asdict(full), "problems": args.problems}, seed=0)
    cfg = SamplingConfig(
        temperature=full.temperature,
        top_p=full.top_p,
        max_new_tokens=full.max_new_tokens,
        samples=full.samples,
        seed=0,
        batch_size=full.batch_size,
    )
    model, tokenizer = load_model(trained / "mid" / "final", "cpu", pad_from_eos=True)
    tasks = get_tasks(full.tasks)

    def sampling():
        return [eval_run.run_task(task, model, tokenizer, settings, cfg, False)[0] for task in tasks]

    docs = default_text_docs(text=settings.text)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pre_val = validation(pre_cfg, trained / "pre" / "final", root / "p")
        mid_val = validation(mid_cfg, trained / "pre" / "final", root / "m")
        rows.append(ab("pre-training validation", pre_val, grad_made_under_no_grad, args.rounds))
        rows.append(ab("mid-training validation", mid_val, grad_made_under_no_grad, args.rounds))
        ckpt = sorted((trained / "pre" / "checkpoints").glob("step_*"))[0]  # the oldest kept: 150 of 200
        late = trainer_of(pre_cfg, None, root / "pl", ckpt)
        steps = [step_ab(f"pre-training step (from {ckpt.name})", late, args.rounds)]
        mid = trainer_of(mid_cfg, trained / "pre" / "final", root / "ms")
        steps.append(step_ab("mid-training step (from its start)", mid, args.rounds))
    text = lambda: text_stats(model, tokenizer, docs, max_tokens=full.text_tokens)  # noqa: E731
    rows.append(ab("perplexity (one evaluation)", text, one_shot_entropy, args.rounds))
    name = f"evaluation sampling ({args.problems} problems x 2 tasks x 8 samples)"
    rows.append(ab(name, sampling, nucleus_from_256, args.rounds))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread, {args.rounds} interleaved rounds\n")
    print("\n".join(rows))
    print("\nA train step with the loss's statistics (every step at log_every=1) and without (the steps")
    print("between log rows at log_every > 1; the update is the same):\n")
    print("| step | A: with stats, core-s | B: without, core-s | speedup | |\n|---|---:|---:|---:|---|")
    print("\n".join(steps))


if __name__ == "__main__":
    main()
