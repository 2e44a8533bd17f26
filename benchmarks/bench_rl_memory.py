"""Peak RSS of one RL step at the paper's vocabulary, before and after the fused log-prob head.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_rl_memory.py      # ~1 min, needs ~16 GB RAM

One GRPO step of the smoke model flavor (`tiny`) with V = 151,936: `token_logps` of 8 rows of
32 prompt + 992 completion tokens (1,024 per row) and the backward of the clipped loss. Each variant
runs in its own process (peak RSS is per process): "before" computes the log-probs from the full
[rows, T, V] float32 logits and their log_softmax (the implementation this replaced, kept in
bench_memory_plan.unfused_logps); "after" is `shapedce.train.grpo.token_logps` (the fused per-token
head). Printed: peak RSS (VmHWM, includes the interpreter and libraries), its growth over the
resident set after the imports, and the ratio.
"""

from __future__ import annotations

from bench_memory_plan import measure

CASE = ("rl", "tiny", 151936, 8, 992, False)


def main() -> None:
    rows = {name: measure(CASE, unfused=name == "before") for name in ("before", "after")}
    gb = 1e9
    print("one RL step, tiny flavor, V=151936, 8 rows x (32 + 992) tokens, float32 on CPU")
    print(f"{'':<8}{'peak RSS GB':>13}{'growth GB':>11}{'seconds':>9}")
    for name, r in rows.items():
        print(f"{name:<8}{r['peak_rss'] / gb:>13.2f}{r['measured'] / gb:>11.2f}{r['seconds']:>9.1f}")
    print(f"before / after: {rows['before']['measured'] / rows['after']['measured']:.1f}x")


if __name__ == "__main__":
    main()
