"""Which modules get fast weights: chosen from data (names, layer indices), PEFT-style.

Default (the MemDLM paper's setting): the FFN projections of the last ``fraction``
of layers, first adapted layer ``floor(L * (1 - fraction))`` and at least one layer.
FFN and attention names per family live in the backbone table (``memdlm.backbones.families``);
``--memory_target_modules`` (a regex over module names) overrides the table for
anything else.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch.nn as nn

from memdlm.backbones.families import family_of
from memdlm.backbones.checkpointing import BLOCK_LIST_NAMES
from memdlm.config import field_default
from memdlm.errors import ConfigError
from memdlm.memory.config import InnerLoopArguments
from memdlm.memory.expert_lists import expert_list_blocks
from memdlm.memory.experts import fused_expert_params, num_experts
from memdlm.backbones.modeling import unwrap

LAYER_PATTERN = re.compile(r"\.(?:" + "|".join(BLOCK_LIST_NAMES) + r")\.(\d+)\.")
# Module-name parts that wrappers insert (FSDP1, activation checkpointing, torch.compile): a
# target's saved name leaves them out, with DDP's leading ``module.`` and PEFT's ``base_model.model.``.
WRAPPER_PARTS = frozenset({"_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod"})


@dataclass(frozen=True)
class Target:
    name: str
    module: nn.Module
    layer: int
    in_features: int
    out_features: int
    # "linear": an nn.Linear (or its PEFT wrapper), hooked on its output. "expert": one
    # projection (``param``) of one expert (``expert``) of a fused MoE experts module
    # (memdlm.memory.experts), applied inside the experts computation.
    kind: str = "linear"
    param: str | None = None
    expert: int | None = None
    # the MoE block owning the expert list this linear layer is part of (LLaDA-MoE / LLaDA2
    # style experts; memdlm.memory.expert_lists maps its rows to memory slots), else None
    block: nn.Module | None = None


def expert_targets(name: str, module: nn.Module, layer: int) -> list[Target]:
    """One target per (expert, projection) of a fused experts module, expert-major."""
    params = fused_expert_params(module)
    if params is None:
        raise ValueError(f"{name}: not a fused experts module")
    if getattr(module, "has_post_expert_norm", False) and not hasattr(module, "post_expert_norm"):
        raise ValueError(f"{name}: post-expert norm without a post_expert_norm module")
    return [Target(f"{name}.{param}.{e}", module, layer, in_f, out_f, kind="expert", param=param, expert=e)
            for e in range(num_experts(module)) for param, in_f, out_f in params]


def target_suffixes(model: nn.Module, scope: str) -> tuple[str, ...]:
    """Module-name suffixes of the projections ``scope`` adapts, from the model's family entry."""
    family = family_of(getattr(unwrap(model), "config", None))
    return family.ffn + (family.attn if scope == "ffn_attn" else ())


def linear_of(module: nn.Module) -> nn.Linear | None:
    """The nn.Linear behind a module (itself, or a PEFT wrapper's ``base_layer``)."""
    base = getattr(module, "base_layer", module)
    return base if isinstance(base, nn.Linear) else None


def num_layers(model: nn.Module) -> int:
    layers = {int(m.group(1)) for name, _ in model.named_modules() if (m := LAYER_PATTERN.search(name + "."))}
    if not layers:
        raise ValueError(f"{type(model).__name__}: no numbered layers found (expected '.layers.N.')")
    return max(layers) + 1


def first_adapted_layer(n_layers: int, fraction: float) -> int:
    """floor(L * (1 - fraction)), but never past the last layer (at least one adapted)."""
    return min(n_layers - 1, math.floor(n_layers * (1 - fraction) + 1e-9))


def _ends_with_any(name: str, suffixes) -> bool:
    return any(name == s or name.endswith("." + s) for s in suffixes)


def _is_attention_module(name: str) -> bool:
    return ".attn." in name or ".attention." in name or ".self_attn." in name


def canonical_name(name: str) -> str:
    """A module's name without wrapper prefixes: the same for the model trained (PEFT-wrapped,
    under DDP) and the model loaded for inference (base + adapter, or merged)."""
    parts = [p for p in name.split(".") if p not in WRAPPER_PARTS]
    while parts[:1] == ["module"]:
        parts = parts[1:]
    if parts[:2] == ["base_model", "model"]:
        parts = parts[2:]
    return ".".join(parts)


def targets_for(model: nn.Module, settings) -> list[Target]:
    """The targets ``settings`` (an ``InnerLoopArguments``) choose: scope and layer fraction, or the regex."""
    return find_targets(model, settings.memory_scope, settings.memory_layer_fraction, settings.memory_target_modules)


