"""MemDLM memory settings (the paper's bi-level memory: targets, rank, inner SGD,
simulated trajectory). Defaults are the paper's.

Three parts, each field written once (docs/ARCHITECTURE.md, "The memory settings' life"):

    InnerLoopArguments     what training and inference-time adaptation both read
      AdaptationArguments  + the prompt's anchor ratio: what a prompt memory needs
        MemoryArguments    + training-only settings: what ``memdlm train`` parses and a
                           run's ``run_config.json`` holds (its ``memory`` part)

The inference commands take every ``AdaptationArguments`` field as an override flag
(:func:`add_adaptation_flags`, read back by :func:`adaptation_overrides`); a run's own
values are the default.

Each choice-valued field maps to one small strategy class, looked up by name in its
registry (``trajectories.TRAJECTORY_CLASSES``, ``inner_losses.INNER_LOSS_CLASSES``,
``fast_weights.CLIPPERS``); the field's ``Literal`` is where the names are written, and
``tests/test_choices.py`` checks it against the registry. The table in docs/MEMDLM.md
lists the paper's score for each variant.
"""

from __future__ import annotations

import argparse
import typing
from dataclasses import dataclass, field, fields
from typing import Literal

from memdlm.config import field_default
from memdlm.errors import ConfigError
from memdlm.validation import check_choices, check_range, flag, literal_choices, parse_bool


@dataclass
class InnerLoopArguments:
    """The inner loop's settings, shared by training and inference-time adaptation: which
    modules get fast weights, their rank and scale, the inner SGD and the trajectory."""

    memory_rank: int | None = field(default=None, metadata={
        "help": "Fast-weight rank. Default: the paper's 1.6 percent of the width (32 at width 2048), at least 1 "
                "-- rank 2 for the tiny default. The paper's absolute setting is 32."})
    memory_alpha: float | None = field(default=None, metadata={
        "help": "LoRA alpha of the fast weights; scale = alpha / rank. Default 2 x rank (paper: 64 / 32)."})
    memory_dense: bool = field(default=False, metadata={
        "help": "Dense full-rank deltas instead of low-rank (the paper's 'Full Param.' ablation)."})
    memory_scope: Literal["ffn", "ffn_attn"] = field(default="ffn", metadata={
        "help": "Modules that get fast weights: the FFN projections, or FFN and attention projections."})
    memory_layer_fraction: float = field(default=0.1, metadata={
        "help": "Adapt the last fraction of layers: first adapted layer = floor(L * (1 - f)), at least "
                "one layer (paper: 0.1)."})
    memory_target_modules: str | None = field(default=None, metadata={
        "help": "A regex over module names that overrides --memory_scope/--memory_layer_fraction."})
    inner_lr: float = field(default=0.1, metadata={"help": "Inner SGD learning rate (paper: 0.1)."})
    inner_clip: Literal["per_param", "global", "none"] = field(default="per_param", metadata={
        "help": "Inner gradient clipping: each fast-weight tensor on its own (paper), all of a memory's "
                "tensors together (global), or none."})
    inner_clip_norm: float = field(default=1.0, metadata={"help": "Inner clipping threshold (paper: 1.0)."})
    trajectory: Literal["anchor_consistent", "progressive", "pre_anchor_only", "anchor_only"] = field(
        default="anchor_consistent", metadata={
            "help": "Simulated trajectory: anchor-consistent pre-anchor stages then anchor-to-target "
                    "(paper); progressive = the reference's fixed ratios 0.8..0.2 independent of the "
                    "anchor; or only one of the two parts."})
    pre_anchor_steps: int = field(default=1, metadata={
        "help": "Pre-anchor SGD steps (K - 1; paper default 1, i.e. K = 2)."})
    pre_anchor_scale: float = field(default=1.5, metadata={
        "help": "Pre-anchor masked fraction = min(1, max(scale * r, r)), r = the anchor's realised "
                "masked fraction (paper: 1.5)."})
    pre_anchor_target: Literal["broad", "anchor_tokens"] = field(default="broad", metadata={
        "help": "Pre-anchor loss on every masked position of the noisier state (broad, paper) or only on "
                "the tokens the anchor reveals."})
    inner_loss: Literal["ce", "kl", "reverse_kl", "hidden_mse", "hidden_cosine"] = field(
        default="ce", metadata={
            "help": "Inner loss: cross-entropy to the clean tokens (paper), KL / reverse KL to a no-grad "
                    "teacher on the next, less-masked state, or MSE / cosine of the last hidden state."})
    loss_positions: Literal["masked", "revealed"] = field(default="masked", metadata={
        "help": "Inner loss on all masked positions of the student state, or only on those the next "
                "state reveals."})
    progressive_ratios: list[float] = field(default_factory=lambda: [0.8, 0.2], metadata={
        "help": "Masked fractions of the 'progressive' trajectory's stages, noisiest first."})

    def __post_init__(self):
        check_choices(self)
        check_range(self, "memory_rank", 1, optional=True)
        check_range(self, "memory_alpha", 0, low_open=True, optional=True)
        check_range(self, "inner_clip_norm", 0, low_open=True)
        check_range(self, "progressive_ratios", 0, 1, low_open=True)
        check_range(self, "inner_lr", 0)
        if self.pre_anchor_steps < 1:
            raise ConfigError("pre_anchor_steps must be >= 1")
        if self.pre_anchor_scale < 1:
            raise ConfigError("pre_anchor_scale must be >= 1 (the pre-anchor state is noisier)")
        if not 0 < self.memory_layer_fraction <= 1:
            raise ConfigError("memory_layer_fraction must be in (0, 1]")

    def rank_for(self, hidden_size: int) -> int:
        if self.memory_rank is not None:
            return self.memory_rank
        return max(1, min(32, round(hidden_size * 32 / 2048)))

    def alpha_for(self, hidden_size: int) -> float:
        return self.memory_alpha if self.memory_alpha is not None else 2.0 * self.rank_for(hidden_size)

    def scale_for(self, hidden_size: int) -> float:
        return 1.0 if self.memory_dense else self.alpha_for(hidden_size) / self.rank_for(hidden_size)


