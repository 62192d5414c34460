"""Backbones beyond the tiny default: bidirectional decoders (Llama, Qwen3), an MoE
(Qwen3-MoE, fused experts with fast weights of their own), an encoder masked LM
(ModernBERT), Gemma3; Dream's right-shifted logits; ``--load-in-4bit``.

Every model here is a tiny random config (hidden 32, 2 layers) sized for the shipped
tokenizer; the end-to-end ``memdlm train`` / ``memdlm generate`` runs take about 1.5 s
each once transformers' Trainer is imported.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from types import SimpleNamespace

import pytest
import torch

from memdlm.cli import main
from memdlm.config import DiffusionArguments
from memdlm.diffusion.process import NoisedBatch, mdlm_loss
from memdlm.diffusion.masking import apply_mask, mask_with_probability
from memdlm.memory.config import MemoryArguments
from memdlm.memory.experts import slot_delta
from memdlm.memory.fast_weights import FastWeights
from memdlm.memory.inner_loop import InnerLoop, InnerLoopInputs
from memdlm.memory.targets import expert_targets, find_targets
from memdlm.backbones.modeling import (
    build_tiny_model,
    forward_logits,
    init_config_path,
    load_model,
    logits_only_at,
    logits_shift,
    make_bidirectional,
)
from memdlm.sampling.sampler import Sampler, SamplerConfig
from memdlm.diffusion.schedules import get_schedule

torch.set_num_threads(1)

SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)


def _ids(tok) -> dict:
    return dict(vocab_size=len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)


def build_llama(tok, **kw):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**SMALL, num_key_value_heads=2, head_dim=8, max_position_embeddings=1024,
                         bos_token_id=None, **_ids(tok), **kw)
    config.is_causal = False
    return LlamaForCausalLM(config)


def build_qwen3(tok, **kw):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(**SMALL, num_key_value_heads=2, head_dim=8, max_position_embeddings=1024,
                         bos_token_id=None, **_ids(tok), **kw)
    config.is_causal = False
    return Qwen3ForCausalLM(config)


def build_qwen3_moe(tok, **kw):
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    config = Qwen3MoeConfig(**SMALL, num_key_value_heads=2, head_dim=8, max_position_embeddings=1024,
                            num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
                            bos_token_id=None, **_ids(tok), **kw)
    config.is_causal = False
    return Qwen3MoeForCausalLM(config)


def build_modernbert(tok, **kw):
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    eos = tok.eos_token_id  # the shipped tokenizer has no BOS / CLS / SEP
    config = ModernBertConfig(**SMALL, max_position_embeddings=1024, layer_types=["full_attention"] * 2,
                              bos_token_id=eos, cls_token_id=eos, sep_token_id=eos, **_ids(tok), **kw)
    return ModernBertForMaskedLM(config)


def build_gemma3(tok, **kw):
    return build_tiny_model(tok, **SMALL, head_dim=8, query_pre_attn_scalar=8, **kw)


def build_mobilebert(tok, **kw):
    """The shipped recall base's class (trigram embedding; its LM head bypasses its decoder module)."""
    return build_tiny_model(tok, config_path=init_config_path("recall"), **SMALL, embedding_size=32,
                            true_hidden_size=32, **kw)


BUILDERS = {"llama": build_llama, "qwen3": build_qwen3, "qwen3_moe": build_qwen3_moe,
            "modernbert": build_modernbert, "gemma3": build_gemma3, "mobilebert": build_mobilebert}


def build(name, tok, seed=0):
    torch.manual_seed(seed)
    model = BUILDERS[name](tok)
    model.config.mask_token_id = tok.mask_token_id
    return model


def save(model, tok, path):
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def random_ids(tok, shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(10, len(tok), shape, generator=g)


def noised(tok, seed=0, b=3, length=20, prompt=8):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, len(tok), (b, length), generator=g)
    attn = torch.ones_like(ids)
    attn[-1, length - 5:] = 0
    maskable = torch.zeros_like(ids, dtype=torch.bool)
    maskable[:, prompt:] = True
    maskable &= attn.bool()
    t = torch.linspace(0.3, 0.9, b)
    masked = mask_with_probability(maskable, t, generator=g)
    return NoisedBatch(ids, attn, maskable, masked, apply_mask(ids, masked, tok.mask_token_id), t, 1 / t,
                       torch.arange(b) + 7)


