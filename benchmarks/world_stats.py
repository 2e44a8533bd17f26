"""Statistics of the built-in world v2 (data.corpus=builtin-v2), and of trained models on its held-out text.

Without runs: the generator's own measured statistics (shapedce.data.world), tokens per word and
the general text's share of tokens under a BPE of size V trained on the corpus. With runs: for each
run's final model, perplexity, mean next-token entropy and tail mass beyond the top-k on held-out
general text alone and on the whole held-out pretrain-v2 mix (`shapedce.eval.text.text_stats`),
plus the last validation and training rows of its metrics.jsonl.

Run on CPU from the repository root (a minute per run on 1 core):
    OMP_NUM_THREADS=1 python benchmarks/world_stats.py --runs /tmp/w-ce /tmp/w-precision
    OMP_NUM_THREADS=1 python benchmarks/world_stats.py --vocab 8192        # no runs: corpus only
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from shapedce.data.corpus import MIXES, builtin_corpus
from shapedce.data.world import general_text

KEYS = ("ppl", "entropy", "tail_mass", "w_mean", "w_max", "grad_shift")


def corpus_report(vocab: int, n_docs: int) -> None:
    from shapedce.data.tokenizer import train_tokenizer

    print("generator (2000 paragraphs):", {k: round(v, 4) for k, v in general_text(0).measure(2000).items()})
    docs = builtin_corpus("pretrain-v2", n_docs, seed=0)
    tok = train_tokenizer(docs, vocab)
    general = [general_text(0).document(random.Random(f"report:{i}")) for i in range(400)]

    def count(texts: list[str]) -> int:
        return sum(len(tok(d, add_special_tokens=False)["input_ids"]) for d in texts)

    n_tok, n_words = count(general), sum(len(d.split()) for d in general)
    share = MIXES["pretrain-v2"]["general"] * (n_tok / len(general)) / (count(docs) / len(docs))
    print(f"V={vocab}: {n_tok / n_words:.2f} tokens per general-text word (punctuation included)")
    print(f"general text holds about {share:.0%} of the pretrain-v2 tokens (its doc share x length ratio)")


def run_report(run: Path, n_docs: int, max_tokens: int) -> dict:
    from shapedce.eval.loading import load_model, pick_device
    from shapedce.eval.text import text_stats

    model, tok = load_model(run / "final", pick_device("cpu"))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r.get("split") == "val" and r.get("stage") == "pretrain"]
    general = [general_text(0).document(random.Random(f"heldout:{i}")) for i in range(n_docs)]
    mix = builtin_corpus("pretrain-v2", n_docs, seed=0, split="val")
    train = [r for r in rows if r.get("split") == "train" and r.get("stage") == "pretrain"]
    out = {"run": str(run), "step": val[-1]["step"]}
    for split, last in (("val", val[-1]), ("train", train[-1])):
        out |= {f"{split}_{k}": round(last[k], 4) for k in KEYS if k in last}
    for name, docs in (("general", general), ("mix", mix)):
        s = text_stats(model, tok, docs, max_tokens=max_tokens)
        out[name] = {k: round(s[k], 4) for k in ("ppl", "entropy_mean", "tail_mass", "forking_share")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="*", default=[], help="pre-training run folders (with final/)")
    ap.add_argument("--vocab", type=int, default=8192, help="BPE size for the corpus-only report")
    ap.add_argument("--docs", type=int, default=200, help="held-out documents per text set")
    ap.add_argument("--tokens", type=int, default=20000, help="tokens scored per text set")
    args = ap.parse_args()
    if not args.runs:
        corpus_report(args.vocab, 4000)
    for run in args.runs:
        print(json.dumps(run_report(Path(run), args.docs, args.tokens)))


if __name__ == "__main__":
    main()
