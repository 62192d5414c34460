"""``memdlm train``: Standard MDLM or MemDLM training.

Examples:

    # tiny default on a CPU (about 5 minutes), then held-out key-value accuracy
    memdlm train --method mdlm --output-dir runs/tiny
    # MemDLM with the paper's inner loop
    memdlm train --method memdlm --output-dir runs/tiny-mem
    # a config file, with flags overriding it
    memdlm train --config configs/tiny.yaml --max-steps 200
    # your own data (prompt/response, Alpaca, messages or text rows)
    memdlm train --data data.jsonl --model path/to/dlm --use-lora --learning-rate 2e-5
    # what the run would hold (targets, counts, peak memory per device), without running it
    memdlm train --config configs/paper_llada.yaml --dry-run
    # two processes (DDP over gloo on a CPU, NCCL on GPUs)
    torchrun --nproc_per_node 2 -m memdlm.cli train --output-dir runs/ddp
"""

from __future__ import annotations

import json


def parse(argv: list[str], prog: str = "memdlm train"):
    """``(TrainingSetup, resume)`` from flags and a ``--config`` file (:mod:`memdlm.training.options`)."""
    from memdlm.training.options import parse as parse_options

    return parse_options(argv, prog, description=__doc__)


def run(argv: list[str], prog: str = "memdlm train") -> int:
    if "--dry-run" in argv:  # the plan of this run, nothing trained or written
        from memdlm.commands import plan

        return plan.run([a for a in argv if a != "--dry-run"], prog=f"{prog} --dry-run")
    import torch

    from memdlm.config import default_threads
    from memdlm.training.train import train

    setup, resume = parse(argv, prog)
    if setup.threads is None:  # the command's default; train() itself keeps whatever it is given
        torch.set_num_threads(default_threads())
    summary = train(setup, resume=resume)
    print(json.dumps(summary, indent=2))
    return 0
