"""``memdlm plan``'s memory estimate against the measured peak of training steps on a CPU.

    python benchmarks/plan_memory.py                       # the table of docs/SCALING.md
    python benchmarks/plan_memory.py --hidden 256 --ffn 1024 --layers 4 --seq-len 512 --batch 4

Each configuration runs in its own process (``benchmarks/train_step.py``'s step and heap
probe): the peak of the live malloc heap during three steps, above the baseline after a
warm-up step (weights and AdamW moments are in the baseline; gradients, activations,
logits and the inner loop are not). The estimate compared is the same part of the plan:
gradients + activations + logits + inner loop, with the logits scaled to the positions
the batch can score (the estimate's worst case is every position). The last line is a
JSON object with every row and the largest relative error.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# (layers, hidden, ffn, seq_len, batch, method, checkpointing): the activation coefficients of
# memdlm.training.plan were fitted to the first six; the last two are held out.
DEFAULT_ROWS = [
    (4, 256, 1024, 512, 4, "mdlm", False),
    (4, 256, 1024, 512, 4, "memdlm", False),
    (4, 256, 1024, 512, 4, "mdlm", True),
    (4, 256, 1024, 512, 4, "memdlm", True),
    (8, 128, 512, 1024, 2, "mdlm", False),
    (8, 128, 512, 1024, 2, "memdlm", False),
    (6, 192, 768, 384, 3, "mdlm", False),
    (6, 192, 768, 384, 3, "memdlm", True),
]


def overrides(hidden: int, ffn: int) -> dict:
    from memdlm.backbones.modeling import tiny_head_overrides

    return {"hidden_size": hidden, "intermediate_size": ffn, **tiny_head_overrides(4, hidden)}


def measured_peak(row, threads: int) -> int:
    import torch
    from train_step import HeapPeak, build

    layers, hidden, ffn, seq_len, batch, method, checkpointing = row
    torch.set_num_threads(threads)
    step = build(layers, method, "cpu", seq_len, batch, 32, True, overrides(hidden, ffn), checkpointing)
    step()
    with HeapPeak() as heap:
        for _ in range(3):
            step()
    return heap.bytes


def estimated_peak(row) -> tuple[int, dict]:
    """The plan's components the measurement covers, for the benchmark's setting (per-sample
    memory of rank 32, as train_step.py uses)."""
    from memdlm.data.collate import DiffusionCollator
    from memdlm.tasks.dataset import SyntheticTaskDataset
    from memdlm.backbones.tokenizer import load_tokenizer
    from memdlm.training.options import setup_from_options
    from memdlm.training.plan import make_plan

    layers, hidden, ffn, seq_len, batch, method, checkpointing = row
    setup = setup_from_options({
        "output_dir": "(plan)", "method": method, "tiny_layers": layers, "tiny_hidden_size": hidden,
        "tiny_intermediate_size": ffn, "tiny_heads": 4, "train_lengths": [seq_len],
        "per_device_train_batch_size": batch, "gradient_checkpointing": checkpointing,
        "memory_mode": "per_sample", "memory_rank": 32})
    memory = make_plan(setup).memory
    tok = load_tokenizer()
    data = SyntheticTaskDataset(tok, ["kv"], [seq_len], "train", 64, seed=0)
    labels = DiffusionCollator(tok.pad_token_id, tok.eos_token_id)([data[i] for i in range(batch)])["labels"]
    scorable = float((labels != -100).float().mean())  # the fraction of positions a step can score
    parts = {"gradients": memory["gradients"], "activations": memory["activations"],
             "logits": int(memory["logits"] * scorable)}
    if "inner_loop" in memory:
        parts["inner_loop"] = memory["inner_loop"]
    return sum(parts.values()), parts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--child", help=argparse.SUPPRESS)
    opts = p.parse_args()
    if opts.child:
        print(json.dumps({"peak_bytes": measured_peak(json.loads(opts.child), opts.threads)}))
        return
    rows = []
    for row in DEFAULT_ROWS:
        out = subprocess.run([sys.executable, __file__, "--child", json.dumps(row), "--threads", str(opts.threads)],
                             capture_output=True, text=True, check=True,
                             env={**os.environ, "OMP_NUM_THREADS": str(opts.threads)})
        measured = json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]
        estimate, parts = estimated_peak(row)
        rows.append({"layers": row[0], "hidden": row[1], "ffn": row[2], "seq_len": row[3], "batch": row[4],
                     "method": row[5], "checkpointing": row[6], "measured_mib": round(measured / 2**20, 1),
                     "estimated_mib": round(estimate / 2**20, 1),
                     "error": round(estimate / measured - 1, 3),
                     "parts_mib": {k: round(v / 2**20, 1) for k, v in parts.items()}})
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"rows": rows, "max_abs_error": max(abs(r["error"]) for r in rows)}))


if __name__ == "__main__":
    main()
