"""The sampler's model calls: no cache, or a block-wise key/value cache (Fast-dLLM).

Fast-dLLM (Wu et al., 2025, arXiv 2505.22618) decodes block by block and, within a
block, reuses keys/values computed when the block started:

- ``prefix``: the prompt's and the finished blocks' keys/values are reused; each step
  recomputes the current block *and everything after it* (the later, still masked
  blocks).
- ``dual``: the later blocks' keys/values are reused too; each step recomputes only
  the current block.

How it runs here (decoders). At the first step of a block (and every
``cache_refresh_steps`` steps with that option) the model runs over the whole canvas,
exactly as without a cache, and a stock ``transformers.DynamicCache`` records every layer's keys/values
``[b, h, L, d]``. A cached step feeds the model only its query columns ``[b, q]``
(per sample, since prompts differ in length) with their own ``position_ids``, and a
cache whose layers scatter the fresh keys/values of those columns into a copy of the
recorded ones, so attention still sees all L columns (padding masked by a prepared
4-D mask). Column order is the canvas order, so RoPE positions are unchanged.

Encoders (MobileBERT; :mod:`memdlm.sampling.encoder_cache`) take neither a cache object nor
``position_ids``, and MobileBERT's embedding is a trigram (tokens i - 1, i, i + 1) plus
absolute positions, so a column cannot be embedded from its own id. There every call
routes attention through a function registered with transformers' ``AttentionInterface``:
a refresh is the no-cache forward with each layer's keys/values ``[b, h, L, d]`` kept on
the way; a cached step gives the model the whole canvas, keeps the query columns right
after the embedding module (so their embeddings are the no-cache ones), runs the layers on
those columns only and scatters their fresh keys/values into the kept ones, as above.

What is exact and what is approximate:

- **Exact**: a refresh step *is* the no-cache forward (the same call with a cache
  object to fill, or for encoders with the attention function wrapped to keep its
  keys/values; bit-identical logits, tested), so the first step of every block is
  exact, and with ``cache_refresh_steps=1`` every step is: the sampler's output
  equals no cache (tested). A cached step on an unchanged canvas gives the no-cache
  logits up to float rounding (tested to 1e-5): the machinery itself adds no error.
- **Approximate**: after a step commits tokens, the reused keys/values are stale. In a
  bidirectional model every position attends to every other, so the prompt's (and,
  for ``dual``, the later blocks') keys/values above the first layer depend on the
  block's tokens, which have changed from masks to words. Only layer 0's keys/values
  (a function of the token and its position alone) stay exact -- for MobileBERT not
  even those of the two columns beside the block (the last prompt token or finished
  slot before it, and for ``dual`` the first slot after it): their trigram embedding
  reads the block's tokens. The query columns' own embeddings are always fresh (computed
  on the current canvas). The prefix is exact only if it never attends to the suffix,
  which a bidirectional DLM does not do. ``benchmarks/sampling.py`` measures what this
  costs in accuracy. On the shipped MobileBERT recall base (docs/RESULTS.md, "Fast
  sampling"): nothing on one-word answers (mqar), but dependent three-word answers
  (mqar_v3) decoded in one block drop from 95% to 7% -- later words are looked up through
  the prompt's stale keys/values; blocks of 2 lose 0-20 points. A cached step is checked
  against an independent "stale keys/values" forward (tested to 1e-5), so that is the
  approximation's cost, not an error of the code.

Inference-time memory: the memory acts through forward hooks on FFN modules; every
call here (refresh or cached) runs inside the sampler's ``forward_context``, so the
cache is built with the memory active, and the hooks act per batch row whatever the
number of columns, so per-sample memory keeps working in a batch (tested).

Families: the decoder path needs attention layers that call ``cache.update(k, v,
layer_idx)``, take ``position_ids`` and accept a prepared 4-D mask, and a full
attention in every layer; the encoder path needs attention that goes through
``ALL_ATTENTION_FUNCTIONS`` and position-wise modules everywhere else. The families
marked ``block_cache`` in ``memdlm.backbones.families``: Gemma3 with full attention only, Llama,
Mistral, Qwen2, Qwen3 and their MoE variants, the remote-code Dream and LLaDA2 (written for
transformers 4, they take the cache as ``past_key_values``), and MobileBERT
(``cache_embeddings``: the encoder path), under the ``sdpa`` or ``eager`` attention.
Right-shifted logits (Dream) read slot j from column j - 1, so a cached step also recomputes
the column just before the block. Everything else falls back to no cache with a warning
that says why -- for LLaDA and LLaDA-MoE the family's own code (its entry's
``no_cache_reason``); ModernBERT, sliding-window layers, other attention kernels -- and the
output's ``cache_used`` says which was used.
"""

