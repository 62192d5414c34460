"""Run a decoder's layers below and from layer k as two calls of its own forward.

MemDLM's anchor-to-target inner stage and its outer loss read the same input
x_t, so the layers below the first adapted layer compute the same hidden states
for both. ``lower`` runs layers [0, k) once (with autograd, for the outer loss);
``upper`` runs layers [k, L), the final norm and the head from given hidden
states -- once on a detached copy for the inner stage, once on the original for
the outer loss.

Both go through the model's own ``forward``, so masks, rotary embeddings and norms
are the model's own. ``lower`` runs the whole model and stops it (an exception from a
forward hook) once layer k - 1 has returned. ``upper`` needs the forward to *start* at
layer k, and transformers 5 has no argument for that: the decoder loops over
``self.layers[: self.config.num_hidden_layers]`` (and Gemma3 indexes
``self.config.layer_types`` by position). Instead of cutting the model's own layer list
and config in place for the duration of a call (which a failing forward or another
thread could observe), ``upper`` calls the forward of a *view*: a shallow copy of the
model and its decoder that shares every parameter, submodule and hook, with its own
layer list [k, L) and its own copy of the config. The model itself is never changed.

``upper`` passes the hidden states as ``inputs_embeds`` (shapes, dtype, no ids needed), and
the view's first block is layer k behind a small module that hands it the hidden states
exactly as given, so whatever a model does between its embeddings and its first block
(LLaDA's embedding scaling and dropout) is not applied twice -- also when gradient
checkpointing recomputes the block in the backward.

This works for families whose forward takes ``inputs_embeds`` and loops over its block list
(``model.layers`` of the stock decoders, Dream, LLaDA-MoE and LLaDA2, ``transformer.blocks``
of LLaDA; found by name, ``checkpointing.block_list_name``), passing each block the hidden
states first: ``split_forward`` in ``memdlm.backbones.families``. ``supports_split`` says
whether a model qualifies, and callers fall back to full forwards otherwise. Tests check
exact equality with the full forward (look-alikes and, with ``MEMDLM_REAL_FAMILIES_DIR``, the
real remote code), and that the model is unchanged during and after a call (also when a
layer raises).

Under DDP the reducer prepares the backward's all-reduce in the wrapper's forward, so a
forward that bypasses it would leave the ranks' gradients unsynchronised.
``through_wrapper`` runs a whole computation (both halves, and the inner loop between them)
as the wrapped module's forward inside one call of the DDP module; other wrappers (FSDP1,
DeepSpeed) get full forwards.
"""

from __future__ import annotations

import copy
import types

import torch
import torch.nn as nn

from memdlm.backbones.checkpointing import block_list_name
from memdlm.backbones.families import family_of
from memdlm.backbones.modeling import logits_only_at, unwrap


class _Stop(Exception):
    pass


def _is_ddp(model) -> bool:
    return isinstance(model, torch.nn.parallel.DistributedDataParallel)


def supports_split(model) -> bool:
    if hasattr(model, "module") and not hasattr(model, "get_base_model") and not _is_ddp(model):
        return False  # FSDP1, DeepSpeed: their forwards gather weights; keep whole forwards
    base = unwrap(model)
    if getattr(getattr(base, "config", None), "block_group_size", 1) != 1:
        return False  # LLaDA's grouped blocks run through another list
    return family_of(getattr(base, "config", None)).split_forward and block_list_name(base) is not None


def through_wrapper(model, compute):
    """``compute() -> (loss, extra)``, run under DDP as the wrapped module's forward in one
    call of the DDP module (which prepares the gradients' all-reduce for the backward, and,
    with ``find_unused_parameters``, finds the parameters the backward reaches from ``loss``);
    directly otherwise. Inside, the module's own forward is back in place, so ``compute``
    calls it as usual."""
    if not _is_ddp(model):
        return compute()
    module, extra = model.module, []
    own = module.__dict__.get("forward")  # an instance forward of its own (4-D masks), kept

    def put_back():
        if own is None:
            module.__dict__.pop("forward", None)
        else:
            module.__dict__["forward"] = own

    def once(*_args, **_kwargs):
        put_back()  # the module's own forward is seen again by compute's calls
        loss, more = compute()
        extra.append(more)
        return loss

    module.forward = once
    try:
        return model(), extra[0]
    finally:
        put_back()


