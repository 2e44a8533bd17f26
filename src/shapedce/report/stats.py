"""The report's statistics: seed-paired checks, verdicts, Holm's adjustment, MDEs (docs/method/statistics.md).

    from shapedce.report.stats import direction, parity, judge, decide
    checks = [direction("Avg@8 after RL", "precision", "ce", diffs=[0.02, 0.05, 0.01], expect=+1),
              parity("log PPL", "tail", "ce", diffs=[0.01, -0.02, 0.00], margin=0.0488)]
    judge(checks)          # Holm over the direction checks, every verdict, MDE and seeds needed
    decide(checks)         # the same without MDE and seeds needed (fast: simulations)
    checks[0].verdict      # "held" | "did_not_hold" | "inconclusive" | "not_tested"

A check holds the per-seed paired differences d_i = a_i - b_i (same seed of both configurations).
  direction ("a above b", expect=+1; "a below b", expect=-1): mean(d), its 95% t-interval and the
      two-sided one-sample t-test p-value; p is Holm-adjusted over every direction check given to
      `judge` (one report). held when p_adjusted < 0.05 and mean(d) has the claimed sign, did_not_hold
      when p_adjusted < 0.05 with the other sign, else inconclusive. With a `null_margin` (the smallest
      effect of interest) a direction check also tests absence: TOST of |true d| < null_margin, its
      p-value (p_absent) adjusted in the same family; when the direction test is not significant and
      absence is, the claimed effect is shown absent: did_not_hold. A check's two null hypotheses
      (d = 0, |d| >= null_margin) cannot both be true, so the family counts checks, not tests
      (`holm` with groups): absence tests cost the other checks no power.
  parity ("about the same": |true d| < margin; upper_only, "not above": true d < margin): the 90%
      t-interval (two one-sided tests at 5%). held when it lies inside the margin (a finding's parity
      checks must all hold: an intersection-union test, level 5% per finding without correction).
      did_not_hold when d is shown beyond the margin: the one-sided t-test of "true d beyond the
      margin" (p_outside), Holm-adjusted in the same family as the direction tests, so a finding-level
      did_not_hold is multiplicity-controlled like held; else inconclusive. p is the equivalence
      test's p-value.
  interim looks: only through an analysis plan's alpha spending, for its primary family
      (`shapedce.report.primary`); the old rule (a second look at 0.025 after a full 0.05) is gone.
  not_applicable: a check the study's world cannot exhibit (NOT_APPLICABLE, with its reason in `test`)
      joins no family and no finding's verdict.
  fewer than MIN_SEEDS pairs: not_tested; the mean is shown, with the t-interval over the seeds there
      are or an interval over evaluation prompts (`prompt_ci`), as indicative numbers only.
MDE: the true difference detected with 80% power by the test this check faces, using the measured
spread of d: for direction checks at level 0.05 / (tested direction and parity checks), the level Holm's first
step uses, so an effect this size is detected whatever the other checks show; for parity checks the
smallest margin the equivalence test would establish at a true difference of 0. seeds_needed: seeds at
which the same test reaches its verdict on the observed difference with 80% power (None: never, or
> tdist.MAX_SEEDS); with a null_margin, the fewer of the direction test's and the absence test's.
seeds_range: the same at both ends of the 95% chi-square interval of the measured SD (a range, since a
few seeds measure the spread poorly).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field

from ..errors import UserError
from . import tdist
from .tdist import t975

HELD, NOT_HELD, INCONCLUSIVE, NOT_TESTED = "held", "did_not_hold", "inconclusive", "not_tested"
NOT_APPLICABLE = "not_applicable"
VERDICTS = (HELD, NOT_HELD, INCONCLUSIVE, NOT_TESTED, NOT_APPLICABLE)
MANIPULATION = "manipulation"
"""The label of a manipulation check: a knob moving its own metric (it tests the setup, not a claim)."""
ALPHA = 0.05
MIN_SEEDS = 3


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


def holm(pvalues: list[float], groups: list | None = None) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order. Hypotheses that share a `groups` label
    are logically exclusive (at most one of them is true, e.g. "d = 0" and "|d| >= margin" of one check):
    each step then multiplies by the number of groups that still hold an unrejected hypothesis, the
    most true hypotheses there can be (Shaffer's refinement of Holm; without groups, plain Holm)."""
    groups = list(range(len(pvalues))) if groups is None else list(groups)
    left = Counter(groups)
    out, running = [0.0] * len(pvalues), 0.0
    for i in sorted(range(len(pvalues)), key=lambda i: pvalues[i]):
        running = max(running, min(1.0, len(left) * pvalues[i]))
        out[i] = running
        left[groups[i]] -= 1
        if not left[groups[i]]:
            del left[groups[i]]
    return out


