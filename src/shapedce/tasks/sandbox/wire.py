"""Plain data across the sandbox's boundary: a strict encoder/decoder of one JSON line per message.

    from shapedce.tasks.sandbox.wire import encode, decode, WireError
    decode(encode((1, [2.5, None], {"a": {3}})))   # == (1, [2.5, None], {"a": {3}}), same types

Only exact builtin types cross: None, bool, int, float, str, list, tuple, dict and set (a subclass,
or any other type, is refused), at most DEPTH levels deep. JSON carries None, bool, int, float
(Python's JSON writes every float with a "." or an exponent, or as NaN / Infinity, so ints and
floats stay apart), str and list natively; a tuple is {"t": [...]}, a set {"s": [...]} and a dict
{"d": [[key, value], ...]}. Whatever the sample writes, `decode` returns these types or raises
WireError: no object of the sample's making ever reaches the grader. The sandbox side has its own
copy of `encode` in launcher.py (it cannot import this package).
"""

from __future__ import annotations

import json

DEPTH = 200
"""Deepest nesting accepted (deeper: WireError, never a RecursionError in the grader)."""


class WireError(ValueError):
    """A message that is not plain data."""


def encode(x: object, depth: int = 0) -> object:
    """`x` as JSON-ready data (see the module docstring); TypeError for anything else."""
    if depth > DEPTH:
        raise TypeError("nested too deep")
    t = type(x)
    if x is None or t in (bool, int, float, str):
        return x
    if t is list:
        return [encode(v, depth + 1) for v in x]
    if t is tuple:
        return {"t": [encode(v, depth + 1) for v in x]}
    if t is set:
        return {"s": [encode(v, depth + 1) for v in x]}
    if t is dict:
        return {"d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in x.items()]}
    raise TypeError(f"{t.__name__} is not plain data")


def decode(x: object, depth: int = 0) -> object:
    """The value `encode` made (exact builtin types only); WireError for anything else."""
    if depth > DEPTH:
        raise WireError("nested too deep")
    t = type(x)
    if x is None or t in (bool, int, float, str):
        return x
    if t is list:
        return [decode(v, depth + 1) for v in x]
    if t is dict and len(x) == 1:
        ((kind, items),) = x.items()
        if type(items) is list:
            values = [decode(v, depth + 1) for v in items]
            try:
                if kind == "t":
                    return tuple(values)
                if kind == "s":
                    return set(values)
                if kind == "d" and all(type(p) is list and len(p) == 2 for p in values):
                    return {k: v for k, v in values}
            except TypeError as err:  # an unhashable key or member
                raise WireError(str(err)) from None
    raise WireError(f"not plain data: {type(x).__name__}")


def dumps(x: object) -> bytes:
    return (json.dumps(encode(x)) + "\n").encode()


def loads(line: bytes) -> object:
    """One message, decoded strictly; WireError for bad JSON, huge ints or too deep nesting."""
    try:
        return decode(json.loads(line))
    except (ValueError, RecursionError, UnicodeDecodeError) as err:
        raise WireError(f"bad message: {type(err).__name__}") from None
