"""Does a model read its operands? Teacher-forced greedy accuracy of each step of held-out `small` problems.

A `small` problem ("What is a o b o c?", one-digit numbers) is solved in two worked lines,
"a o b = s." and "s o c = t.", then "The answer is t.". For each of N held-out test prompts the
model continues the prompt plus the correct solution up to one point and must produce the next
number greedily:

    copy_a / copy_b / copy_c   an operand, copied from the prompt (chance ~0.1)
    s / t                      the result of a step, given the step written out
    copy_s                     the first step's result, copied from the line above
    answer                     t after "The answer is ", copied from the second line

Chance is about 0.1 everywhere; copying near 1 means the model attends to the right positions. This
is how the default grid's mid-training budget was chosen (docs/history/2026-11-30-world-v2.md).

Run on CPU from the repository root (seconds per model):
    python benchmarks/read_probe.py runs/reproduce/runs/tiny/ce/s0/midtrain runs/reproduce/runs/tiny/ce/s0/rl
"""

from __future__ import annotations

import argparse

import torch

from shapedce.eval.loading import load_model
from shapedce.rundir import resolve_model_dir
from shapedce.tasks import get_task

PROBES = ("copy_a", "copy_b", "s", "copy_s", "copy_c", "t", "answer")


def probes(solution: str) -> dict[str, tuple[str, str]]:
    """Probe name -> (solution prefix, the number that must follow)."""
    first, second = solution.split("\n")[:2]
    a, o1, b, _, s = first.rstrip(".").split(" ")
    _, o2, c, _, t = second.rstrip(".").split(" ")
    return {
        "copy_a": ("", a),
        "copy_b": (f"{a} {o1} ", b),
        "s": (f"{a} {o1} {b} = ", s),
        "copy_s": (f"{first}\n", s),
        "copy_c": (f"{first}\n{s} {o2} ", c),
        "t": (f"{first}\n{s} {o2} {c} = ", t),
        "answer": (f"{first}\n{second}\nThe answer is ", t),
    }


@torch.no_grad()
def read_probe(path: str, n: int) -> dict[str, float]:
    model, tokenizer = load_model(resolve_model_dir(path), torch.device("cpu"))
    prompts = get_task("arith-small").prompts("test", n)
    hits = dict.fromkeys(PROBES, 0)
    for prompt in prompts:
        for name, (prefix, want) in probes(prompt.meta["solution"]).items():
            ids = tokenizer(prompt.text + prefix, return_tensors="pt").input_ids
            out = model.generate(
                ids, max_new_tokens=len(want), do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
            hits[name] += tokenizer.decode(out[0, ids.shape[1] :]) == want
    return {name: hits[name] / len(prompts) for name in PROBES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories (their final/) or model directories")
    parser.add_argument("--prompts", type=int, default=200, help="held-out test prompts (at most 180)")
    args = parser.parse_args()
    print("| model | " + " | ".join(PROBES) + " |")
    print("|---|" + "---:|" * len(PROBES))
    for run in args.runs:
        acc = read_probe(run, args.prompts)
        print(f"| {run} | " + " | ".join(f"{acc[p]:.2f}" for p in PROBES) + " |", flush=True)


if __name__ == "__main__":
    main()
