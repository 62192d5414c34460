"""Gradient (activation) checkpointing for every family, remote code included.

``--gradient-checkpointing`` trades compute for memory: a checkpointed transformer block
keeps only its inputs during the forward and recomputes its activations in the backward.
Two ways, chosen per model:

- **the model's own switch** where the class declares ``supports_gradient_checkpointing``
  (every stock transformers class, Dream, LLaDA-MoE, LLaDA2, dllm's LLaDA): transformers'
  ``activation_checkpointing_enable``. 4.x remote code that overrides
  ``_set_gradient_checkpointing(enable, gradient_checkpointing_func)`` without the
  ``every_n_layers`` transformers 5 passes (dllm's LLaDA) gets a call with the arguments
  it takes.
- **memdlm's own** for every other model (LLaDA's hub code, which raises "does not support
  activation checkpointing"): each transformer block -- the outermost ``nn.ModuleList``
  named like ``layers`` / ``blocks`` / ``h`` -- runs its forward through
  ``torch.utils.checkpoint.checkpoint`` while the model trains with autograd on: each chosen
  block gets a ``forward`` of its own that checkpoints its class's forward, so the class,
  the model's state dict, module names and FSDP wrapping are unchanged.

Checkpointing is always non-reentrant (``use_reentrant=False``): MemDLM's inner loop takes
its fast-weight gradients with ``torch.autograd.grad``, which reentrant checkpointing does
not support, and the memory's forward hooks stay registered until the backward has run
(``MemDLMTrainer.training_step``), so the recomputed blocks see the same fast weights as
the forward did. Tested (tests/test_checkpointing.py): trainable-parameter gradients and
the inner loop's fast weights equal those without checkpointing, with shared and
per-sample memory, through both ways.
"""

from __future__ import annotations

import functools
import inspect
import types

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from memdlm.errors import ConfigError
from memdlm.backbones.modeling import unwrap

# Names of the module lists that hold a model's transformer blocks (memory.targets reads
# the same names to number layers).
BLOCK_LIST_NAMES = ("layers", "layer", "h", "blocks", "block")
OWN, MEMDLM = "own switch", "memdlm, per block"
_ON = "_memdlm_checkpoint"  # instance attribute: the checkpoint options while on, else absent


def enable_checkpointing(model, kwargs: dict | None = None, memory: bool = False) -> str:
    """Checkpoint ``model``'s blocks (PEFT / DDP wrappers looked through); returns which way.

    ``kwargs`` are Trainer's ``activation_checkpointing_kwargs``: ``every_n_layers``
    (checkpoint one block in n), ``offload`` (the model's own switch only) and options of
    ``torch.utils.checkpoint.checkpoint``. ``memory``: MemDLM trains this model, so
    reentrant checkpointing is refused in one line.
    """

    options = dict(kwargs or {})
    every = int(options.pop("every_n_layers", 1))
    offload = bool(options.pop("offload", False))
    if options.setdefault("use_reentrant", False):
        if memory:
            raise ConfigError("--gradient-checkpointing-kwargs use_reentrant=true: MemDLM's inner loop takes "
                              "gradients with torch.autograd.grad, which reentrant checkpointing does not "
                              "support; drop use_reentrant (memdlm uses false)")
    base = unwrap(model)
    if getattr(base, "supports_gradient_checkpointing", False):
        _own_switch(base, options, every, offload)
        return OWN
    if offload:
        raise ConfigError(f"{type(base).__name__} has no checkpointing switch of its own, and memdlm's per-block "
                          "checkpointing does not offload; drop offload from --gradient-checkpointing-kwargs")
    for i, block in enumerate(transformer_blocks(base)):
        if i % every == 0:
            checkpoint_block(block, options)
    return MEMDLM


def _own_switch(base, options: dict, every: int, offload: bool) -> None:
    """transformers' ``activation_checkpointing_enable`` (``gradient_checkpointing_enable``
    before it existed), with a 4.x ``_set_gradient_checkpointing`` override called with the
    arguments it takes."""
    setter = base._set_gradient_checkpointing
    instance_own = base.__dict__.get("_set_gradient_checkpointing")  # normally absent: the class's method
    params = inspect.signature(setter).parameters
    takes_all = "every_n_layers" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    if not takes_all and "value" not in params:  # "value": the pre-4.35 format transformers handles itself
        if every != 1:
            raise ConfigError(f"{type(base).__name__}'s own checkpointing switch cannot checkpoint every "
                              f"{every}th layer; drop every_n_layers from --gradient-checkpointing-kwargs")

        def adapted(enable=True, gradient_checkpointing_func=checkpoint, every_n_layers=1):
            return setter(enable=enable, gradient_checkpointing_func=gradient_checkpointing_func)

        base._set_gradient_checkpointing = adapted  # for this call only (put back below)
    try:
        if hasattr(base, "activation_checkpointing_enable"):
            base.activation_checkpointing_enable(activation_checkpointing_kwargs=options, every_n_layers=every,
                                                 offload=offload)
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
    finally:
        base.__dict__.pop("_set_gradient_checkpointing", None)
        if instance_own is not None:
            base._set_gradient_checkpointing = instance_own


def block_list_name(model: nn.Module) -> str | None:
    """The name (path from ``model``) of its outermost non-empty ``nn.ModuleList`` named one
    of :data:`BLOCK_LIST_NAMES`, None without one."""
    found = [(name.count("."), name) for name, module in model.named_modules()
             if isinstance(module, nn.ModuleList) and len(module) and name.rsplit(".", 1)[-1] in BLOCK_LIST_NAMES]
    return min(found)[1] if found else None


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The outermost non-empty ``nn.ModuleList`` named one of :data:`BLOCK_LIST_NAMES`."""
    name = block_list_name(model)
    if name is None:
        raise ConfigError(f"{type(model).__name__}: --gradient-checkpointing found no list of transformer blocks "
                          f"(an nn.ModuleList named one of {', '.join(BLOCK_LIST_NAMES)}) and the class has no "
                          "switch of its own (supports_gradient_checkpointing); train without the flag")
    return model.get_submodule(name)


def checkpoint_block(block: nn.Module, options: dict | None = None) -> None:
    """Run ``block``'s forward under non-reentrant checkpointing while it trains with grad.

    The block gets its own ``forward`` attribute, a method bound to it (a deepcopy rebinds it
    to the copy), that calls the class's forward; the class itself is left alone: other
    instances, and transformers' own per-class checkpointing wrapper, are unaffected.
    """
    setattr(block, _ON, {"use_reentrant": False, **(options or {})})
    block.forward = types.MethodType(_checkpointed_forward, block)


def is_checkpointed(block: nn.Module) -> bool:
    return _ON in block.__dict__


def _checkpointed_forward(self, *args, **kwargs):
    original = type(self).forward
    options = self.__dict__.get(_ON)
    if options is None or not (self.training and torch.is_grad_enabled()):
        return original(self, *args, **kwargs)
    # keyword arguments are bound, not passed: checkpoint() keeps its own keywords
    return checkpoint(functools.partial(original, self, **kwargs), *args, **options)
