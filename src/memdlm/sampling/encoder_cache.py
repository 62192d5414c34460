"""The block cache's path for transformers encoders (MobileBERT): no ``Cache``, no ``position_ids``.

:class:`memdlm.sampling.block_cache.BlockForward` runs decoders with a ``Cache`` object and
explicit ``position_ids``. A transformers encoder takes neither, but its self-attention
asks ``ALL_ATTENTION_FUNCTIONS`` for its attention function by
``config._attn_implementation`` at every call. During BlockForward's calls that name is
switched to one registered here (``memdlm_block_cache_sdpa`` / ``_eager``, with the
original's mask function), whose :func:`_attention` sees every layer's keys and values
``[b, h, *, d]`` and hands them, with everything else unchanged, to the original function
(transformers' sdpa, or the model file's own ``eager_attention_forward``):

- :func:`recording` (a refresh step): the no-cache forward; :func:`_attention` only keeps
  each layer's keys/values ``[b, h, L, d]``. The attention function computes exactly what
  it would have computed, so the logits are bit-identical to no cache.
- :func:`columns` (a cached step): the model is still given the whole canvas ``[b, L]``,
  so its embeddings (MobileBERT's trigram: tokens i - 1, i, i + 1, plus absolute
  positions) are the no-cache ones; a hook on the family's embedding module
  (``cache_embeddings`` in ``memdlm.backbones.families``) keeps only the query columns
  ``[b, q, H]``, every later module but attention is position-wise, and
  :func:`_attention` scatters each layer's fresh keys/values of those columns into the
  recorded ones, so the q queries attend over all L columns. The caller passes a
  prepared 4-D mask ``[b, 1, q, L]`` (taken as it is) and gathers logits with
  ``logits_only_at``.

The switched name is restored when the call ends, also when it raises.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys

import torch

from memdlm.backbones.families import family_of
from memdlm.backbones.modeling import unwrap

PREFIX = "memdlm_block_cache_"

# the running call's state: {"kv": {attention module: (keys, values)}, "columns": [b, q] or None,
# "inner": the original attention name}
_STATE: contextvars.ContextVar[dict] = contextvars.ContextVar("memdlm_encoder_cache")


def _original(module, name: str):
    """The attention function ``module`` would call under ``name`` (``sdpa`` or ``eager``)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if name == "eager":  # not in the registry: each model file brings its own
        return sys.modules[type(module).__module__].eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS[name]


def fresh_columns(kept_keys, kept_values, cols, keys, values):
    """The recorded keys/values ``[b, h, L, d]`` with columns ``cols`` ``[b, q]`` replaced by
    this step's ``[b, h, q, d]``: what a cached step attends over (decoder and encoder paths)."""
    index = cols[:, None, :, None].expand(-1, keys.shape[1], -1, keys.shape[-1])  # [b, h, q, d]
    return kept_keys.scatter(2, index, keys), kept_values.scatter(2, index, values)


def _attention(module, query, key, value, attention_mask, **kwargs):
    state = _STATE.get()
    if state["columns"] is None:  # refresh: keep, change nothing
        state["kv"][module] = (key, value)
    else:  # cached step: this step's columns over the recorded ones
        key, value = fresh_columns(*state["kv"][module], state["columns"], key, value)
    return _original(module, state["inner"])(module, query, key, value, attention_mask, **kwargs)


def _register(name: str) -> str:
    """The registered name that routes attention ``name`` through :func:`_attention`."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    routed = PREFIX + name
    if routed not in ALL_ATTENTION_FUNCTIONS:
        ALL_ATTENTION_FUNCTIONS.register(routed, _attention)
        ALL_MASK_ATTENTION_FUNCTIONS.register(routed, ALL_MASK_ATTENTION_FUNCTIONS[name])
    return routed


@contextlib.contextmanager
def _routed(model, kv: dict, cols: torch.Tensor | None):
    config = unwrap(model).config
    inner = config._attn_implementation
    token = _STATE.set({"kv": kv, "columns": cols, "inner": inner})
    config._attn_implementation = _register(inner)
    try:
        yield
    finally:
        config._attn_implementation = inner
        _STATE.reset(token)


def recording(model, kv: dict):
    """Around a no-cache forward: fill ``kv`` with ``{attention module: (keys, values) [b, h, L, d]}``."""
    return _routed(model, kv, None)


@contextlib.contextmanager
def columns(model, kv: dict, cols: torch.Tensor):
    """Around a forward given the whole canvas ``[b, L]``: run it on the columns ``cols`` ``[b, q]`` only.

    ``kv`` is what :func:`recording` kept; it is read, not changed.
    """
    base = unwrap(model)
    embeddings = base.get_submodule(family_of(base.config).cache_embeddings)

    def gather(_module, _args, output):  # [b, L, H] -> [b, q, H]
        return output.gather(1, cols[..., None].expand(-1, -1, output.shape[-1]))

    handle = embeddings.register_forward_hook(gather)
    try:
        with _routed(model, kv, cols):
            yield
    finally:
        handle.remove()
