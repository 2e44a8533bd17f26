"""RL readiness of a base model (beyond the paper): `shapedce readiness PATH --out DIR [--reference GRID]`.

    from shapedce.readiness import ReadinessSettings, run_readiness
    run_readiness("runs/ce-mid", "readiness/ce", ReadinessSettings(), reference="runs/reproduce")

signals.py computes one model's signals (Pass@k at RL's temperature, entropy distribution and
forking share, top-k coverage of reference solutions); compare.py scores the reference grid's
midtrain models and correlates each signal with the RL gain they later got; report.py writes the
Markdown and PNG report. Sits above eval/ and report/ (imports eval, tasks, report.load).
"""

from .report import run_readiness
from .signals import ReadinessSettings, compute_signals

__all__ = ["ReadinessSettings", "compute_signals", "run_readiness"]
