"""Arithmetic problems with worked step-by-step solutions, and the held-out partition for RL / eval.

    from shapedce.data.problems import generate_problem, heldout_problems, is_heldout, extract_answer
    problems = heldout_problems("add", n=200, seed=0)      # never in any built-in corpus
    problems[0].query                                      # "Problem: What is ...?\nSolution:\n"

Families: add, sub, mul (by one digit), chain (sums of 2-5 terms), linear (a*x + b = c), compare,
and small (three one-digit numbers added or subtracted left to right, every step >= 0: a fixed-length
prompt, so a ~1M-parameter model can read it; the RL family of the default grid).
Every solution ends "The answer is N."; `extract_answer` reads it back. The held-out partition is
a content hash of the normalised prompt (`is_heldout`: 20 % of the problem space): corpora skip
held-out problems, RL and evaluation draw only from `heldout_problems`.

Print a few (CPU, instant): python -m shapedce.data.problems
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UserError, check_int

PLACES = ("Ones", "Tens", "Hundreds", "Thousands", "Ten-thousands")
PROBLEM_FAMILIES = ("add", "sub", "mul", "chain", "linear", "compare")
"""The six families of the `arith` task; the built-in corpora draw from them the problems that
`shapedce.data.corpus.SMALL_SHARE` leaves."""
ALL_FAMILIES = (*PROBLEM_FAMILIES, "small")
"""Every family: the v2 corpora add `small` (`shapedce.data.corpus.SMALL_SHARE`)."""
ANSWER_RE = re.compile(r"The answer is (-?\d+)\.")
HELDOUT_PERCENT = 20
"""Share of the problem space (by content hash) reserved for RL and evaluation."""


@dataclass(frozen=True, slots=True)
class Problem:
    """An arithmetic problem with its answer and a step-by-step solution ending "The answer is N."."""

    family: str
    prompt: str
    answer: str
    solution: str

    @property
    def query(self) -> str:
        """The text a model continues to solve the problem step by step."""
        return f"Problem: {self.prompt}\nSolution:\n"

    def doc(self, worked: bool) -> str:
        """The corpus document: the query and the worked solution, or just the final answer line."""
        return (
            self.query + self.solution if worked else f"Problem: {self.prompt}\nThe answer is {self.answer}."
        )


def extract_answer(text: str) -> str | None:
    """The N of the first "The answer is N." in `text`, or None."""
    match = ANSWER_RE.search(text)
    return match.group(1) if match else None


def _num(rng: random.Random, lo_digits: int, hi_digits: int) -> int:
    d = rng.randint(lo_digits, hi_digits)
    return rng.randint(10 ** (d - 1) if d > 1 else 0, 10**d - 1)


def _digits(n: int, width: int = 0) -> list[int]:
    """Digits of n, ones first, zero-padded to `width`."""
    return [int(c) for c in reversed(str(n).zfill(width))]


def _with_carries(columns: list[tuple[str, int]]) -> list[str]:
    """One line per column, ones first: "Place: expr [+ carry] = s. Write d[, carry c]."."""
    lines, carry = [], 0
    for i, (expr, value) in enumerate(columns):
        s, expr = value + carry, expr + (f" + {carry}" if carry else "")
        carry = s // 10
        lines.append(f"{PLACES[i]}: {expr} = {s}. Write {s % 10}" + (f", carry {carry}." if carry else "."))
    return lines + ([f"Write the last carry {carry}."] if carry else [])


def _add(rng: random.Random) -> tuple[str, int, list[str]]:
    a, b = _num(rng, 1, 3), _num(rng, 1, 3)
    width = len(str(max(a, b)))
    columns = [(f"{x} + {y}", x + y) for x, y in zip(_digits(a, width), _digits(b, width))]
    lines = ["Add the digits from right to left.", *_with_carries(columns), f"So {a} + {b} = {a + b}."]
    return f"What is {a} + {b}?", a + b, lines


def _mul(rng: random.Random) -> tuple[str, int, list[str]]:
    a, m = _num(rng, 2, 3), rng.randint(2, 9)
    columns = [(f"{x} * {m}", x * m) for x in _digits(a)]
    lines = [
        f"Multiply each digit by {m} from right to left.",
        *_with_carries(columns),
        f"So {a} * {m} = {a * m}.",
    ]
    return f"What is {a} * {m}?", a * m, lines


def _sub(rng: random.Random) -> tuple[str, int, list[str]]:
    a = _num(rng, 2, 3)
    b = rng.randint(0, a)
    lines, borrow = ["Subtract the digits from right to left."], 0
    for i, (x, y) in enumerate(zip(_digits(a), _digits(b, len(str(a))))):
        expr, d = (f" - 1 - {y}" if borrow else f" - {y}"), x - y - borrow
        lines.append(
            f"{PLACES[i]}: {x}{expr} is below zero, so borrow: {x + 10}{expr} = {d + 10}. Write {d + 10}, "
            "borrow 1."
            if d < 0
            else f"{PLACES[i]}: {x}{expr} = {d}. Write {d}."
        )
        borrow = int(d < 0)
    lines.append(f"So {a} - {b} = {a - b}.")
    return f"What is {a} - {b}?", a - b, lines


def _chain(rng: random.Random) -> tuple[str, int, list[str]]:
    terms = [_num(rng, 1, 2) for _ in range(rng.randint(2, 5))]
    lines, total = ["Add the numbers from left to right."], terms[0]
    for t in terms[1:]:
        lines.append(f"{total} + {t} = {total + t}.")
        total += t
    return f"What is {' + '.join(map(str, terms))}?", total, lines


def _linear(rng: random.Random) -> tuple[str, int, list[str]]:
    a, x, b = rng.randint(2, 9), rng.randint(0, 20), rng.randint(1, 40)
    ax = a * x
    if ax >= b and rng.random() < 0.5:
        c, sign, undo = ax - b, "-", f"Add {b} to both sides: {a} * x = {ax - b} + {b} = {ax}."
    else:
        c, sign, undo = ax + b, "+", f"Subtract {b} from both sides: {a} * x = {ax + b} - {b} = {ax}."
    lines = [
        undo,
        f"Divide both sides by {a}: x = {ax} / {a} = {x}.",
        f"Check: {a} * {x} {sign} {b} = {ax} {sign} {b} = {c}.",
    ]
    return f"Solve for x: {a} * x {sign} {b} = {c}.", x, lines


def _compare(rng: random.Random) -> tuple[str, int, list[str]]:
    a, b = _num(rng, 1, 4), -1
    if a >= 10 and rng.random() < 0.5:  # same length, one digit changed: the interesting case
        sa, i = str(a), rng.randrange(len(str(a)))
        b = int(
            sa[:i] + rng.choice([c for c in "0123456789" if c != sa[i] and (i or c != "0")]) + sa[i + 1 :]
        )
    while b in (-1, a):
        b = _num(rng, 1, 4)
    sa, sb = str(a), str(b)
    count = lambda s: f"{len(s)} digit" + "s" * (len(s) > 1)  # noqa: E731
    if len(sa) != len(sb):
        lines = [f"{a} has {count(sa)} and {b} has {count(sb)}.", "The number with more digits is larger."]
    else:
        lines = [f"Both numbers have {count(sa)}. Compare from the left."]
        for i, (x, y) in enumerate(zip(sa, sb)):
            same = x == y
            lines.append(
                f"{PLACES[len(sa) - 1 - i]}: "
                + (f"{x} and {y} are equal." if same else f"{max(x, y)} is larger than {min(x, y)}.")
            )
            if not same:
                break
    lines.append(f"So {max(a, b)} is larger than {min(a, b)}.")
    return f"Which number is larger, {a} or {b}?", max(a, b), lines


def _apply(x: int, op: str, y: int) -> int:
    return x + y if op == "+" else x - y


def _small(rng: random.Random) -> tuple[str, int, list[str]]:
    while True:  # rejection keeps every partial result >= 0 (about 2/3 of draws pass)
        (a, b, c), ops = (rng.randint(0, 9) for _ in range(3)), rng.choices("+-", k=2)
        s = _apply(a, ops[0], b)
        t = _apply(s, ops[1], c)
        if s >= 0 and t >= 0:
            lines = [f"{a} {ops[0]} {b} = {s}.", f"{s} {ops[1]} {c} = {t}."]
            return f"What is {a} {ops[0]} {b} {ops[1]} {c}?", t, lines


def small_prompts() -> list[str]:
    """Every distinct `small` prompt (2,605): the family's whole, finite problem space."""
    out = []
    for a, b, c in itertools.product(range(10), repeat=3):
        for o1, o2 in itertools.product("+-", repeat=2):
            s = _apply(a, o1, b)
            if s >= 0 and _apply(s, o2, c) >= 0:
                out.append(f"What is {a} {o1} {b} {o2} {c}?")
    return out


