"""A training run's options: the five configuration dataclasses as one ``TrainingSetup``.

Two ways in, one result:

- ``parse(argv)``: ``memdlm train`` flags and ``--config`` files, through
  ``transformers.HfArgumentParser`` (each field's ``help`` is its ``--help`` text). A
  config file's values become flags, so they are parsed and checked exactly as typed
  flags are, and its mistakes are named by file.
- ``setup_from_options(options)``: Python callers (the reproduction's cells) name the
  fields they set and get the dataclasses built directly, the rest at their defaults;
  the same setup a config file holding those values gives (tested).

The choice lists the dataclasses cannot write into their help (they live below the
registries: tasks, shipped from-scratch configs) are appended here from the registries.
"""

from __future__ import annotations

import argparse
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from memdlm.errors import ConfigError
from memdlm.config import DataArguments, DiffusionArguments, ModelArguments
from memdlm.memory.config import MemoryArguments
from memdlm.training.args import TrainConfig
from memdlm.backbones.modeling import init_configs
from memdlm.tasks import task_names
from memdlm.config import resolve_threads
from memdlm.data.formats import read_utf8


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults and keeps the examples in the description as written."""


@dataclass
class TrainingSetup:
    model: object  # config.ModelArguments
    data: object  # config.DataArguments
    diffusion: object  # config.DiffusionArguments
    memory: object  # memory.config.MemoryArguments
    train: object  # training.args.TrainConfig
    threads: int | None  # None: the caller's torch thread setting stands (train never changes it)


def option_classes() -> tuple:
    """The dataclasses a training run is configured by, in ``TrainingSetup`` order."""

    return (ModelArguments, DataArguments, DiffusionArguments, MemoryArguments, TrainConfig)


def _registry_lists() -> dict[str, tuple[str, list[str]]]:
    """Field name -> (label, names) for the fields whose valid names live in a registry."""

    return {"tasks": ("Registered tasks", task_names()), "init_config": ("Shipped configs", init_configs())}


def _setup(model, data, diffusion, memory, train) -> TrainingSetup:

    if train.output_dir in (None, "trainer_output"):
        raise ConfigError("--output-dir is required (the run directory)")
    # None stays None: train() then keeps the caller's torch thread setting (memdlm train applies
    # the default itself); an explicit value is checked here, before any run file is touched.
    threads = None if train.threads is None else resolve_threads(train.threads)
    return TrainingSetup(model, data, diffusion, memory, train, threads)


# --- from flags and config files (memdlm train) --------------------------------------------


def load_config_file(path: str) -> dict:
    """The option names and values of a YAML or JSON config file (one-line errors for an
    unreadable, non-UTF-8 or malformed file)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {path} does not exist" + (" (it is a directory)" if p.is_dir() else ""))

    text = read_utf8(p, what="config file")
    if p.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.load(text, Loader=_unique_key_loader(yaml, path)) or {}  # noqa: S506 -- a SafeLoader
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"config file {path} is not valid YAML{where}: "
                              f"{getattr(err, 'problem', None) or err}") from None
    else:
        try:
            data = json.loads(text, object_pairs_hook=lambda pairs: _unique_keys(pairs, path))
        except json.JSONDecodeError as err:
            raise ConfigError(f"config file {path} is not valid JSON at line {err.lineno}, "
                              f"column {err.colno}: {err.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option names to values")
    return _unique_keys([(str(k).replace("-", "_"), v) for k, v in data.items()], path)


def _unique_keys(pairs, path) -> dict:
    """A mapping from key/value pairs; a key given twice (``max_steps`` and ``max-steps`` count
    as one) is an error -- YAML and JSON would silently keep the last."""
    seen: dict = {}
    for key, value in pairs:
        name = str(key).replace("-", "_")
        if name in {str(k).replace("-", "_") for k in seen}:
            raise ConfigError(f"config file {path} sets {key!r} twice; keep one of them")
        seen[key] = value
    return seen


def _unique_key_loader(yaml, path):
    """yaml.SafeLoader refusing a key given twice in one mapping."""
    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            self.flatten_mapping(node)
            keys = [(self.construct_object(k, deep=deep), k.start_mark.line + 1) for k, _ in node.value]
            names = [str(k).replace("-", "_") for k, _ in keys]
            for (key, line), name in zip(keys, names):
                if names.count(name) > 1:
                    raise ConfigError(f"config file {path} sets {key!r} twice (line {line} and "
                                      f"{max(ln for (k, ln), n in zip(keys, names) if n == name)}); keep one of them")
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def config_to_argv(values: dict) -> tuple[list[str], dict]:
    """Config-file values as flags, so that they are parsed (types, choices) exactly as typed
    flags are; ``None`` values, which no flag can spell, are returned apart as defaults."""
    argv: list[str] = []
    nulls = {}
    for name, value in values.items():
        if value is None:
            nulls[name] = None
            continue
        if isinstance(value, list):
            argv += [f"--{name}", *map(_as_flag_value, value)]
        else:  # --name=value: a value such as -1e-07 must not read as a flag
            argv.append(f"--{name}={_as_flag_value(value)}")
    return argv, nulls


