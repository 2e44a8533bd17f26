"""The report of a `shapedce reproduce` directory, from its files alone (no torch is imported here).

load.py (read the files), tdist.py (Student t, chi-square, power, MDE, seeds needed), stats.py
(seed-paired checks, Holm, verdict rules), plan.py (the analysis plan), primary.py (its primary
family), spending.py (alpha spending over interim looks), verdicts.py (the findings of
docs/method/statistics.md as checks; verdicts.json), recheck.py (the primary verdicts from runs.csv by
a plain t-test), plots.py (matplotlib figures), render.py (report.md; `shapedce report DIR`).

    from shapedce.report import write_report
    write_report("runs/reproduce")          # runs/reproduce/report.md, verdicts.json and PNGs
"""

from .render import write_report

__all__ = ["write_report"]
