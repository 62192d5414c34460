"""The backbone table (``memdlm.backbones.families``): one row per family, each fact checked on a
tiny model of that family.

Adding a family to the table means adding its builder to ``ROWS`` here; the first test
fails until it is. Remote-code families are the look-alikes of ``tests/lookalikes.py``
(their contracts, not the real code). Split-forward exception safety is tested at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from memdlm.backbones.families import FAMILIES, OTHER, family_of, markdown_table
from memdlm.backbones.bidirectional import position_zero_sees_last_token
from memdlm.sampling.block_cache import cache_unsupported
from memdlm.memory.targets import find_targets
from memdlm.backbones.modeling import (
    build_tiny_model,
    forward_logits,
    init_config_path,
    load_model,
    logits_input_module,
    logits_only_at,
    logits_shift,
    make_bidirectional,
    reuse_attention_masks,
)
from memdlm.sampling.sampler import Sampler
from memdlm.backbones.checkpointing import transformer_blocks
from memdlm.backbones.split_forward import lower, supports_split, upper

sys.path.insert(0, str(Path(__file__).parent))
from lookalikes import write_family  # noqa: E402

torch.set_num_threads(1)

LAYERS = 3
SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=LAYERS, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=1024, bos_token_id=None)
MOE = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16)


def stock(config_name: str, model_name: str, **extra):
    """A builder of a tiny stock transformers model, *not* made bidirectional."""
    def build(tok, _tmp):
        import transformers

        ids = dict(vocab_size=len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        config = getattr(transformers, config_name)(**SMALL, **ids, **extra)
        return getattr(transformers, model_name)(config)
    return build


def gemma3(tok, _tmp):
    return build_tiny_model(tok, **{k: v for k, v in SMALL.items() if k != "bos_token_id"}, head_dim=8,
                            query_pre_attn_scalar=8)


def modernbert(tok, _tmp):
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    eos = tok.eos_token_id  # the shipped tokenizer has no BOS / CLS / SEP
    config = ModernBertConfig(**{k: v for k, v in SMALL.items() if k not in ("num_key_value_heads", "bos_token_id")},
                              layer_types=["full_attention"] * LAYERS, vocab_size=len(tok),
                              pad_token_id=tok.pad_token_id, eos_token_id=eos, bos_token_id=eos,
                              cls_token_id=eos, sep_token_id=eos)
    return ModernBertForMaskedLM(config)


def mobilebert(tok, _tmp):
    """The shipped recall base's config (trigram embedding), narrowed."""
    return build_tiny_model(tok, config_path=init_config_path("recall"), hidden_size=32, embedding_size=32,
                            true_hidden_size=32, intermediate_size=64, num_hidden_layers=LAYERS,
                            num_attention_heads=4)


def remote(lookalike: str):
    """A builder that writes the look-alike's code and checkpoint and loads it as memdlm does."""
    def build(tok, tmp):
        path, _ = write_family(lookalike, tmp, tok)
        return load_model(path, trust_remote_code=True)
    return build


# model_type -> builder(tok, tmp_path): one row per entry of memdlm.backbones.families.FAMILIES
ROWS = {
    "gemma3_text": gemma3,
    "llama": stock("LlamaConfig", "LlamaForCausalLM", head_dim=8),
    "mistral": stock("MistralConfig", "MistralForCausalLM", head_dim=8),
    "qwen2": stock("Qwen2Config", "Qwen2ForCausalLM"),
    "qwen3": stock("Qwen3Config", "Qwen3ForCausalLM", head_dim=8),
    "qwen2_moe": stock("Qwen2MoeConfig", "Qwen2MoeForCausalLM", **MOE, shared_expert_intermediate_size=24),
    "qwen3_moe": stock("Qwen3MoeConfig", "Qwen3MoeForCausalLM", head_dim=8, **MOE),
    "mixtral": stock("MixtralConfig", "MixtralForCausalLM", head_dim=8, num_local_experts=4,
                     num_experts_per_tok=2),
    "modernbert": modernbert,
    "mobilebert": mobilebert,
    "dream": remote("dream"),
    "llada": remote("llada"),
    "lladamoe": remote("llada_moe"),
    "llada2_moe": remote("llada2"),
}


def test_every_family_has_a_test_row():
    assert sorted(ROWS) == sorted(FAMILIES)