def _as_flag_value(item) -> str:
    if isinstance(item, bool):
        return "true" if item else "false"
    return json.dumps(item) if isinstance(item, dict) else str(item)


class _RaisingParser:
    """Makes ``parser.error`` raise ConfigError (with a prefix) instead of printing usage and
    exiting, so config-file mistakes are named by file."""

    def __init__(self, parser, prefix: str):
        self.parser, self.prefix = parser, prefix

    def __enter__(self):
        def error(message):
            raise ConfigError(f"{self.prefix}{message}")

        self.parser.error = error
        return self.parser

    def __exit__(self, *exc):
        del self.parser.error  # back to the class's method
        return False


def build_parser(prog: str = "memdlm train", description: str | None = None):
    """The ``HfArgumentParser`` over :func:`option_classes`, plus ``--config`` and ``--resume``."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(option_classes(), prog=prog, description=description,
                              formatter_class=HelpFormatter)
    parser.add_argument("--config", help="YAML or JSON file of options; flags override it.")
    parser.add_argument("--resume", action="store_true",
                        help="Continue the run in --output-dir from its newest complete checkpoint (same settings; "
                             "the schedule -- learning rate, max steps, warmup -- may change).")
    parser.add_argument("--dry-run", action="store_true",
                        help="Print what the run would hold -- memory targets, LoRA and fast-weight counts, peak "
                             "memory per device -- and stop (memdlm plan); nothing is loaded or written.")
    lists = _registry_lists()
    for action in parser._actions:  # argparse has no public way to reach an added option's help
        if action.dest in lists:
            label, names = lists[action.dest]
            action.help = f"{action.help} {label}: {', '.join(names)}."
    return parser


def parse(argv: list[str], prog: str = "memdlm train",
          description: str | None = None) -> tuple[TrainingSetup, bool]:
    """``memdlm train`` flags (and a ``--config`` file) as a setup, and whether to resume."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    parser = build_parser(prog, description)
    if known.config:
        values = load_config_file(known.config)
        valid = {f.name for cls in option_classes() for f in fields(cls)}
        unknown = sorted(set(values) - valid)
        if unknown:
            raise ConfigError(f"{known.config}: unknown option(s) {unknown}")
        from_file, nulls = config_to_argv(values)
        with _RaisingParser(parser, f"config file {known.config}: ") as checking:
            checking.parse_known_args(from_file)  # types and choices, named by the file
        parser.set_defaults(**nulls)
        argv = from_file + list(argv)  # flags come later, so they override the file
    # Five dataclasses, then a namespace with the extra flags (--config, --resume).
    try:
        model, data, diffusion, memory, train, extra = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as err:  # unknown flags, invalid values: name them, in one line
        raise ConfigError(str(err)) from None
    return _setup(model, data, diffusion, memory, train), bool(getattr(extra, "resume", False))


# --- from Python values (reproduce) ---------------------------------------------------------


def setup_from_options(options: Mapping) -> TrainingSetup:
    """A setup from field names and values (``{"max_steps": 400, "tasks": ["kv"], ...}``):
    each dataclass built directly, with its own checks; unnamed fields keep their defaults.

    An int given to a float field becomes a float, as the flag parser's ``type=float``
    makes it, so ``run_config.json`` is the same as from a config file with these values.
    """
    classes = option_classes()
    owner = {f.name: cls for cls in classes for f in fields(cls) if f.init}
    unknown = sorted(set(options) - set(owner))
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown}")
    parts = []
    for cls in classes:
        hints = typing.get_type_hints(cls)
        parts.append(cls(**{name: _as_field_type(hints[name], value)
                            for name, value in options.items() if owner[name] is cls}))
    return _setup(*parts)


def _as_field_type(hint, value):
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if hint is float or (len(args) == 1 and args[0] is float and typing.get_origin(hint) is not list):
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if typing.get_origin(hint) is list and args == [float] and isinstance(value, (list, tuple)):
        return [_as_field_type(float, v) for v in value]
    return value
