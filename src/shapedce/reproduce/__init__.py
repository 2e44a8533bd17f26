"""`shapedce reproduce`: the paper's grid (configurations x models x seeds) through every stage.

grid.py (typed grid config, presets, the plan), stages.py (one run's stages, the worker),
scheduler.py (parallel workers, progress, resume). The report itself is `shapedce.report`.
"""