@dataclass
class AdaptationArguments(InnerLoopArguments):
    """What a prompt memory (inference-time adaptation) needs: the inner loop's settings and
    the prompt's anchor. Every field is an inference override (:func:`add_adaptation_flags`)."""

    adapt_mask_ratio: float = field(default=0.2, metadata={
        "help": "Inference-time adaptation: fraction of the prompt masked as the anchor (paper: 0.2)."})

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.adapt_mask_ratio <= 1:
            raise ConfigError("adapt_mask_ratio must be in (0, 1]")


@dataclass
class MemoryArguments(AdaptationArguments):
    """Parametric memory: fast weights written by an inner SGD loop (a training run's settings:
    the adaptation's, which the run keeps for inference, plus the training-only ones)."""

    memory_mode: Literal["shared", "per_sample"] = field(default="shared", metadata={
        "help": "Training: one fast-weight set per batch (shared, the reference's behaviour and the "
                "paper's numbers) or one per sample (per_sample: invariant to batch size, accumulation "
                "and ranks, but can memorise short answers -- see docs/MEMDLM.md). Inference always "
                "adapts per prompt."})
    shared_memory_ranks: Literal["local", "average"] = field(default="local", metadata={
        "help": "Batch-shared memory under several processes: each rank writes its own memory from its "
                "micro-batch (local), or the inner gradient is averaged over the ranks, weighted by each "
                "rank's share of the loss (average: the reference's behaviour; every rank writes the one "
                "memory a single process writes for the global batch). Ignored for per_sample memory."})
    inner_weighting: Literal["scheduler", "uniform"] = field(default="scheduler", metadata={
        "help": "Inner-loss weight in training: w at each stage's realised masked fraction (reference) "
                "or 1. Inference-time adaptation always uses 1."})
    absorption_warn: float = field(default=0.05, metadata={
        "help": "Warn when the anchor loss with memory falls below this fraction of the loss without "
                "memory (the memory is absorbing the answer; see docs/MEMDLM.md)."})

    def __post_init__(self):
        super().__post_init__()
        check_range(self, "absorption_warn", 0)