def _shallow_view(module: nn.Module, **replace) -> nn.Module:
    """A new module object of the same class whose attributes are ``module``'s (shared:
    parameters, buffers, hooks, submodules), except the submodules / attributes in
    ``replace``, which only the view sees."""
    view = object.__new__(type(module))
    view.__dict__.update(module.__dict__)
    view.__dict__["_modules"] = dict(module._modules)  # own child table: replacing a child stays local
    own = module.__dict__.get("forward")  # an instance forward (4-D key-padding masks) runs the view
    if isinstance(own, types.MethodType) and own.__self__ is module:
        view.__dict__["forward"] = types.MethodType(own.__func__, view)
    for name, value in replace.items():
        if isinstance(value, nn.Module):
            view._modules[name] = value
        else:
            view.__dict__[name] = value
    return view


def _sliced_config(config, start: int, kept: int):
    """A copy of a config that counts ``kept`` layers from layer ``start``."""
    config = copy.copy(config)
    for count in ("num_hidden_layers", "n_layers"):
        derived = isinstance(getattr(type(config), count, None), property)  # LLaDA's reads n_layers
        if isinstance(getattr(config, count, None), int) and not derived:
            setattr(config, count, kept)
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = list(config.layer_types)[start:]
    return config


def _upper_view(model, start: int, hidden: torch.Tensor) -> nn.Module:
    """The model as if its block list held only layers [start, L), the first fed ``hidden``
    (see the module docstring): a view of every module on the path to the list, each with the
    sliced copy of its config."""
    base = unwrap(model)
    path = block_list_name(base).split(".")
    chain = [base]
    for name in path[:-1]:
        chain.append(getattr(chain[-1], name))
    layers = list(getattr(chain[-1], path[-1]))[start:]
    child = nn.ModuleList([_Entry(layers[0], hidden), *layers[1:]])
    kept = len(child)
    configs: dict[int, object] = {}  # a config shared by several modules is copied once
    for module, name in zip(reversed(chain), reversed(path)):
        replace = {name: child}
        config = module.__dict__.get("config")
        if config is not None:
            replace["config"] = configs.setdefault(id(config), _sliced_config(config, start, kept))
        child = _shallow_view(module, **replace)
    return child


def _blocks(model) -> nn.ModuleList:
    base = unwrap(model)
    return base.get_submodule(block_list_name(base))


def lower(model, input_ids, attention_mask, k: int) -> torch.Tensor:
    """Hidden states entering layer k: ``[b, l, H]`` (what the model gives its first block
    when k == 0)."""
    base = unwrap(model)
    captured = []

    def grab(_m, args, kwargs):
        captured.append(args[0] if args else kwargs["hidden_states"])
        raise _Stop  # layers k and above are not run

    handle = _blocks(model)[k].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    return captured[0]


class _Entry(nn.Module):
    """Layer k as the first block of the upper view: whatever the model computed as its first
    block's input, layer k runs on ``hidden``. A module in the view's list, not a hook removed
    after the call, so a checkpointed block recomputed in the backward gets ``hidden`` again.
    Other attributes (``attention_type``, ``layer_idx``, ...) are layer k's."""

    def __init__(self, layer: nn.Module, hidden: torch.Tensor):
        super().__init__()
        self.layer = layer
        self.__dict__["hidden"] = hidden  # a plain attribute: not a buffer of the model

    def forward(self, *args, **kwargs):
        if args:
            return self.layer(self.hidden, *args[1:], **kwargs)
        return self.layer(**{**kwargs, "hidden_states": self.hidden})

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["layer"], name)


def upper(model, hidden, attention_mask, k: int, positions=None) -> torch.Tensor:
    """Logits from layer k's input hidden states (``[n, V]`` at ``positions`` if given)."""
    view = _upper_view(model, k, hidden)
    with logits_only_at(model, positions):  # a hook on the shared output embedding
        return view(inputs_embeds=hidden, attention_mask=attention_mask, use_cache=False).logits
