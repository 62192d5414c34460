"""Choice and range checks shared by the configuration dataclasses.

A value reaches a dataclass from a flag, a config file or Python code; every
dataclass calls these from its ``__post_init__``, so each path is checked the same
way. Errors are ``ConfigError`` naming the option as its flag.
"""

from __future__ import annotations

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
    ``optional`` lets None through (its documented default)."""
    for name in names.split():
        value = getattr(obj, name)
        for v in (value if isinstance(value, (list, tuple)) else [value]):
            if v is None and optional:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"{flag(name)} must be a number, got {v!r}")
            if (low is not None and (v <= low if low_open else v < low)) or \
                    (high is not None and (v >= high if high_open else v > high)):
                raise ConfigError(f"{flag(name)} must be {_rule(low, high, low_open, high_open)}, got {v!r}")


def _rule(low, high, low_open, high_open) -> str:
    if high is None:
        return f"{'>' if low_open else '>='} {low:g}"
    if low is None:
        return f"{'<' if high_open else '<='} {high:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
