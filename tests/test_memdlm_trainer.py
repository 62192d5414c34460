"""MemDLMTrainer: the fast split-forward path equals the plain path; checkpoints hold no
fast weights; the trainer trains (letters refer to the MemDLM issue)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from batches import random_noised
from safetensors.torch import load_file

import memdlm.training.memdlm_trainer as memdlm_trainer
from memdlm.backbones.modeling import build_tiny_model
from memdlm.config import DiffusionArguments
from memdlm.diffusion.masking import apply_mask
from memdlm.diffusion.process import NoisedBatch, mdlm_loss
from memdlm.memory.config import MemoryArguments
from memdlm.training.args import TrainConfig
from memdlm.training.mdlm_trainer import MDLMTrainer
from memdlm.training.memdlm_trainer import MemDLMTrainer


def make_trainer(tok, tmp_path, model, **memory):
    args = TrainConfig(output_dir=str(tmp_path), use_cpu=True, eval_strategy="no", disable_tqdm=True,
                       logging_steps=10**9)
    trainer = MemDLMTrainer(model=model, args=args, diffusion_args=DiffusionArguments(),
                            mask_token_id=tok.mask_token_id, processing_class=tok,
                            memory_args=MemoryArguments(**memory))
    trainer.state.global_step = 1  # not a logging step
    return trainer


def noised(tok, seed=0):
    ids, attn, maskable, masked, t = random_noised(tok, length=20, prompt=8, pad_from=15, seed=seed)
    return NoisedBatch(ids, attn, maskable, masked, apply_mask(ids, masked, tok.mask_token_id), t, 1 / t,
                       torch.tensor([7, 8, 9]))


def backbone(tok, tmp_path, name: str):
    """The tiny Gemma3, or a remote-code look-alike loaded as memdlm loads it (LLaDA: blocks
    under ``transformer.blocks``, embeddings scaled before the first block; LLaDA2: MoE)."""
    if name == "tiny":
        return build_tiny_model(tok, seed=0, num_hidden_layers=3)
    import sys

    from memdlm.backbones.modeling import load_model

    sys.path.insert(0, str(Path(__file__).parent))
    from lookalikes import write_family

    path, _ = write_family(name, tmp_path / "backbone", tok)
    return load_model(path, trust_remote_code=True)


@pytest.mark.parametrize("name", ["tiny", "llada", "llada2"])
@pytest.mark.parametrize("mode", ["shared", "per_sample"])
def test_split_forward_path_equals_full_forward_path(tok, tmp_path, monkeypatch, mode, name):
    model = backbone(tok, tmp_path, name)
    assert memdlm_trainer.supports_split(model)
    params = [p for p in model.parameters() if p.requires_grad]
    batch = noised(tok)
    fast = make_trainer(tok, tmp_path, model, memory_mode=mode)
    loss_fast = fast.loss_on(model, batch, training=True)
    g_fast = torch.autograd.grad(loss_fast, params, allow_unused=True)  # MoE: experts no token reached
    monkeypatch.setattr(memdlm_trainer, "supports_split", lambda _m: False)
    plain = make_trainer(tok, tmp_path, model, memory_mode=mode)
    loss_plain = plain.loss_on(model, batch, training=True)
    g_plain = torch.autograd.grad(loss_plain, params, allow_unused=True)
    torch.testing.assert_close(loss_fast, loss_plain, atol=1e-6, rtol=1e-6)
    assert sum(g is not None for g in g_fast) >= 10
    for a, b in zip(g_fast, g_plain):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_inner_lr_zero_trainer_equals_mdlm_trainer(tok, tmp_path):
    """(e) through the trainers themselves: inner lr 0 gives Standard MDLM's loss and gradients."""
    model = build_tiny_model(tok, seed=0, num_hidden_layers=3)
    params = [p for p in model.parameters() if p.requires_grad]
    batch = noised(tok)
    mem = make_trainer(tok, tmp_path, model, inner_lr=0.0)
    loss_mem = mem.loss_on(model, batch, training=True)
    g_mem = torch.autograd.grad(loss_mem, params)
    args = TrainConfig(output_dir=str(tmp_path), use_cpu=True, eval_strategy="no", disable_tqdm=True)
    std = MDLMTrainer(model=model, args=args, diffusion_args=DiffusionArguments(),
                      mask_token_id=tok.mask_token_id, processing_class=tok)
    loss_std = std.loss_on(model, batch, training=True)
    g_std = torch.autograd.grad(loss_std, params)
    torch.testing.assert_close(loss_mem, loss_std, atol=1e-6, rtol=0)
    for a, b in zip(g_mem, g_std):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_eval_loss_is_memory_off_and_prompt_memory_is_logged(tok, tmp_path):
    model = build_tiny_model(tok, seed=0, num_hidden_layers=3)
    batch = noised(tok)
    trainer = make_trainer(tok, tmp_path, model)
    model.eval()
    with torch.no_grad():
        loss = trainer.loss_on(model, batch, training=False)
        off = mdlm_loss(model, batch)
    assert torch.equal(loss, off)
    logged = trainer._read_metrics("eval")["loss_prompt_memory"]
    assert len(logged) == 1 and logged[0] != pytest.approx(off.item(), abs=0)