_WRITERS: dict[str, Callable[[random.Random], tuple[str, int, list[str]]]] = {
    "add": _add,
    "sub": _sub,
    "mul": _mul,
    "chain": _chain,
    "linear": _linear,
    "compare": _compare,
    "small": _small,
}


def _check_family(family: str) -> None:
    if family not in _WRITERS:
        raise UserError(f"unknown problem family {family!r}; choose one of {', '.join(ALL_FAMILIES)}")


def generate_problem(family: str, rng: random.Random) -> Problem:
    """One random problem of `family` (held out or not) with its worked solution."""
    _check_family(family)
    prompt, answer, lines = _WRITERS[family](rng)
    return Problem(family, prompt, str(answer), "\n".join([*lines, f"The answer is {answer}."]))


def problem_key(prompt: str) -> str:
    """Normalised prompt text (lower case, no whitespace): the content the held-out hash uses."""
    return re.sub(r"\s+", "", prompt).lower()


def is_heldout(prompt: str) -> bool:
    """True for the HELDOUT_PERCENT % of prompts reserved for RL/evaluation (sha256 of the key)."""
    digest = hashlib.sha256(problem_key(prompt).encode("utf-8")).hexdigest()
    return int(digest[:8], 16) % 100 < HELDOUT_PERCENT


def heldout_problems(family: str, n: int, seed: int = 0) -> list[Problem]:
    """`n` distinct held-out problems of `family`, deterministic by seed; no corpus contains them."""
    _check_family(family)
    check_int("n", n, 0)
    rng, seen, out, tries = random.Random(f"heldout:{family}:{seed}"), set(), [], 1000 + 200 * n
    while len(out) < n and (tries := tries - 1) >= 0:
        problem = generate_problem(family, rng)
        key = problem_key(problem.prompt)
        if key not in seen and is_heldout(problem.prompt):
            seen.add(key)
            out.append(problem)
    if len(out) < n:
        raise UserError(
            f"n={n} is more held-out {family!r} problems than its problem space offers ({len(out)} found)"
        )
    return out


if __name__ == "__main__":
    for family in ALL_FAMILIES:
        problem = heldout_problems(family, 1)[0]
        print(problem.query + problem.solution, end="\n\n")
