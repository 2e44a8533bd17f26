"""Per-sample cost of the sandbox: the bubblewrap sandbox + outside grader vs the earlier audit-hook one.

The earlier sandbox (one `python -I` per program, a uid drop and an audit hook; issue 34 replaced
it) is loaded from git (commit BASELINE) into this process, so both run here, on the same machine,
interleaved round by round (drift hits both alike). Three workloads:
  empty     `run_python("pass")`, one at a time: the fixed cost of one sandbox.
  call      one sample answering 20 calls (new: `grade` with a 20-call check; earlier: a program
            asserting 20 results in the sandbox): the per-call cost of the plain-data wire.
  humaneval the 164 canonical solutions graded in parallel (CPU-count workers), the real workload.
The table gives the median milliseconds per sample and new / earlier.

Run from the repository root (a git clone; ~2 minutes on 2 cores; root for the "full" level):
    python benchmarks/bench_sandbox.py
    python benchmarks/bench_sandbox.py --rounds 1 --n 10 --skip-humaneval
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import types

from shapedce.tasks.sandbox import grade, isolation, run_python

BASELINE = "e96096e"
"""The last commit with the audit-hook sandbox (src/shapedce/tasks/sandbox.py)."""


def load_baseline() -> types.ModuleType:
    source = subprocess.run(
        ["git", "show", f"{BASELINE}:src/shapedce/tasks/sandbox.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType("baseline_sandbox")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, "baseline_sandbox.py", "exec"), module.__dict__)
    return module


def per_sample_ms(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        assert fn(), "a sample that should pass did not"
    return (time.perf_counter() - start) / n * 1000


def humaneval_ms(old: types.ModuleType | None) -> float:
    from shapedce.tasks import get_task

    task = get_task("humaneval")
    prompts = task.prompts("test", 164)
    start = time.perf_counter()
    if old is None:
        graded = task.grade_many([(p.meta["canonical_solution"], p) for p in prompts])
        ok = [g for _, g in graded]
    else:
        programs = []
        for p in prompts:
            prob = task.problem(p)
            body = task.program(p.meta["canonical_solution"], prob)
            programs.append(f"{body}\n\n{prob['test']}\n\ncheck({prob['entry_point']})\n")
        ok = [r.passed for r in old.run_many(programs, old.Limits(wall_s=10.0))]
    assert all(ok), f"{ok.count(False)} canonical solutions failed"
    return (time.perf_counter() - start) / len(prompts) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=20, help="samples per workload and round")
    parser.add_argument("--skip-humaneval", action="store_true")
    args = parser.parse_args()
    old = load_baseline()
    print(f"isolation level: {isolation().level}; earlier sandbox's guards: {old.guards()}")
    calls = [(i, i + 1) for i in range(20)]
    new_code = "def add(a, b):\n    return a + b\n"

    def check(candidate):
        for a, b in calls:
            assert candidate(a, b) == a + b

    old_code = new_code + "".join(f"assert add({a}, {b}) == {a + b}\n" for a, b in calls)
    workloads = {
        "empty": (lambda: run_python("pass").passed, lambda: old.run_python("pass").passed),
        "call (20 calls)": (
            lambda: grade(new_code, "add", check).passed,
            lambda: old.run_python(old_code).passed,
        ),
    }
    times: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in workloads}
    if not args.skip_humaneval:
        times["humaneval (164, parallel)"] = ([], [])
    for _ in range(args.rounds):
        for name, (new, earlier) in workloads.items():
            times[name][0].append(per_sample_ms(new, args.n))
            times[name][1].append(per_sample_ms(earlier, args.n))
        if not args.skip_humaneval:
            times["humaneval (164, parallel)"][0].append(humaneval_ms(None))
            times["humaneval (164, parallel)"][1].append(humaneval_ms(old))
    print("\n| workload | new ms/sample | earlier ms/sample | new / earlier |\n|---|---|---|---|")
    for name, (new, earlier) in times.items():
        a, b = statistics.median(new), statistics.median(earlier)
        print(f"| {name} | {a:.1f} | {b:.1f} | {a / b:.2f} |")


if __name__ == "__main__":
    main()
