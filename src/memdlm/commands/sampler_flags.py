"""Command-line flags made from :class:`memdlm.sampling.sampler.SamplerConfig` fields.

The defaults and help texts live in ``SamplerConfig`` only; ``generate`` exposes every
field, ``eval`` the fast-sampling ones (``FAST_SAMPLING_FIELDS``).
"""

from __future__ import annotations

import argparse
import typing
from dataclasses import fields

FAST_SAMPLING_FIELDS = ("unmask_rule", "threshold", "max_per_step", "cache")


def _parse_bool(text: str) -> bool:
    return text.lower() in ("1", "true", "yes")


def add_sampler_flags(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None) -> None:
    """Add ``--field-name`` for each SamplerConfig field (``names``: only those)."""
    from memdlm.sampling.sampler import SamplerConfig

    defaults = SamplerConfig()
    hints = typing.get_type_hints(SamplerConfig)
    for f in fields(SamplerConfig):
        if names is not None and f.name not in names:
            continue
        default = getattr(defaults, f.name)
        kwargs = dict(default=default, help=f.metadata.get("help", ""))
        if typing.get_origin(hints[f.name]) is typing.Literal:
            kwargs.update(type=str, choices=list(typing.get_args(hints[f.name])))
        elif isinstance(default, bool):
            kwargs["type"] = _parse_bool
        elif default is not None:
            kwargs["type"] = type(default)
        else:  # an optional number: its type from the annotation (threshold: float, block_length: int)
            kwargs["type"] = float if float in typing.get_args(hints[f.name]) else int
        parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)


def sampler_values(args: argparse.Namespace, names: tuple[str, ...] | None = None) -> dict:
    """The parsed values of the flags :func:`add_sampler_flags` added."""
    from memdlm.sampling.sampler import SamplerConfig

    return {f.name: getattr(args, f.name) for f in fields(SamplerConfig) if names is None or f.name in names}