# --- (a)-(d) bidirectional attention, loading, targets ---------------------------------------
@pytest.mark.parametrize("name", list(BUILDERS))
def test_position_zero_sees_the_last_token(tok, name):
    model = build(name, tok).eval()
    make_bidirectional(model)
    ids = random_ids(tok, (1, 12))
    edited = ids.clone()
    edited[0, -1] = (ids[0, -1] + 1) % len(tok)
    with torch.no_grad():
        a, b = forward_logits(model, ids)[0, 0], forward_logits(model, edited)[0, 0]
    assert not torch.allclose(a, b)


def test_causal_control_position_zero_ignores_the_last_token(tok):
    """The check above is sensitive: with causal masking left on, position 0 does not move."""
    model = build("llama", tok).eval()
    model.config.is_causal = True
    ids = random_ids(tok, (1, 12))
    edited = ids.clone()
    edited[0, -1] = (ids[0, -1] + 1) % len(tok)
    with torch.no_grad():
        assert torch.equal(forward_logits(model, ids)[0, 0], forward_logits(model, edited)[0, 0])


@pytest.mark.parametrize("name, cls", [("llama", "LlamaForCausalLM"), ("qwen3", "Qwen3ForCausalLM"),
                                       ("qwen3_moe", "Qwen3MoeForCausalLM"),
                                       ("modernbert", "ModernBertForMaskedLM"),
                                       ("gemma3", "Gemma3ForCausalLM")])
def test_load_model_picks_the_class_and_keeps_it_bidirectional(tok, tmp_path, name, cls):
    model = build(name, tok)
    path = save(model, tok, tmp_path / name)
    loaded = load_model(path).eval()
    assert type(loaded).__name__ == cls
    if name in ("llama", "qwen3", "qwen3_moe"):
        assert loaded.config.is_causal is False
    ids = random_ids(tok, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(forward_logits(loaded, ids), forward_logits(model.eval(), ids))


def test_sliding_window_layers_are_reported(tok, caplog):
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    config = ModernBertConfig(**{**SMALL, "num_hidden_layers": 3}, **_ids(tok))  # default: 2 of 3 local
    with caplog.at_level("WARNING", logger="memdlm"):
        make_bidirectional(ModernBertForMaskedLM(config))
    assert "layers [1, 2] use local (sliding-window) attention" in caplog.text


@pytest.mark.parametrize("name, expected", [
    ("llama", ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]),
    ("qwen3", ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]),
    ("gemma3", ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]),
    ("modernbert", ["mlp.Wi", "mlp.Wo"]),
])
def test_default_targets_are_the_last_layers_ffn(tok, name, expected):
    targets = find_targets(build(name, tok))
    assert [t.name for t in targets] == [f"model.layers.1.{e}" for e in expected]
    assert all(t.kind == "linear" for t in targets)


def test_mobilebert_targets_are_the_last_layers_ffn_not_its_attention_output(tok):
    names = [t.name for t in find_targets(build("mobilebert", tok))]
    assert names == ["mobilebert.encoder.layer.1.intermediate.dense", "mobilebert.encoder.layer.1.output.dense"]


@pytest.mark.parametrize("shift", [False, True])
def test_mobilebert_logits_are_gathered_before_its_head(tok, shift):
    """MobileBERT's head multiplies by its decoder's weight without calling the decoder, so
    the gather hook sits on the prediction head: the gathered (and shifted) logits equal
    the full forward's logits at those positions."""
    model = build("mobilebert", tok).eval()
    model.config.logits_shift = shift
    ids = random_ids(tok, (2, 10))
    where = torch.zeros_like(ids, dtype=torch.bool)
    where[0, 3], where[1, 7], where[1, 9] = True, True, True
    with torch.no_grad():
        full = model(input_ids=ids).logits
        with logits_only_at(model, where):
            gathered = model(input_ids=ids).logits
    source = torch.cat([full[:, :1], full[:, :-1]], dim=1) if shift else full
    assert gathered.shape == (3, len(tok))
    torch.testing.assert_close(gathered, source[where])


