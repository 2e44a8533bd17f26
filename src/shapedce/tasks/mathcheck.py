"""math-verify with a hard time bound in any thread or process: `verify_math(gold, answer)`.

    from shapedce.tasks.mathcheck import verify_math
    verify_math("1/2", "0.5")                     # True; 5 s at most (BOUND_S), from any thread
    python -m pytest tests/test_tasks_math.py -q  # CPU, ~20 s (one adversarial call waits out the bound)

math-verify bounds its own work with signal.alarm, which Python allows only in the main thread:
called from a thread (TRL reward workers, our HumanEval pool) `\\boxed{9^{9^{9^{9}}}}` ran forever,
and in the main thread each such answer cost its 5 s timeout. Here every call is bounded twice:
  1. `refuse(answer)`, microseconds: an answer longer than MAX_CHARS, or holding an exponent tower
     (a "^" whose exponent holds another "^", or "a^b^c"), an exponent of 4 or more digits, or a
     factorial of a number >= 1000, is
     wrong without being parsed (no reference answer of a task of ours has one).
  2. The verify itself runs in one long-lived worker process (`python -m shapedce.tasks.mathcheck
     --serve`, math-verify imported once, its own signal timeouts live in the worker's main
     thread, INNER_S each for parse and verify); the caller waits at most BOUND_S for the verdict,
     then kills the worker (a fresh one starts on the next call) and scores the answer 0.
Calls from several threads share the worker one at a time (a lock), each bounded by BOUND_S of its
own work; waiting for the lock is not part of the bound.
"""

from __future__ import annotations

import json
import re
import select
import subprocess
import sys
import threading

from ..errors import check_installed

MAX_CHARS = 300
"""Longest answer sent to math-verify."""
BOUND_S = 5.0
"""Hard wall-clock bound of one verification, whatever the thread."""
INNER_S = 2
"""math-verify's own parsing / verification timeouts inside the worker (seconds)."""
TOWER = re.compile(r"\^\s*\{[^{}]*\^|\^\s*\(?[\w.]+\)?\s*\^|\^\s*\{?\s*[-+]?\d{4,}|\d{4,}\s*!")


def refuse(answer: str) -> bool:
    """True when `answer` is too long or builds a huge number (exponent tower, large factorial)."""
    return len(answer) > MAX_CHARS or bool(TOWER.search(answer))


class _Worker:
    """The verifier process and the lock that serialises its use."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.fresh = False

    def _start(self) -> subprocess.Popen:
        if self.proc is None or self.proc.poll() is not None:
            check_installed("math_verify", "eval")
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "shapedce.tasks.mathcheck", "--serve"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                bufsize=1,
            )
            self.fresh = True
        return self.proc

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def ask(self, gold: str, answer: str, bound: float) -> bool:
        with self.lock:
            proc = self._start()
            try:
                proc.stdin.write(json.dumps([gold, answer]) + "\n")
                proc.stdin.flush()
            except OSError:
                self.kill()
                return False
            # the first call also waits for the worker to import math-verify (about 1 s)
            ready, _, _ = select.select([proc.stdout], [], [], bound + (2.0 if self.fresh else 0.0))
            self.fresh = False
            line = proc.stdout.readline() if ready else ""
            if not line:
                self.kill()
                return False
            return line.strip() == "1"


_WORKER = _Worker()


def verify_math(gold: str, answer: str | None, *, bound: float = BOUND_S) -> bool:
    """math-verify's verdict that `answer` (LaTeX, no $) equals `gold`, in at most `bound` seconds
    (plus about 2 s on the call that starts the worker); refused or timed-out answers are False."""
    if answer is None or not answer.strip() or refuse(answer):
        return False
    return _WORKER.ask(gold, answer, bound)


def _check(gold: str, answer: str) -> bool:
    from math_verify import parse, verify

    g = parse(f"${gold}$", parsing_timeout=INNER_S)
    p = parse(f"$\\boxed{{{answer}}}$", parsing_timeout=INNER_S)
    return bool(g and p and verify(g, p, timeout_seconds=INNER_S))


def _serve() -> None:
    import math_verify  # noqa: F401 - imported before the first request

    for line in sys.stdin:
        try:
            ok = _check(*json.loads(line))
        except Exception:  # noqa: BLE001 - any failure to verify is a wrong answer
            ok = False
        sys.stdout.write("1\n" if ok else "0\n")
        sys.stdout.flush()


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        _serve()
    else:
        print(verify_math("1/2", "0.5"), verify_math("3", "9^{9^{9^{9}}}"))
