"""Stock transformers architectures of the same shapes as remote-code families, for sizing.

``memdlm plan`` builds a model on the meta device from its config alone. A family whose
code lives in the checkpoint (LLaDA, Dream, LLaDA-MoE, LLaDA2) cannot be built without that
code, so it is replaced by a stock class with the same widths, depths, heads, experts and
vocabulary: the parameter counts, memory targets and fast-weight sizes match, the module
names are the stock class's (the plan says so). Each entry maps the family's config fields
to the stock config's.
"""

from __future__ import annotations

from collections.abc import Callable


def _llada(c: dict) -> dict:
    heads = c["n_heads"]
    return dict(hidden_size=c["d_model"], num_hidden_layers=c["n_layers"], num_attention_heads=heads,
                num_key_value_heads=c.get("n_kv_heads") or heads,
                intermediate_size=c.get("mlp_hidden_size") or c["mlp_ratio"] * c["d_model"],
                vocab_size=c.get("embedding_size") or c["vocab_size"],
                tie_word_embeddings=bool(c.get("weight_tying", False)))


def _qwen2_like(c: dict) -> dict:
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "vocab_size", "tie_word_embeddings")
    return {k: c[k] for k in keys if k in c}


def _llada_moe(c: dict) -> dict:
    return dict(hidden_size=c["hidden_size"], num_hidden_layers=c["num_hidden_layers"],
                num_attention_heads=c["num_attention_heads"],
                num_key_value_heads=c.get("num_key_value_heads") or c["num_attention_heads"],
                head_dim=c["hidden_size"] // c["num_attention_heads"],
                num_experts=c["num_experts"], num_experts_per_tok=c["num_experts_per_tok"],
                moe_intermediate_size=c["expert_intermediate_size"],
                intermediate_size=c.get("dense_intermediate_size") or c["expert_intermediate_size"],
                vocab_size=c["vocab_size"], tie_word_embeddings=bool(c.get("tie_word_embeddings", False)))


def _llada2(c: dict) -> dict:
    return dict(hidden_size=c["hidden_size"], num_hidden_layers=c["num_hidden_layers"],
                num_attention_heads=c["num_attention_heads"], num_key_value_heads=c["num_key_value_heads"],
                intermediate_size=c["intermediate_size"], moe_intermediate_size=c["moe_intermediate_size"],
                shared_expert_intermediate_size=c["moe_intermediate_size"] * c.get("num_shared_experts", 0),
                num_experts=c["num_experts"], num_experts_per_tok=c["num_experts_per_tok"],
                mlp_only_layers=list(range(c.get("first_k_dense_replace", 0))),
                vocab_size=c["vocab_size"], tie_word_embeddings=bool(c.get("tie_word_embeddings", False)))


# family model_type -> (stock model_type, config fields)
STAND_INS: dict[str, tuple[str, Callable[[dict], dict]]] = {
    "llada": ("llama", _llada),
    "Dream": ("qwen2", _qwen2_like),
    "lladamoe": ("qwen3_moe", _llada_moe),
    "llada2_moe": ("qwen2_moe", _llada2),
}


def stand_in_config(config: dict):
    """A stock ``PretrainedConfig`` of the same shapes as the remote-code ``config`` (a dict
    read from config.json), or None for a family without an entry."""
    entry = STAND_INS.get(config.get("model_type"))
    if entry is None:
        return None
    from transformers import AutoConfig

    stock_type, fields = entry
    return AutoConfig.for_model(stock_type, **fields(config))