@dataclass
class Check:
    """One seed-paired comparison; `judge` fills the fields after `margin`."""

    metric: str
    a: str
    b: str
    kind: str
    """"direction" or "parity"."""
    diffs: list[float]
    expect: int = 0
    """direction: +1 claims a > b, -1 a < b. parity: 0 two-sided margin, +1 "not above" (upper margin)."""
    margin: float | None = None
    null_margin: float | None = None
    """direction only: the smallest effect of interest; |true d| below it is 'absent' (see the module)."""
    a_mean: float | None = None
    b_mean: float | None = None
    level: float = ALPHA
    """The test's level: ALPHA (secondary checks), or a primary family's one-sided level."""
    prompt_ci: tuple[float, float] | None = None
    """1 seed: an interval over evaluation prompts, shown as indicative, never judged."""
    fmt: str = "{:.3f}"
    test: str = ""
    estimate: float | None = None
    ci: tuple[float, float] | None = None
    p: float | None = None
    p_adjusted: float | None = None
    p_absent: float | None = None
    p_absent_adjusted: float | None = None
    p_outside: float | None = None
    """parity only: p-value of "true d beyond the margin" (its did_not_hold claim), one-sided."""
    p_outside_adjusted: float | None = None
    mde: float | None = None
    seeds_needed: int | None = None
    seeds_range: tuple[int | None, int | None] | None = None
    """seeds_needed at the low and high end of the SD's 95% interval (None at an end: never)."""
    verdict: str = NOT_TESTED
    primary: bool = False
    """A check of the primary family named in an analysis plan (`shapedce.report.primary`)."""
    label: str | None = None
    """MANIPULATION for a knob moving its own metric, else None."""
    extra: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.diffs)

    @property
    def sd(self) -> float:
        return statistics.stdev(self.diffs) if self.n >= 2 else math.nan

    @property
    def coverage(self) -> float:
        """The judged interval's coverage: 1 - level (direction), 1 - 2 level (parity: two one-sided)."""
        return 1 - (2 if self.kind == "parity" else 1) * self.level

    def _t_interval(self, level: float) -> tuple[float, float]:
        assert self.estimate is not None, "an interval needs an estimate"
        half = tdist.t_ppf(0.5 + level / 2, self.n - 1) * self.sd / math.sqrt(self.n)
        return self.estimate - half, self.estimate + half

    def as_dict(self) -> dict:
        return {
            "metric": self.metric,
            "a": self.a,
            "b": self.b,
            "kind": self.kind,
            "test": self.test,
            "estimate": self.estimate,
            "ci": list(self.ci) if self.ci else None,
            "p": self.p,
            "p_adjusted": self.p_adjusted,
            "margin": self.margin,
            "null_margin": self.null_margin,
            "p_absent": self.p_absent,
            "p_absent_adjusted": self.p_absent_adjusted,
            "p_outside": self.p_outside,
            "p_outside_adjusted": self.p_outside_adjusted,
            "mde": self.mde,
            "seeds_needed": self.seeds_needed,
            "seeds_needed_range": list(self.seeds_range) if self.seeds_range else None,
            "level": self.level,
            "verdict": self.verdict,
            "primary": self.primary,
            "label": self.label,
        }


def direction(metric: str, a: str, b: str, diffs: list[float], expect: int, **kw) -> Check:
    if expect not in (1, -1):
        raise UserError(f"a direction check's expect must be +1 or -1; got {expect!r}")
    if kw.get("null_margin") is not None and not kw["null_margin"] > 0:
        raise UserError(f"a direction check's null_margin must be > 0 or None; got {kw['null_margin']!r}")
    return _prepare(Check(metric, a, b, "direction", _clean(diffs), expect, **kw))


def parity(
    metric: str, a: str, b: str, diffs: list[float], margin: float, upper_only: bool = False, **kw
) -> Check:
    if not margin > 0:
        raise UserError(f"a parity margin must be > 0; got {margin!r}")
    return _prepare(Check(metric, a, b, "parity", _clean(diffs), int(upper_only), margin, **kw))


