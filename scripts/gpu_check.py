"""One short GPU check of memdlm at scale, ready before a GPU is lent (``scripts/gpu_check.sh``).

    bash scripts/gpu_check.sh            # one H100/H200, bf16, a ~1.4B LLaDA-shaped random model; < 8 minutes
    bash scripts/gpu_check.sh --tiny     # the same code on a CPU: 4 layers of width 64, LLaDA's vocabulary
                                         # (token ids past the tokenizer's, as on the GPU); tests/test_gpu_check.py

Prints one JSON object (the last line) with:

- ``train``: per context length (2,048 and 4,096 tokens; --tiny: 64 and 128) and gradient
  checkpointing off / on, the median step time and peak memory of Standard MDLM and MemDLM
  (the paper's inner loop: rank 32, K = 2, batch-shared memory) and their ratios. A step is
  ``Trainer.training_step`` + AdamW, as ``benchmarks/train_step.py`` times it; peak memory is
  ``torch.cuda.max_memory_allocated`` during the timed steps (CPU: the live malloc heap's
  peak above the baseline, ``benchmarks/train_step.heap_bytes``). A configuration that runs
  out of memory is reported as such, not fatal;
- ``sampling``: generated tokens per second for fixed-step decoding (one token per step), the
  confidence threshold (tau 0.9) and the threshold with the dual block cache, on kv prompts
  (random weights: the threshold rarely commits more than one token per step, so this measures
  the cost per step, not the paper's speed-up);
- ``adaptation``: prompts per second of inference-time adaptation + generation, batched
  (one fast-weight slot per prompt) and one prompt at a time (``benchmarks/eval_throughput``).

The model is LLaDA-8B's design at a quarter of its width and half its depth (the ``llada``
stand-in: a bidirectional Llama with untied embeddings, SwiGLU 3x wide, 128-wide heads,
LLaDA's 126,464-token vocabulary), random weights in bfloat16.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

FULL = dict(hidden_size=2048, num_hidden_layers=16, intermediate_size=6144, num_attention_heads=16,
            num_key_value_heads=16, vocab_size=126464, lengths=[2048, 4096], rounds=3, prompt_length=1024,
            new_tokens=64, prompts=16, batch=8)
TINY = dict(hidden_size=64, num_hidden_layers=4, intermediate_size=192, num_attention_heads=4,
            num_key_value_heads=4, vocab_size=126464, lengths=[96, 128], rounds=2, prompt_length=96,
            new_tokens=8, prompts=4, batch=2)


def build_model(tok, shape: dict, device, dtype):
    """A LLaDA-shaped bidirectional Llama with random weights (the plan's ``llada`` stand-in)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from memdlm.backbones.modeling import make_bidirectional

    config = LlamaConfig(hidden_size=shape["hidden_size"], num_hidden_layers=shape["num_hidden_layers"],
                         intermediate_size=shape["intermediate_size"],
                         num_attention_heads=shape["num_attention_heads"],
                         num_key_value_heads=shape["num_key_value_heads"],
                         vocab_size=shape["vocab_size"] or len(tok), tie_word_embeddings=False,
                         max_position_embeddings=8192, rope_theta=500000.0, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, bos_token_id=None)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    make_bidirectional(model)
    return model


class Peak:
    """Peak memory above the start, on CUDA from the allocator, on a CPU from the malloc heap."""

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            from train_step import HeapPeak

            self.heap = HeapPeak().__enter__()
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.bytes = torch.cuda.max_memory_allocated()  # weights and optimizer state included
        else:
            self.heap.__exit__(*exc)
            self.bytes = self.heap.bytes
        return False


def training_step(model, tok, method: str, seq_len: int, batch: int, device):
    """One Trainer.training_step + AdamW step of ``method`` on a fixed kv batch."""
    import torch

    from memdlm.config import DiffusionArguments
    from memdlm.data.collate import DiffusionCollator
    from memdlm.memory.config import MemoryArguments
    from memdlm.tasks.dataset import SyntheticTaskDataset
    from memdlm.training.args import TrainConfig
    from memdlm.training.mdlm_trainer import MDLMTrainer
    from memdlm.training.memdlm_trainer import MemDLMTrainer

    data = SyntheticTaskDataset(tok, ["kv"], [seq_len], "train", batch, seed=0)
    inputs = DiffusionCollator(tok.pad_token_id, tok.eos_token_id)([data[i] for i in range(batch)])
    inputs = {k: v.to(device) for k, v in inputs.items()}
    args = TrainConfig(output_dir=tempfile.mkdtemp(), use_cpu=device.type == "cpu", logging_steps=10**9,
                       report_to="none", disable_tqdm=True, eval_strategy="no")
    common = dict(model=model, args=args, diffusion_args=DiffusionArguments(), mask_token_id=tok.mask_token_id,
                  processing_class=tok)
    trainer = (MemDLMTrainer(memory_args=MemoryArguments(memory_rank=32), **common) if method == "memdlm"
               else MDLMTrainer(**common))
    trainer.current_gradient_accumulation_steps = 1
    trainer.state.global_step = 1  # not a logging step
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()

    def step():
        trainer.training_step(model, dict(inputs))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step, optimizer


def time_training(model, tok, shape, device) -> list[dict]:
    import torch

    rows = []
    for seq_len in shape["lengths"]:
        for checkpointing in (False, True):
            if checkpointing:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_disable()
            row = {"tokens": seq_len, "checkpointing": checkpointing}
            for method in ("mdlm", "memdlm"):
                try:
                    step, optimizer = training_step(model, tok, method, seq_len, 1, device)
                    step()  # warm-up: kernels, optimizer state
                    times = []
                    with Peak(device) as peak:
                        for _ in range(shape["rounds"]):
                            start = time.perf_counter()
                            step()
                            times.append(time.perf_counter() - start)
                    row[f"{method}_step_s"] = round(statistics.median(times), 4)
                    row[f"{method}_peak_gib"] = round(peak.bytes / 2**30, 3)
                except torch.OutOfMemoryError:
                    row[f"{method}_step_s"] = row[f"{method}_peak_gib"] = "out of memory"
                optimizer = step = None  # noqa: F841 -- free the optimizer state before the next method
                model.zero_grad(set_to_none=True)
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            if isinstance(row.get("memdlm_step_s"), float) and isinstance(row.get("mdlm_step_s"), float):
                row["time_ratio"] = round(row["memdlm_step_s"] / row["mdlm_step_s"], 3)
                row["peak_ratio"] = round(row["memdlm_peak_gib"] / max(row["mdlm_peak_gib"], 1e-9), 3)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    model.gradient_checkpointing_disable()
    return rows


def time_sampling(model, tok, prompts, shape, device) -> dict:
    from memdlm.sampling.sampler import Sampler, SamplerConfig

    model.eval()
    n = shape["new_tokens"]
    configs = {"fixed": dict(unmask_rule="fixed"),
               "threshold": dict(unmask_rule="threshold", threshold=0.9),
               "threshold_dual_cache": dict(unmask_rule="threshold", threshold=0.9, cache="dual", block_length=n // 2)}
    out = {}
    for name, overrides in configs.items():
        config = SamplerConfig(max_new_tokens=n, steps=n, temperature=0.0, stop_at_eos=False, **overrides)
        sampler = Sampler(model, tok, config)
        batch = prompts[:shape["batch"]]
        sampler.generate(batch[:1], seeds=[0])  # warm-up
        start = time.perf_counter()
        sampler.generate(batch, seeds=list(range(len(batch))))
        _sync(device)
        seconds = time.perf_counter() - start
        out[name] = {"tokens_per_s": round(len(batch) * n / seconds, 1), "seconds": round(seconds, 3)}
    return out


def time_adaptation(model, tok, prompts, shape, device) -> dict:
    from eval_throughput import answer

    from memdlm.runs.run import Run
    from memdlm.sampling.sampler import SamplerConfig

    model.eval()
    memory = Run(model, tok).memory()
    config = SamplerConfig(max_new_tokens=shape["new_tokens"], steps=shape["new_tokens"], temperature=0.0)
    out = {}
    for mode, batch_size in (("batched", shape["batch"]), ("sequential", 1)):
        answer(model, tok, memory, prompts[:2], config, min(batch_size, 2))  # warm-up
        start = time.perf_counter()
        answer(model, tok, memory, prompts, config, batch_size)
        _sync(device)
        out[f"{mode}_prompts_per_s"] = round(len(prompts) / (time.perf_counter() - start), 3)
    out["batched_speedup"] = round(out["batched_prompts_per_s"] / out["sequential_prompts_per_s"], 3)
    return out


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="A tiny float32 model on the CPU (the suite's check).")
    p.add_argument("--device", default=None, help="Default: cuda, or cpu with --tiny.")
    args = p.parse_args(argv)
    import torch
    from eval_throughput import make_prompts

    from memdlm.backbones.tokenizer import load_tokenizer

    started = time.perf_counter()
    shape = TINY if args.tiny else FULL
    device = torch.device(args.device or ("cpu" if args.tiny else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device; run with --tiny on a CPU", file=sys.stderr)
        return 2
    dtype = torch.float32 if args.tiny else torch.bfloat16
    tok = load_tokenizer()
    model = build_model(tok, shape, device, dtype)
    prompts = make_prompts(tok, shape["prompts"], shape["prompt_length"], shape["prompt_length"] + 16, seed=0)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).replace("torch.", ""),
        "model": {"class": type(model).__name__, "parameters": sum(p.numel() for p in model.parameters()),
                  **{k: shape[k] for k in ("hidden_size", "num_hidden_layers", "intermediate_size",
                                            "num_attention_heads")},
                  "vocab_size": model.config.vocab_size},
        "train": time_training(model, tok, shape, device),
        "sampling": time_sampling(model, tok, prompts, shape, device),
        "adaptation": time_adaptation(model, tok, prompts, shape, device),
    }
    result["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