def test_a_head_that_bypasses_the_hooked_module_is_an_error_not_full_logits():
    class BypassingHead(torch.nn.Module):  # multiplies by its head's weight, never calls it
        config = SimpleNamespace(model_type="not_in_the_table")

        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(4, 7)

        def get_output_embeddings(self):
            return self.head

        def forward(self, hidden):
            return SimpleNamespace(logits=hidden @ self.head.weight.T)

    model, hidden = BypassingHead(), torch.randn(1, 5, 4)
    with pytest.raises(RuntimeError, match="never called Linear"):
        with logits_only_at(model, torch.ones(1, 5, dtype=torch.bool)):
            model(hidden)


def test_modernbert_attention_output_is_not_an_ffn_target(tok):
    model = build("modernbert", tok)
    assert "model.layers.1.attn.Wo" not in [t.name for t in find_targets(model)]
    both = [t.name for t in find_targets(model, scope="ffn_attn")]
    assert "model.layers.1.attn.Wo" in both and "model.layers.1.attn.Wqkv" in both


def test_moe_targets_one_per_expert_and_projection(tok):
    model = build("qwen3_moe", tok)
    targets = find_targets(model)
    names = [t.name for t in targets]
    assert names == [f"model.layers.1.mlp.experts.{p}.{e}" for e in range(4) for p in ("gate_up_proj", "down_proj")]
    for t in targets:
        assert t.kind == "expert" and t.layer == 1 and t.expert == int(t.name.rsplit(".", 1)[1])
        assert (t.in_features, t.out_features) == ((32, 32) if t.param == "gate_up_proj" else (16, 32))
    # the router is not a target; a regex can pick the experts of any layer
    picked = [t.name for t in find_targets(model, pattern=r"layers\.0\.mlp\.experts")]
    assert len(picked) == 8 and all(n.startswith("model.layers.0.mlp.experts.") for n in picked)


def test_shared_expert_is_a_plain_linear_target(tok):
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    config = Qwen2MoeConfig(**SMALL, num_key_value_heads=2, num_experts=4, num_experts_per_tok=2,
                            moe_intermediate_size=16, shared_expert_intermediate_size=24, **_ids(tok))
    model = Qwen2MoeForCausalLM(config)
    kinds = {t.name: t.kind for t in find_targets(model)}
    for p in ("gate_proj", "up_proj", "down_proj"):
        assert kinds[f"model.layers.1.mlp.shared_expert.{p}"] == "linear"
    assert sum(k == "expert" for k in kinds.values()) == 8
    assert "model.layers.1.mlp.shared_expert_gate" not in kinds


# --- (b) fused experts: each expert's own delta, applied inside the experts ------------------
def _experts_setup(tok, dense=False, slots=2, seed=0):
    """The layer-1 experts module, its targets and a memory with random non-zero deltas."""
    model = build("qwen3_moe", tok)
    experts = model.model.layers[1].mlp.experts
    targets = expert_targets("experts", experts, 1)
    fresh = FastWeights.fresh(targets, rank=3, scale=2.0, dense=dense, slot_seeds=list(range(slots)),
                              device="cpu")
    g = torch.Generator().manual_seed(seed)
    memory = fresh.replace([torch.randn(p.shape, generator=g) * 0.5 for p in fresh.params()])
    return experts, targets, memory


def _merged(experts, memory, slot, e):
    """Expert e's weights with slot's deltas merged in: (W_gate_up + dW, W_down + dW)."""
    out = []
    for target, group in zip(memory.targets, memory.tensors):
        if target.expert != e:
            continue
        base = getattr(experts, target.param)[e].detach()
        delta = group[0][slot] if len(group) == 1 else memory.scale * group[1][slot] @ group[0][slot]
        out.append(base + delta)
    return out


