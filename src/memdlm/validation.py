"""Choice and range checks shared by the configuration dataclasses.

A value reaches a dataclass from a flag, a config file or Python code; every
dataclass calls these from its ``__post_init__``, so each path is checked the same
way. Errors are ``ConfigError`` naming the option as its flag.
"""

from __future__ import annotations

import math
import sys
import typing
from dataclasses import fields

from memdlm.errors import ConfigError


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _choices(cls, field_type) -> tuple | None:
    """The choices of a ``Literal[...]`` annotation (a string under ``from __future__ import annotations``)."""
    if isinstance(field_type, str):
        if not field_type.startswith("Literal["):
            return None
        field_type = eval(field_type, vars(sys.modules[cls.__module__]))  # noqa: S307 -- our own annotation
    if typing.get_origin(field_type) is typing.Literal:
        return typing.get_args(field_type)
    return None


def literal_choices(cls, name: str) -> tuple:
    """The choices of ``cls``'s ``Literal``-typed field ``name``: the one place they are
    written, for code that needs them as values."""
    for f in fields(cls):
        if f.name == name:
            choices = _choices(cls, f.type)
            if choices is None:
                raise TypeError(f"{cls.__name__}.{name} is not a Literal field")
            return choices
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def check_choices(obj) -> None:
    """Every ``Literal``-typed field holds one of its choices (argparse checks flags, not Python
    callers or values set as defaults)."""
    for f in fields(obj):
        choices = _choices(type(obj), f.type)
        value = getattr(obj, f.name)
        if choices is not None and value not in choices:
            raise ConfigError(f"{flag(f.name)} {value!r} is not one of: {', '.join(map(str, choices))}")


def check_range(obj, names: str, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False, optional: bool = False) -> None:
    """Each field in ``names`` (space-separated; lists checked element-wise) lies in the range;
    ``optional`` lets None through (its documented default). NaN and infinities are refused
    (NaN passes every comparison)."""
    for name in names.split():
        value = getattr(obj, name)
        for v in (value if isinstance(value, (list, tuple)) else [value]):
            if v is None and optional:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"{flag(name)} must be a number, got {v!r}")
            if not math.isfinite(v):  # nan passes every comparison; inf is no setting either
                raise ConfigError(f"{flag(name)} must be a finite number, got {v!r}")
            if (low is not None and (v <= low if low_open else v < low)) or \
                    (high is not None and (v >= high if high_open else v > high)):
                raise ConfigError(f"{flag(name)} must be {_rule(low, high, low_open, high_open)}, got {v!r}")


def _rule(low, high, low_open, high_open) -> str:
    if high is None:
        return f"{'>' if low_open else '>='} {_number(low)}"
    if low is None:
        return f"{'<' if high_open else '<='} {_number(high)}"
    return f"in {'(' if low_open else '['}{_number(low)}, {_number(high)}{')' if high_open else ']'}"


def _number(x) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


# --- values given as text (lm-eval's --model-args, key=value lists) --------------------------------
TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes"), ("false", "0", "no")


def parse_bool(key: str, value) -> bool:
    """``true/false/1/0/yes/no`` (any case), or a bool / 0 / 1 already parsed; anything else
    -- an empty value (a bare key), ``on``, ``2`` -- is a ConfigError naming ``key``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    shown = f"{key} (no value)" if text == "" else f"{key}={value!r}"
    raise ConfigError(f"{shown} is not a boolean: write {key}=true or {key}=false (also 1/0, yes/no)")


def parse_number(key: str, value, kind: type = float, low: float | None = None):
    """``value`` as ``kind`` (int or float), finite and >= ``low``; a ConfigError naming ``key``
    otherwise (``steps=abc``, ``steps=2.5``, ``temperature=nan``)."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} is not a number")
    try:
        number = kind(value) if not isinstance(value, str) or kind is float else int(value.strip(), 10)
    except (TypeError, ValueError):
        what = "a whole number" if kind is int else "a number"
        raise ConfigError(f"{key}={value!r} is not {what}; write e.g. {key}={1 if kind is int else 0.5}") from None
    if kind is int and not isinstance(value, str) and number != value:
        raise ConfigError(f"{key}={value!r} is not a whole number")
    if not math.isfinite(number):
        raise ConfigError(f"{key}={value!r} must be a finite number")
    if low is not None and number < low:
        raise ConfigError(f"{key} must be >= {_number(low)}, got {number!r}")
    return number


def coerce_values(values: dict, types: dict) -> dict:
    """``values`` with each key named in ``types`` parsed strictly: ``types[key]`` is ``bool``,
    ``int``, ``float`` or ``(int | float, low)``. None (an argument not given) stays None."""
    out = dict(values)
    for key, rule in types.items():
        if key not in out or out[key] is None:
            continue
        kind, low = rule if isinstance(rule, tuple) else (rule, None)
        out[key] = parse_bool(key, out[key]) if kind is bool else parse_number(key, out[key], kind, low)
    return out
