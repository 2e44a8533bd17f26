"""`shapedce eval`: Avg@m, Cons@m and Pass@k of any causal LM on verifiable tasks, plus text stats.

    shapedce eval runs/ce-mid --tasks arith --samples 16 --problems 100     # a run dir or any HF model dir
    shapedce eval PATH --tasks humaneval,logic,file:my.jsonl --samples 128 --pass-k 1,2,4,8,16,32,64
    shapedce --debug eval /tmp/x --tasks logic --samples 4 --problems 4     # CPU smoke, seconds

For each task: `--problems` held-out test prompts (`--split val`: the tuning split's; at most the
task's size: humaneval has 164, a file its rows), `--samples` (m) completions each (paper: 128 at
T=0.7, top-p 0.95), scored by the task's verifier. Memory stays bounded at any m: `--batch-size`
sequences per forward pass, and CHUNK sequences per sampling call are graded and dropped before the
next call. One progress bar counts samples over all tasks. Reported per task and overall (prompts of
all tasks pooled): Avg@m, Cons@m, the unbiased Pass@k curve for k = 1, 2, 4, ..., m, and response
lengths. On held-out text (the built-in validation sample, or `--text PATH`): perplexity, the
token-entropy distribution and the share of high-entropy "forking" tokens. Writes OUT/results.json
(schema below) and OUT/results.md; OUT defaults to PATH/eval.

results.json: {"schema_version": 1, "model": PATH, "settings": {...}, "tasks": {NAME: TASK},
"overall": TASK, "text": TEXT}, TASK = {"prompts", "samples", "avg_at_m", "cons_at_m",
"pass_at_k": {"1": .., "2": .., ...}, "response_length": {"mean", "median", "max", "finished"},
"correct_per_prompt": [c, ...] (per-task entries only: the paired per-prompt tests of `shapedce.report`)},
TEXT = the dict of `shapedce.eval.text.text_stats`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from ..rundir import LOCK, RESULTS, FolderLock, prepare_out
from ..tasks import get_tasks
from ..tasks.files import render_chats
from .loading import load_model, pick_device, resolve_model_dir
from .metrics import summarize
from .sample import SamplingConfig, sample, vllm_available
from .scoring import BUILTIN_TEXTS, default_text_docs, grade_groups, length_stats, summary_of
from .settings import EvalSettings as EvalSettings  # re-exported: shapedce.eval.run.EvalSettings
from .settings import weights_bf16
from .text import text_stats

SCHEMA_VERSION = 1
CHUNK = 4096
"""Sequences sampled per call before they are graded and dropped (only their lengths and grades are
kept): with `batch_size` sequences per forward pass, this bounds memory at any --samples."""


def run_task(task, model, tokenizer, settings: EvalSettings, cfg: SamplingConfig, bar) -> tuple:
    """Sample and grade one task, CHUNK sequences at a time: (summary, groups, lengths, finished)."""
    n = settings.problems if task.size is None else min(settings.problems, task.size)
    prompts = task.prompts(settings.split, n, seed=settings.seed)
    texts = render_chats(prompts, tokenizer)  # chat templates: time-bounded
    step = len(prompts) if vllm_available() else max(1, CHUNK // settings.samples)
    groups, lengths, finished = [], [], []
    for i in range(0, len(prompts), step):
        completions = sample(model, tokenizer, texts[i : i + step], cfg, progress=bar)
        groups += grade_groups(task, completions, prompts[i : i + step])
        lengths += [c.num_tokens for samples in completions for c in samples]
        finished += [c.finished for samples in completions for c in samples]
    return summary_of(groups, lengths, finished, settings.ks()), groups, lengths, finished


def evaluate(path: str | Path, settings: EvalSettings, out: Path | None = None, device: str = "auto") -> dict:
    """Run the evaluation, write results.json / results.md, return the results dict. The output
    folder's lock (OUT/.lock) is held throughout: a second writer stops at once with one line."""
    out = prepare_out(Path(out) if out else Path(path) / "eval")  # a bad --out fails before sampling
    with FolderLock(out / LOCK, f"eval folder {out}").acquire():
        return _evaluate(path, settings, out, device)