def _reference(experts, memory, hidden, index, weights, samples):
    """sum_k w_k * f_{e_k}(x; merged weights of the token's slot), by hand, token by token."""
    out = torch.zeros_like(hidden)
    for t in range(hidden.shape[0]):
        for k in range(index.shape[1]):
            e = int(index[t, k])
            w_gu, w_d = _merged(experts, memory, int(samples[t]), e)
            gate, up = (w_gu @ hidden[t]).chunk(2)
            out[t] += weights[t, k] * (w_d @ (torch.nn.functional.silu(gate) * up))
    return out


def _routing(n_tokens=10):
    """Hand-made routing: token t -> experts (t % 4, (t + 1) % 4), weights 0.7 / 0.3."""
    index = torch.stack([torch.arange(n_tokens) % 4, (torch.arange(n_tokens) + 1) % 4], 1)
    weights = torch.tensor([[0.7, 0.3]]).expand(n_tokens, 2).contiguous()
    return index, weights


@pytest.mark.parametrize("dense", [False, True])
def test_experts_with_memory_equal_merged_expert_weights(tok, dense):
    """Two samples (5 tokens each) with their own slots: every token's output equals the MoE
    computed by hand with its own slot's deltas merged into its routed experts' weights."""
    experts, _, memory = _experts_setup(tok, dense=dense)
    hidden = torch.randn(10, 32, generator=torch.Generator().manual_seed(1))
    index, weights = _routing()
    with torch.no_grad(), memory.active():
        got = experts(hidden, index, weights)
    expected = _reference(experts, memory, hidden, index, weights, samples=torch.arange(10) // 5)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_a_token_changes_only_through_its_own_experts_deltas(tok):
    experts, targets, memory = _experts_setup(tok)
    hidden = torch.randn(10, 32, generator=torch.Generator().manual_seed(1))
    index, weights = _routing()  # token 0 -> experts (0, 1); token 2 -> experts (2, 3)

    def run(keep_experts):
        """Output with every other expert's deltas zeroed."""
        zeroed = memory.replace([p if t.expert in keep_experts else torch.zeros_like(p)
                                 for t, group in zip(targets, memory.tensors) for p in group])
        with torch.no_grad(), zeroed.active():
            return experts(hidden, index, weights)

    with torch.no_grad():
        bare = experts(hidden, index, weights)
    full = run({0, 1, 2, 3})
    only_01, only_23 = run({0, 1}), run({2, 3})
    assert torch.equal(only_23[0], bare[0])  # token 0 uses experts 0 and 1 only
    assert torch.equal(only_01[2], bare[2])  # token 2 uses experts 2 and 3 only
    torch.testing.assert_close(only_01[0], full[0], atol=0, rtol=0)
    torch.testing.assert_close(only_23[2], full[2], atol=0, rtol=0)
    assert not torch.allclose(full[0], bare[0]) and not torch.allclose(full[2], bare[2])
    # expert 1's delta alone moves token 0 by exactly 0.3 * (its change to expert 1's output)
    only_1 = run({1})
    w_gu, w_d = _merged(experts, memory, 0, 1)
    gate, up = (w_gu @ hidden[0]).chunk(2)
    moved = w_d @ (torch.nn.functional.silu(gate) * up)
    gate0, up0 = (experts.gate_up_proj[1].detach() @ hidden[0]).chunk(2)
    base = experts.down_proj[1].detach() @ (torch.nn.functional.silu(gate0) * up0)
    torch.testing.assert_close(only_1[0] - bare[0], 0.3 * (moved - base), atol=1e-6, rtol=1e-5)


def _layout_case(name):
    """A standalone experts module of another weight layout (4 experts, hidden 32)."""
    import transformers

    if name == "gpt_oss":  # [E, in, out] (transposed), biases, interleaved gate/up, clamped GLU
        from transformers.models.gpt_oss.modeling_gpt_oss import GptOssExperts
        return GptOssExperts(transformers.GptOssConfig(hidden_size=32, intermediate_size=16, num_local_experts=4))
    if name == "nemotron_h":  # no gate: up_proj [E, I, H], activation, down_proj
        from transformers.models.nemotron_h.modeling_nemotron_h import NemotronHExperts
        return NemotronHExperts(transformers.NemotronHConfig(hidden_size=32, moe_intermediate_size=16,
                                                             n_routed_experts=4))
    if name == "muse_spark":  # a norm after each expert
        module = pytest.importorskip("transformers.models.muse_spark.modeling_muse_spark")
        config = transformers.MuseSparkTextConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                                  moe_hidden_size=32, moe_intermediate_size=16,
                                                  num_local_experts=4)
        return module.MuseSparkExperts(config)
    from transformers.models.mixtral.modeling_mixtral import MixtralExperts
    return MixtralExperts(transformers.MixtralConfig(hidden_size=32, intermediate_size=16, num_local_experts=4))


