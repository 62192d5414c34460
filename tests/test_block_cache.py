"""Block-wise key/value cache of the sampler: exact where claimed, shapes, memory, fallback.

Decoders (a ``Cache`` object) and MobileBERT (``memdlm.sampling.encoder_cache``: trigram embeddings
from the whole canvas, attention routed through transformers' attention interface) alike.
"""

from __future__ import annotations

import contextlib
import dataclasses
from types import SimpleNamespace

import pytest
import torch

from memdlm.backbones.modeling import build_tiny_model, init_config_path
from memdlm.runs.run import Run
from memdlm.sampling.block_cache import (
    BlockForward,
    _cache_keyword,
    cache_unsupported,
    warn_no_cache,
)
from memdlm.sampling.generation import generate
from memdlm.sampling.sampler import Sampler, SamplerConfig

torch.set_num_threads(1)

PROMPTS = ["The cat sat on", "Hello", "Numbers: 1 2 3 4 5 6 7"]
SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=8, max_position_embeddings=1024, bos_token_id=None)


def build(family, tok, attn="sdpa"):
    """A tiny random bidirectional model of ``family`` with attention kernel ``attn``."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(0)
    ids = dict(vocab_size=len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    if family == "gemma3":
        model = build_tiny_model(tok, seed=0, num_hidden_layers=2)
    elif family == "mobilebert":  # the shipped recall base's config (trigram embedding), narrowed
        model = build_tiny_model(tok, seed=0, config_path=init_config_path("recall"), hidden_size=32,
                                 embedding_size=32, true_hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=2, num_attention_heads=4)
    elif family in ("llama", "llama_shifted"):
        config = LlamaConfig(**SMALL, **ids)
        config.is_causal = False
        config.logits_shift = family == "llama_shifted"  # Dream's convention on a stock decoder
        model = LlamaForCausalLM(config)
    else:
        config = Qwen3MoeConfig(**SMALL, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, **ids)
        config.is_causal = False
        model = Qwen3MoeForCausalLM(config)
    model.set_attn_implementation(attn)  # the public switch (transformers 5)
    return model.eval()


@pytest.fixture(scope="module", params=["gemma3", "mobilebert"])
def model(tok, request):
    return build(request.param, tok)


def canvas(tok, model, n_new=8, block=4):
    """The sampler's padded canvas for PROMPTS: ids ``[b, L]``, attention ``[b, L]``, slots ``[b, N]``."""
    sampler = Sampler(model, tok)
    enc = tok(PROMPTS, add_special_tokens=False)["input_ids"]
    x, attn, resp_pos = sampler._canvas(enc, n_new, torch.device("cpu"))
    return x, attn, resp_pos


def record_widths(model):
    """Widths (columns) of the hidden states entering the first layer at every forward of
    ``model``, appended to the returned list. (An encoder's cached step still gets the whole
    canvas as ``input_ids``, for its embeddings; its layers run on the query columns.)"""
    layers = model.mobilebert.encoder.layer if hasattr(model, "mobilebert") else model.model.layers
    widths = []
    handle = layers[0].register_forward_pre_hook(
        lambda _m, args, kwargs: widths.append((args[0] if args else kwargs["hidden_states"]).shape[1]),
        with_kwargs=True)
    return widths, handle


# -- exactness ---------------------------------------------------------------


@pytest.mark.parametrize("family, attn", [("gemma3", "sdpa"), ("gemma3", "eager"), ("llama", "sdpa"),
                                          ("llama", "eager"), ("qwen3_moe", "sdpa"), ("mobilebert", "sdpa"),
                                          ("mobilebert", "eager"), ("llama_shifted", "sdpa"),
                                          ("llama_shifted", "eager")])
@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_refresh_is_exact_and_cached_step_matches_on_unchanged_canvas(tok, family, attn, mode, block_pair):
    model = build(family, tok, attn)
    x, mask, resp_pos = canvas(tok, model)
    x[1, resp_pos[1, 5]] = 300  # a committed token in a later block: the suffix is not all masks
    active = torch.ones(3, dtype=torch.bool)
    plain, cached = block_pair(model, mask, resp_pos[:, :4], resp_pos, mode)
    reference = plain.logits(x, active)  # [b, B, V]
    widths, handle = record_widths(model)
    try:
        refresh = cached.logits(x, active)
        step = cached.logits(x, active)  # nothing changed since the refresh
    finally:
        handle.remove()
    assert torch.equal(refresh, reference)  # the refresh is the no-cache forward, bit for bit
    torch.testing.assert_close(step, reference, atol=1e-5, rtol=0)  # only rounding differs
    shift = int(family == "llama_shifted")  # the column before the block, which the block's first slot reads
    assert widths == [x.shape[1], (8 if mode == "prefix" else 4) + shift]  # the step ran on its query columns
    assert cached.calls == 2 and cached.calls_per_sample.tolist() == [2, 2, 2]
    # the cached step really reuses keys/values: after a change outside its query, it does not see it
    x2 = x.clone()
    x2[:, :2] = 301  # the prompt's first two tokens (every prompt has at least three)
    torch.testing.assert_close(cached.logits(x2, active), step, atol=1e-5, rtol=0)
    assert not torch.allclose(plain.logits(x2, active), reference, atol=1e-4)
    assert model.config._attn_implementation == attn  # an encoder's routed attention is switched back


