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
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = p.read_text()
    if p.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option names to values")
    return {k.replace("-", "_"): v for k, v in data.items()}


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
                        help="Continue from the newest complete checkpoint in --output-dir.")
    if known.config:
        values = load_config_file(known.config)
        valid = {f.name for cls in classes for f in fields(cls)}
        unknown = sorted(set(values) - valid)
        if unknown:
            raise ConfigError(f"{known.config}: unknown option(s) {unknown}")
        parser.set_defaults(**values)
    # Five dataclasses, then a namespace with the two extra flags (--config, --resume).
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