@pytest.mark.parametrize("name", ["mixtral", "gpt_oss", "nemotron_h", "muse_spark"])
def test_other_expert_layouts_equal_merged_weights_through_their_own_forward(name):
    """Transposed, biased, interleaved, ungated and post-normed experts: with one memory
    slot, the hooked output equals the module's own forward with the deltas merged into its
    stored weights."""
    torch.manual_seed(0)
    experts = _layout_case(name)
    experts.config._experts_implementation = "eager"
    with torch.no_grad():
        for p in experts.parameters():
            p.normal_(0, 0.3)
    targets = expert_targets("experts", experts, 0)
    assert {t.param for t in targets} == {("up_proj" if name == "nemotron_h" else "gate_up_proj"), "down_proj"}
    g = torch.Generator().manual_seed(1)
    fresh = FastWeights.fresh(targets, rank=3, scale=2.0, dense=False, slot_seeds=[0], device="cpu")
    memory = fresh.replace([torch.randn(p.shape, generator=g) * 0.3 for p in fresh.params()])
    hidden = torch.randn(6, 32, generator=g)
    index = torch.tensor([[0, 1], [1, 2], [2, 3], [3, 0], [0, 2], [1, 3]])
    weights = torch.tensor([[0.6, 0.4]]).expand(6, 2).contiguous()
    merged = copy.deepcopy(experts)
    with torch.no_grad():
        for t, (a, b) in zip(memory.targets, memory.tensors):
            delta = memory.scale * b[0] @ a[0]  # [out, in]
            getattr(merged, t.param)[t.expert] += delta.t() if getattr(experts, "is_transposed", False) else delta
        expected, bare = merged(hidden, index, weights), experts(hidden, index, weights)
        with fresh.active():
            assert torch.equal(experts(hidden, index, weights), bare)
        with memory.active():
            got = experts(hidden, index, weights)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, bare)


def test_fresh_memory_leaves_the_moe_model_exactly_unchanged(tok):
    """B = 0: the correction is exactly zero, whatever experts implementation runs the base."""
    model = build("qwen3_moe", tok).eval()
    assert model.config._experts_implementation != "eager"  # the base runs fused kernels
    targets = find_targets(model)
    ids = random_ids(tok, (2, 9))
    for slots in ([3], [3, 4]):
        memory = FastWeights.fresh(targets, rank=2, scale=2.0, dense=False, slot_seeds=slots, device="cpu")
        with torch.no_grad():
            bare = forward_logits(model, ids)
            with memory.active():
                assert torch.equal(forward_logits(model, ids), bare)


def test_slot_delta_matches_per_token_gather():
    g = torch.Generator().manual_seed(0)
    x, slots = torch.randn(7, 5, generator=g), torch.tensor([0, 2, 1, 1, 0, 2, 2])
    a, b = torch.randn(3, 2, 5, generator=g), torch.randn(3, 4, 2, generator=g)
    expected = torch.stack([1.5 * b[s] @ a[s] @ x[i] for i, s in enumerate(slots.tolist())])
    torch.testing.assert_close(slot_delta([a, b], x, slots, 1.5), expected)
    d = torch.randn(3, 4, 5, generator=g)
    torch.testing.assert_close(slot_delta([d], x, slots, 1.0),
                               torch.stack([d[s] @ x[i] for i, s in enumerate(slots.tolist())]))


