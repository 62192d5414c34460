"""LoRA run directories: an outer adapter plus a record of the base it needs.

``memdlm train --use-lora`` saves only the PEFT adapter (``adapter_config.json``,
``adapter_model.safetensors``); the run directory has no ``config.json`` of its own.
So that every inference path (generate, eval, exposure-bias, lm-eval, reproduce) can
take the run directory like a full run, training also writes ``lora_base.json``:

    {"base": "/abs/path/of/--model" or "base",   # "base": RUN/base, relative to the run
     "built_tiny_default": true/false,
     "trust_remote_code": true/false}

The tiny default is built from scratch and exists nowhere on disk, so its base weights
(frozen under LoRA: the same before and after training) are saved to ``RUN/base/``
before training starts. A real checkpoint is referenced by its absolute path, not
copied (it may be 8B parameters).

Loading (:func:`load_lora_run`, called by :func:`memdlm.backbones.modeling.load_model`):
``RUN/merged/`` if present (written with ``--save-merged-lora``: the base with the
adapter merged in, a plain model directory), else the base plus the adapter, unmerged
(a ``PeftModel``; logits equal those of the trained model in memory exactly). The
unmerged default keeps a run small and needs no extra copy of a large base; the merged
copy is for shipping a run without its base, or for the last bit of sampling speed.
"""

from __future__ import annotations

import json
from pathlib import Path
from memdlm.outputs import write_json_atomic
from memdlm.backbones.shipped import resolve_model
from memdlm.errors import ConfigError

LORA_BASE_FILE = "lora_base.json"
BASE_DIR = "base"  # the tiny default's base weights, inside the run directory
MERGED_DIR = "merged"  # --save-merged-lora


def is_lora_run(path) -> bool:
    """A directory holding a PEFT adapter (and so no full model of its own)."""
    return (Path(path) / "adapter_config.json").is_file()


def write_base_record(out: Path, model_args) -> None:
    """``lora_base.json``: which base the adapter in ``out`` needs."""

    built = model_args.model is None
    # a shipped model's name (``mqar-base``) is recorded as the directory it resolves to
    record = {"base": BASE_DIR if built else str(Path(resolve_model(model_args.model)).resolve()),
              "built_tiny_default": built, "trust_remote_code": bool(model_args.trust_remote_code)}
    write_json_atomic(out / LORA_BASE_FILE, record)


def save_built_base(model, tokenizer, out: Path) -> None:
    """Save the built tiny default (before LoRA wraps it) as ``RUN/base``."""
    model.save_pretrained(out / BASE_DIR)
    tokenizer.save_pretrained(out / BASE_DIR)


def base_path(run: Path) -> Path:
    """The base model directory a LoRA run needs, checked to exist."""

    record_file = run / LORA_BASE_FILE
    if not record_file.is_file():
        raise ConfigError(f"{run} holds a LoRA adapter but no {LORA_BASE_FILE} naming its base model "
                          f"(runs trained before memdlm recorded it): write {record_file} as "
                          '{"base": "/path/to/base/model"}')
    record = json.loads(record_file.read_text())
    base = Path(record["base"])
    base = base if base.is_absolute() else run / base
    if not (base / "config.json").is_file():
        raise ConfigError(f"the LoRA run {run} needs its base model at {base} ({LORA_BASE_FILE}), which "
                          f"is not there: put the base back or point 'base' in {record_file} at it")
    return base


def load_lora_run(run, load, **kwargs):
    """The run's merged copy, else base + adapter. ``load(path, **kwargs)`` loads a full model."""
    run = Path(run)
    merged = run / MERGED_DIR
    if (merged / "config.json").is_file():
        return load(str(merged), **kwargs)
    from peft import PeftModel

    base = load(str(base_path(run)), **kwargs)
    return PeftModel.from_pretrained(base, str(run), is_trainable=False)


def save_merged(model, tokenizer, out: Path) -> None:
    """``RUN/merged``: the adapter merged into the base (in place: call last). ``model`` is the
    PEFT model without DDP wrappers (``modeling.strip_ddp``)."""
    merged = model.merge_and_unload()
    merged.save_pretrained(out / MERGED_DIR)
    tokenizer.save_pretrained(out / MERGED_DIR)