@pytest.mark.parametrize("mode", ["shared", "per_sample"])
def test_eval_loss_prompt_memory_equals_the_runs_prompt_memory(tok, tmp_path, mode):
    """The held-out loss with prompt memory is the loss with the memory ``Run.memory()`` adapts
    (the one builder, the adaptation role), to the bit, after a training step has built the
    training loop too (per_sample: once shared one cached loop with it, scheduler-weighted)."""
    from dataclasses import asdict

    from memdlm.runs.run import Run

    model = build_tiny_model(tok, seed=0, num_hidden_layers=3)
    batch = noised(tok)
    trainer = make_trainer(tok, tmp_path, model, memory_mode=mode, memory_rank=4, adapt_mask_ratio=0.3,
                           trajectory="progressive")
    trainer.loss_on(model, batch, training=True)  # the training loop first
    model.eval()
    with torch.no_grad():
        trainer.loss_on(model, batch, training=False)
    (logged,) = trainer._read_metrics("eval")["loss_prompt_memory"]
    prompt = batch.attention_mask.bool() & ~batch.maskable
    run = Run(model, tok, config={"memory": asdict(trainer.memory_args)})
    memory = run.memory().adapt_positions(batch.clean_ids, batch.attention_mask, prompt, torch.arange(3))
    with torch.no_grad(), memory.active():
        want = mdlm_loss(model, batch)
    assert logged == want.item()
    with torch.no_grad():
        assert want.item() != mdlm_loss(model, batch).item()  # the memory changed the loss


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--memory-mode", "per_sample"], ["--use-lora", "--lora-r", "4"]])
def test_memdlm_trains_and_saves_no_fast_weights(tmp_path, extra):
    """(h) a few MemDLM steps: every trainable parameter moves; the checkpoint, the final
    model and a PEFT adapter hold exactly the model's own tensors."""
    from memdlm.cli import main

    out = tmp_path / "run"
    argv = ["train", "--method", "memdlm", "--output-dir", str(out), "--max-steps", "3",
            "--save-steps", "2", "--heldout-items", "0", "--num-eval-samples", "0", "--tiny-layers", "2",
            "--per-device-train-batch-size", "4", "--train-lengths", "96", "--logging-steps", "1"] + extra
    assert main(argv) == 0
    history = json.loads((out / "log_history.json").read_text())
    logged = [h for h in history if "loss" in h]
    assert logged and all(torch.isfinite(torch.tensor(h["loss"])) for h in logged)
    assert all("memory/absorption_ratio" in h and "inner_loss/anchor" in h for h in logged)
    if "--use-lora" in extra:
        keys = load_file(str(out / "adapter_model.safetensors")).keys()
        assert keys and all("lora_A" in k or "lora_B" in k for k in keys)
        return
    from memdlm.backbones.tokenizer import load_tokenizer

    fresh = build_tiny_model(load_tokenizer(), seed=0, num_hidden_layers=2)
    expected = set(fresh.state_dict()) - {"lm_head.weight"}  # tied to the embeddings
    for path in (out / "model.safetensors", out / "checkpoint-2" / "model.safetensors"):
        assert set(load_file(str(path))) == expected
    final = load_file(str(out / "model.safetensors"))
    changed = [k for k in expected if not torch.equal(final[k], fresh.state_dict()[k])]
    assert len(changed) == len(expected)  # every trained tensor moved
    optim = torch.load(out / "checkpoint-2" / "optimizer.pt", weights_only=False)
    n_optim = sum(len(g["params"]) for g in optim["param_groups"])
    assert n_optim == len([p for p in fresh.parameters() if p.requires_grad])


def test_reused_attention_masks_change_nothing(tok, tmp_path, monkeypatch):
    """The step's attention masks, built once and reused, give the same loss and gradients."""
    import contextlib

    model = build_tiny_model(tok, seed=0, num_hidden_layers=3)
    params = [p for p in model.parameters() if p.requires_grad]
    batch = noised(tok)  # row 2 is padded
    reused = make_trainer(tok, tmp_path, model, memory_mode="per_sample")
    loss_a = reused.loss_on(model, batch, training=True)
    g_a = torch.autograd.grad(loss_a, params)
    monkeypatch.setattr(memdlm_trainer, "reuse_attention_masks", lambda *_: contextlib.nullcontext())
    plain = make_trainer(tok, tmp_path, model, memory_mode="per_sample")
    loss_b = plain.loss_on(model, batch, training=True)
    g_b = torch.autograd.grad(loss_b, params)
    assert torch.equal(loss_a, loss_b)
    assert all(torch.equal(a, b) for a, b in zip(g_a, g_b))


def test_reuse_attention_masks_substitutes_the_prepared_masks(tok):
    from memdlm.backbones.modeling import reuse_attention_masks

    model = build_tiny_model(tok, seed=0, num_hidden_layers=2)
    batch = noised(tok)
    seen = []
    model.model.layers[0].register_forward_pre_hook(
        lambda _m, _a, kw: seen.append(type(kw["attention_mask"])), with_kwargs=True)
    bare = model(input_ids=batch.noisy_ids, attention_mask=batch.attention_mask).logits
    with reuse_attention_masks(model, batch.attention_mask):
        first = model(input_ids=batch.noisy_ids, attention_mask=batch.attention_mask).logits
        second = model(input_ids=batch.clean_ids, attention_mask=batch.attention_mask).logits
    assert torch.equal(first, bare)
    assert torch.equal(second, model(input_ids=batch.clean_ids, attention_mask=batch.attention_mask).logits)
    calls = []
    with reuse_attention_masks(model, batch.attention_mask):
        inner = model.model
        handle = inner.register_forward_pre_hook(
            lambda _m, _a, kw: calls.append(isinstance(kw.get("attention_mask"), dict)), with_kwargs=True)
        model(input_ids=batch.noisy_ids, attention_mask=batch.attention_mask)
        model(input_ids=batch.noisy_ids, attention_mask=batch.attention_mask)
        handle.remove()
    assert calls == [False, True]  # the second call received the prepared dict