def test_inner_step_gives_every_expert_its_own_delta(tok):
    """After the inner loop each expert that received tokens holds its own, different delta;
    an expert no token was routed to keeps B = 0 (zero gradient)."""
    model = build("qwen3_moe", tok)
    args = MemoryArguments(memory_rank=2)
    targets = find_targets(model)
    loop = InnerLoop(model, targets, args, hidden_size=32, mask_token_id=tok.mask_token_id,
                     schedule=get_schedule("linear"), per_sample=True, weighting="uniform")
    batch = noised(tok)
    routed = []
    handle = model.model.layers[1].mlp.experts.register_forward_hook(
        lambda _m, args, _o: routed.append(args[1].flatten()))
    memory, _ = loop.run(InnerLoopInputs(batch.clean_ids, batch.attention_mask, batch.maskable,
                                         batch.masked, batch.sample_seed))
    handle.remove()
    hit = set(torch.cat(routed).tolist())
    deltas = {}
    for t, (a, b) in zip(memory.targets, memory.tensors):
        deltas[(t.expert, t.param)] = memory.scale * b[0] @ a[0]  # sample 0's slot
    for param in ("gate_up_proj", "down_proj"):
        moved = [e for e in range(4) if deltas[(e, param)].abs().sum() > 0]
        assert set(moved) <= hit and len(moved) >= 2
        for i in moved:
            for j in moved:
                if i < j:
                    assert not torch.allclose(deltas[(i, param)], deltas[(j, param)])
    # per-sample slots differ too (different tokens, different seeds)
    t0 = next(i for i, t in enumerate(memory.targets) if t.param == "down_proj")
    assert not torch.equal(memory.tensors[t0][1][0], memory.tensors[t0][1][1])


def test_moe_memory_gradient_reaches_only_fast_weights_and_inner_lr_zero_is_mdlm(tok, tmp_path):
    model = build("qwen3_moe", tok)
    params = [p for p in model.parameters() if p.requires_grad]
    batch = noised(tok)
    trainer = _memdlm_trainer(tok, tmp_path, model, inner_lr=0.0)
    loss_mem = trainer.loss_on(model, batch, training=True)
    g_mem = torch.autograd.grad(loss_mem, params, allow_unused=True)
    loss_std = mdlm_loss(model, batch)
    g_std = torch.autograd.grad(loss_std, params, allow_unused=True)
    assert torch.equal(loss_mem, loss_std)
    for a, b in zip(g_mem, g_std):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-6)


# --- a MemDLM step on every backbone (in process; the CLI runs are below) --------------------
def _memdlm_trainer(tok, tmp_path, model, **memory):
    from memdlm.training.args import TrainConfig
    from memdlm.training.memdlm_trainer import MemDLMTrainer

    args = TrainConfig(output_dir=str(tmp_path), use_cpu=True, eval_strategy="no", disable_tqdm=True,
                       logging_steps=1)
    return MemDLMTrainer(model=model, args=args, diffusion_args=DiffusionArguments(),
                         mask_token_id=tok.mask_token_id, processing_class=tok,
                         memory_args=MemoryArguments(**memory))


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("mode", ["shared", "per_sample"])
def test_memdlm_step_writes_memory_and_trains(tok, tmp_path, name, mode):
    model = build(name, tok)
    trainer = _memdlm_trainer(tok, tmp_path, model, memory_mode=mode)
    loss = trainer.loss_on(model, noised(tok), training=True)
    assert torch.isfinite(loss)
    metrics = trainer._read_metrics("train")
    assert metrics["memory/norm"][0] > 0  # the inner loop wrote a memory ...
    assert metrics["memory/relative_change"][0] > 0  # ... active in the outer forward
    assert metrics["inner/skipped_nonfinite"] == [0]
    loss.backward()
    outer = [n for t in find_targets(model) for n, _ in t.module.named_parameters(prefix=t.name)]
    assert outer and all(p.grad is not None for n, p in model.named_parameters() if n in outer)


