"""Run a decoder's layers below and from layer k as two calls of its own forward.

MemDLM's anchor-to-target inner stage and its outer loss read the same input
x_t, so the layers below the first adapted layer compute the same hidden states
for both. ``lower`` runs layers [0, k) once (with autograd, for the outer loss);
``upper`` runs layers [k, L), the final norm and the head from given hidden
states -- once on a detached copy for the inner stage, once on the original for
the outer loss.

Both go through the model's own ``forward`` with its layer list temporarily cut
(and ``inputs_embeds`` carrying the hidden states into ``upper``), so masks,
rotary embeddings and norms are the model's own. This works for decoder families
whose forward loops over ``model.model.layers[:config.num_hidden_layers]`` and
feeds ``inputs_embeds`` straight to the first layer (Gemma3, Llama, Qwen2/3,
Mistral); ``supports_split`` says whether a model qualifies, and callers fall
back to full forwards otherwise. Tests check exact equality with the full forward.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

from memdlm.modeling import logits_only_at, unwrap

SPLIT_FAMILIES = {"gemma3_text", "llama", "qwen2", "qwen3", "mistral"}


class _Stop(Exception):
    pass


def supports_split(model) -> bool:
    if hasattr(model, "module") and not hasattr(model, "get_base_model"):
        return False  # DDP/FSDP wrappers: keep one forward per backward
    base = unwrap(model)
    inner = getattr(base, "model", None)
    return (getattr(base.config, "model_type", None) in SPLIT_FAMILIES
            and isinstance(getattr(inner, "layers", None), nn.ModuleList))


@contextlib.contextmanager
def _layers(model, start: int, stop: int):
    """Temporarily keep only layers [start, stop) in the decoder."""
    base = unwrap(model)
    inner, config = base.model, base.config
    saved = (inner.layers, config.num_hidden_layers, getattr(config, "layer_types", None))
    inner.layers = nn.ModuleList(list(saved[0])[start:stop])
    config.num_hidden_layers = stop - start
    if saved[2] is not None:
        config.layer_types = list(saved[2])[start:stop]
    try:
        yield
    finally:
        inner.layers, config.num_hidden_layers = saved[0], saved[1]
        if saved[2] is not None:
            config.layer_types = saved[2]


def lower(model, input_ids, attention_mask, k: int) -> torch.Tensor:
    """Hidden states entering layer k: ``[b, l, H]`` (the embeddings when k == 0)."""
    base = unwrap(model)
    captured = []
    source = base.model.layers[k - 1] if k > 0 else base.model.embed_tokens

    def grab(_m, _a, out):
        captured.append(out[0] if isinstance(out, tuple) else out)
        raise _Stop

    handle = source.register_forward_hook(grab)
    try:
        with _layers(model, 0, max(k, 1)):
            base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    return captured[0]


def upper(model, hidden, attention_mask, k: int, positions=None) -> torch.Tensor:
    """Logits from layer k's input hidden states (``[n, V]`` at ``positions`` if given)."""
    base = unwrap(model)
    with _layers(model, k, base.config.num_hidden_layers), logits_only_at(model, positions):
        return base(inputs_embeds=hidden, attention_mask=attention_mask, use_cache=False).logits
