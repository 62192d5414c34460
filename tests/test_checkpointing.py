"""Gradient checkpointing for every family (memdlm.backbones.checkpointing), with MemDLM memory active.

One MemDLM training step (inner loop, outer loss, backward) with and without
``--gradient-checkpointing`` from the same weights and masks: the trainable parameters'
gradients, the loss and the fast weights the inner loop wrote must be equal, while the
forward keeps fewer activations (else nothing was checkpointed and the test could not fail).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

from memdlm.backbones.checkpointing import (
    MEMDLM,
    OWN,
    enable_checkpointing,
    is_checkpointed,
    transformer_blocks,
)
from memdlm.config import DiffusionArguments
from memdlm.errors import ConfigError
from memdlm.memory.config import MemoryArguments
from memdlm.backbones.modeling import load_model
from memdlm.training.args import TrainConfig
from memdlm.training.memdlm_trainer import MemDLMTrainer

sys.path.insert(0, str(Path(__file__).parent))
from lookalikes import write_family  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def models(tok, make_tiny_model, tmp_path_factory):
    """name -> (model factory, the way checkpointing must be enabled)."""
    root = tmp_path_factory.mktemp("ckpt")
    paths = {f: write_family(f, root, tok)[0] for f in ("llada", "llada2")}

    def stock_without_switch():
        model = make_tiny_model(seed=1)
        model.supports_gradient_checkpointing = False  # as 4.x remote code without the switch
        return model

    def lora(model):
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(0)  # the same adapter A for both loads
        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.0))
        for name, p in model.named_parameters():
            if "lora_B" in name:  # B starts at zero: give the base weights' gradient path a say too
                torch.nn.init.normal_(p, std=0.05, generator=torch.Generator().manual_seed(1))
        return model

    return {
        "tiny": (lambda: make_tiny_model(seed=1), OWN),
        "tiny_lora": (lambda: lora(make_tiny_model(seed=1)), OWN),
        "llada_lookalike_lora": (lambda: lora(load_model(paths["llada"], trust_remote_code=True)), MEMDLM),
        "tiny_per_block": (stock_without_switch, MEMDLM),
        "llada_lookalike": (lambda: load_model(paths["llada"], trust_remote_code=True), MEMDLM),
        "llada2_lookalike": (lambda: load_model(paths["llada2"], trust_remote_code=True), MEMDLM),
    }


def _inputs(tok, b=2, length=24, prompt=6):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, len(tok), (b, length), generator=g)
    attention = torch.ones_like(ids)
    attention[-1, -4:] = 0
    ids[attention == 0] = tok.pad_token_id
    labels = ids.clone()
    labels[:, :prompt] = -100
    labels[attention == 0] = -100
    return {"input_ids": ids, "attention_mask": attention, "labels": labels, "sample_seed": torch.arange(b) + 3}


def _step(model, tok, tmp_path, mode: str, checkpointing: bool):
    """(loss, parameter gradients, fast weights written, bytes the forward saved for backward, way)."""
    args = TrainConfig(output_dir=str(tmp_path), use_cpu=True, eval_strategy="no", disable_tqdm=True,
                       report_to="none", gradient_checkpointing=checkpointing)
    trainer = MemDLMTrainer(model=model, args=args, diffusion_args=DiffusionArguments(),
                            mask_token_id=tok.mask_token_id, processing_class=tok,
                            memory_args=MemoryArguments(memory_mode=mode, memory_layer_fraction=0.5))
    trainer.current_gradient_accumulation_steps = 1
    written = []
    record = trainer._record
    trainer._record = lambda stats, memory, *rest: (written.append(memory), record(stats, memory, *rest))
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    model.train()
    model.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = trainer.training_step(model, _inputs(tok))
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss, grads, written[0], saved[0], trainer.checkpointing


@pytest.mark.parametrize("mode", ["shared", "per_sample"])
@pytest.mark.parametrize("name", ["tiny", "tiny_per_block", "llada_lookalike", "llada2_lookalike", "tiny_lora",
                                  "llada_lookalike_lora"])
def test_gradients_with_checkpointing_equal_those_without(tok, models, tmp_path, name, mode):
    make, way = models[name]
    model, twin = make(), make()  # two loads, not a deepcopy: the 4-D mask wrapper is bound to its model
    loss, grads, memory, saved, how = _step(model, tok, tmp_path, mode, checkpointing=False)
    loss_c, grads_c, memory_c, saved_c, how_c = _step(twin, tok, tmp_path, mode, checkpointing=True)
    assert (how, how_c) == (None, way)
    assert saved_c < 0.95 * saved, (saved_c, saved)  # activations were dropped and recomputed
    assert loss_c.item() == pytest.approx(loss.item(), rel=1e-6, abs=0)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(grads) == sorted(grads_c) == sorted(trainable)
    for n in trainable:
        torch.testing.assert_close(grads_c[n], grads[n], rtol=1e-5, atol=1e-7, msg=n)
    assert memory.norm() > 0  # the inner loop wrote a memory, and the same one both ways
    for a, b in zip(memory.params(), memory_c.params(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


def test_memdlm_checkpoints_the_outermost_block_list_every_n_layers(make_tiny_model):
    model = make_tiny_model(num_hidden_layers=4)
    model.supports_gradient_checkpointing = False
    blocks = transformer_blocks(model)
    assert blocks is model.model.layers
    class_forward = type(blocks[0]).forward
    assert enable_checkpointing(model, {"every_n_layers": 2}) == MEMDLM
    assert [is_checkpointed(b) for b in blocks] == [True, False, True, False]
    state = set(model.state_dict())
    assert state == set(make_tiny_model(num_hidden_layers=4).state_dict())  # names unchanged
    # the class is untouched: transformers' own per-class checkpointing wrapper still works
    assert type(blocks[0]).forward is class_forward
    twin = copy.deepcopy(model)
    assert twin.model.layers[0].forward.__self__ is twin.model.layers[0]  # a copy checkpoints itself


def test_reentrant_checkpointing_is_refused_with_memory(make_tiny_model):
    with pytest.raises(ConfigError, match="use_reentrant=true.*torch.autograd.grad"):
        enable_checkpointing(make_tiny_model(), {"use_reentrant": True}, memory=True)
    assert enable_checkpointing(make_tiny_model(), {"use_reentrant": True}) == OWN  # MDLM alone: allowed


def test_a_4x_switch_without_every_n_layers_is_called_with_what_it_takes(make_tiny_model):
    """dllm's LLaDA overrides ``_set_gradient_checkpointing(enable, gradient_checkpointing_func)``;
    transformers 5 passes every_n_layers too (TypeError)."""
    model = make_tiny_model()
    calls = []

    def old_style(enable=True, gradient_checkpointing_func=None):
        calls.append((enable, gradient_checkpointing_func))
        model.model.gradient_checkpointing = enable

    model._set_gradient_checkpointing = old_style
    with pytest.raises(TypeError, match="every_n_layers"):
        model.activation_checkpointing_enable()
    assert enable_checkpointing(model) == OWN
    assert calls[-1][0] is True and calls[-1][1].keywords == {"use_reentrant": False}
    assert model._set_gradient_checkpointing is old_style  # the instance's own attribute is kept


def test_remote_code_without_a_switch_is_checkpointed_per_block(models):
    """What `--gradient-checkpointing` on LLaDA's hub code ended in: transformers' ValueError."""
    model = models["llada_lookalike"][0]()
    with pytest.raises(ValueError, match="does not support activation checkpointing"):
        model.activation_checkpointing_enable()
    assert enable_checkpointing(model) == MEMDLM
    assert transformer_blocks(model) is model.model.transformer.blocks
    assert all(is_checkpointed(b) for b in model.model.transformer.blocks)