# --- Dream: right-shifted logits ---------------------------------------------------------------
def _shifted_twin(model):
    """A model whose position i outputs what ``model`` outputs at i + 1 (Dream-style):
    the final norm's output is moved one position left before the head."""
    twin = copy.deepcopy(model)

    def shift_left(_m, _a, out):
        return torch.cat([out[:, 1:], out[:, -1:]], dim=1)

    twin.model.norm.register_forward_hook(shift_left)
    twin.config.logits_shift = True
    return twin


def test_logits_shift_flag_and_dream_default():
    from types import SimpleNamespace

    assert logits_shift(SimpleNamespace(config=SimpleNamespace(model_type="Dream"))) is True
    assert logits_shift(SimpleNamespace(config=SimpleNamespace(model_type="Dream", logits_shift=False))) is False
    assert logits_shift(SimpleNamespace(config=SimpleNamespace(model_type="llama"))) is False
    assert logits_shift(SimpleNamespace(config=SimpleNamespace(model_type="llama", logits_shift=True))) is True


def test_shifted_model_reads_logits_of_the_previous_position(tok):
    model = build("llama", tok).eval()
    twin = _shifted_twin(model).eval()
    ids = random_ids(tok, (2, 11))
    where = torch.zeros_like(ids, dtype=torch.bool)
    where[:, 1:] = True
    where[1, 4] = False
    with torch.no_grad():
        torch.testing.assert_close(forward_logits(twin, ids, positions=where),
                                   forward_logits(model, ids, positions=where))
        torch.testing.assert_close(forward_logits(twin, ids)[:, 1:], forward_logits(model, ids)[:, 1:])
        twin.config.logits_shift = False  # without the adapter the twin is off by one
        assert not torch.allclose(forward_logits(twin, ids)[:, 1:], forward_logits(model, ids)[:, 1:])


def test_shifted_model_loss_and_sampler_equal_the_unshifted_model(tok):
    model = build("llama", tok).eval()
    twin = _shifted_twin(model).eval()
    batch = noised(tok)  # position 0 is prompt: never masked
    with torch.no_grad():
        torch.testing.assert_close(mdlm_loss(twin, batch), mdlm_loss(model, batch))
    config = SamplerConfig(max_new_tokens=6, steps=3, stop_at_eos=False)
    prompts = [[11, 12, 13, 14], [20, 21]]
    a = Sampler(model, tok, config).generate(prompts).responses
    b = Sampler(twin, tok, config).generate(prompts).responses
    assert a == b


def test_logits_shift_survives_save_and_load(tok, tmp_path):
    model = build("qwen3", tok)
    model.config.logits_shift = True
    loaded = load_model(save(model, tok, tmp_path / "m"))
    assert logits_shift(loaded) is True


# --- --load-in-4bit and the fast weights' dtype -------------------------------------------------
def test_load_in_4bit_checks_model_lora_and_bitsandbytes():
    """--model and --use-lora are required, then bitsandbytes (no CUDA needed: tests/test_quantized.py
    trains a 4-bit model on the CPU)."""
    from memdlm.config import ModelArguments
    from memdlm.errors import ConfigError
    from memdlm.training.train import quantization_config

    assert quantization_config(ModelArguments(model="m")) is None  # flag off: nothing checked
    with pytest.raises(ConfigError, match="quantises a checkpoint given with --model"):
        quantization_config(ModelArguments(load_in_4bit=True, use_lora=True))
    with pytest.raises(ConfigError, match="add --use-lora"):
        quantization_config(ModelArguments(model="m", load_in_4bit=True))
    if importlib.util.find_spec("bitsandbytes") is None:
        with pytest.raises(ConfigError, match="needs the bitsandbytes package"):
            quantization_config(ModelArguments(model="m", load_in_4bit=True, use_lora=True))
    else:
        config = quantization_config(ModelArguments(model="m", load_in_4bit=True, use_lora=True))
        assert config.load_in_4bit and config.bnb_4bit_compute_dtype == torch.bfloat16


