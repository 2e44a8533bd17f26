"""shapedce: reward-shaped next-token pre-training and the pipeline around it."""

__version__ = "0.1.0"
