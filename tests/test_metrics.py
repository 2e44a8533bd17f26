"""shapedce.eval.metrics: pass@k against brute force, avg@m, cons@m tie-breaking, summarize, bad input.

python -m pytest tests/test_metrics.py -q        # CPU, < 1 s
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest

from shapedce.eval import avg_at_k, cons_at_k, majority_answer, pass_at_k, pass_at_k_curve, summarize


def one_line(excinfo: pytest.ExceptionInfo, *needles: str) -> None:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_pass_at_k_matches_enumeration_of_all_k_subsets():
    for n in range(1, 9):
        for c in range(n + 1):
            correct = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(range(n), k))
                brute = sum(any(correct[i] for i in s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12), (n, c, k)
                if n - c < k:
                    assert pass_at_k(n, c, k) == 1.0


def test_pass_at_k_large_n_is_stable():
    for n, c, k in [(128, 1, 64), (1000, 3, 1), (100_000, 10, 64), (100_000, 0, 64), (5000, 4990, 5)]:
        exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
        got = pass_at_k(n, c, k)
        assert 0.0 <= got <= 1.0 and math.isfinite(got)
        assert got == pytest.approx(float(exact), rel=1e-9, abs=1e-12), (n, c, k)
    assert pass_at_k(16, 3, 1) == pytest.approx(3 / 16)


@pytest.mark.parametrize(
    "n, c, k, field",
    [
        (0, 0, 1, "n"),
        (4, -1, 1, "c"),
        (4, 5, 1, "c"),
        (4, 2, 0, "k"),
        (4, 2, 5, "k"),
        (4.0, 2, 1, "n"),
        (True, 0, 1, "n"),
        (4, 2, 1.5, "k"),
    ],
)
def test_pass_at_k_bad_input(n, c, k, field):
    with pytest.raises(ValueError) as excinfo:
        pass_at_k(n, c, k)
    one_line(excinfo, f"{field} must be")


def test_curve_keys_and_shape():
    assert list(pass_at_k_curve(1, 0)) == [1]
    assert list(pass_at_k_curve(8, 3)) == [1, 2, 4, 8]
    assert list(pass_at_k_curve(12, 3)) == [1, 2, 4, 8, 12]
    assert list(pass_at_k_curve(128, 3)) == [1, 2, 4, 8, 16, 32, 64, 128]
    curve = pass_at_k_curve(100, 7)
    values = list(curve.values())
    assert values == sorted(values) and curve[1] == pytest.approx(0.07) and curve[100] == 1.0
    assert set(pass_at_k_curve(10, 0).values()) == {0.0}
    assert set(pass_at_k_curve(10, 10).values()) == {1.0}
    with pytest.raises(ValueError) as excinfo:
        pass_at_k_curve(0, 0)
    one_line(excinfo, "n must be")


def test_avg_at_k():
    assert avg_at_k([1, 0, 1, 1]) == 0.75
    assert avg_at_k([True, False]) == 0.5
    assert avg_at_k([0.5]) == 0.5
    with pytest.raises(ValueError) as excinfo:
        avg_at_k([])
    one_line(excinfo, "rewards")


def test_cons_ties_go_to_the_first_seen_answer():
    answers = ["5", "7", "7", "5"]
    assert majority_answer(answers) == "5"
    assert cons_at_k(answers, [True, False, False, True])
    assert not cons_at_k(answers, [False, True, True, False])
    assert majority_answer(["7", "5", "5", "7"]) == "7"
    assert cons_at_k(["3", "4", "4"], [True, False, False]) is False  # the majority beats the first seen
    assert cons_at_k(["3", "4", "4"], [False, True, True]) is True


def test_cons_none_answers_do_not_vote():
    assert majority_answer([None, None, None, "4"]) == "4"
    assert cons_at_k([None, None, None, "4"], [False, False, False, True])
    assert not cons_at_k([None, None, "3"], [False, False, False])
    assert majority_answer([None, None]) is None
    assert cons_at_k([None, None], [False, False]) is False


def test_cons_normalize_and_mixed_correctness():
    norm = lambda s: s.replace(",", "").strip()  # noqa: E731
    answers = ["1,000", " 1000", "999"]
    assert majority_answer(answers, norm) == "1000"
    assert cons_at_k(answers, [True, True, False], normalize=norm)
    # a majority answer counts only if every sample giving it was verified correct
    assert not cons_at_k(["8", "8", "1"], [True, False, False])


def test_cons_bad_input():
    with pytest.raises(ValueError) as excinfo:
        cons_at_k(["1", "2"], [True])
    one_line(excinfo, "answers and is_correct", "2 and 1")
    with pytest.raises(ValueError) as excinfo:
        cons_at_k([], [])
    one_line(excinfo, "non-empty")


def test_summarize():
    groups = [
        [("7", True), ("8", False), ("7", True), (None, False)],  # c=2, cons right
        [("3", False), ("3", False), ("4", True), ("4", True)],  # c=2, tie: "3" first -> cons wrong
        [(None, False)] * 4,  # c=0
    ]
    out = summarize(groups)
    assert out["prompts"] == 3 and out["samples"] == 4
    assert set(out) == {"prompts", "samples", "avg_at_m", "cons_at_m", "pass_at_k"}
    assert set(out["pass_at_k"]) == {"1", "2", "4"}
    assert out["avg_at_m"] == pytest.approx(4 / 12)
    assert out["cons_at_m"] == pytest.approx(1 / 3)
    assert out["pass_at_k"]["1"] == pytest.approx(out["avg_at_m"])
    assert out["pass_at_k"]["2"] == pytest.approx((2 * pass_at_k(4, 2, 2)) / 3)
    assert out["pass_at_k"]["4"] == pytest.approx(2 / 3)
    assert summarize([[("1", True)] * 3])["pass_at_k"]["3"] == 1.0
    assert list(summarize(groups, ks=[3])["pass_at_k"]) == ["3"]


def test_summarize_bad_input():
    with pytest.raises(ValueError) as excinfo:
        summarize([])
    one_line(excinfo, "groups")
    with pytest.raises(ValueError) as excinfo:
        summarize([[("1", True)], [("1", True), ("2", False)]])
    one_line(excinfo, "same number", "[1, 2]")
    with pytest.raises(ValueError) as excinfo:
        summarize([[]])
    one_line(excinfo, "m >= 1")
