"""``memdlm train``: Standard MDLM or MemDLM training.

Examples:

    # tiny default on a CPU (about 5 minutes), then held-out key-value accuracy
    memdlm train --method mdlm --output-dir runs/tiny
    # MemDLM with the paper's inner loop
    memdlm train --method memdlm --output-dir runs/tiny-mem
    # a config file, with flags overriding it
    memdlm train --config configs/tiny.yaml --max-steps 200
    # your own data (prompt/response, Alpaca, messages or text rows)
    memdlm train --data data.jsonl --model path/to/dlm --use-lora --learning-rate 2e-5
    # two processes (DDP over gloo on a CPU, NCCL on GPUs)
    torchrun --nproc_per_node 2 -m memdlm.cli train --output-dir runs/ddp
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, fields
from pathlib import Path

from memdlm.errors import ConfigError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults and keeps the examples in the description as written."""


@dataclass
class TrainingSetup:
    model: object
    data: object
    diffusion: object
    memory: object
    train: object
    threads: int


def _parser_classes():
    from memdlm.config import DataArguments, DiffusionArguments, ModelArguments
    from memdlm.memory.config import MemoryArguments
    from memdlm.training.args import TrainConfig

    return (ModelArguments, DataArguments, DiffusionArguments, MemoryArguments, TrainConfig)


def load_config_file(path: str) -> dict:
    """The option names and values of a YAML or JSON config file (one-line errors for an
    unreadable, non-UTF-8 or malformed file)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {path} does not exist" + (" (it is a directory)" if p.is_dir() else ""))
    from memdlm.data.formats import read_utf8

    text = read_utf8(p, what="config file")
    if p.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"config file {path} is not valid YAML{where}: "
                              f"{getattr(err, 'problem', None) or err}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"config file {path} is not valid JSON at line {err.lineno}, "
                              f"column {err.colno}: {err.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


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


def parse(argv: list[str], prog: str = "memdlm train") -> tuple[TrainingSetup, bool]:
    from transformers import HfArgumentParser

    from memdlm.config import default_threads

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, rest = pre.parse_known_args(argv)
    classes = _parser_classes()
    parser = HfArgumentParser(classes, prog=prog, description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--config", help="YAML or JSON file of options; flags override it.")
    parser.add_argument("--resume", action="store_true",
                        help="Continue the run in --output-dir from its newest complete checkpoint (same settings; "
                             "the schedule -- learning rate, max steps, warmup -- may change).")
    if known.config:
        values = load_config_file(known.config)
        valid = {f.name for cls in classes for f in fields(cls)}
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
    if train.output_dir in (None, "trainer_output"):
        raise ConfigError("--output-dir is required (the run directory)")
    threads = train.threads or default_threads()
    return TrainingSetup(model, data, diffusion, memory, train, threads), bool(getattr(extra, "resume", False))


def run(argv: list[str], prog: str = "memdlm train") -> int:
    from memdlm.training.run import train

    setup, resume = parse(argv, prog)
    summary = train(setup, resume=resume)
    print(json.dumps(summary, indent=2))
    return 0
