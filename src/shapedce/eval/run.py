"""`shapedce eval`: Avg@m, Cons@m and Pass@k of any causal LM on verifiable tasks, plus text stats.

    shapedce eval runs/ce-mid --tasks arith --samples 16 --problems 100     # a run dir or any HF model dir
    shapedce eval runs/ce-mid --tasks arith-add,rg-chain_sum --samples 128 --temperature 0.7 --top-p 0.95

For each task: `--problems` held-out test prompts, `--samples` (m) completions each, scored by
the task's verifier. Reported per task and overall (prompts of all tasks pooled): Avg@m, Cons@m,
the unbiased Pass@k curve for k = 1, 2, 4, ..., m, and response lengths. On held-out text (the
built-in validation sample, or `--text PATH`): perplexity, the token-entropy distribution and the
share of high-entropy "forking" tokens. Writes OUT/results.json (schema below) and
OUT/results.md; OUT defaults to PATH/eval.

results.json: {"schema_version": 1, "model": PATH, "settings": {...}, "tasks": {NAME: TASK},
"overall": TASK, "text": TEXT}, TASK = {"prompts", "samples", "avg_at_m", "cons_at_m",
"pass_at_k": {"1": .., "2": .., ...}, "response_length": {"mean", "median", "max", "finished"},
"correct_per_prompt": [c, ...] (per-task entries only: the paired per-prompt tests of `shapedce.report`)},
TEXT = the dict of `shapedce.eval.text.text_stats`.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..data.tokenizer import check_special_tokens, load_tokenizer
from ..tasks import get_tasks
from .metrics import summarize
from .sample import SamplingConfig, sample
from .text import text_stats
from ..errors import UserError

SCHEMA_VERSION = 1


@dataclass(kw_only=True)
class EvalSettings:
    tasks: str = "arith"
    samples: int = 128
    problems: int = 100
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 256
    seed: int = 0
    batch_size: int = 64
    text: str = ""
    """"" = the built-in validation sample; else a local text / jsonl / parquet path."""
    text_tokens: int = 20000
    pass_k: str = ""
    """Comma-separated k of the Pass@k curve; "" = 1, 2, 4, ..., samples."""

    def validate(self) -> "EvalSettings":
        for key, ok, allowed in [
            ("samples", self.samples >= 1, ">= 1"),
            ("problems", self.problems >= 1, ">= 1"),
            ("text_tokens", self.text_tokens >= 1, ">= 1"),
        ]:
            if not ok:
                raise UserError(f"--{key.replace('_', '-')} must be {allowed}; got {getattr(self, key)}")
        for k in self.ks() or ():
            if not 1 <= k <= self.samples:
                raise UserError(f"--pass-k {k} is outside [1, --samples={self.samples}]: Pass@k needs k <= samples")
        return self

    def ks(self) -> list[int] | None:
        if not self.pass_k:
            return None
        try:
            return [int(k) for k in self.pass_k.split(",") if k.strip()]
        except ValueError:
            raise UserError(f"--pass-k must be comma-separated integers, e.g. 1,8,64; got {self.pass_k!r}") from None


def resolve_model_dir(path: str | Path) -> Path:
    """A run directory (its final/ model) or any Hugging Face model directory."""
    path = Path(path)
    for candidate in (path / "final", path):
        if (candidate / "config.json").is_file():
            return candidate
    raise UserError(f"{path} is not a model directory (no config.json in it or in {path / 'final'})")


def load_model(path: Path, device: torch.device):
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(path)  # first: a bad tokenizer fails before any weights are read
    check_special_tokens(tokenizer)
    try:
        model = AutoModelForCausalLM.from_pretrained(path)
    except Exception as err:  # noqa: BLE001
        raise UserError(f"cannot load a causal LM from {path}: {str(err).strip().splitlines()[0]}") from None
    return model.to(device).eval(), tokenizer


def length_stats(lengths: list[int], finished: list[bool]) -> dict:
    return {"mean": statistics.fmean(lengths), "median": statistics.median(lengths), "max": max(lengths),
            "finished": sum(finished) / len(finished)}


def score_task(task, completions, prompts, ks):
    """(summary, groups of (normalised answer, correct), lengths, finished) of one task."""
    groups = [[task.grade(c.text, prompt) for c in samples] for prompt, samples in zip(prompts, completions)]
    lengths = [c.num_tokens for samples in completions for c in samples]
    finished = [c.finished for samples in completions for c in samples]
    summary = summarize(groups, ks)
    summary["correct_per_prompt"] = [sum(ok for _, ok in g) for g in groups]
    summary["response_length"] = length_stats(lengths, finished)
    return summary, groups, lengths, finished


def default_text_docs(n: int = 400) -> list[str]:
    from ..data.corpus import builtin_corpus

    return builtin_corpus("pretrain", n, seed=0, split="val")


def evaluate(path: str | Path, settings: EvalSettings, out: Path | None = None, device: str = "auto") -> dict:
    """Run the evaluation, write results.json / results.md, return the results dict."""
    settings.validate()
    tasks = get_tasks(settings.tasks)
    model_dir = resolve_model_dir(path)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    model, tokenizer = load_model(model_dir, dev)
    cfg = SamplingConfig(temperature=settings.temperature, top_p=settings.top_p, max_new_tokens=settings.max_new_tokens,
                         samples=settings.samples, seed=settings.seed, batch_size=settings.batch_size)
    results = {"schema_version": SCHEMA_VERSION, "model": str(model_dir), "settings": asdict(settings), "tasks": {}}
    pooled_groups, pooled_len, pooled_fin = [], [], []
    for task in tasks:
        prompts = task.prompts("test", settings.problems, seed=settings.seed)
        completions = sample(model, tokenizer, [p.text for p in prompts], cfg, progress=True)
        summary, groups, lengths, finished = score_task(task, completions, prompts, settings.ks())
        results["tasks"][task.name] = summary
        pooled_groups += groups
        pooled_len += lengths
        pooled_fin += finished
    results["overall"] = summarize(pooled_groups, settings.ks())
    results["overall"]["response_length"] = length_stats(pooled_len, pooled_fin)
    if settings.text:
        from ..data.packing import read_texts

        docs = read_texts(settings.text)
    else:
        docs = default_text_docs()
    results["text"] = text_stats(model, tokenizer, docs, max_tokens=settings.text_tokens)

    out = Path(out) if out else Path(path) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(markdown(results))
    return results


def markdown(results: dict) -> str:
    """The results as Markdown tables (tasks, then text statistics)."""
    m = results["settings"]["samples"]
    rows = {**results["tasks"], "overall": results["overall"]}
    ks = list(results["overall"]["pass_at_k"])
    head = f"| task | prompts | Avg@{m} | Cons@{m} | " + " | ".join(f"Pass@{k}" for k in ks) + " | mean length |"
    lines = [f"Model: `{results['model']}` (T={results['settings']['temperature']}, "
             f"top-p={results['settings']['top_p']}, m={m})", "", head, "|---|" + "---:|" * (4 + len(ks))]
    for name, r in rows.items():
        cells = [str(r["prompts"]), f"{r['avg_at_m']:.3f}", f"{r['cons_at_m']:.3f}"]
        cells += [f"{r['pass_at_k'][k]:.3f}" for k in ks] + [f"{r['response_length']['mean']:.1f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    t = results["text"]
    lines += ["", "| held-out text | tokens | PPL | entropy mean | p50 | p80 | p95 | forking share | tail mass |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
              f"| | {t['tokens']} | {t['ppl']:.3f} | {t['entropy_mean']:.3f} | {t['entropy_p50']:.3f} | "
              f"{t['entropy_p80']:.3f} | {t['entropy_p95']:.3f} | {t['forking_share']:.3f} (H > {t['forking_threshold']}) | "
              f"{t['tail_mass']:.4f} (k={t['tail_k']}) |"]
    return "\n".join(lines) + "\n"
