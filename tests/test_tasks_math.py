"""mathcheck.verify_math: math-verify bounded in time from threads and the main thread (issue 13.5).

python -m pytest tests/test_tasks_math.py -q     # CPU, ~20 s (a few answers wait out math-verify's 2 s)
"""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("math_verify")

from shapedce.tasks import (
    get_task,  # noqa: E402
    mathcheck,  # noqa: E402
)
from shapedce.tasks.mathcheck import BOUND_S, refuse, verify_math  # noqa: E402

ADVERSARIAL = [
    "9^{9^{9^{9}}}",
    "9^9^9^9",
    "10^{10^{10}}",
    "(9^9)^(9^9)^9",
    "9^{999999999}",
    "123456!",
    "1" * 400,
    "\\binom{10^{9}}{5 \\cdot 10^{8}}",
    "(10^9)!",
]


def timed(fn, *args):
    start = time.monotonic()
    out = fn(*args)
    return out, time.monotonic() - start


def test_right_and_wrong_answers():
    assert verify_math("1/2", "0.5") and verify_math("\\frac{3}{4}", "0.75") and verify_math("42", "42")
    assert not verify_math("42", "43") and not verify_math("42", None) and not verify_math("42", "  ")


def test_precheck_refuses_towers_and_long_answers_at_once():
    for answer in ADVERSARIAL[:7]:
        assert refuse(answer), answer
        assert timed(verify_math, "3", answer)[1] < 0.01
    for answer in ("2^{10}", "x^2 + 1", "\\frac{1}{2}", "10^{9}", "3!"):
        assert not refuse(answer), answer


@pytest.mark.parametrize("where", ["main", "thread"])
def test_adversarial_answers_are_bounded(where):
    verify_math("1", "1")  # the worker is up: its start-up is not part of the bound
    results = []

    def run():
        for answer in ADVERSARIAL:
            results.append((answer, *timed(verify_math, "3", answer)))

    if where == "main":
        run()
    else:
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(timeout=len(ADVERSARIAL) * (BOUND_S + 1))
        assert not thread.is_alive(), "a verify call from a thread did not return"
    assert [r[1] for r in results] == [False] * len(ADVERSARIAL)
    assert max(r[2] for r in results) <= BOUND_S + 1, results


def test_the_hard_bound_kills_a_slow_worker_and_a_fresh_one_serves_next():
    worker = mathcheck._Worker()  # its own worker: a thread left over from another test cannot interfere
    try:
        assert worker.ask("1", "1", BOUND_S)
        proc = worker.proc
        assert not worker.ask("1/2", "0.5", 1e-6)  # no verdict within the bound: scored 0
        assert proc.poll() is not None  # that worker is gone
        assert worker.ask("1/2", "0.5", BOUND_S)  # the next call starts a fresh one
    finally:
        worker.kill()


def test_math_boxed_reward_from_a_thread():
    task = get_task("math-boxed")
    p = task.prompts("test", 1)[0]
    out = []
    thread = threading.Thread(
        target=lambda: out.extend(
            [task.reward(f"\\boxed{{{p.answer}}}", p), task.reward("\\boxed{9^{9^{9^{9}}}}", p)]
        )
    )
    thread.start()
    thread.join(timeout=2 * BOUND_S + 5)
    assert out == [1.0, 0.0]
