"""The report of a `shapedce reproduce` directory, from its files alone (no torch is imported here).

load.py (read the files), tdist.py (Student t, power, MDE), stats.py (seed-paired checks, Holm,
verdict rules), verdicts.py (the findings of docs/method/statistics.md as checks; verdicts.json),
plots.py (matplotlib figures), render.py (report.md; `shapedce report DIR`).

    from shapedce.report import write_report
    write_report("runs/reproduce")          # runs/reproduce/report.md, verdicts.json and PNGs
"""

from .render import write_report

__all__ = ["write_report"]