def test_names_are_unique_per_family_and_the_fallback_covers_them_all():
    for family in FAMILIES.values():
        assert len(set(family.ffn)) == len(family.ffn) and len(set(family.attn)) == len(family.attn)
        assert set(family.ffn) <= set(OTHER.ffn) and set(family.attn) <= set(OTHER.attn)
    assert family_of(None) is OTHER and family_of(type("C", (), {"model_type": "Dream"})) is FAMILIES["dream"]


def test_docs_table_is_the_code_table():
    doc = (Path(__file__).parents[1] / "docs" / "BACKBONES.md").read_text()
    start, end = "<!-- family table: memdlm.backbones.families.markdown_table() -->", "<!-- end of family table -->"
    assert start in doc and end in doc, "docs/BACKBONES.md lost its family-table markers"
    table = doc.split(start, 1)[1].split(end, 1)[0].strip()
    assert table == markdown_table(), "regenerate with: python -m memdlm.backbones.families"


@pytest.fixture(scope="module")
def models(tok, tmp_path_factory):
    """model_type -> a model as memdlm uses it (made bidirectional), built once per module."""
    built = {}

    def get(model_type):
        if model_type not in built:
            torch.manual_seed(0)
            model = ROWS[model_type](tok, tmp_path_factory.mktemp(model_type))
            model.config.mask_token_id = tok.mask_token_id
            make_bidirectional(model)  # as load_model does (remote rows were loaded by it)
            built[model_type] = model.eval()
        return built[model_type]
    return get


