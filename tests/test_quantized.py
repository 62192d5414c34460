"""The paper's QLoRA path on a CPU: a 4-bit NF4 base (bitsandbytes), k-bit preparation, an
outer LoRA adapter, and MemDLM's fast weights hooked on the 4-bit FFN layers."""

from __future__ import annotations

import json

import pytest
import torch

from memdlm.cli import main
from memdlm.config import ModelArguments
from memdlm.errors import ConfigError
from memdlm.training.train import quantization_config, weights_dtype

bnb = pytest.importorskip("bitsandbytes")

QUICK = ["--max-steps", "2", "--per-device-train-batch-size", "2", "--train-lengths", "96",
         "--heldout-items", "0", "--num-eval-samples", "0", "--logging-steps", "1",
         "--save-strategy", "no", "--disable-tqdm", "true", "--seed", "0"]


def tiny_llama_dir(tok, path) -> str:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=16, max_position_embeddings=512, vocab_size=len(tok),
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    config.is_causal = False
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_quantisation_flags_are_checked_in_one_line():
    assert quantization_config(ModelArguments(model="m")) is None
    with pytest.raises(ConfigError, match="--load-in-8bit quantises a checkpoint given with --model"):
        quantization_config(ModelArguments(load_in_8bit=True, use_lora=True))
    with pytest.raises(ConfigError, match="--load-in-4bit freezes the quantised base weights: add --use-lora"):
        quantization_config(ModelArguments(model="m", load_in_4bit=True))
    with pytest.raises(ConfigError, match="exclude each other"):
        ModelArguments(model="m", load_in_4bit=True, load_in_8bit=True, use_lora=True)
    four = quantization_config(ModelArguments(model="m", load_in_4bit=True, use_lora=True))
    assert four.load_in_4bit and four.bnb_4bit_quant_type == "nf4" and four.bnb_4bit_use_double_quant
    assert four.bnb_4bit_compute_dtype == torch.bfloat16
    assert quantization_config(ModelArguments(model="m", load_in_8bit=True, use_lora=True)).load_in_8bit


@pytest.mark.parametrize("kwargs, dtype", [
    (dict(), torch.float32),  # full fine-tuning: float32 master weights, whatever the checkpoint holds
    (dict(use_lora=True), None),  # a frozen LoRA base keeps the checkpoint's dtype
    (dict(use_lora=True, load_in_4bit=True), torch.bfloat16),  # the unquantised parts of a 4-bit model
    (dict(dtype="bfloat16"), torch.bfloat16),  # asked otherwise
])
def test_weights_dtype(kwargs, dtype):
    assert weights_dtype(ModelArguments(model="m", **kwargs)) is dtype


def test_full_fine_tuning_upcasts_a_bf16_checkpoint(tok, tmp_path):
    from memdlm.training.train import build_model_and_tokenizer

    path = tiny_llama_dir(tok, tmp_path / "m")
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(path).to(torch.bfloat16).save_pretrained(path)
    model, _ = build_model_and_tokenizer(ModelArguments(model=path), seed=0)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    model, _ = build_model_and_tokenizer(ModelArguments(model=path, dtype="bfloat16"), seed=0)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


@pytest.mark.slow
def test_qlora_memdlm_on_4bit_ffn_layers_trains_and_round_trips(tok, tmp_path):
    """Two MemDLM steps on a 4-bit NF4 base: the memory's targets are bitsandbytes Linear4bit
    layers (inside the LoRA wrappers), the fast weights float32, the adapter float32 and
    trained; the saved adapter loads back exactly."""
    from bitsandbytes.nn import Linear4bit
    from safetensors.torch import load_file

    from memdlm.memory.config import MemoryArguments
    from memdlm.memory.fast_weights import FastWeights
    from memdlm.memory.targets import find_targets, linear_of
    from memdlm.runs.run import Run
    from memdlm.training.train import build_model_and_tokenizer

    path = tiny_llama_dir(tok, tmp_path / "base")
    args = ModelArguments(model=path, load_in_4bit=True, use_lora=True, lora_r=4, lora_alpha=8)
    model, _ = build_model_and_tokenizer(args, seed=0)
    targets = find_targets(model, "ffn", MemoryArguments().memory_layer_fraction)
    assert [t.name.split(".")[-1] for t in targets] == ["gate_proj", "up_proj", "down_proj"]
    assert all(isinstance(linear_of(t.module), Linear4bit) for t in targets)
    memory = FastWeights.fresh(targets, rank=2, scale=2.0, dense=False, slot_seeds=[0], device="cpu")
    assert {p.dtype for p in memory.params()} == {torch.float32}
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n and p.dtype == torch.float32 for n, p in trainable.items())

    out = tmp_path / "run"
    rc = main(["train", "--method", "memdlm", "--model", path, "--load-in-4bit", "--use-lora", "--lora-r", "4",
               "--lora-alpha", "8", "--gradient-checkpointing", "true", "--output-dir", str(out), *QUICK])
    assert rc == 0
    assert json.loads((out / "run_complete.json").read_text())["global_step"] == 2
    config = json.loads((out / "run_config.json").read_text())
    assert config["model"]["load_in_4bit"] is True
    saved = load_file(str(out / "adapter_model.safetensors"))
    assert saved and all(t.dtype == torch.float32 for t in saved.values())
    fresh = {n: p.detach() for n, p in model.named_parameters() if ".lora_B" in n}
    assert any(not torch.equal(saved[k], torch.zeros_like(saved[k])) for k in saved if "lora_B" in k)  # trained
    assert len(fresh) == sum("lora_B" in k for k in saved)
    loaded = Run.load(str(out)).model
    lora = {n: p.detach() for n, p in loaded.named_parameters() if ".lora_" in n}
    assert len(lora) == len(saved)
    for name, tensor in saved.items():  # exact round trip of every adapter tensor
        match = [v for n, v in lora.items() if n.replace(".default", "").endswith(name.split("base_model.model.")[-1])]
        assert len(match) == 1 and torch.equal(match[0].float(), tensor), name


@pytest.mark.slow
def test_8bit_memdlm_trains_on_the_cpu(tok, tmp_path):
    """--load-in-8bit: the memory's targets are bitsandbytes Linear8bitLt layers; two MemDLM steps
    with finite losses and an inner loop that moved the memory."""
    from bitsandbytes.nn import Linear8bitLt

    from memdlm.memory.targets import find_targets, linear_of
    from memdlm.training.train import build_model_and_tokenizer

    path = tiny_llama_dir(tok, tmp_path / "base")
    model, _ = build_model_and_tokenizer(ModelArguments(model=path, load_in_8bit=True, use_lora=True), seed=0)
    assert all(isinstance(linear_of(t.module), Linear8bitLt) for t in find_targets(model))
    out = tmp_path / "run"
    rc = main(["train", "--method", "memdlm", "--model", path, "--load-in-8bit", "--use-lora", "--lora-r", "4",
               "--lora-alpha", "8", "--output-dir", str(out), *QUICK])
    assert rc == 0
    history = [h for h in json.loads((out / "log_history.json").read_text()) if "loss" in h]
    assert len(history) == 2 and all(h["loss"] > 0 and h["memory/norm"] > 0 for h in history)
