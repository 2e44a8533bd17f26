"""The report of a `shapedce reproduce` directory, from its metrics files alone.

load.py (read the files), stats.py (intervals, directional verdicts), verdicts.py (SPEC section 5
findings), plots.py (matplotlib figures), render.py (report.md; `shapedce report DIR`).
"""

from .render import write_report

__all__ = ["write_report"]