def _batch(tok, b=2, length=12):
    ids = torch.randint(10, len(tok), (b, length), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0
    return ids, mask


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_bidirectional_switch(tok, tmp_path, models, model_type):
    family = FAMILIES[model_type]
    model = models(model_type)
    assert model.config.model_type.lower() == model_type
    if family.bidirectional == "is_causal":  # causal as built, bidirectional once switched
        fresh = ROWS[model_type](tok, tmp_path)
        assert not position_zero_sees_last_token(fresh.eval(), padded=False)
        make_bidirectional(fresh)
        assert fresh.config.is_causal is False
    elif family.bidirectional == "use_bidirectional_attention":
        assert model.config.use_bidirectional_attention is True
    make_bidirectional(model)
    assert position_zero_sees_last_token(model, padded=False)
    assert position_zero_sees_last_token(model, padded=True)


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_target_names(models, model_type):
    family = FAMILIES[model_type]
    model = models(model_type)

    def ends_with(name, suffixes):
        return any(name == s or name.endswith("." + s) for s in suffixes)

    ffn = find_targets(model)
    assert ffn and all(ends_with(t.name, family.ffn) for t in ffn if t.kind == "linear")
    both = find_targets(model, scope="ffn_attn")
    added = [t.name for t in both if t.name not in {t.name for t in ffn}]
    assert added and all(ends_with(n, family.attn) for n in added)


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_split_forward(tok, models, model_type):
    model = models(model_type)
    assert supports_split(model) == FAMILIES[model_type].split_forward
    if not supports_split(model):
        return
    ids, mask = _batch(tok)
    layers, config = transformer_blocks(model), model.config

    def state():
        return (list(layers), config.num_hidden_layers, list(getattr(config, "layer_types", None) or []),
                [h for m in model.modules() for h in (m._forward_hooks, m._forward_pre_hooks) if h])

    before = state()
    ran = []
    with torch.no_grad():
        full = forward_logits(model, ids, mask)
        for k in range(len(layers)):
            hidden = lower(model, ids, mask, k)
            handles = [layer.register_forward_hook(lambda _m, _a, _o, i=i: ran.append(i))
                       for i, layer in enumerate(layers)]
            try:
                split = upper(model, hidden, mask, k)
            finally:
                for handle in handles:
                    handle.remove()
            torch.testing.assert_close(split, full, atol=1e-5, rtol=1e-5)
            assert ran == list(range(k, len(layers))), ran  # the upper half runs layers k.. only
            ran.clear()
    assert transformer_blocks(model) is layers and model.config is config
    assert before == state()  # the same layers, counts and (no) hooks left behind


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_prepared_masks(tok, models, model_type):
    model = models(model_type)
    ids, mask = _batch(tok)
    seen = []
    decoder = getattr(model, "model", None)
    with torch.no_grad():
        plain = forward_logits(model, ids, mask)
        with reuse_attention_masks(model, mask):
            first = forward_logits(model, ids, mask)
            handle = decoder.register_forward_pre_hook(  # runs after the substituting hook
                lambda _m, _a, kwargs: seen.append(kwargs.get("attention_mask")), with_kwargs=True) \
                if isinstance(decoder, torch.nn.Module) else None
            try:
                second = forward_logits(model, ids, mask)
            finally:
                if handle is not None:
                    handle.remove()
    prepared = bool(seen) and isinstance(seen[0], dict)
    assert prepared == FAMILIES[model_type].prepared_masks
    assert torch.equal(first, plain) and torch.equal(second, plain)


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_logits_shift(models, model_type):
    assert logits_shift(models(model_type)) == FAMILIES[model_type].logits_shift


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_head_input_gathers_exactly(tok, models, model_type):
    """The hooked module is where the head reads the final hidden states: logits gathered
    there equal the full forward's logits at the chosen positions."""
    model = models(model_type)
    path = FAMILIES[model_type].head_input
    expected = model.get_submodule(path) if path else model.get_output_embeddings()
    assert logits_input_module(model) is expected
    ids, mask = _batch(tok)
    where = torch.zeros_like(ids, dtype=torch.bool)
    where[0, 2], where[1, 5], where[1, 11] = True, True, True
    with torch.no_grad():
        full = forward_logits(model, ids, mask)
        with logits_only_at(model, where):
            gathered = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(gathered, full[where], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_block_cache(tok, models, model_type, block_pair):
    model = models(model_type)
    reason = cache_unsupported(model)
    if reason is not None and "takes no cache argument" in reason:
        # a look-alike whose forward swallows every keyword: the real files take the cache
        # (tests/test_real_families.py checks them)
        assert FAMILIES[model_type].block_cache and model_type in ("dream", "llada2_moe"), reason
        return
    assert (reason is None) == FAMILIES[model_type].block_cache, reason
    if reason is not None:
        return
    # a cached step on an unchanged canvas gives the no-cache logits (up to rounding)
    prompts = ["The cat sat on", "Numbers: 1 2 3 4 5 6 7"]
    enc = tok(prompts, add_special_tokens=False)["input_ids"]
    x, attn, slots = Sampler(model, tok)._canvas(enc, 8, torch.device("cpu"))
    active = torch.ones(len(prompts), dtype=torch.bool)
    plain, cached = block_pair(model, attn, slots[:, :4], slots)
    with torch.no_grad():
        reference = plain.logits(x, active)
        assert torch.equal(cached.logits(x, active), reference)  # the refresh
        torch.testing.assert_close(cached.logits(x, active), reference, atol=1e-5, rtol=0)


# --- split forward leaves the model alone, also when a layer raises -------------------------
def test_upper_does_not_touch_the_model_during_or_after_a_failing_forward(tok, models):
    model = models("gemma3_text")
    ids, mask = _batch(tok)
    layers, n, types = model.model.layers, model.config.num_hidden_layers, list(model.config.layer_types)
    during = []

    def boom(_m, _a):
        during.append((len(model.model.layers), model.config.num_hidden_layers))
        raise RuntimeError("layer failed")

    with torch.no_grad():
        hidden = lower(model, ids, mask, 1)
    handle = model.model.layers[2].register_forward_pre_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="layer failed"):
            upper(model, hidden, mask, 1)
    finally:
        handle.remove()
    assert during == [(LAYERS, LAYERS)]  # the running forward saw a view; the model kept every layer
    assert model.model.layers is layers and len(layers) == LAYERS
    assert model.config.num_hidden_layers == n and model.config.layer_types == types
    with torch.no_grad():  # and it still computes the full forward
        torch.testing.assert_close(upper(model, lower(model, ids, mask, 1), mask, 1),
                                   forward_logits(model, ids, mask), atol=1e-5, rtol=1e-5)


def test_lower_stops_after_layer_k_and_leaves_the_model_alone(tok, models):
    model = models("llama")
    ids, mask = _batch(tok)
    ran = []
    handles = [layer.register_forward_hook(lambda _m, _a, _out, i=i: ran.append(i))  # layers that ran
               for i, layer in enumerate(model.model.layers)]
    try:
        with torch.no_grad():
            hidden = lower(model, ids, mask, 2)
    finally:
        for h in handles:
            h.remove()
    assert ran == [0, 1] and hidden.shape == (*ids.shape, 32)
    assert len(model.model.layers) == LAYERS and model.config.num_hidden_layers == LAYERS