@pytest.mark.parametrize("rule", [dict(steps=8), dict(unmask_rule="threshold", threshold=5e-4)])
@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_refresh_every_step_equals_no_cache(model, tok, rule, mode):
    refresh_every_step_equals_no_cache(model, tok, rule, mode)


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_shifted_logits_refresh_every_step_equals_no_cache(tok, mode):
    """Dream's right-shifted logits: the block's first slot is read from the column before it."""
    shifted = build("llama_shifted", tok)
    refresh_every_step_equals_no_cache(shifted, tok, dict(steps=8), mode)
    cfg = SamplerConfig(max_new_tokens=12, steps=12, block_length=4, stop_at_eos=False)
    cached = Sampler(shifted, tok, cfg).generate(PROMPTS, cache=mode)  # stale keys/values, right columns
    assert cached.cache_used == mode and cached.model_calls == 12


def refresh_every_step_equals_no_cache(model, tok, rule, mode):
    cfg = SamplerConfig(max_new_tokens=12, block_length=4, stop_at_eos=False, **rule)
    sampler = Sampler(model, tok, cfg)
    plain = sampler.generate(PROMPTS, return_history=True)
    every = sampler.generate(PROMPTS, cache=mode, cache_refresh_steps=1, return_history=True)
    assert every.cache_used == mode
    assert torch.equal(every.sequences, plain.sequences)
    assert all(torch.equal(a.committed, b.committed) for a, b in zip(every.history, plain.history))
    assert every.model_calls == plain.model_calls and every.calls_per_sample == plain.calls_per_sample


def test_query_widths_per_mode(model, tok):
    """Refresh at each block's first step (full width), then only the query columns."""
    cfg = SamplerConfig(max_new_tokens=8, steps=8, block_length=4, stop_at_eos=False)
    width = max(len(p) for p in tok(PROMPTS, add_special_tokens=False)["input_ids"]) + 8
    expected = {"none": [width] * 8,
                "prefix": [width, 8, 8, 8, width, 4, 4, 4],  # the block and everything after it
                "dual": [width, 4, 4, 4, width, 4, 4, 4],  # the block alone
                }
    for mode, want in expected.items():
        widths, handle = record_widths(model)
        try:
            Sampler(model, tok, cfg).generate(PROMPTS, cache=mode)
        finally:
            handle.remove()
        assert widths == want, mode
    widths, handle = record_widths(model)
    try:
        Sampler(model, tok, cfg).generate(PROMPTS, cache="dual", cache_refresh_steps=2)
    finally:
        handle.remove()
    assert widths == [width, 4, width, 4] * 2


# -- inference-time memory -----------------------------------------------------


def memory_lr(model) -> float:
    """An inner learning rate at which the prompt's memory visibly changes the tiny model's
    logits (> 1e-3) and its greedy output (the randomly initialised MobileBERT needs more)."""
    return {"gemma3_text": 1.0, "mobilebert": 100.0}[model.config.model_type]


