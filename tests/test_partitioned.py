"""Weights partitioned as DeepSpeed ZeRO-3 leaves them, simulated on the CPU: each parameter an
empty placeholder with its full shape in ``ds_shape`` outside its module's forward, gathered
by a pre-hook and released by a hook after it (memdlm.backbones.partitioned).

Fused MoE experts are found from their full shapes, so the memory's targets are the same as on
whole weights; reading a released expert weight, and the load-time bidirectionality check on
partitioned weights, are refused in one line (never run on empty tensors).
"""

from __future__ import annotations

import pytest
import torch

from memdlm.backbones.bidirectional import ensure_bidirectional
from memdlm.backbones.partitioned import full_shape, is_partitioned
from memdlm.errors import ConfigError
from memdlm.memory.fast_weights import FastWeights
from memdlm.memory.targets import find_targets


def release(params) -> None:
    """As ZeRO-3 after a forward: the data becomes an empty placeholder, the shape ``ds_shape``."""
    for p in params:
        p.ds_shape, p.ds_whole = tuple(p.ds_whole.shape if hasattr(p, "ds_whole") else p.shape), p.data
        p.data = torch.empty(0, dtype=p.dtype)


def gather(params) -> None:
    for p in params:
        p.data = p.ds_whole


def moe_model(tok):
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    config = Qwen3MoeConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_experts=4,
                            num_experts_per_tok=2, moe_intermediate_size=16, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    return Qwen3MoeForCausalLM(config)


def facts(targets) -> list[tuple]:
    return [(t.name, t.layer, t.in_features, t.out_features, t.kind, t.param, t.expert) for t in targets]


def test_placeholders_keep_their_full_shape(tok):
    model = moe_model(tok)
    params = list(model.parameters())
    shapes = [p.shape for p in params]
    release(params)
    assert all(p.numel() == 0 and is_partitioned(p) for p in params)
    assert [full_shape(p) for p in params] == shapes
    gather(params)
    assert not any(is_partitioned(p) for p in params)


def test_expert_targets_are_found_on_partitioned_weights(tok):
    model = moe_model(tok)
    whole = find_targets(model)
    assert sum(t.kind == "expert" for t in whole) == 4 * 2  # 4 experts x (gate_up, down) in the last layer
    release(model.parameters())
    assert facts(find_targets(model)) == facts(whole)


def test_experts_memory_refuses_weights_released_before_its_hook(tok):
    """ZeRO-3's hooks gather an experts module's weights for its forward and release them after
    it, before the memory's hook (registered later) reads them: one line, not empty maths."""
    model = moe_model(tok).eval()
    targets = find_targets(model)
    memory = FastWeights.fresh(targets, rank=2, scale=1.0, dense=False, slot_seeds=[0], device="cpu",
                               slot_of_sample=torch.zeros(2, dtype=torch.long))
    memory = memory.replace([p + 0.01 for p in memory.params()])  # a non-zero delta
    experts = targets[-1].module
    own = list(experts.parameters(recurse=False))
    ids = torch.randint(10, len(tok), (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), memory.active():
        whole = model(input_ids=ids).logits  # ZeRO-2: whole weights throughout
    release(own)
    experts.register_forward_pre_hook(lambda m, a: gather(own))
    experts.register_forward_hook(lambda m, a, out: release(own))
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()  # the model itself runs
        with memory.active(), pytest.raises(ConfigError) as err:
            model(input_ids=ids)
    message = str(err.value)
    assert "\n" not in message and "is partitioned" in message and "experts" in message.lower()
    assert whole.shape == (2, 6, len(tok))


def test_bidirectionality_check_refuses_partitioned_weights(make_tiny_model):
    model = make_tiny_model()
    ensure_bidirectional(model)  # whole weights: checked and passes
    release(list(model.parameters())[:1])
    with pytest.raises(ConfigError) as err:
        ensure_bidirectional(model)
    message = str(err.value)
    assert "\n" not in message and "bidirectionality check" in message and "is partitioned" in message