def _clean(diffs: list[float]) -> list[float]:
    """Floats; a difference within 1e-12 of 0 (rounding of equal values, e.g. 0.3 - 0.1 vs 0.4 - 0.2) is 0."""
    return [0.0 if abs(float(d)) < 1e-12 else float(d) for d in diffs]


def _prepare(c: Check) -> Check:
    """Estimate, interval and unadjusted p from the differences (the verdict waits for `judge`)."""
    c.estimate = statistics.fmean(c.diffs) if c.diffs else None
    if c.n == 0:
        c.test = "not tested: no seed with both configurations finished"
        return c
    if c.n < MIN_SEEDS:
        if c.n >= 2:
            c.ci = c._t_interval(0.95)
            c.test = f"not tested: {c.n} seeds (< {MIN_SEEDS}); 95% t-interval over seeds, indicative only"
        elif c.prompt_ci is not None:
            c.ci = c.prompt_ci
            c.test = "not tested: 1 seed; 95% interval over evaluation prompts (not seeds), indicative only"
        else:
            c.test = "not tested: 1 seed, no interval"
        return c
    se = c.sd / math.sqrt(c.n)
    assert c.estimate is not None  # n >= MIN_SEEDS differences
    if c.kind == "direction":
        c.ci = c._t_interval(c.coverage)
        c.p = 1.0 if c.estimate == 0 else 0.0 if se == 0 else 2 * tdist.t_sf(abs(c.estimate) / se, c.n - 1)
        c.test = f"paired t-test over {c.n} seeds, two-sided, Holm-adjusted"
        if c.null_margin is not None:
            c.p_absent = _tost_p(c.estimate, se, c.null_margin, c.n)
            c.test += f"; absence: TOST |d| < {c.fmt.format(c.null_margin)}, Holm-adjusted"
    else:
        assert c.margin is not None, "a parity check has a margin"
        c.ci = c._t_interval(c.coverage)
        c.p = _tost_p(c.estimate, se, c.margin, c.n, upper_only=bool(c.expect))
        c.p_outside = _outside_p(c.estimate, se, c.margin, c.n, upper_only=bool(c.expect))
        side = f"d < {c.fmt.format(c.margin)}" if c.expect else f"|d| < {c.fmt.format(c.margin)}"
        c.test = (
            f"{'non-superiority' if c.expect else 'TOST equivalence'} over {c.n} seeds: "
            f"{100 * c.coverage:g}% t-interval vs margin {side}"
        )
    return c


def _tost_p(estimate: float, se: float, margin: float, n: int, upper_only: bool = False) -> float:
    """p-value of equivalence |true d| < margin (two one-sided t-tests), or of d < margin (upper_only)."""
    if se == 0:
        inside = estimate < margin and (upper_only or estimate > -margin)
        return 0.0 if inside else 1.0
    upper = tdist.t_cdf((estimate - margin) / se, n - 1)
    return upper if upper_only else max(upper, tdist.t_sf((estimate + margin) / se, n - 1))


def _outside_p(estimate: float, se: float, margin: float, n: int, upper_only: bool = False) -> float:
    """p-value of "true d beyond the margin": d > margin, or (two-sided margin) the likelier of d > margin
    and d < -margin (one-sided t-tests; on the margin the other side adds a negligible chance)."""
    if se == 0:
        return 0.0 if estimate > margin or (not upper_only and estimate < -margin) else 1.0
    above = tdist.t_sf((estimate - margin) / se, n - 1)
    return above if upper_only else min(above, tdist.t_cdf((estimate + margin) / se, n - 1))


def _family(checks: list[Check]) -> list[tuple[Check, str]]:
    """The Holm family: (check, "p") for every tested direction check, (check, "p_absent") for each
    absence test, (check, "p_outside") for every tested parity check."""
    tested = [c for c in checks if c.p is not None and c.kind == "direction"]
    parity_ = [c for c in checks if c.p is not None and c.kind == "parity" and c.p_outside is not None]
    return (
        [(c, "p") for c in tested]
        + [(c, "p_absent") for c in tested if c.p_absent is not None]
        + [(c, "p_outside") for c in parity_]
    )


def family_size(checks: list[Check]) -> int:
    """Holm's first multiplier over these checks: the tested direction and parity checks (a direction
    check's absence test shares its count)."""
    return max(1, sum(c.p is not None and c.verdict != NOT_APPLICABLE for c in checks))