def test_cached_steps_run_with_per_sample_memory(model, tok):
    enc = tok(PROMPTS, add_special_tokens=False)["input_ids"]
    memory = Run(model, tok).memory(inner_lr=memory_lr(model)).adapt(enc, [0, 1, 2]).active
    x, mask, resp_pos = canvas(tok, model)
    active = torch.ones(3, dtype=torch.bool)
    with_memory = BlockForward(model, mask, "dual", memory)
    without = BlockForward(model, mask, "none", contextlib.nullcontext)
    for fwd in (with_memory, without):
        fwd.start_block(resp_pos[:, :4], resp_pos)
    refresh, step = with_memory.logits(x, active), with_memory.logits(x, active)
    torch.testing.assert_close(step, refresh, atol=1e-5, rtol=0)  # the cache was built with memory on
    assert (step - without.logits(x, active)).abs().max() > 1e-3  # and the memory changes the logits


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_per_sample_memory_batched_equals_alone_with_cache(model, tok, mode):
    cfg = SamplerConfig(max_new_tokens=8, block_length=4, unmask_rule="threshold", threshold=5e-4, cache=mode)
    memory = Run(model, tok).memory(inner_lr=memory_lr(model))
    batched = generate(model, tok, PROMPTS, cfg, memory=memory, seeds=[3, 4, 5], batch_size=3)
    alone = [generate(model, tok, [p], cfg, memory=memory, seeds=[3 + i], batch_size=1)[0]
             for i, p in enumerate(PROMPTS)]
    assert batched == alone
    assert batched != generate(model, tok, PROMPTS, cfg, seeds=[3, 4, 5], batch_size=3)  # memory mattered


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_memory_with_refresh_every_step_equals_no_cache(model, tok, mode):
    cfg = SamplerConfig(max_new_tokens=8, block_length=4, unmask_rule="threshold", threshold=5e-4)
    memory = Run(model, tok).memory(inner_lr=memory_lr(model))
    every = dataclasses.replace(cfg, cache=mode, cache_refresh_steps=1)
    stats: dict = {}
    cached = generate(model, tok, PROMPTS, every, memory=memory, seeds=[3, 4, 5], batch_size=3, stats=stats)
    assert stats["cache_used"] == mode
    assert cached == generate(model, tok, PROMPTS, cfg, memory=memory, seeds=[3, 4, 5], batch_size=3)


# -- MobileBERT: trigram embeddings, the shipped base ----------------------------


def test_mobilebert_query_embeddings_come_from_the_current_canvas(tok):
    """A trigram embedding reads tokens i - 1, i, i + 1, so a cached step embeds its query
    columns from the whole current canvas: a change of the block's left neighbour reaches the
    block's first slot at once (through its embedding); a change two columns away does not
    (only through keys/values, which a cached step reuses)."""
    model = build("mobilebert", tok)
    x, mask, resp_pos = canvas(tok, model)
    active = torch.ones(3, dtype=torch.bool)
    cached = BlockForward(model, mask, "dual", contextlib.nullcontext)
    cached.start_block(resp_pos[:, :4], resp_pos)
    cached.logits(x, active)  # the refresh
    step = cached.logits(x, active)
    rows = torch.arange(3)
    near, far = x.clone(), x.clone()
    near[rows, resp_pos[:, 0] - 1] = 301  # the prompt's last token, left neighbour of the block
    far[rows, resp_pos[:, 0] - 2] = 301
    torch.testing.assert_close(cached.logits(far, active), step, atol=1e-5, rtol=0)
    changed = (cached.logits(near, active) - step).abs().amax(dim=-1)  # [b, B]
    assert (changed[:, 0] > 1e-4).all()  # the block's first slot saw its new neighbour


@pytest.fixture(scope="module")
def mqar_base():
    """The shipped recall base (a trained 2-layer MobileBERT), its tokenizer, and the
    canvas of six held-out mqar_v3 prompts with four slots each: ids, padding mask, slots."""
    from memdlm.eval.heldout import heldout_samples

    run = Run.load("mqar-base")
    samples = heldout_samples(run.tokenizer, ["mqar_v3"], 64, 6, seed=1)
    enc = run.tokenizer([s.prompt for s in samples], add_special_tokens=False)["input_ids"]
    x, mask, slots = Sampler(run.model, run.tokenizer)._canvas(enc, 4, torch.device("cpu"))
    return run.model, run.tokenizer, samples, x, mask, slots


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_mobilebert_cached_step_is_the_stale_key_value_forward(mqar_base, mode, block_pair):
    """What a cached step computes after the block changed, checked against a second
    construction: a full forward on the new canvas whose key/value projections outside the
    query columns are replaced, in every layer, by the refresh's (the stale ones)."""
    model, _, _, x, mask, slots = mqar_base
    rows, active = torch.arange(x.shape[0]), torch.ones(x.shape[0], dtype=torch.bool)
    plain, cached = block_pair(model, mask, slots[:, :2], slots, mode)
    projections = [getattr(layer.attention.self, p) for layer in model.mobilebert.encoder.layer
                   for p in ("key", "value")]
    kept = {}
    handles = [m.register_forward_hook(lambda m, _a, out: kept.__setitem__(m, out)) for m in projections]
    with torch.no_grad():
        try:
            first = cached.logits(x, active)  # the refresh (its projections kept)
        finally:
            for h in handles:
                h.remove()
        x2 = x.clone()
        x2[rows, slots[:, 0]] = first[:, 0].argmax(-1)  # a step committed the block's first slot
        query = torch.zeros_like(x2, dtype=torch.bool).scatter_(1, cached.query_cols, True)[..., None]
        handles = [m.register_forward_hook(lambda m, _a, out: torch.where(query, out, kept[m]))
                   for m in projections]
        try:
            stale = plain.logits(x2, active)
        finally:
            for h in handles:
                h.remove()
        step = cached.logits(x2, active)
        fresh = plain.logits(x2, active)
    torch.testing.assert_close(step, stale, atol=1e-5, rtol=1e-5)
    assert (step - fresh).abs().max() > 1.0  # on this model stale keys/values move the logits a lot


