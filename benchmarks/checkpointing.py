"""Peak memory and step time of a MemDLM training step with and without gradient checkpointing.

    python benchmarks/checkpointing.py                          # 8-layer tiny variant, 4 x 512 tokens, CPU
    python benchmarks/checkpointing.py --layers 8 --seq-len 1024 --batch 2 --rounds 3
    python benchmarks/checkpointing.py --device cuda            # peak from the CUDA allocator

Three configurations of the same model (the tiny bidirectional Gemma3 with ``--layers``
layers), weights, batch and masks, side by side in one run:

- ``off``: no checkpointing;
- ``own switch``: ``--gradient-checkpointing`` through the model's own switch (Gemma3
  declares ``supports_gradient_checkpointing``);
- ``per block``: the same model with its switch hidden, so memdlm checkpoints each block
  itself (``memdlm.backbones.checkpointing``, the way 4.x remote code without a switch -- LLaDA's hub
  code -- is checkpointed).

Each step is ``MemDLMTrainer.training_step`` (per-sample memory, the paper's inner loop:
rank 32, K = 2, the hooks kept through the backward) on fixed weights and masks (no
optimiser step, so every step and configuration computes the same gradients). Each configuration runs in its own process; on a CPU
its peak is the highest live malloc heap above the post-warm-up baseline
(``train_step.heap_bytes``, sampled every millisecond), on CUDA
``torch.cuda.max_memory_allocated`` above the baseline. Step time is the median of
``--rounds`` steps in that process. The gradients of the three are checked equal
(``tests/test_checkpointing.py`` checks them exactly; here the largest difference is
reported).

The last line is a JSON object with the table and the peak ratios against ``off``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from train_step import HeapPeak  # the same live-heap measure as the training-step benchmark

CONFIGS = ("off", "own switch", "per block")


def build(opts, config: str):
    import torch

    from memdlm.config import DiffusionArguments
    from memdlm.data.collate import DiffusionCollator
    from memdlm.memory.config import MemoryArguments
    from memdlm.backbones.modeling import build_tiny_model
    from memdlm.tasks.dataset import SyntheticTaskDataset
    from memdlm.backbones.tokenizer import load_tokenizer
    from memdlm.training.args import TrainConfig
    from memdlm.training.memdlm_trainer import MemDLMTrainer

    tok = load_tokenizer()
    model = build_tiny_model(tok, seed=0, num_hidden_layers=opts.layers).to(opts.device)
    if config == "per block":
        model.supports_gradient_checkpointing = False  # memdlm's own per-block checkpointing
    data = SyntheticTaskDataset(tok, ["kv"], [opts.seq_len], "train", 64, seed=0)
    inputs = DiffusionCollator(tok.pad_token_id, tok.eos_token_id)([data[i] for i in range(opts.batch)])
    inputs = {k: v.to(opts.device) for k, v in inputs.items()}
    args = TrainConfig(output_dir=tempfile.mkdtemp(), use_cpu=opts.device == "cpu", logging_steps=10**9,
                       report_to="none", disable_tqdm=True, eval_strategy="no",
                       gradient_checkpointing=config != "off")
    trainer = MemDLMTrainer(model=model, args=args, diffusion_args=DiffusionArguments(),
                            mask_token_id=tok.mask_token_id, processing_class=tok,
                            memory_args=MemoryArguments(memory_mode="per_sample", memory_rank=opts.rank))
    assert (trainer.checkpointing or "off").startswith({"off": "off", "own switch": "own",
                                                         "per block": "memdlm"}[config]), trainer.checkpointing
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train() otherwise
    trainer.state.global_step = 1  # not a logging step: no diagnostics in the measured step
    model.train()

    def step(keep_grads: bool = False):
        trainer._last_step = -1  # every step draws the same masks (step 1, micro-step 0)
        trainer.training_step(model, dict(inputs))
        grads = [p.grad.detach().clone() for p in model.parameters()] if keep_grads else None
        model.zero_grad(set_to_none=True)  # no optimiser step: every step sees the same weights
        if opts.device == "cuda":
            torch.cuda.synchronize()
        return grads

    return step


def child(opts) -> None:
    """One configuration: peak memory above the baseline, median step time, a gradient digest."""
    import torch

    torch.set_num_threads(opts.threads)
    step = build(opts, opts.config)
    grads = step(keep_grads=True)  # warm-up; its gradients are the digest
    if opts.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        times = timed_rounds(step, opts.rounds)
        peak_bytes = torch.cuda.max_memory_allocated() - base
    else:
        with HeapPeak() as heap:
            times = timed_rounds(step, opts.rounds)
        peak_bytes = heap.bytes
    with tempfile.NamedTemporaryFile(suffix=".pt", delete=False) as digest:
        torch.save(grads, digest)
    print(json.dumps({"peak_bytes": peak_bytes, "step_s": statistics.median(times), "grads": digest.name}))


def timed_rounds(step, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def run_child(opts, config: str) -> dict:
    cmd = [sys.executable, __file__, "--child", "--config", config, "--layers", str(opts.layers),
           "--threads", str(opts.threads), "--device", opts.device, "--seq-len", str(opts.seq_len),
           "--batch", str(opts.batch), "--rank", str(opts.rank), "--rounds", str(opts.rounds)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": str(opts.threads)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--rank", type=int, default=32, help="fast-weight rank (paper: 32)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--config", default="off", choices=CONFIGS, help=argparse.SUPPRESS)
    opts = p.parse_args()
    if opts.child:
        child(opts)
        return
    import torch

    results = {c: run_child(opts, c) for c in CONFIGS}
    grads = {}
    for c, r in results.items():
        grads[c] = torch.load(r["grads"])
        os.unlink(r.pop("grads"))
    rows = []
    for c in CONFIGS:
        diff = max((a - b).abs().max().item() for a, b in zip(grads[c], grads["off"]))
        rows.append({"config": c, "peak_mib": round(results[c]["peak_bytes"] / 2**20, 1),
                     "step_s": round(results[c]["step_s"], 3),
                     "peak_ratio": round(results[c]["peak_bytes"] / max(results["off"]["peak_bytes"], 1), 3),
                     "time_ratio": round(results[c]["step_s"] / results["off"]["step_s"], 3),
                     "max_grad_diff": diff})
    print(f"device={opts.device} threads={opts.threads} layers={opts.layers} batch={opts.batch} "
          f"seq_len={opts.seq_len} rank={opts.rank} rounds={opts.rounds} (MemDLM, per-sample memory)")
    print(f"{'config':>11} {'peak MiB':>9} {'peak x':>7} {'step s':>7} {'time x':>7} {'max |grad diff|':>16}")
    for r in rows:
        print(f"{r['config']:>11} {r['peak_mib']:>9.1f} {r['peak_ratio']:>7.3f} {r['step_s']:>7.3f} "
              f"{r['time_ratio']:>7.3f} {r['max_grad_diff']:>16.2e}")
    print(json.dumps({"layers": opts.layers, "batch": opts.batch, "seq_len": opts.seq_len, "rank": opts.rank,
                      "threads": opts.threads, "device": opts.device, "rows": rows}))


if __name__ == "__main__":
    main()
