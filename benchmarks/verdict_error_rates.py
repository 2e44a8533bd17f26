"""How often the report's verdict rules call a wrong verdict, by simulation (docs/method/statistics.md).

    PYTHONPATH=src python benchmarks/verdict_error_rates.py [--draws 20000] [--seed 0]

Normal seed noise (sd 1), the rules of `shapedce.report.stats` exactly as `shapedce report` applies them:
- a direction check at a true difference of 0 (3 seeds): wrongly held / wrongly did_not_hold;
- 12 null direction checks in one report: any call, with Holm and without;
- a parity check whose truth sits on its margin (3 seeds): wrongly held, and did_not_hold; and its
  power: held at a true difference of 0 with a seed spread equal to the margin;
- a direction check with an absence margin whose true effect equals the margin: wrongly absent;
- 12 such checks in one report, half with no effect and half with an effect on the margin: any
  wrong call (a direction call on a null effect; absent or the wrong sign on a real one; "absent" on
  a null effect is right);
- the old second look (gone: the report refuses it): one null check read at 20 seeds at 0.05, then at
  40 seeds at 0.025; and a finding of 3 parity checks on their margins, did_not_hold judged per check
  (the old rule) and under Holm (today's);
- the primary family of an analysis plan (`shapedce.report.primary`): 2 checks, one-sided level
  0.025 over both claims, absence margin half a seed spread, 20 planned seeds; one look, interim looks
  at 10 (O'Brien-Fleming and Pocock spending) and at 5 and 10, and, for contrast, the same looks each
  at the full level (no spending). Truths: both d = 0 (any held is wrong), both d = margin (any
  did_not_hold is wrong), one of each (any wrong call); and the power at d = one seed spread.
Prints one table: rate, its Monte-Carlo standard error, the nominal bound (quoted in
docs/method/statistics.md).
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from shapedce.report import primary, spending
from shapedce.report.stats import ALPHA, HELD, INCONCLUSIVE, NOT_HELD, combine, decide, direction, parity
from shapedce.report.tdist import t_ppf


def _rate(hits: int, n: int) -> tuple[float, float]:
    p = hits / n
    return p, math.sqrt(p * (1 - p) / n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng, n = np.random.default_rng(args.seed), args.draws
    rows = []

    v = [decide([direction("m", "a", "b", list(x), 1)])[0].verdict for x in rng.normal(0, 1, (n, 3))]
    rows.append(("direction, d = 0, 3 seeds: held", *_rate(v.count(HELD), n), "2.5%"))
    rows.append(("direction, d = 0, 3 seeds: did_not_hold", *_rate(v.count(NOT_HELD), n), "2.5%"))

    reports = n // 5
    for adjust in (True, False):
        wrong = 0
        for x in rng.normal(0, 1, (reports, 12, 3)):
            checks = [direction("m", "a", "b", list(d), 1 if i % 2 else -1) for i, d in enumerate(x)]
            if adjust:
                wrong += any(c.verdict != INCONCLUSIVE for c in decide(checks))
            else:
                wrong += any(decide([c])[0].verdict != INCONCLUSIVE for c in checks)
        label = "Holm" if adjust else "no adjustment"
        rows.append((f"12 null direction checks, 3 seeds, {label}: any call", *_rate(wrong, reports), "5%"))

    for upper_only, name in ((False, "TOST"), (True, "non-superiority")):
        v = [
            decide([parity("m", "a", "b", list(x), margin=1.0, upper_only=upper_only)])[0].verdict
            for x in rng.normal(1.0, 1.0, (n, 3))
        ]
        rows.append((f"parity ({name}), d on the margin, 3 seeds: held", *_rate(v.count(HELD), n), "5%"))
        rows.append(
            (f"parity ({name}), d on the margin, 3 seeds: did_not_hold", *_rate(v.count(NOT_HELD), n), "5%")
        )

        v = [
            decide([parity("m", "a", "b", list(x), margin=1.0, upper_only=upper_only)])[0].verdict
            for x in rng.normal(0.0, 1.0, (n, 3))
        ]
        rows.append((f"power: parity ({name}), d = 0, 3 seeds: held", *_rate(v.count(HELD), n), "-"))

    for seeds in (3, 6, 12):
        checks = [
            decide([direction("m", "a", "b", list(x), -1, null_margin=1.0)])[0]
            for x in rng.normal(-1.0, 1.0, (n, seeds))
        ]
        absent = sum(c.verdict == NOT_HELD and c.estimate < 0 for c in checks)
        rows.append((f"absence, d = margin, {seeds} seeds: wrongly absent", *_rate(absent, n), "<= 5%"))

    wrong = 0  # 12 checks with absence margins, half at d = 0 and half at d = margin: any wrong call
    for x in rng.normal(0, 1, (reports, 12, 6)):
        truth = [0.0 if i % 2 else -1.0 for i in range(12)]
        checks = decide(
            [direction("m", "a", "b", list(d + t), -1, null_margin=1.0) for d, t in zip(x, truth)]
        )
        wrong += any(
            (c.p_adjusted < ALPHA and t == 0.0) or (c.verdict == NOT_HELD and t != 0.0)
            for c, t in zip(checks, truth)
        )
    rows.append(
        ("12 checks with absence, 6 seeds, Holm-Shaffer: any wrong call", *_rate(wrong, reports), "5%")
    )

    rows += old_rules(rng, n)
    rows += primary_family(rng, n // 2)

    width = max(len(r[0]) for r in rows)
    print(f"{'case':<{width}} | rate   | MC s.e. | nominal")
    print(f"{'-' * width}-|--------|---------|--------")
    for name, rate, se, nominal in rows:
        print(f"{name:<{width}} | {rate:6.2%} | {se:7.2%} | {nominal}")


def old_rules(rng: np.random.Generator, n: int) -> list[tuple]:
    """The old second look, and did_not_hold of a 3-parity-check finding judged per check vs under Holm."""
    x = rng.normal(0.0, 1.0, size=(n, 40))

    def t(k: int) -> np.ndarray:
        return x[:, :k].mean(1) / (x[:, :k].std(1, ddof=1) / np.sqrt(k))

    wrong = (abs(t(20)) > t_ppf(0.975, 19)) | (abs(t(40)) > t_ppf(0.9875, 39))
    rows = [
        ("old second look: 20 seeds at 0.05, then 40 at 0.025: any call", *_rate(int(wrong.sum()), n), "5%")
    ]
    alone, holm = 0, 0
    reports = n // 5
    for d in rng.normal(1.0, 1.0, size=(reports, 3, 3)):
        alone += any(decide([parity("m", "a", "b", list(v), margin=1.0)])[0].verdict == NOT_HELD for v in d)
        checks = decide([parity("m", "a", "b", list(v), margin=1.0) for v in d])
        holm += combine([c.verdict for c in checks]) == NOT_HELD
    rows.append(
        ("3 parity checks on the margin, per check: finding did_not_hold", *_rate(alone, reports), "5%")
    )
    rows.append(("3 parity checks on the margin, Holm: finding did_not_hold", *_rate(holm, reports), "5%"))
    return rows


def primary_family(rng: np.random.Generator, n: int) -> list[tuple]:
    """The primary family's error of both claims under the plans of the module docstring."""
    margin, alpha, rows = 0.5, 0.025, []
    plans = [
        ("1 look at 20", (20,), "obrien-fleming"),
        ("looks 10, 20, O'Brien-Fleming", (10, 20), "obrien-fleming"),
        ("looks 10, 20, Pocock", (10, 20), "pocock"),
        ("looks 5, 10, 20, O'Brien-Fleming", (5, 10, 20), "obrien-fleming"),
        ("looks 10, 20, no spending", (10, 20), None),
    ]
    truths = [("d = 0: any held", (0.0, 0.0)), ("d = margin: any did_not_hold", (margin, margin))]
    truths += [("one 0, one margin: any wrong", (0.0, margin)), ("power, d = 1 sd: both held", (1.0, 1.0))]
    for name, looks, kind in plans:
        if kind is None:  # every look at the full level: what spending prevents
            spending.boundaries.cache_clear()
            fixed = {g: (alpha / g,) * len(looks) for g in (1, 2)}

            def reject(pv, looks=looks, fixed=fixed):
                return _fixed_rejections(pv, fixed, looks)
        else:

            def reject(pv, looks=looks, kind=kind):
                return primary.family_rejections(pv, alpha, looks, kind)

        for label, truth in truths:
            if kind is None and label.startswith("power"):
                continue
            hits = 0
            for x in rng.normal(0.0, 1.0, size=(n, 2, looks[-1])) + np.array(truth)[:, None]:
                made = reject([primary.look_pvalues(list(d), looks, margin) for d in x])
                if label.startswith("power"):
                    hits += {(0, 0), (1, 0)} <= made
                else:
                    hits += any(
                        (h == 0 and truth[i] <= 0) or (h == 1 and truth[i] >= margin) for i, h in made
                    )
            nominal = "-" if label.startswith("power") else f"{alpha:.1%}"
            rows.append((f"primary, {name}, {label}", *_rate(hits, n), nominal))
    return rows


def _fixed_rejections(pv, fixed, looks) -> set:
    """family_rejections with the level alpha / g at every look (no spending), for contrast."""
    rejected: set = set()
    while True:
        left = [i for i in range(len(pv)) if not {(i, 0), (i, 1)} <= rejected]
        if not left:
            return rejected
        level = fixed[len(left)]
        new = {(i, h) for i in left for h in (0, 1) if any(p[h] < level[k] for k, p in enumerate(pv[i]))}
        if not new - rejected:
            return rejected
        rejected |= new


if __name__ == "__main__":
    main()