def test_mqar_base_cache_is_exact_where_claimed(mqar_base, block_pair):
    """On the shipped base: the refresh is the no-cache forward bit for bit, a cached step on
    an unchanged canvas matches it, and refreshing every step gives the no-cache answers."""
    from memdlm.eval.heldout import answer_sampler_config

    model, base_tok, samples, x, mask, slots = mqar_base
    active = torch.ones(x.shape[0], dtype=torch.bool)
    plain, cached = block_pair(model, mask, slots[:, :2], slots)
    with torch.no_grad():
        reference = plain.logits(x, active)
        assert torch.equal(cached.logits(x, active), reference)
        # logits of up to ~20 here: float rounding is relative
        torch.testing.assert_close(cached.logits(x, active), reference, atol=1e-5, rtol=1e-5)
    prompts = [s.prompt for s in samples]
    cfg = answer_sampler_config(base_tok, samples)
    every = dataclasses.replace(cfg, cache="dual", cache_refresh_steps=1)
    stats: dict = {}
    assert generate(model, base_tok, prompts, every, stats=stats) == generate(model, base_tok, prompts, cfg)
    assert stats["cache_used"] == "dual"


# -- families without a cache path ----------------------------------------------


def test_unsupported_families_fall_back_to_no_cache(tok, caplog):
    class Double:  # a model as the check sees it: its config and its forward's signature
        def __init__(self, config):
            self.config = config

        def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None):
            raise AssertionError("never called")

    def config(**kw):
        base = dict(model_type="gemma3_text", layer_types=["full_attention"], _attn_implementation="sdpa")
        return Double(SimpleNamespace(**{**base, **kw}))

    assert cache_unsupported(config()) is None
    assert "sliding" in cache_unsupported(config(layer_types=["full_attention", "sliding_attention"]))
    assert "family" in cache_unsupported(config(model_type="modernbert"))
    assert cache_unsupported(config(logits_shift=True)) is None  # Dream's shift: the decoder path reads j - 1
    assert "encoder" in cache_unsupported(config(model_type="mobilebert", logits_shift=True))
    for family, why in [("llada", "modeling_llada.py"), ("lladamoe", "modeling_lladamoe.py")]:
        reason = cache_unsupported(config(model_type=family))  # one line: the family and its code's reason
        assert reason.startswith(f"family {family!r}: ") and why in reason and "\n" not in reason
    assert cache_unsupported(config(model_type="dream")) is None
    assert cache_unsupported(config(model_type="llada2_moe")) is None
    assert "attention" in cache_unsupported(config(_attn_implementation="flash_attention_2"))
    Double.forward = lambda self, input_ids, attention_mask=None, **kwargs: None  # swallows everything
    assert "takes no cache argument" in cache_unsupported(config(model_type="dream"))
    modernbert = build_modernbert(tok)
    cfg = SamplerConfig(max_new_tokens=4, steps=4, stop_at_eos=False)
    plain = Sampler(modernbert, tok, cfg).generate(PROMPTS)
    warn_no_cache.cache_clear()
    with caplog.at_level("WARNING", logger="memdlm"):
        cached = Sampler(modernbert, tok, cfg).generate(PROMPTS, cache="dual")
        Sampler(modernbert, tok, cfg).generate(PROMPTS, cache="dual")  # the next batch: no second warning
    assert cached.cache_used == "none" and caplog.text.count("not available") == 1
    assert torch.equal(cached.sequences, plain.sequences)


def test_cache_keyword_follows_the_forward(tok):
    class Remote4x(torch.nn.Module):  # remote code written for transformers 4 names it past_key_values
        def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None):
            return input_ids

    assert _cache_keyword(Remote4x()) == "past_key_values"
    assert _cache_keyword(build("llama", tok)) == "cache"


def build_modernbert(tok):
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    torch.manual_seed(0)
    eos = tok.eos_token_id
    config = ModernBertConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              max_position_embeddings=1024, layer_types=["full_attention"] * 2,
                              bos_token_id=eos, cls_token_id=eos, sep_token_id=eos, vocab_size=len(tok),
                              pad_token_id=tok.pad_token_id, eos_token_id=eos)
    return ModernBertForMaskedLM(config).eval()
