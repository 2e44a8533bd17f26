"""Alpha spending for interim looks: Lan-DeMets spending functions, the group-sequential boundaries of
a one-sided test at the seed counts a plan names, and their per-look nominal levels for a paired t-test.

    from shapedce.report.spending import spent, boundaries, nominal_levels, crossing_probability
    spent("obrien-fleming", 0.5, 0.025)                # alpha spent by half the planned seeds
    boundaries((10, 20), 0.025, "obrien-fleming")       # z boundaries, one per look (2.96, 1.97)
    nominal_levels((10, 20), 0.025, "obrien-fleming")   # one-sided p-value thresholds per look
    crossing_probability([2.797, 1.977], [0.5, 1.0])    # 0.025: O'Brien-Fleming's classic 2 looks

The model (Jennison & Turnbull, "Group Sequential Methods", ch. 7): with n_k seeds at look k of K,
information t_k = n_k / n_K, and Z_k = S(t_k) / sqrt(t_k) for a Brownian motion S, so Z_j and Z_k
correlate as sqrt(t_j / t_k). A plan spends alpha(t) by time t; the boundary b_k is set so that the
chance under the null of first crossing at look k is alpha(t_k) - alpha(t_{k-1}). The chance is
computed by recursive numerical integration of the density of S(t_k) on the region not yet crossed
(a trapezoid grid, GRID points per look), the boundary by bisection. Spending functions (one-sided
level alpha, both equal alpha at t = 1):
  obrien-fleming  alpha(t) = 2 - 2 Phi(z_{1 - alpha/2} / sqrt(t))   (Lan & DeMets 1983)
  pocock          alpha(t) = alpha log(1 + (e - 1) t)               (Lan & DeMets 1983)
A paired t-test at look k rejects when its one-sided p-value is below 1 - Phi(b_k): the boundary's
nominal level, with n_k - 1 degrees of freedom (the "significance level" approach of Jennison &
Turnbull, section 3.8). benchmarks/verdict_error_rates.py simulates the error of the result.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ..errors import UserError
from .tdist import norm_cdf

SPENDING = ("obrien-fleming", "pocock")
GRID = 1601
"""Grid points per look of the numerical integration (boundaries to about 1e-4 in z)."""
NO_BOUNDARY = 40.0
"""A look that spends nothing has a boundary no statistic reaches."""


def norm_ppf(q: float) -> float:
    """The q-quantile of the standard normal (bisection on its CDF)."""
    if not 0.0 < q < 1.0:
        raise UserError(f"a quantile needs 0 < q < 1; got {q!r}")
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if float(norm_cdf(mid)) < q else (lo, mid)
        if hi - lo < 1e-13:
            break
    return (lo + hi) / 2


def spent(kind: str, t: float, alpha: float) -> float:
    """Alpha spent by information time t in [0, 1] under spending function `kind` (see the module)."""
    if kind not in SPENDING:
        raise UserError(f"spending must be one of {', '.join(SPENDING)}; got {kind!r}")
    if not 0.0 < alpha < 0.5:
        raise UserError(f"alpha must be in (0, 0.5); got {alpha!r}")
    if t <= 0:
        return 0.0
    t = min(t, 1.0)
    if kind == "pocock":
        return alpha * math.log(1 + (math.e - 1) * t)
    return float(2 - 2 * norm_cdf(norm_ppf(1 - alpha / 2) / math.sqrt(t)))


def _phi(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


class _Crossing:
    """The density of S(t_k) on the paths that have not crossed looks 1..k, look by look."""

    def __init__(self) -> None:
        self.t = 0.0
        self.s: np.ndarray | None = None  # grid of S(t_k) values below the boundary
        self.w: np.ndarray | None = None  # density times trapezoid weight at those values

    def exit(self, b: float, t: float) -> float:
        """Chance of crossing z-boundary b at time t, having crossed none before."""
        if self.s is None or self.w is None:
            return float(1 - norm_cdf(b))
        return float(self.w @ (1 - norm_cdf((b * math.sqrt(t) - self.s) / math.sqrt(t - self.t))))

    def advance(self, b: float, t: float) -> None:
        """Move to look time t, dropping the paths at or above z-boundary b."""
        top = min(b, NO_BOUNDARY) * math.sqrt(t)
        s = np.linspace(-10 * math.sqrt(t), top, GRID)
        if self.s is None or self.w is None:
            dens = _phi(s / math.sqrt(t)) / math.sqrt(t)
        else:
            sd = math.sqrt(t - self.t)
            dens = _phi((s[:, None] - self.s[None, :]) / sd) @ self.w / sd
        step = np.full(GRID, s[1] - s[0])
        step[[0, -1]] /= 2
        self.s, self.w, self.t = s, dens * step, t


def _fractions(looks: tuple[int, ...]) -> list[float]:
    if not looks or any(b <= a for a, b in zip(looks, looks[1:])) or looks[0] < 2:
        raise UserError(f"looks must be increasing seed counts >= 2; got {list(looks)}")
    return [n / looks[-1] for n in looks]


def crossing_probability(bounds: list[float], fractions: list[float]) -> float:
    """Chance under the null that Z crosses z-boundary bounds[k] at some look k (information times
    `fractions`, increasing, the last 1)."""
    state, total = _Crossing(), 0.0
    for b, t in zip(bounds, fractions):
        total += state.exit(b, t)
        state.advance(b, t)
    return total


@lru_cache(maxsize=1024)
def boundaries(looks: tuple[int, ...], alpha: float, kind: str) -> tuple[float, ...]:
    """One-sided z boundaries at the planned seed counts `looks` (increasing; the last is the planned
    total) that spend `alpha` by spending function `kind`."""
    fractions = _fractions(tuple(looks))
    state, out, before = _Crossing(), [], 0.0
    for t in fractions:
        target = spent(kind, t, alpha) - before
        if target <= 1e-15:
            b = NO_BOUNDARY
        else:
            lo, hi = -10.0, NO_BOUNDARY
            for _ in range(100):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if state.exit(mid, t) > target else (lo, mid)
                if hi - lo < 1e-9:
                    break
            b = (lo + hi) / 2
        before += state.exit(b, t)
        state.advance(b, t)
        out.append(b)
    return tuple(out)


def nominal_levels(looks: tuple[int, ...], alpha: float, kind: str) -> tuple[float, ...]:
    """Per look, the one-sided p-value a paired t-test must fall below: 1 - Phi(boundary)."""
    if len(looks) == 1:
        _fractions(tuple(looks))
        return (alpha,)
    return tuple(float(1 - norm_cdf(b)) for b in boundaries(tuple(looks), alpha, kind))