@pytest.mark.parametrize("name", ["llama", "qwen3_moe"])
def test_fast_weights_stay_float32_on_a_low_precision_model(tok, name):
    """Fast weights take float32 whatever the model's weights hold (bf16 here; a 4-bit
    model's packed uint8 weights alike); the delta is cast to the output's dtype."""
    model = build(name, tok).to(torch.bfloat16).eval()
    targets = find_targets(model)
    memory = FastWeights.fresh(targets, rank=2, scale=2.0, dense=False, slot_seeds=[0], device="cpu")
    assert all(p.dtype == torch.float32 for p in memory.params())
    moved = memory.replace([torch.randn_like(p) for p in memory.params()])
    ids = random_ids(tok, (1, 8))
    with torch.no_grad():
        bare = forward_logits(model, ids)
        with moved.active():
            out = forward_logits(model, ids)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    assert not torch.equal(out, bare)


# --- end to end: memdlm train --method memdlm --model DIR, then memdlm generate ----------------
TRAIN = ["--method", "memdlm", "--max-steps", "2", "--per-device-train-batch-size", "2",
         "--train-lengths", "96", "--heldout-items", "0", "--num-eval-samples", "0",
         "--logging-steps", "1", "--save-strategy", "no", "--disable-tqdm", "true"]


@pytest.mark.parametrize("name", list(BUILDERS))
def test_train_memdlm_and_generate_from_the_cli(tok, tmp_path, capsys, name):
    model_dir = save(build(name, tok), tok, tmp_path / "model")
    run = tmp_path / "run"
    assert main(["train", "--model", model_dir, "--output-dir", str(run), *TRAIN]) == 0
    assert (run / "run_complete.json").is_file()
    logged = [h for h in json.loads((run / "log_history.json").read_text()) if "loss" in h]
    assert len(logged) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in logged)
    assert all(h["inner/skipped_nonfinite"] == 0 and h["memory/norm"] > 0 for h in logged)
    from memdlm.sampling.generation import generate
    from memdlm.runs.run import Run
    from memdlm.sampling.sampler import SamplerConfig

    capsys.readouterr()
    loaded = Run.load(run)
    prompts = ["The value of red fox is", "Hello"]
    for extra, memory in (([], None), (["--memory"], loaded.memory())):  # plain, then adapted at inference
        rc = main(["generate", "--model", str(run), "--prompt", prompts[0], "--prompt", prompts[1],
                   "--max-new-tokens", "8", "--steps", "4", "--json", *extra])
        assert rc == 0
        out = json.loads(capsys.readouterr().out)
        expected = generate(loaded.model, loaded.tokenizer, prompts, SamplerConfig(max_new_tokens=8, steps=4),
                            memory=memory)
        # the rows also record device, dtype, context and sampler (issue 26); the answers are what count
        assert [{k: row[k] for k in ("prompt", "response")} for row in out] == [{"prompt": p, "response": r} for p, r in zip(prompts, expected)]


def test_tiny_heads_span_the_hidden_size(tok):
    from memdlm.backbones.modeling import build_tiny_model, tiny_head_overrides

    fields = tiny_head_overrides(8)
    assert fields == {"num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 16,
                      "query_pre_attn_scalar": 16}
    model = build_tiny_model(tok, num_hidden_layers=1, **fields)
    attn = model.model.layers[0].self_attn
    assert attn.q_proj.out_features == 128 and attn.k_proj.out_features == 64
    with pytest.raises(ValueError, match="--tiny-heads 3"):
        tiny_head_overrides(3)


def test_tiny_overrides_reach_the_model_config(tmp_path):
    from memdlm.config import ModelArguments
    from memdlm.training.train import build_model_and_tokenizer

    args = ModelArguments(tiny_layers=1, tiny_heads=8, tiny_overrides='{"query_pre_attn_scalar": 4}')
    model, _ = build_model_and_tokenizer(args, seed=0)
    assert model.config.num_attention_heads == 8 and model.config.query_pre_attn_scalar == 4


def test_tiny_overrides_that_are_not_a_json_object_are_named():
    from memdlm.errors import ConfigError
    from memdlm.training.train import parse_overrides

    with pytest.raises(ConfigError, match="not JSON"):
        parse_overrides("{query_pre_attn_scalar: 8}")
    with pytest.raises(ConfigError, match="JSON object"):
        parse_overrides("[8]")
