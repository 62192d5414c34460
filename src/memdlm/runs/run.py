"""A run as one object: its model, tokenizer, resolved settings and prompt memory.

    run = Run.load("runs/tiny-mem")              # model, tokenizer and run_config.json
    memory = run.memory()                        # adaptation with the run's own settings
    memory = run.memory(adapt_mask_ratio=0.3)    # ... one of them overridden, explicitly
    texts = generate(run.model, run.tokenizer, prompts, config, memory=memory)

Every inference path takes its prompt memory from here -- ``memdlm generate --memory``,
the evaluation suite (``memdlm eval``), the exposure-bias analysis, the lm-eval model,
the retrieval probe, the trainer's held-out evaluation and the benchmarks -- so each
adapts with the targets, rank and inner loop the run was trained with, as
inference-time adaptation must. An override is a keyword the caller names; ``None`` means
"the run's own value", and :meth:`PromptMemory.record` says which settings were used and
which were overridden, for the outputs to store.

The directory contract (identity, finished or not) is :mod:`memdlm.runs.directory`'s; loading
a LoRA run as base plus adapter is :mod:`memdlm.backbones.lora`'s (through
:func:`memdlm.backbones.modeling.load_model`); a shipped model's name resolves as in
:mod:`memdlm.backbones.shipped`. A plain model directory (no ``run_config.json``) is a run with
no saved settings: its memory uses the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from memdlm.config import DataArguments, DiffusionArguments, ModelArguments
from memdlm.errors import ConfigError
from memdlm.memory.builder import RESOLVED_PART, ResolvedMemory, resolve_memory
from memdlm.memory.config import ADAPTATION_FIELDS, TRAINING_ONLY_FIELDS, MemoryArguments, adaptation_part
from memdlm.runs.directory import CONFIG_FILE
from memdlm.runs.placement import resolve_device, resolve_dtype
from memdlm.backbones.modeling import load_model
from memdlm.backbones.shipped import resolve_model
from memdlm.backbones.tokenizer import load_tokenizer, reconcile_mask_token
from memdlm.memory.adapt import PromptMemory


def read_run_config(path) -> dict:
    """``run_config.json`` of a run directory; ``{}`` for a plain model directory."""
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        return {}
    import json

    try:
        config = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"{file} is not valid JSON ({err}): restore it from the run (a checkpoint's copy "
                          "will not do: it is written only here), or remove it to use the directory as a "
                          "plain model") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{file} is not a JSON object of settings: restore it from the run, or "
                          "remove it to use the directory as a plain model")
    return config


def _part(cls, saved: dict | None, name: str = "", where: Path | None = None):
    """``cls`` from a saved part; settings this version does not know are left out. A value the
    dataclass refuses is blamed on the file that holds it, not on a flag nobody passed."""
    if saved is None:
        return None
    if not isinstance(saved, dict):
        raise ConfigError(f"{_config_file(where)}: its '{name}' part is not a JSON object; restore the file")
    known = {f.name for f in fields(cls)}
    try:
        return cls(**{k: v for k, v in saved.items() if k in known})
    except (ConfigError, TypeError) as err:
        raise ConfigError(f"{_config_file(where)}: a '{name}' setting cannot be used ({err}); the file was "
                          "edited or written by another memdlm version: restore the value the run was "
                          "trained with") from None


def _config_file(where: Path | None) -> str:
    return str(where / CONFIG_FILE) if where is not None else CONFIG_FILE


@dataclass
class Run:
    """A model and tokenizer with the settings they were trained with.

    ``config`` is ``run_config.json`` as saved (``{}`` for a plain model). Its parts are
    ``model_args``, ``data_args``, ``diffusion_args`` (None when not saved),
    ``memory_args`` (the defaults when not saved), ``resolved_memory`` (the rank, alpha, scale
    and target names training resolved; None for runs saved before they were, and MDLM runs)
    and ``train_args`` (a dict: the part is transformers' ``TrainingArguments``, which sets up
    devices when built).
    """

    model: Any
    tokenizer: Any
    path: Path | None = None
    config: dict = field(default_factory=dict)

    def __post_init__(self):
        self.path = Path(self.path) if self.path is not None else None
        parts = {name: _part(cls, self.config.get(name), name, self.path) for name, cls in
                 (("model", ModelArguments), ("data", DataArguments), ("diffusion", DiffusionArguments),
                  ("memory", MemoryArguments))}
        self.model_args, self.data_args, self.diffusion_args = parts["model"], parts["data"], parts["diffusion"]
        self.memory_args = parts["memory"] or MemoryArguments()
        saved = self.config.get(RESOLVED_PART)
        self.resolved_memory = (None if saved is None else
                                ResolvedMemory.from_dict(saved, f"{_config_file(self.path)}: '{RESOLVED_PART}'"))
        self.train_args = dict(self.config.get("train") or {})

    @classmethod
    def load(cls, path, trust_remote_code: bool = False, dtype=None, device=None) -> Run:
        """The run (or model) directory ``path``, or a shipped model's name, in eval mode."""

        resolved = resolve_model(str(path))
        config = read_run_config(resolved)  # a broken file fails before minutes of loading
        cls(None, None, Path(resolved), config)  # ... and so does a value in it
        tokenizer = load_tokenizer(resolved, trust_remote_code)
        model = load_model(resolved, trust_remote_code, dtype=dtype)
        reconcile_mask_token(model, tokenizer, resolved)
        if device is not None:
            model.to(device)
        model.eval()
        return cls(model, tokenizer, Path(resolved), config)

    def memory(self, **overrides):
        """The prompt memory (:class:`~memdlm.memory.adapt.PromptMemory`) with this run's
        adaptation settings; each keyword that is not None overrides the setting it names.
        It adapts with the run's saved rank, scale and targets (``memory_resolved``) unless an
        override changes what they derive from (``memory.builder.RANK_FIELDS`` / ``TARGET_FIELDS``)."""

        given = {k: v for k, v in overrides.items() if v is not None}
        training_only = sorted(set(given) & set(TRAINING_ONLY_FIELDS))
        if training_only:
            raise ValueError(f"{training_only}: training-only memory settings, which inference-time adaptation "
                             "does not read (it always adapts one memory per prompt, uniformly weighted)")
        unknown = sorted(set(given) - set(ADAPTATION_FIELDS))
        if unknown:
            raise ValueError(f"unknown memory settings {unknown}; see memdlm.memory.config.AdaptationArguments")
        settings = replace(adaptation_part(self.memory_args), **given)
        resolved = None
        if self.resolved_memory is not None:
            resolved = resolve_memory(self.model, settings, self.resolved_memory, self.memory_args)
        return PromptMemory(self.model, self.tokenizer, settings, given, resolved)


def load_run(path, args) -> Run:
    """:meth:`Run.load` as the inference commands do: on ``args.device`` in ``args.dtype``
    (:mod:`memdlm.runs.placement`), remote code as ``args.trust_remote_code`` allows."""

    return Run.load(path, getattr(args, "trust_remote_code", False), dtype=resolve_dtype(args.dtype),
                    device=resolve_device(args.device))


__all__ = ["Run", "load_run", "read_run_config"]
