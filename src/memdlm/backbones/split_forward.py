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

This works for decoder families whose forward loops over the layer list as above and
feeds ``inputs_embeds`` straight to the first layer: ``split_forward`` in
``memdlm.backbones.families``. ``supports_split`` says whether a model qualifies, and callers
fall back to full forwards otherwise. Tests check exact equality with the full forward,
and that the model is unchanged during and after a call (also when a layer raises).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from memdlm.backbones.families import family_of
from memdlm.backbones.modeling import logits_only_at, unwrap


class _Stop(Exception):
    pass


def supports_split(model) -> bool:
    if hasattr(model, "module") and not hasattr(model, "get_base_model"):
        return False  # DDP/FSDP wrappers: keep one forward per backward
    base = unwrap(model)
    inner = getattr(base, "model", None)
    return (family_of(getattr(base, "config", None)).split_forward
            and isinstance(getattr(inner, "layers", None), nn.ModuleList))


def _shallow_view(module: nn.Module, **replace) -> nn.Module:
    """A new module object of the same class whose attributes are ``module``'s (shared:
    parameters, buffers, hooks, submodules), except the submodules / attributes in
    ``replace``, which only the view sees."""
    view = object.__new__(type(module))
    view.__dict__.update(module.__dict__)
    view.__dict__["_modules"] = dict(module._modules)  # own child table: replacing a child stays local
    for name, value in replace.items():
        if isinstance(value, nn.Module):
            view._modules[name] = value
        else:
            view.__dict__[name] = value
    return view


def _upper_view(model, start: int) -> nn.Module:
    """The model as if its decoder held only layers [start, L) (see the module docstring)."""
    base = unwrap(model)
    config = copy.copy(base.config)
    layers = list(base.model.layers)[start:]
    config.num_hidden_layers = len(layers)
    if getattr(base.config, "layer_types", None) is not None:
        config.layer_types = list(base.config.layer_types)[start:]
    decoder = _shallow_view(base.model, layers=nn.ModuleList(layers), config=config)
    return _shallow_view(base, model=decoder, config=config)


def lower(model, input_ids, attention_mask, k: int) -> torch.Tensor:
    """Hidden states entering layer k: ``[b, l, H]`` (the embeddings when k == 0)."""
    base = unwrap(model)
    captured = []
    source = base.model.layers[k - 1] if k > 0 else base.model.embed_tokens

    def grab(_m, _a, out):
        captured.append(out[0] if isinstance(out, tuple) else out)
        raise _Stop  # the layers above k are not run

    handle = source.register_forward_hook(grab)
    try:
        base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    return captured[0]


def upper(model, hidden, attention_mask, k: int, positions=None) -> torch.Tensor:
    """Logits from layer k's input hidden states (``[n, V]`` at ``positions`` if given)."""
    view = _upper_view(model, k)
    with logits_only_at(model, positions):  # a hook on the shared output embedding
        return view(inputs_embeds=hidden, attention_mask=attention_mask, use_cache=False).logits
