"""Small statistics for the report: means with 95% t-intervals over seeds, and directional verdicts.

    from shapedce.report.stats import mean_ci, compare
    mean_ci([0.51, 0.55, 0.49])                  # (0.5167, half-width of the 95% t-interval)
    compare("precision < ce", a=[0.54], b=[0.56], expect=-1, tolerance=0.01).verdict

A claim "a > b" (expect=+1) or "a < b" (expect=-1) is judged on the paired differences d = a - b
(seed i of a against seed i of b):
  >= 2 seeds  95% t-interval of mean(d): held if it excludes 0 on the claimed side, did not hold
              if it excludes 0 on the other side, else inconclusive.
  1 seed      with `prompt_se` (the standard error of d over the evaluation's prompts, paired):
              the same rule with the interval d +- 1.96 se; this only covers evaluation noise.
              Without it: held / did not hold only when |d| exceeds `tolerance`, else inconclusive.
A claim "a is not above b" (`compare_not_above`) did not hold when a > b on that rule, held when
mean(d) <= 0, and is inconclusive when a is above b but not beyond the noise.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from ..errors import UserError

HELD, NOT_HELD, INCONCLUSIVE, NOT_RUN = "held", "did not hold", "inconclusive at this scale", "not run"

T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042]
"""Two-sided 95% Student t quantiles for 1..30 degrees of freedom (beyond: 1.96)."""


def t975(df: int) -> float:
    return T975[df - 1] if 1 <= df <= len(T975) else 1.96


def mean_ci(values: list[float]) -> tuple[float, float | None]:
    """(mean, half-width of the 95% t-interval), half-width None for fewer than 2 values."""
    if not values:
        raise UserError("mean_ci needs at least one value")
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    return mean, t975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def paired_se(a: list[float], b: list[float]) -> float:
    """Standard error of mean(a_i - b_i) over paired items (e.g. the same prompts in two runs)."""
    if len(a) != len(b) or len(a) < 2:
        raise UserError(f"paired_se needs two equal-length lists of >= 2 items; got {len(a)} and {len(b)}")
    return statistics.stdev(x - y for x, y in zip(a, b)) / math.sqrt(len(a))


@dataclass
class Comparison:
    claim: str
    a: list[float]
    b: list[float]
    diff: float
    interval: tuple[float, float] | None
    basis: str
    verdict: str

    def evidence(self, fmt: str = "{:.3f}") -> str:
        if not self.a or not self.b:
            return self.basis
        f = fmt.format
        text = f"{f(statistics.fmean(self.a))} vs {f(statistics.fmean(self.b))} (d = {f(self.diff)}"
        if self.interval is not None:
            text += f", 95% CI [{f(self.interval[0])}, {f(self.interval[1])}]"
        return text + f"; {self.basis})"


def _interval(a: list[float], b: list[float], prompt_se: float | None) -> tuple[float, tuple[float, float] | None, str]:
    n = min(len(a), len(b))
    diffs = [x - y for x, y in zip(a[:n], b[:n])]
    mean, half = mean_ci(diffs)
    if half is not None:
        return mean, (mean - half, mean + half), f"{n} seeds"
    if prompt_se is not None:
        return mean, (mean - 1.96 * prompt_se, mean + 1.96 * prompt_se), "1 seed, interval over prompts"
    return mean, None, "1 seed, no interval"


def compare(claim: str, a: list[float], b: list[float], *, expect: int, tolerance: float,
            prompt_se: float | None = None) -> Comparison:
    """Judge "a > b" (expect=+1) or "a < b" (expect=-1); see the module docstring."""
    if expect not in (1, -1):
        raise UserError(f"expect must be +1 or -1; got {expect!r}")
    if not a or not b:
        return Comparison(claim, a, b, math.nan, None, "missing runs", NOT_RUN)
    d, interval, basis = _interval(a, b, prompt_se)
    if interval is not None:
        lo, hi = sorted(expect * x for x in interval)
        verdict = HELD if lo > 0 else NOT_HELD if hi < 0 else INCONCLUSIVE
    else:
        verdict = HELD if expect * d > tolerance else NOT_HELD if expect * d < -tolerance else INCONCLUSIVE
        basis += f", threshold abs(d) > {tolerance:.3g}"
    return Comparison(claim, a, b, d, interval, basis, verdict)


def compare_not_above(claim: str, a: list[float], b: list[float], *, tolerance: float,
                      prompt_se: float | None = None) -> Comparison:
    """Judge "a is not above b": did not hold if a > b beyond the noise, held if mean(a - b) <= 0."""
    c = compare(claim, a, b, expect=1, tolerance=tolerance, prompt_se=prompt_se)
    if c.verdict == NOT_RUN:
        return c
    c.verdict = NOT_HELD if c.verdict == HELD else HELD if c.diff <= 0 else INCONCLUSIVE
    return c


def combine(verdicts: list[str]) -> str:
    """All sub-claims held -> held; any did not hold -> did not hold; any not run -> not run; else inconclusive."""
    if not verdicts or NOT_RUN in verdicts:
        return NOT_RUN
    if NOT_HELD in verdicts:
        return NOT_HELD
    return HELD if all(v == HELD for v in verdicts) else INCONCLUSIVE
