"""Student t and chi-square distributions, t-test power, minimum detectable effects and seeds needed
(a number, and a range over the SD's confidence interval), in plain numpy.

    from shapedce.report.tdist import t_cdf, t_ppf, mde_direction, seeds_direction, seeds_range
    t_ppf(0.975, 2)                                   # 4.3027 (two-sided 95% quantile, 2 degrees of freedom)
    mde_direction(sd=0.1, n=3, alpha=0.05)            # true paired difference detected with 80% power
    seeds_direction(effect=0.05, sd=0.1, alpha=0.05)  # seeds whose test detects 0.05 with 80% power
    seeds_range(effect=0.05, sd=0.1, n=3, alpha=0.05) # the same at both ends of the SD's 95% interval

The t CDF is exact for integer degrees of freedom (the finite trigonometric series of Abramowitz &
Stegun 26.7.3-4), the quantile is a bisection on it. Power integrates over the sample standard
deviation: with U = s / sigma = sqrt(V / df), V chi-square with df degrees of freedom, and
lam = delta sqrt(n) / sigma the standardised true difference,
  two-sided test at level alpha    P = E_U[Phi(lam - c U) + Phi(-lam - c U)], c = t_ppf(1 - alpha/2)
  TOST inside (-m, m), level alpha P = E_U[max(0, Phi(M - c U - lam) - Phi(-M + c U - lam))],
                                   M = m sqrt(n) / sigma, c = t_ppf(1 - alpha)
  one-sided against a bound m      P = E_U[Phi(|lam| - M - c U)]
E_U is a weighted sum over a fine grid of U (density proportional to u^(df-1) exp(-df u^2 / 2)).
The chi-square CDF is the regularized incomplete gamma function (series below a + 1, continued
fraction above); the SD's interval from n values is sd sqrt((n - 1) / chi2 quantile).
No scipy: it is not a dependency of shapedce.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ..errors import UserError

POWER = 0.8
MAX_SEEDS = 10_000
"""seeds_* return None when even this many seeds would not reach 80% power."""

_erfc = np.frompyfunc(math.erfc, 1, 1)


def norm_cdf(x) -> np.ndarray:
    """Standard normal CDF, elementwise."""
    return np.asarray(_erfc(-np.asarray(x, dtype=float) / math.sqrt(2.0))).astype(float) / 2.0


def _check_df(df: int) -> None:
    if not isinstance(df, (int, np.integer)) or isinstance(df, bool) or df < 1:
        raise UserError(f"degrees of freedom must be an integer >= 1; got {df!r}")


def t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with integer df >= 1 (exact series)."""
    _check_df(df)
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    theta = math.atan(abs(t) / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    # odd df: A = 2/pi (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...)), (df - 1) / 2 terms
    # even df: A = sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...), df / 2 terms
    odd = df % 2
    total, term = 0.0, 1.0
    for j in range((df - 1) // 2 if odd else df // 2):
        if j:
            term *= (2 * j / (2 * j + 1) if odd else (2 * j - 1) / (2 * j)) * c2
            if term < 1e-17 * total:
                break
        total += term
    a = 2 / math.pi * (theta + s * math.cos(theta) * total) if odd else s * total
    a = min(max(a, 0.0), 1.0)
    return 0.5 + a / 2 if t >= 0 else 0.5 - a / 2


def t_sf(t: float, df: int) -> float:
    """P(T > t)."""
    return t_cdf(-t, df)


@lru_cache(maxsize=4096)
def t_ppf(q: float, df: int) -> float:
    """The q-quantile of Student's t with integer df >= 1 (bisection on the exact CDF)."""
    _check_df(df)
    if not 0.0 < q < 1.0:
        raise UserError(f"a quantile needs 0 < q < 1; got {q!r}")
    if q < 0.5:
        return -t_ppf(1.0 - q, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        lo, hi = hi, hi * 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2


def t975(df: int) -> float:
    """Two-sided 95% quantile of Student's t (exact, any integer df >= 1)."""
    return t_ppf(0.975, df)


@lru_cache(maxsize=256)
def _u_grid(df: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights (summing to 1) for E[g(U)], U = sqrt(chi2_df / df)."""
    spread = 12.0 / math.sqrt(2.0 * df)
    u = np.linspace(max(0.0, 1.0 - spread), 1.0 + spread, 1201)
    logw = (df - 1) * np.log(np.maximum(u, 1e-300)) - df * u * u / 2
    w = np.exp(logw - logw.max())
    w[[0, -1]] /= 2  # trapezoid
    return u, w / w.sum()


def power_direction(delta: float, sd: float, n: int, alpha: float) -> float:
    """Power of the two-sided paired t-test at level alpha (n pairs) against a true difference delta."""
    if sd <= 0:
        return 1.0 if delta != 0 else alpha
    u, w = _u_grid(n - 1)
    c, lam = t_ppf(1 - alpha / 2, n - 1), abs(delta) * math.sqrt(n) / sd
    return float(w @ (norm_cdf(lam - c * u) + norm_cdf(-lam - c * u)))


def power_parity(
    delta: float, margin: float, sd: float, n: int, alpha: float = 0.05, upper_only: bool = False
) -> float:
    """Power of TOST (90% interval inside (-margin, margin)) at true difference delta; with upper_only
    the non-superiority test (the interval's upper end below margin)."""
    if sd <= 0:
        return 1.0 if (delta < margin if upper_only else abs(delta) < margin) else 0.0
    u, w = _u_grid(n - 1)
    c, lam, big = t_ppf(1 - alpha, n - 1), delta * math.sqrt(n) / sd, margin * math.sqrt(n) / sd
    upper = norm_cdf(big - c * u - lam)
    p = upper if upper_only else np.maximum(0.0, upper - norm_cdf(-big + c * u - lam))
    return float(w @ p)


def power_outside(delta: float, margin: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of showing |difference| > margin (90% interval entirely beyond it) at true difference delta."""
    if sd <= 0:
        return 1.0 if abs(delta) > margin else 0.0
    u, w = _u_grid(n - 1)
    c = t_ppf(1 - alpha, n - 1)
    return float(w @ norm_cdf((abs(delta) - margin) * math.sqrt(n) / sd - c * u))


def _solve(fn, lo: float, hi: float) -> float:
    """The x in [lo, hi] where the increasing fn crosses POWER (bisection, hi doubled until it does)."""
    while fn(hi) < POWER:
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fn(mid) < POWER else (lo, mid)
        if hi - lo <= 1e-6 * hi:
            break
    return hi


def mde_direction(sd: float, n: int, alpha: float) -> float:
    """Smallest true paired difference the two-sided t-test at level alpha detects with 80% power."""
    if sd <= 0:
        return 0.0
    return _solve(lambda d: power_direction(d, sd, n, alpha), 0.0, sd)


def mde_parity(sd: float, n: int, upper_only: bool = False, alpha: float = 0.05) -> float:
    """Smallest margin TOST (or non-superiority) establishes with 80% power when the truth is 0."""
    if sd <= 0:
        return 0.0
    return _solve(lambda m: power_parity(0.0, m, sd, n, alpha=alpha, upper_only=upper_only), 0.0, sd)


def _seeds(power_at) -> int | None:
    """Smallest n in [3, MAX_SEEDS] with power_at(n) >= 80% (power rises with n), None if none."""
    if power_at(MAX_SEEDS) < POWER:
        return None
    lo, hi = 2, MAX_SEEDS  # power_at(hi) >= POWER; answer in (lo, hi]
    if power_at(3) >= POWER:
        return 3
    lo = 3
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if power_at(mid) < POWER else (lo, mid)
    return hi


def seeds_direction(effect: float, sd: float, alpha: float) -> int | None:
    """Seeds whose two-sided paired t-test at level alpha detects a true `effect` with 80% power."""
    if effect == 0:
        return None
    return _seeds(lambda n: power_direction(effect, sd, n, alpha))


def seeds_parity(
    effect: float, margin: float, sd: float, upper_only: bool = False, alpha: float = 0.05
) -> int | None:
    """Seeds to reach a parity verdict with 80% power at a true difference `effect`: inside the margin
    (TOST at level alpha) when it lies inside, outside it when it lies beyond; None exactly on the margin."""
    inside = effect < margin if upper_only else abs(effect) < margin
    if inside:
        return _seeds(lambda n: power_parity(effect, margin, sd, n, alpha=alpha, upper_only=upper_only))
    if (effect > margin) if upper_only else abs(effect) > margin:
        return _seeds(lambda n: power_outside(effect, margin, sd, n, alpha=alpha))
    return None


def chi2_cdf(x: float, df: int) -> float:
    """P(X <= x) for a chi-square variable with integer df >= 1: the regularized lower incomplete gamma
    P(df/2, x/2), by its power series below a + 1 and Lentz's continued fraction above."""
    _check_df(df)
    if x <= 0:
        return 0.0
    a, z = df / 2.0, x / 2.0
    log_front = a * math.log(z) - z - math.lgamma(a)
    if z < a + 1:
        term = total = 1.0 / a
        for k in range(1, 10_000):
            term *= z / (a + k)
            total += term
            if term < 1e-16 * total:
                break
        return min(1.0, math.exp(log_front) * total)
    tiny = 1e-300
    b, c, d = z + 1 - a, 1 / tiny, 1 / (z + 1 - a)
    h = d
    for k in range(1, 10_000):
        an = -k * (k - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        h *= d * c
        if abs(d * c - 1) < 1e-16:
            break
    return max(0.0, 1.0 - math.exp(log_front) * h)


@lru_cache(maxsize=4096)
def chi2_ppf(q: float, df: int) -> float:
    """The q-quantile of chi-square with integer df >= 1 (bisection on `chi2_cdf`)."""
    _check_df(df)
    if not 0.0 < q < 1.0:
        raise UserError(f"a quantile needs 0 < q < 1; got {q!r}")
    lo, hi = 0.0, float(df) + 10.0
    while chi2_cdf(hi, df) < q:
        lo, hi = hi, hi * 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if chi2_cdf(mid, df) < q else (lo, mid)
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2


def sd_interval(sd: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """The `level` confidence interval of a normal population's SD from the sample SD of n values:
    sd * sqrt((n - 1) / chi2 quantile), the chi-square interval of the variance."""
    if n < 2:
        raise UserError(f"an SD interval needs at least 2 values; got {n}")
    tail = (1 - level) / 2
    return (
        sd * math.sqrt((n - 1) / chi2_ppf(1 - tail, n - 1)),
        sd * math.sqrt((n - 1) / chi2_ppf(tail, n - 1)),
    )


def seeds_range(effect: float, sd: float, n: int, alpha: float) -> tuple[int | None, int | None]:
    """Seeds whose two-sided paired t-test at level alpha detects a true `effect` with 80% power, at the
    low and the high end of the 95% interval of the SD measured on n seeds (`sd_interval`): the range
    "seeds needed" is honest about (None: never, or > MAX_SEEDS)."""
    lo_sd, hi_sd = sd_interval(sd, n)
    return seeds_direction(effect, lo_sd, alpha), seeds_direction(effect, hi_sd, alpha)


def seeds_text(span: tuple[int | None, int | None] | None) -> str:
    """A seeds range as "a-b" ("a" when both ends agree, "> 10000" for an open end, "-" for none)."""
    if span is None:
        return "-"
    lo, hi = (f"> {MAX_SEEDS}" if n is None else str(n) for n in span)
    return lo if lo == hi else f"{lo}-{hi}"
