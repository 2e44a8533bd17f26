"""RL readiness of a base model (beyond the paper): `shapedce readiness PATH --out DIR [--reference GRID]`.

    from shapedce.readiness import ReadinessSettings, run_readiness
    run_readiness("runs/ce-mid", "readiness/ce", ReadinessSettings(), reference="runs/reproduce")

signals.py computes one model's signals (Pass@k at RL's temperature, entropy distribution and
forking share, top-k coverage of reference solutions); compare.py scores the reference grid's
midtrain models and correlates each signal with the RL gain they later got; report.py writes the
Markdown and PNG report. Sits above eval/ and report/ (imports eval, tasks, report.load).
"""

from .settings import ReadinessSettings

__all__ = ["ReadinessSettings", "compute_signals", "run_readiness"]


def __getattr__(name: str):  # the heavy parts (torch, plots) load on first use, not with the settings
    if name == "run_readiness":
        from .report import run_readiness

        return run_readiness
    if name == "compute_signals":
        from .signals import compute_signals

        return compute_signals
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