def find_targets(model: nn.Module, scope: str = field_default(InnerLoopArguments, "memory_scope"),
                 fraction: float = field_default(InnerLoopArguments, "memory_layer_fraction"),
                 pattern: str | None = None) -> list[Target]:
    """Linear modules that get fast weights, in module order. Raises if none match."""
    n_layers = num_layers(model)
    first = first_adapted_layer(n_layers, fraction)
    suffixes = target_suffixes(model, scope)
    try:
        regex = re.compile(pattern) if pattern else None
    except re.error as err:
        raise ConfigError(f"--memory_target_modules {pattern!r} is not a valid regex: {err}") from None
    targets = []
    for name, module in model.named_modules():
        if fused_expert_params(module) is not None:  # MoE experts: fused 3-D parameters
            m = LAYER_PATTERN.search(name + ".")
            layer = int(m.group(1)) if m else -1
            if regex is not None:
                wanted = regex.search(name) or any(regex.search(f"{name}.{p}") for p, _, _ in fused_expert_params(module))
            else:
                wanted = m is not None and layer >= first
            if wanted:
                targets.extend(expert_targets(name, module, layer))
            continue
        linear = linear_of(module)
        if linear is None or name.endswith(".base_layer") or ".lora_" in name:
            continue
        m = LAYER_PATTERN.search(name + ".")
        if regex is not None:
            if not regex.search(name):
                continue
        else:
            if m is None or int(m.group(1)) < first or not _ends_with_any(name, suffixes):
                continue
            if scope == "ffn" and _is_attention_module(name):  # ModernBERT's attn.Wo is not FFN
                continue
        targets.append(linear_target(model, name, module))
    if not targets:
        what = f"pattern {pattern!r}" if pattern else f"{scope} projections {suffixes} in layers >= {first}"
        raise ConfigError(f"{type(model).__name__}: no module matches {what}; pass "
                         "--memory_target_modules with a regex over the model's module names")
    if regex is None:
        check_scope_kinds(model, targets, scope, first)
    return targets


def linear_target(model: nn.Module, name: str, module: nn.Module) -> Target:
    """The target of the linear module ``name`` (its layer index, shapes, list-of-MLP block)."""
    linear = linear_of(module)
    m = LAYER_PATTERN.search(name + ".")
    blocks = expert_list_blocks(model, [name])
    return Target(name, module, int(m.group(1)) if m else -1, linear.in_features, linear.out_features,
                  block=blocks[0] if blocks else None)


def targets_named(model: nn.Module, names: Sequence[str]) -> list[Target]:
    """The targets a run saved (:func:`canonical_name` s, in module order), found by name in
    ``model``. A name the model lacks, or a model order unlike the saved one, is an error."""
    wanted = set(names)
    found: list[Target] = []
    for name, module in model.named_modules():
        if fused_expert_params(module) is not None:
            m = LAYER_PATTERN.search(name + ".")
            experts = expert_targets(name, module, int(m.group(1)) if m else -1)
            found.extend(t for t in experts if canonical_name(t.name) in wanted)
            continue
        if linear_of(module) is None or name.endswith(".base_layer") or ".lora_" in name:
            continue
        if canonical_name(name) in wanted:
            found.append(linear_target(model, name, module))
    got = [canonical_name(t.name) for t in found]
    if got != list(names):
        missing = [n for n in names if n not in set(got)]
        raise ConfigError(f"{type(unwrap(model)).__name__} does not hold the memory targets its run was trained "
                          f"with ({', '.join(missing[:3]) or 'another order'}"
                          f"{' ...' if len(missing) > 3 else ''}): load the run's own model, or override "
                          "--memory-scope / --memory-target-modules to choose targets afresh")
    return found


def is_attention_target(target: Target, family) -> bool:
    """Whether a target is one of the family's attention projections (names listed as both
    FFN and attention, like ModernBERT's ``Wo``, count as attention inside an attention module)."""
    name = target.name
    return target.kind == "linear" and _ends_with_any(name, family.attn) and (
        _is_attention_module(name) or not _ends_with_any(name, family.ffn))


def check_scope_kinds(model: nn.Module, targets: list[Target], scope: str, first: int) -> None:
    """Each kind of module ``scope`` names (FFN; attention for ``ffn_attn``) must select at least
    one module: a family table whose names miss the model's would otherwise adapt less than
    asked, silently."""
    family = family_of(getattr(unwrap(model), "config", None))
    attention = [t for t in targets if is_attention_target(t, family)]
    kinds = {"FFN": len(targets) - len(attention)}
    if scope == "ffn_attn":
        kinds["attention"] = len(attention)
    missing = [kind for kind, count in kinds.items() if count == 0]
    if missing:
        names = family.attn if missing[0] == "attention" else family.ffn
        raise ConfigError(
            f"--memory-scope {scope} selects no {missing[0]} module of {type(unwrap(model)).__name__} "
            f"(family {family.name}, looking for {', '.join(names)}); its linear modules in layers >= {first}: "
            f"{', '.join(linear_module_names(model, first))}; fix the family's names in memdlm.backbones.families "
            "or pass --memory_target_modules with a regex over those names")


def linear_module_names(model: nn.Module, first: int) -> list[str]:
    """The distinct names of the linear modules in layers >= ``first``, below the layer prefix,
    with expert numbers folded (``mlp.experts.N.up_proj``)."""
    found = []
    for name, module in model.named_modules():
        m = LAYER_PATTERN.search(name + ".")
        if linear_of(module) is None or m is None or int(m.group(1)) < first or ".lora_" in name \
                or name.endswith(".base_layer"):
            continue
        found.append(re.sub(r"\.\d+\.", ".N.", name[m.end():] + ".").rstrip("."))
    return list(dict.fromkeys(found))


def first_layer_module(model: nn.Module, targets: list[Target]) -> nn.Module | None:
    """The decoder layer holding the lowest target (None when targets have no layer index)."""
    layered = [t for t in targets if t.layer >= 0]
    if not layered:
        return None
    lowest = min(layered, key=lambda t: t.layer)
    m = LAYER_PATTERN.search(lowest.name + ".")
    prefix = lowest.name[: m.end() - 1]  # "...layers.N"
    return model.get_submodule(prefix)