def _evaluate(path: str | Path, settings: EvalSettings, out: Path, device: str) -> dict:
    from tqdm.auto import tqdm

    settings.validate()
    tasks = get_tasks(settings.tasks)
    cfg = SamplingConfig(  # before the model is loaded: a bad setting costs nothing
        temperature=settings.temperature,
        top_p=settings.top_p,
        max_new_tokens=settings.max_new_tokens,
        samples=settings.samples,
        seed=settings.seed,
        batch_size=settings.batch_size,
    )
    # user files are read (and a malformed one refused in one line) before any model is loaded
    total = sum(settings.problems if t.size is None else min(settings.problems, t.size) for t in tasks)
    user_docs = None
    if settings.text and settings.text not in BUILTIN_TEXTS:
        from ..data.packing import read_texts

        user_docs = read_texts(settings.text)
    model_dir = resolve_model_dir(path)
    dev = pick_device(device)
    bf16 = weights_bf16(settings.dtype, dev.type)
    model, tokenizer = load_model(model_dir, dev, pad_from_eos=True, dtype=torch.bfloat16 if bf16 else None)
    results = {
        "schema_version": SCHEMA_VERSION,
        "model": str(model_dir),
        "settings": asdict(settings),
        "tasks": {},
    }
    pooled_groups, pooled_len, pooled_fin = [], [], []
    with tqdm(total=total * settings.samples, desc="eval", unit="sample") as bar:
        for task in tasks:
            bar.set_postfix_str(task.name)
            summary, groups, lengths, finished = run_task(task, model, tokenizer, settings, cfg, bar)
            results["tasks"][task.name] = summary
            pooled_groups += groups
            pooled_len += lengths
            pooled_fin += finished
    results["overall"] = summarize(pooled_groups, settings.ks())
    results["overall"]["response_length"] = length_stats(pooled_len, pooled_fin)
    if user_docs is None:
        docs = default_text_docs(text=settings.text)
    else:
        docs = user_docs
    results["text"] = text_stats(model, tokenizer, docs, max_tokens=settings.text_tokens)

    (out / RESULTS).write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(markdown(results))
    return results


def markdown(results: dict) -> str:
    """The results as Markdown tables (tasks, then text statistics)."""
    m = results["settings"]["samples"]
    rows = {**results["tasks"], "overall": results["overall"]}
    ks = list(results["overall"]["pass_at_k"])
    head = (
        f"| task | prompts | Avg@{m} | Cons@{m} | " + " | ".join(f"Pass@{k}" for k in ks) + " | mean length |"
    )
    lines = [
        f"Model: `{results['model']}` (T={results['settings']['temperature']}, "
        f"top-p={results['settings']['top_p']}, m={m})",
        "",
        head,
        "|---|" + "---:|" * (4 + len(ks)),
    ]
    for name, r in rows.items():
        cells = [str(r["prompts"]), f"{r['avg_at_m']:.3f}", f"{r['cons_at_m']:.3f}"]
        cells += [f"{r['pass_at_k'][k]:.3f}" for k in ks] + [f"{r['response_length']['mean']:.1f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    t = results["text"]
    lines += [
        "",
        "| held-out text | tokens | PPL | entropy mean | p50 | p80 | p95 | forking share | tail mass |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| | {t['tokens']} | {t['ppl']:.3f} | {t['entropy_mean']:.3f} | {t['entropy_p50']:.3f} | "
        f"{t['entropy_p80']:.3f} | {t['entropy_p95']:.3f} | "
        f"{t['forking_share']:.3f} (H > {t['forking_threshold']}) | "
        f"{t['tail_mass']:.4f} (k={t['tail_k']}) |",
    ]
    return "\n".join(lines) + "\n"
