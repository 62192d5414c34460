"""MemDLM training-step cost against the production Standard MDLM step.

    python benchmarks/train_step.py                 # 10-layer tiny variant and the default, 1 thread
    python benchmarks/train_step.py --layers 10 --rounds 20 --threads 1
    python benchmarks/train_step.py --device cuda   # on a GPU (peak memory from the CUDA allocator)

Same model weights, batch and masks for both methods: each step is
``Trainer.training_step`` (noise, loss, backward) of ``MDLMTrainer`` /
``MemDLMTrainer`` plus an AdamW step. MemDLM uses the paper's inner loop
(rank 32, alpha 64, SGD lr 0.1, per-parameter clipping at 1.0, K = 2,
anchor-consistent) with per-sample memory. Runs are interleaved and medians
reported. Peak memory: each configuration runs in its own process; on a CPU it
is the peak above the post-warm-up baseline, sampled every
millisecond by a thread (CPU has no allocator peak counter), of the live
malloc heap (glibc ``mallinfo2``: in-use chunks plus mmapped blocks); on CUDA
``torch.cuda.max_memory_allocated`` above the baseline.

The last line is a JSON object with ``time_ratio`` and ``peak_mem_ratio`` (for
the first ``--layers`` value) and the full table.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time


def build(layers: int, method: str, device: str, seq_len: int, batch: int, rank: int, split: bool,
          overrides: dict | None = None, checkpointing: bool = False):
    """One training step's closure. ``overrides``: config fields of the tiny model (width, FFN);
    ``checkpointing``: gradient checkpointing as Trainer turns it on."""
    import torch

    from memdlm.config import DiffusionArguments
    from memdlm.data.collate import DiffusionCollator
    from memdlm.memory.config import MemoryArguments
    from memdlm.backbones.modeling import build_tiny_model
    from memdlm.tasks.dataset import SyntheticTaskDataset
    from memdlm.backbones.tokenizer import load_tokenizer
    from memdlm.training.args import TrainConfig
    from memdlm.training.mdlm_trainer import MDLMTrainer
    from memdlm.training.memdlm_trainer import MemDLMTrainer

    tok = load_tokenizer()
    model = build_tiny_model(tok, seed=0, num_hidden_layers=layers, **(overrides or {})).to(device)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    data = SyntheticTaskDataset(tok, ["kv"], [seq_len], "train", 64, seed=0)
    batch_inputs = DiffusionCollator(tok.pad_token_id, tok.eos_token_id)([data[i] for i in range(batch)])
    batch_inputs = {k: v.to(device) for k, v in batch_inputs.items()}
    args = TrainConfig(output_dir=tempfile.mkdtemp(), use_cpu=device == "cpu", logging_steps=10**9,
                       report_to="none", disable_tqdm=True, eval_strategy="no")
    common = dict(model=model, args=args, diffusion_args=DiffusionArguments(),
                  mask_token_id=tok.mask_token_id, processing_class=tok)
    if method == "mdlm":
        trainer = MDLMTrainer(**common)
    else:
        trainer = MemDLMTrainer(memory_args=MemoryArguments(memory_mode="per_sample", memory_rank=rank),
                                **common)
        if not split:
            import memdlm.training.memdlm_trainer as mt

            mt.supports_split = lambda _model: False
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train() otherwise
    trainer.state.global_step = 1  # not a logging step: no diagnostics in the timed step
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step():
        trainer.training_step(model, dict(batch_inputs))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()

    return step


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
        "keepcost")]


def heap_bytes() -> int:
    """Bytes currently allocated through malloc (glibc mallinfo2: in-use chunks + mmapped
    blocks) -- the live heap, which unlike RSS drops when tensors are freed."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


class HeapPeak:
    """The peak of :func:`heap_bytes` above its level at entry, sampled every millisecond by a
    thread while the ``with`` block runs (``.bytes`` after the block)."""

    def __enter__(self):
        self.base = self.peak = heap_bytes()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, heap_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    @property
    def bytes(self) -> int:
        return self.peak - self.base