def field_names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


# run_config.json's part holding the memory training resolved (memory.builder.ResolvedMemory)
RESOLVED_PART = "memory_resolved"
ADAPTATION_FIELDS = field_names(AdaptationArguments)  # the inference overrides
TRAINING_ONLY_FIELDS = tuple(n for n in field_names(MemoryArguments) if n not in ADAPTATION_FIELDS)


def adaptation_part(settings) -> AdaptationArguments:
    """The adaptation fields of ``settings`` (a ``MemoryArguments`` or ``AdaptationArguments``)."""
    return AdaptationArguments(**{name: _copy(getattr(settings, name)) for name in ADAPTATION_FIELDS})


def _copy(value):
    return list(value) if isinstance(value, list) else value


# --- the inference override flags, generated from the fields ---------------------------------

OVERRIDE_NOTE = "Inference override; default: the run's own setting (a plain model's: {default})."


def _field_kind(cls, f) -> tuple[type, bool]:
    """(the scalar type of field ``f``, whether it is a list)."""
    hint = typing.get_type_hints(cls)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is list:
        return args[0], True
    if args and typing.get_origin(hint) is not Literal:  # X | None
        return args[0], False
    return (str if typing.get_origin(hint) is Literal else hint), False


def override_help(f) -> str:
    """A field's help text with what an override's absence means."""
    default = field_default(AdaptationArguments, f.name)
    return f"{f.metadata['help']} {OVERRIDE_NOTE.format(default='derived' if default is None else default)}"


def add_adaptation_flags(parser: argparse.ArgumentParser, title: str = "memory overrides (inference-time "
                         "adaptation)") -> None:
    """One flag per ``AdaptationArguments`` field (``--adapt-mask-ratio``, ``--inner-lr``,
    ``--memory-rank``, ...), default None: the run's own value. Typed and described from the field."""
    group = parser.add_argument_group(title)
    for f in fields(AdaptationArguments):
        kind, is_list = _field_kind(AdaptationArguments, f)
        kwargs = {"default": None, "help": override_help(f), "dest": f.name}
        if typing.get_origin(typing.get_type_hints(AdaptationArguments)[f.name]) is Literal:
            kwargs["choices"] = list(literal_choices(AdaptationArguments, f.name))
        elif kind is bool:
            kwargs.update(type=lambda v, name=f.name: parse_bool(flag(name), v), metavar="BOOL")
        else:
            kwargs["type"] = kind
        if is_list:
            kwargs["nargs"] = "+"
        group.add_argument(flag(f.name), **kwargs)


def adaptation_overrides(args: argparse.Namespace, adapting: bool = True, how: str = "") -> dict:
    """The override flags given on the command line (``add_adaptation_flags``), by field name.
    ``adapting`` False (no memory is adapted: ``how`` says how to ask for one) with an override
    given is an error: a setting is never silently ignored."""
    given = {name: getattr(args, name) for name in ADAPTATION_FIELDS if getattr(args, name, None) is not None}
    if given and not adapting:
        raise ConfigError(f"{', '.join(map(flag, given))}: memory overrides, but nothing adapts a memory"
                          + (f" ({how})" if how else ""))
    return given


def adaptation_arg_types() -> dict:
    """``validation.coerce_values`` types of the scalar numeric and boolean adaptation fields (the
    lm-eval model's arguments); choice and text fields stay strings, checked by the dataclass."""
    out = {}
    for f in fields(AdaptationArguments):
        kind, is_list = _field_kind(AdaptationArguments, f)
        if not is_list and kind in (bool, int, float):
            out[f.name] = kind
    return out
