"""shapedce: reward-shaped next-token pre-training and the pipeline around it.

    import shapedce; print(shapedce.__version__)      # or: shapedce --version

`__version__` is the one place the version is written (pyproject.toml reads it from here).
"""

__version__ = "0.1.0"