from __future__ import annotations

import functools
import logging

import torch

from memdlm.backbones.families import FAMILIES, family_of
from memdlm.backbones.modeling import logits_only_at, logits_shift, unwrap
from memdlm.sampling import encoder_cache

logger = logging.getLogger("memdlm")

CACHE_ATTENTION = frozenset({"sdpa", "eager"})


def cache_unsupported(model) -> str | None:
    """Why ``model`` cannot use the block cache, or None when it can."""
    config = getattr(unwrap(model), "config", None)
    family = family_of(config)
    if family.no_cache_reason:
        return f"family {family.model_type!r}: {family.no_cache_reason}"
    if not family.block_cache:
        supported = sorted(f.model_type for f in FAMILIES.values() if f.block_cache)
        return f"family {getattr(config, 'model_type', None)!r} has no cache path here (supported: {supported})"
    if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or []):
        return "some layers use local (sliding-window) attention"
    if logits_shift(model) and family.cache_embeddings is not None:
        return "right-shifted logits on the encoder path"
    if family.cache_embeddings is None and _cache_keyword(model) is None:
        return f"{type(unwrap(model)).__name__}.forward takes no cache argument (cache / past_key_values)"
    if config._attn_implementation not in CACHE_ATTENTION:
        return f"attention {config._attn_implementation!r} (supported: {sorted(CACHE_ATTENTION)})"
    return None


def _column_layer_class():
    from transformers.cache_utils import DynamicLayer

    class ColumnLayer(DynamicLayer):
        """Keys/values of every column from the last refresh; a step's fresh columns replace theirs.

        Nothing is stored by ``update``: each step starts again from the refresh.
        """

        def __init__(self, keys: torch.Tensor, values: torch.Tensor, columns: torch.Tensor):
            super().__init__()
            self.keys, self.values, self.is_initialized = keys, values, True  # [b, h, L, d]
            self.columns = columns  # [b, q]

        def update(self, key_states, value_states, *args, **kwargs):  # [b, h, q, d] each
            return encoder_cache.fresh_columns(self.keys, self.values, self.columns, key_states, value_states)

    return ColumnLayer


def _cache_keyword(model) -> str | None:
    """The forward's name for the cache object: transformers 5's ``cache``, or ``past_key_values``
    in remote code written for transformers 4 (Dream, LLaDA2); None if it names neither."""
    import inspect

    params = inspect.signature(type(unwrap(model)).forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in params), None)


@functools.cache
def warn_no_cache(mode: str, reason: str) -> None:
    """Once per (mode, reason) and process: a generation calls the sampler batch by batch."""
    logger.warning("cache %r is not available (%s); sampling without a cache", mode, reason)


