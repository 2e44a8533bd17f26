"""The user-error type and the one validation helper every module uses.

    from shapedce.errors import UserError, check, check_int, check_real
    check_int("train.steps", cfg.train.steps, 1)  # UserError: train.steps must be an integer >= 1; got 0
    seed_ok(-1), temperature_ok(1e-300)             # False, False: the ranges every config shares

`UserError` marks a fault in what the user gave (a config value, a path, a file's content): the
CLI prints it as one line and exits 2. Any other exception is a bug or an environment fault and
keeps its traceback (in the run's `error.log`, and on the terminal). `UserError` subclasses
`ValueError`, so library callers that catch `ValueError` keep working.
This module imports nothing from the project: every layer may use it.
"""

from __future__ import annotations

import math


class UserError(ValueError):
    """Bad input from the user: printed by the CLI as one line (exit 2), never as a traceback."""


def is_int(value: object) -> bool:
    """True for a Python or NumPy integer, False for bool (which Python counts as an int)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return type(value).__module__ == "numpy" and "int" in type(value).__name__


def is_real(value: object) -> bool:
    """True for an int or float that is not bool (NaN and inf included; see `check_real`)."""
    return is_int(value) or (isinstance(value, float) and not isinstance(value, bool))


def check(ok: bool, name: str, allowed: str, value: object) -> None:
    """`UserError("{name} must be {allowed}; got {value!r}")` unless `ok`."""
    if not ok:
        raise UserError(f"{name} must be {allowed}; got {value!r}")


def _allowed(kind: str, lo: object, hi: object, lo_open: bool = False, hi_open: bool = False) -> str:
    """ "an integer in [0, 5]", "a finite number > 1", ...: the allowed range in words."""
    if lo is not None and hi is not None:
        return f"{kind} in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{kind} {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f"{kind} {'<' if hi_open else '<='} {hi}"
    return kind


def check_int(name: str, value, lo: int | None = None, hi: int | None = None) -> None:
    """One-line UserError unless `value` is an integer in [lo, hi] (a None bound is open)."""
    ok = is_int(value) and (lo is None or value >= lo) and (hi is None or value <= hi)
    check(ok, name, _allowed("an integer", lo, hi), value)


def check_real(
    name: str,
    value,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> None:
    """One-line UserError unless `value` is a finite real number within the bounds given."""
    ok = is_real(value) and math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    check(ok, name, _allowed("a finite number", lo, hi, lo_open, hi_open), value)


def check_installed(module: str, extra: str) -> None:
    """One-line UserError unless `module` can be imported; the message names the extra that installs it.

    The core install (`pip install shapedce`) gives the loss and the Hugging Face patch only; the
    pipeline's and the evaluation's heavier packages come with extras (`pipeline`, `eval`, `all`).
    """
    import importlib.util

    top = module.split(".")[0]
    if importlib.util.find_spec(top) is None:
        hint = f'pip install "shapedce[{extra}]"'
        raise UserError(f"this needs {top}, which the core install leaves out: {hint}")


def require(module: str, extra: str):
    """Import and return `module`, or raise `check_installed`'s one-line UserError when it is missing.

    plt = require("matplotlib.pyplot", "pipeline")
    # without it: UserError: this needs matplotlib, which the core install leaves out:
    # pip install "shapedce[pipeline]"
    """
    import importlib

    check_installed(module, extra)
    return importlib.import_module(module)


# ------------------------------------------------------------------ ranges shared by every config
SEED_MAX = 2**32 - 1
"""Largest seed: torch, numpy and `random` all accept seeds in [0, 2**32 - 1]."""
SEED_RANGE = "an integer in [0, 2**32 - 1]"
TEMPERATURE_MIN = 1e-3
"""Smallest sampling temperature above 0: logits / T stays finite in float32 (1e-300 gave NaN)."""
VOCAB_MAX = 1 << 22
"""Largest `model.vocab_size` (4,194,304: above any released model's); memory is checked too."""
LENGTH_MAX = 1 << 20
"""Largest sequence length / position count (1,048,576 tokens)."""
DOCS_MAX = 10**8
"""Most documents of a generated (built-in) corpus: about 20 GB of text held in memory."""


def seed_ok(value: int) -> bool:
    """An integer seed every generator accepts (see `SEED_MAX`)."""
    return is_int(value) and 0 <= value <= SEED_MAX


def finite(value: float) -> bool:
    """A real number that is neither NaN nor infinite."""
    return is_real(value) and math.isfinite(value)


def temperature_ok(value: float, greedy: bool = False) -> bool:
    """A finite temperature >= `TEMPERATURE_MIN` (or exactly 0 = greedy when `greedy`)."""
    return finite(value) and (value >= TEMPERATURE_MIN or (greedy and value == 0))