def decide(checks: list[Check]) -> list[Check]:
    """Holm-adjust the direction, absence and parity-outside p-values together; set every verdict."""
    family = _family(checks)
    groups = [id(c) for c, _ in family]  # a check's direction and absence nulls exclude each other
    for (c, key), p_adj in zip(family, holm([getattr(c, key) for c, key in family], groups)):
        setattr(c, f"{key}_adjusted", p_adj)
    for c in checks:
        if c.verdict == NOT_APPLICABLE:
            continue
        if c.p is None:
            c.verdict, c.p_adjusted = NOT_TESTED, None
        elif c.kind == "direction":
            assert c.estimate is not None and c.p_adjusted is not None
            sign = 1 if c.estimate > 0 else -1
            if c.p_adjusted < c.level:
                c.verdict = HELD if sign == c.expect else NOT_HELD
            elif c.p_absent_adjusted is not None and c.p_absent_adjusted < c.level:
                c.verdict = NOT_HELD  # the claimed effect is shown absent
            else:
                c.verdict = INCONCLUSIVE
        else:
            assert c.ci is not None and c.margin is not None
            lo, hi = c.ci
            inside = hi < c.margin and (c.expect or lo > -c.margin)
            outside = c.p_outside_adjusted is not None and c.p_outside_adjusted < c.level
            c.verdict = HELD if inside else NOT_HELD if outside else INCONCLUSIVE
    return checks


def judge(checks: list[Check]) -> list[Check]:
    """`decide`, then every tested check's MDE, seeds needed and their range (see the module docstring)."""
    decide(checks)
    family = family_size(checks)
    for c in checks:
        if c.p is None:
            c.mde, c.seeds_needed, c.seeds_range = None, None, None
            continue
        sd = c.sd
        if sd == 0:  # identical differences on every seed: any n >= MIN_SEEDS decides, or nothing does
            c.mde = 0.0
            c.seeds_needed = c.n if c.verdict in (HELD, NOT_HELD) else None
            c.seeds_range = (c.seeds_needed, c.seeds_needed)
            continue
        if c.kind == "direction":
            c.mde = tdist.mde_direction(sd, c.n, c.level / family)
        else:
            c.mde = tdist.mde_parity(sd, c.n, upper_only=bool(c.expect), alpha=c.level)
        c.seeds_needed = _seeds_needed(c, sd, c.level / family)
        lo, hi = tdist.sd_interval(sd, c.n)
        c.seeds_range = (_seeds_needed(c, lo, c.level / family), _seeds_needed(c, hi, c.level / family))
    return checks


def _seeds_needed(c: Check, sd: float, level: float) -> int | None:
    """Seeds at which c's test reaches its verdict on the observed difference with 80% power, at seed
    spread sd (direction checks and a parity check's "beyond" claim at `level`, Holm's first step;
    its "inside" claim at c.level)."""
    assert c.estimate is not None  # tested checks have one
    if c.kind == "direction":
        n = tdist.seeds_direction(c.estimate, sd, level)
        if c.null_margin is not None and abs(c.estimate) < c.null_margin:
            absent = tdist.seeds_parity(c.estimate, c.null_margin, sd, alpha=level)
            n = min((k for k in (n, absent) if k is not None), default=None)
        return n
    assert c.margin is not None
    inside = c.estimate < c.margin if c.expect else abs(c.estimate) < c.margin
    # held (inside) is judged at c.level; did_not_hold (beyond) is Holm-adjusted: `level`
    return tdist.seeds_parity(c.estimate, c.margin, sd, bool(c.expect), alpha=c.level if inside else level)


def combine(verdicts: list[str]) -> str:
    """A finding from its checks, the not_applicable ones left out (all of them: not_applicable): any
    not_tested -> not_tested; else any did_not_hold -> did_not_hold; all held -> held; else
    inconclusive."""
    if verdicts and all(v == NOT_APPLICABLE for v in verdicts):
        return NOT_APPLICABLE
    verdicts = [v for v in verdicts if v != NOT_APPLICABLE]
    if not verdicts or NOT_TESTED in verdicts:
        return NOT_TESTED
    if NOT_HELD in verdicts:
        return NOT_HELD
    return HELD if all(v == HELD for v in verdicts) else INCONCLUSIVE