def child(opts) -> None:
    """One configuration in its own process: peak memory above the post-build baseline."""
    import torch

    torch.set_num_threads(opts.threads)
    step = build(opts.layers[0], opts.method, opts.device, opts.seq_len, opts.batch, opts.rank, not opts.no_split)
    step()  # warm-up: allocator pools, lazy init
    if opts.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        for _ in range(3):
            step()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        with HeapPeak() as heap:
            for _ in range(3):
                step()
        peak = heap.bytes
    print(json.dumps({"peak_bytes": peak}))


def peak_in_subprocess(opts, layers: int, method: str) -> int:
    cmd = [sys.executable, __file__, "--child", "--method", method, "--layers", str(layers),
           "--threads", str(opts.threads), "--device", opts.device, "--seq-len", str(opts.seq_len),
           "--batch", str(opts.batch), "--rank", str(opts.rank)] + (["--no-split"] if opts.no_split else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": str(opts.threads)})
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]


def time_interleaved(opts, layers: int) -> dict:
    import torch

    torch.set_num_threads(opts.threads)
    steps = {m: build(layers, m, opts.device, opts.seq_len, opts.batch, opts.rank, not opts.no_split)
             for m in ("mdlm", "memdlm")}
    times: dict[str, list[float]] = {m: [] for m in steps}
    for m in steps:  # warm-up
        steps[m]()
    for _ in range(opts.rounds):
        for m, step in steps.items():
            start = time.perf_counter()
            step()
            times[m].append(time.perf_counter() - start)
    return {m: statistics.median(v) for m, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, nargs="+", default=[10, 4])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--rank", type=int, default=32, help="fast-weight rank (paper: 32)")
    p.add_argument("--no-split", action="store_true", help="disable the shared lower-layer pass")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", default="mdlm", help=argparse.SUPPRESS)
    opts = p.parse_args()
    if opts.child:
        child(opts)
        return
    rows = []
    for layers in opts.layers:
        t = time_interleaved(opts, layers)
        mem = {m: peak_in_subprocess(opts, layers, m) for m in ("mdlm", "memdlm")}
        rows.append({"layers": layers, "mdlm_step_s": round(t["mdlm"], 4), "memdlm_step_s": round(t["memdlm"], 4),
                     "time_ratio": round(t["memdlm"] / t["mdlm"], 3),
                     "mdlm_peak_mib": round(mem["mdlm"] / 2**20, 1), "memdlm_peak_mib": round(mem["memdlm"] / 2**20, 1),
                     "peak_mem_ratio": round(mem["memdlm"] / max(mem["mdlm"], 1), 3)})
    print(f"device={opts.device} threads={opts.threads} batch={opts.batch} seq_len={opts.seq_len} "
          f"rank={opts.rank} rounds={opts.rounds} split={'off' if opts.no_split else 'on'}")
    print(f"{'layers':>6} {'mdlm s':>8} {'memdlm s':>9} {'time x':>7} {'mdlm MiB':>9} {'memdlm MiB':>11} {'mem x':>6}")
    for r in rows:
        print(f"{r['layers']:>6} {r['mdlm_step_s']:>8.4f} {r['memdlm_step_s']:>9.4f} {r['time_ratio']:>7.3f} "
              f"{r['mdlm_peak_mib']:>9.1f} {r['memdlm_peak_mib']:>11.1f} {r['peak_mem_ratio']:>6.3f}")
    print(json.dumps({"time_ratio": rows[0]["time_ratio"], "peak_mem_ratio": rows[0]["peak_mem_ratio"],
                      "layers": rows[0]["layers"], "threads": opts.threads, "device": opts.device,
                      "split": not opts.no_split, "rows": rows}))


if __name__ == "__main__":
    main()
