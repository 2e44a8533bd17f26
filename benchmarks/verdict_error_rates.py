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
- the study's second look: the checks undecided at 20 seeds are extended to 33 and judged again in
  the same family (12 checks, half at d = 0 and half at d = margin = half a seed spread), at level
  0.025 (`second_look`) and, for contrast, at 0.05: any wrong call at either look, against one look.
Prints one table: rate, its Monte-Carlo standard error, the nominal bound (quoted in
docs/method/statistics.md).
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from shapedce.report.stats import ALPHA, HELD, INCONCLUSIVE, NOT_HELD, decide, direction, parity, second_look


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

    # the study's second look (docs/history/2026-12-01-second-look.md): every check still
    # inconclusive at 20 seeds
    # gets 13 more and the family is judged again, the grown checks at level 0.025 (`second_look`),
    # or, for contrast, at 0.05. 12 checks as above with effects (and margins) of half a seed spread,
    # so that most are undecided at 20: any wrong call at either look.
    truth = np.array([0.0 if i % 2 else -0.5 for i in range(12)])

    def family(rows, look):
        return decide(
            second_look([direction("m", "a", "b", list(d), -1, null_margin=0.5) for d in rows], look)
        )

    def wrong(checks):
        return any(
            (c.p_adjusted < c.level) if t == 0 else c.verdict == NOT_HELD for c, t in zip(checks, truth)
        )

    once, spent, unspent = 0, 0, 0
    for x in rng.normal(0, 1, (reports, 12, 33)) + truth[:, None]:
        first = family([d[:20] for d in x], 0)
        grown = [d if c.verdict == INCONCLUSIVE else d[:20] for d, c in zip(x, first)]
        once += wrong(first)
        spent += wrong(first) or wrong(family(grown, 20))
        unspent += wrong(first) or wrong(family(grown, 0))
    rows.append(("12 checks with absence, 20 seeds: any wrong call", *_rate(once, reports), "5%"))
    rows.append(
        ("  + undecided ones to 33 seeds at level 0.025: any wrong call", *_rate(spent, reports), "5%")
    )
    rows.append(
        ("  + undecided ones to 33 seeds at level 0.05: any wrong call", *_rate(unspent, reports), "-")
    )

    width = max(len(r[0]) for r in rows)
    print(f"{'case':<{width}} | rate   | MC s.e. | nominal")
    print(f"{'-' * width}-|--------|---------|--------")
    for name, rate, se, nominal in rows:
        print(f"{name:<{width}} | {rate:6.2%} | {se:7.2%} | {nominal}")


if __name__ == "__main__":
    main()
