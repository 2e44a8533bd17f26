"""Plain YAML in, typed dataclasses out: the machinery every config of the project shares.

    from shapedce.dataclass_io import from_dict, merge, parse_yaml, check_ranges
    cfg = from_dict(RunConfig, merge(preset, parse_yaml("train: {steps: 5}", "override")))

`parse_yaml` reads numbers, strings, booleans, lists and mappings only (tags, anchors and aliases
are one-line errors); `from_dict` builds a (nested) dataclass, refusing unknown keys with a "did
you mean" and wrong types with the full dotted key; `check_ranges` turns the first failed range
check into one line. The run, RL and grid configs (`shapedce.config`, `shapedce.train.rl_config`,
`shapedce.reproduce.grid`) are built with it.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
from dataclasses import fields
from typing import Any, get_type_hints

import yaml

from .errors import UserError


def get_key(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _coerce(value: Any, typ: Any, key: str) -> Any:
    if isinstance(typ, types.UnionType):  # e.g. loss.beta: float | str (a number or "auto")
        for member in typ.__args__:
            try:
                return _coerce(value, member, key)
            except ValueError:
                continue
        raise UserError(
            f"{key} must be of type {' or '.join(t.__name__ for t in typ.__args__)}; got {value!r}"
        )
    if typ is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if typ is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
        try:
            return float(value.replace(".inf", "inf"))
        except ValueError:
            pass
    if typ in (int, str, bool) and isinstance(value, typ) and not (typ is int and isinstance(value, bool)):
        return value
    if typ is int and isinstance(value, float) and value.is_integer():
        return int(value)
    name = getattr(typ, "__name__", str(typ))
    raise UserError(f"{key} must be of type {name}; got {value!r}")


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from a nested dict, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise UserError(f"{prefix.rstrip('.') or 'config'} must be a mapping; got {data!r}")
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; known keys: {', '.join(names)}"
            raise UserError(f"unknown config key '{prefix}{key}'{hint}")
    kwargs = {}
    for name, value in data.items():
        typ, key = hints[name], prefix + name
        if isinstance(typ, type) and dataclasses.is_dataclass(typ):
            kwargs[name] = from_dict(typ, value, key + ".")
        else:
            kwargs[name] = _coerce(value, typ, key)
    try:
        return cls(**kwargs)
    except ValueError as err:  # e.g. LossConfig's own checks: name the full key
        message = str(err)
        if prefix and message.split(" ", 1)[0] in names:
            raise UserError(prefix + message) from None
        raise


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_yaml(text: str, where: str) -> Any:
    """`text` as plain YAML: numbers, strings, booleans, lists and mappings only.

    YAML tags (`!!python/...`, `!x`) and anchors/aliases (`&a`, `*a`) are refused with one line
    naming `where`, as is any text YAML cannot parse; the event stream is checked before anything
    is constructed."""
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if getattr(event, "anchor", None) is not None or isinstance(event, yaml.AliasEvent):
                raise UserError(f"{where}: YAML anchors and aliases (&, *) are not allowed")
            tag = getattr(event, "tag", None)
            if tag is not None:  # untagged nodes carry no tag in the event stream
                raise UserError(f"{where}: YAML tags ({tag}) are not allowed; write a plain value")
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{where}: not plain YAML ({first})") from None
    except RecursionError:
        raise UserError(f"{where}: values nested too deep") from None


def parse_value(raw: str, key: str) -> Any:
    """An override's value (the text after `=`), parsed by `parse_yaml`."""
    return parse_yaml(raw, f"override {key}")


def check_ranges(cfg: Any, checks: list[tuple[str, bool, str]]) -> None:
    """Raise a one-line ValueError for the first (dotted key, ok, allowed range) that fails."""
    for key, ok, allowed in checks:
        if not ok:
            raise UserError(f"{key} must be {allowed}; got {get_key(cfg, key)!r}")
