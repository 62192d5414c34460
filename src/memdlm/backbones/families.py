"""What memdlm knows about each backbone family, in one table (keyed by ``config.model_type``).

Every family-specific decision reads :data:`FAMILIES` through :func:`family_of`:

- ``modeling.make_bidirectional`` -- how causal masking is switched off (``bidirectional``);
- ``modeling.reuse_attention_masks`` -- whether the decoder takes a prepared mask dict
  (``prepared_masks``);
- ``split_forward.supports_split`` -- whether the layers below / from layer k can run as
  two calls of the model's own forward (``split_forward``);
- ``block_cache.cache_unsupported`` -- whether the block-wise key/value cache has a path
  (``block_cache``), and ``encoder_cache`` -- for encoders, where the embeddings are
  (``cache_embeddings``);
- ``modeling.logits_shift`` -- whether position i's logits predict token i + 1
  (``logits_shift``, Dream);
- ``modeling.logits_only_at`` -- where the final hidden states enter the LM head
  (``head_input``, for heads that do not call their output embedding as a module);
- ``memory.targets.find_targets`` -- the module-name suffixes of FFN and attention
  projections that get fast weights (``ffn``, ``attn``);
- ``tokenizer.reconcile_mask_token`` -- what a config mask id unlike the tokenizer's means
  (``mask_from_tokenizer``).

Adding a family is one entry here plus one row in ``tests/test_families.py`` (a test
checks that every entry has a row and that each fact holds on a tiny model of that
family); ``docs/BACKBONES.md`` holds :func:`markdown_table`'s output (checked by a test).
A model whose family is not listed gets :data:`OTHER`: no switches, and every listed
family's names plus those of other architectures as target suffixes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# How attention becomes bidirectional:
#   "use_bidirectional_attention": a config flag read when the model is built (Gemma3); a
#       checkpoint built without it is refused (it cannot be switched after loading);
#   "is_causal": make_bidirectional sets ``config.is_causal = False`` (transformers'
#       create_causal_mask reads it), saved with the config;
#   "native": bidirectional already (encoders, diffusion LMs' own code);
#   "unknown": not in the table -- a config that has ``is_causal`` gets it set to False.
Bidirectional = Literal["use_bidirectional_attention", "is_causal", "native", "unknown"]

LLAMA_FFN = ("gate_proj", "up_proj", "down_proj")
LLAMA_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class Family:
    model_type: str  # config.model_type, lower-cased
    name: str  # for people: docs and messages
    bidirectional: Bidirectional
    # the decoder accepts a prepared {layer type: mask} dict as ``attention_mask``
    prepared_masks: bool = False
    # forward takes ``inputs_embeds`` and loops over its block list (``layers``, LLaDA's
    # ``transformer.blocks``), hidden states first (memdlm.backbones.split_forward)
    split_forward: bool = False
    # the block cache has a path (memdlm.sampling.block_cache): decoders whose attention layers call
    # ``cache.update(k, v, layer_idx)`` and take ``position_ids`` and a prepared 4-D mask, or,
    # with ``cache_embeddings``, encoders whose attention goes through transformers'
    # ALL_ATTENTION_FUNCTIONS (memdlm.sampling.encoder_cache)
    block_cache: bool = False
    # why the family has no cache path, when the reason is the family's own code (said in the
    # sampler's warning); None: the generic "no cache path here"
    no_cache_reason: str | None = None
    # encoders only: the module (path from the model) whose output is the first layer's input
    # [b, L, H]; a cached step computes it on the whole canvas and keeps the query columns
    cache_embeddings: str | None = None
    logits_shift: bool = False  # position i's logits predict token i + 1 (Dream's AR init)
    # the family's own tokens-per-step rule, used by the sampler's default unmask_rule "native"
    # (memdlm.sampling.sampler): "fixed" (LLaDA's even split), "dream" (Dream's timestep schedule)
    # or "llada2" (LLaDA2's block-causal decoding with its threshold rule)
    decoding: str = "fixed"
    # The module (path from the model) whose first input is the final hidden state, when the
    # head does not call its output embedding as a module; None: the output embedding. It
    # must act position by position, so gathering positions before it is exact.
    head_input: str | None = None
    # module-name suffixes (dot-separated; a name matches when it ends with one)
    ffn: tuple[str, ...] = LLAMA_FFN
    attn: tuple[str, ...] = LLAMA_ATTN
    # When ``config.mask_token_id`` and the tokenizer's mask id differ: True -- the model's code
    # never reads the config's id and the family's reference pipelines (dllm) mask with the
    # tokenizer's, so the tokenizer's is used and written into the config (warned); False --
    # refused (memdlm.backbones.tokenizer.reconcile_mask_token)
    mask_from_tokenizer: bool = False


_ENTRIES = (
    Family("gemma3_text", "Gemma3", "use_bidirectional_attention", prepared_masks=True, split_forward=True,
           block_cache=True),
    Family("llama", "Llama", "is_causal", split_forward=True, block_cache=True),
    Family("mistral", "Mistral", "is_causal", split_forward=True, block_cache=True),
    Family("qwen2", "Qwen2", "is_causal", split_forward=True, block_cache=True),
    Family("qwen3", "Qwen3", "is_causal", prepared_masks=True, split_forward=True, block_cache=True),
    # MoE: routed experts are fused 3-D parameters, found by memory/experts.py whatever
    # their names; the names here are the dense / shared-expert MLPs'. 4.x-era Mixtral code
    # kept each expert as w1 (gate), w3 (up), w2 (down) linear layers.
    Family("qwen2_moe", "Qwen2-MoE", "is_causal", split_forward=True, block_cache=True),
    Family("qwen3_moe", "Qwen3-MoE", "is_causal", split_forward=True, block_cache=True),
    Family("mixtral", "Mixtral", "is_causal", split_forward=True, ffn=("w1", "w2", "w3")),
    Family("modernbert", "ModernBERT", "native", ffn=("Wi", "Wo"), attn=("Wqkv", "Wo")),
    # MobileBERT's head multiplies by ``decoder.weight`` without calling the decoder. Its
    # attention output projection (attention.output.dense) is an FFN-named module kept out of
    # scope ffn as an attention module; ffn_attn adds it (q/k/v are named query/key/value).
    Family("mobilebert", "MobileBERT", "native", ffn=("intermediate.dense", "output.dense"),
           attn=("attention.output.dense",), head_input="cls.predictions", block_cache=True,
           cache_embeddings="mobilebert.embeddings"),
    # remote code written for transformers 4 (memdlm/backbones/remote_code.py; docs/BACKBONES.md)
    # Dream and LLaDA2 write keys/values through ``past_key_value.update(k, v, layer_idx)``
    # and take ``position_ids`` and 4-D masks: the decoder cache path, passed as ``past_key_values``
    Family("dream", "Dream", "native", split_forward=True, logits_shift=True, mask_from_tokenizer=True, decoding="dream",
           block_cache=True),
    Family("llada", "LLaDA", "native", split_forward=True, ffn=("ff_proj", "up_proj", "ff_out"),
           attn=("q_proj", "k_proj", "v_proj", "att_proj", "attn_out"), mask_from_tokenizer=True,
           no_cache_reason="its attention (modeling_llada.py) appends cached keys/values after the new "
                           "ones and derives rotary positions from their count, so a block's columns "
                           "cannot be recomputed in place"),
    Family("lladamoe", "LLaDA-MoE", "native", split_forward=True, mask_from_tokenizer=True,
           no_cache_reason="its model's forward (modeling_lladamoe.py) asserts that no cache is passed"),
    # LLaDA2's attention is a fused query_key_value projection and an output ``dense``
    # (modeling_llada2_moe.py); ``attention.dense`` keeps other ``dense`` layers out
    Family("llada2_moe", "LLaDA2", "native", split_forward=True, attn=("query_key_value", "attention.dense"),
           mask_from_tokenizer=True, decoding="llada2", block_cache=True),
)
FAMILIES: dict[str, Family] = {f.model_type: f for f in _ENTRIES}

# Suffixes of architectures outside the table, matched (with every family's) for a model
# whose family is unknown: GPT-2-style c_fc / c_proj, OPT / Phi fc1 / fc2, DeBERTa's
# attention (BERT / DeBERTa FFNs are named like MobileBERT's, listed above).
OTHER_FFN = ("fc1", "fc2", "c_fc", "c_proj")
OTHER_ATTN = ("query_proj", "key_proj", "value_proj")


def _union(*groups: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(name for group in groups for name in group))  # ordered, no repeats


OTHER = Family("other", "any other", "unknown",
               ffn=_union(*(f.ffn for f in _ENTRIES), OTHER_FFN),
               attn=_union(*(f.attn for f in _ENTRIES), OTHER_ATTN))


def family_of(config) -> Family:
    """The table entry for ``config.model_type`` (any case), else :data:`OTHER`.

    ``config`` may be None or lack ``model_type`` (test doubles): :data:`OTHER`.
    """
    model_type = str(getattr(config, "model_type", "") or "").lower()
    return FAMILIES.get(model_type, OTHER)


def markdown_table() -> str:
    """The family table of docs/BACKBONES.md (a test keeps the two equal)."""
    def yes(flag: bool) -> str:
        return "yes" if flag else "-"

    def mask_rule(f: Family) -> str:
        return "tokenizer's used" if f.mask_from_tokenizer else "refused"

    def names(group: tuple[str, ...]) -> str:
        return ", ".join(f"`{n}`" for n in group)

    rows = ["| family (`model_type`) | bidirectional by | prepared masks | split forward | block cache | "
            "logits shift | LM head input | FFN targets (and any fused MoE experts) | attention targets "
            "(`ffn_attn`) | config mask id unlike the tokenizer's | decoding (`native`) |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for f in _ENTRIES:
        cache = f"yes (encoder: `{f.cache_embeddings}`)" if f.cache_embeddings else yes(f.block_cache)
        head = f"`{f.head_input}`" if f.head_input else "output embedding"
        rows.append(f"| {f.name} (`{f.model_type}`) | {f.bidirectional} | {yes(f.prepared_masks)} "
                    f"| {yes(f.split_forward)} | {cache} | {yes(f.logits_shift)} | {head} "
                    f"| {names(f.ffn)} | {names(f.attn)} | {mask_rule(f)} | {f.decoding} |")
    rows.append(f"| any other | `is_causal` set if the config has it | - | - | - | - | output embedding "
                f"| all of the above, {names(OTHER_FFN)} | all of the above, {names(OTHER_ATTN)} | refused "
                f"| {OTHER.decoding} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