class BlockForward:
    """The model calls of one ``Sampler.generate``: logits of the current block, call counts.

    ``mode`` is ``"none"``, ``"prefix"`` or ``"dual"``; ``attn`` the canvas's padding
    mask ``[b, L]``; ``context`` a factory of the context entered around every call.
    """

    def __init__(self, model, attn: torch.Tensor, mode: str, context, refresh_steps: int | None = None):
        reason = cache_unsupported(model) if mode != "none" else None
        if reason is not None:
            warn_no_cache(mode, reason)
            mode = "none"
        self.model, self.attn, self.mode, self.context = model, attn, mode, context
        self.encoder = family_of(getattr(unwrap(model), "config", None)).cache_embeddings is not None
        self.refresh_steps = refresh_steps
        # right-shifted logits (Dream): slot j is read from column j - 1, so a cached step also
        # recomputes the column before the block and reads the block from its input columns 1..B
        self.shift = int(logits_shift(model))
        self.cache_kwarg = _cache_keyword(model)
        self.calls = 0
        self.calls_per_sample = torch.zeros(attn.shape[0], dtype=torch.long, device=attn.device)  # [b]
        # per layer (decoders: a list; encoders: {attention module: ...}): keys, values [b, h, L, d]
        self.kv: list[tuple[torch.Tensor, torch.Tensor]] | dict | None = None

    def start_block(self, block_pos: torch.Tensor, suffix_pos: torch.Tensor) -> None:
        """A new block: its columns ``[b, B]`` and those from it to the end ``[b, N - start]``."""
        self.block_pos = block_pos
        cols = suffix_pos if self.mode == "prefix" else block_pos  # [b, q]
        if self.shift:  # clamped: an empty prompt's slot 0 reads its own column, as the shift does
            cols = torch.cat([(block_pos[:, :1] - 1).clamp(min=0), cols], dim=1)
        self.query_cols = cols
        self.step_in_block = 0
        self.kv = None

    def logits(self, x: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """Logits at the block's slots ``[b, B, V]`` for canvas ``x`` ``[b, L]``.

        ``active`` ([b] bool): the samples that still have a slot to commit, counted as
        having used this call.
        """
        b, blk = self.block_pos.shape
        with self.context():
            if self._refresh_due():
                logits = self._full(x)
            else:
                logits = self._cached(x)
        self.calls += 1
        self.calls_per_sample += active.long()
        self.step_in_block += 1
        return logits.view(b, blk, -1)

    def _refresh_due(self) -> bool:
        if self.mode == "none" or self.kv is None:
            return True
        return self.refresh_steps is not None and self.step_in_block % self.refresh_steps == 0

    def _full(self, x: torch.Tensor) -> torch.Tensor:  # [b*B, V]
        positions = torch.zeros_like(x, dtype=torch.bool).scatter_(1, self.block_pos, True)  # [b, L]
        if self.mode == "none":
            with logits_only_at(self.model, positions):
                return self.model(input_ids=x, attention_mask=self.attn, use_cache=False).logits
        if self.encoder:
            kv: dict = {}
            with encoder_cache.recording(self.model, kv), logits_only_at(self.model, positions):
                logits = self.model(input_ids=x, attention_mask=self.attn, use_cache=False).logits
            self.kv = kv
            return logits
        from transformers import DynamicCache

        cache = DynamicCache()
        with logits_only_at(self.model, positions):
            logits = self.model(input_ids=x, attention_mask=self.attn, use_cache=True,
                                **{self.cache_kwarg: cache}).logits
        self.kv = [(layer.keys, layer.values) for layer in cache.layers]
        return logits

    def _cached(self, x: torch.Tensor) -> torch.Tensor:  # [b*B, V]
        cols = self.query_cols  # [b, q]; the block is its first B columns (after the shift's one)
        at_block = torch.zeros_like(cols, dtype=torch.bool)
        at_block[:, self.shift: self.shift + self.block_pos.shape[1]] = True  # [b, q]
        if self.encoder:  # the whole canvas goes in (embeddings); the columns are kept after them
            with encoder_cache.columns(self.model, self.kv, cols), logits_only_at(self.model, at_block):
                return self.model(input_ids=x, attention_mask=self._mask(cols.shape[1]), use_cache=False).logits
        from transformers.cache_utils import Cache

        column_layer = _column_layer_class()
        cache = Cache(layers=[column_layer(k, v, cols) for k, v in self.kv])
        with logits_only_at(self.model, at_block):
            return self.model(input_ids=x.gather(1, cols), attention_mask=self._mask(cols.shape[1]),
                              position_ids=cols, use_cache=True, **{self.cache_kwarg: cache}).logits

    def _mask(self, q: int) -> torch.Tensor:
        """Prepared 4-D mask ``[b, 1, q, L]``: every query sees every non-padding column."""
        keep = self.attn.bool()[:, None, None, :].expand(-1, 1, q, -1)
        if unwrap(self.model).config._attn_implementation == "sdpa":
            return keep
        dtype = next(self.model.parameters()).dtype  # eager adds the mask to the scores
        return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)
