"""``memdlm plan``: what a training run will hold, before it runs (no weights, no download).

Takes every ``memdlm train`` option (flags and ``--config``), resolves them as the run
would, builds the model on the meta device from its config, and prints the memory's
targets, the LoRA and fast-weight parameter counts, and an estimate of the peak
accelerator memory per device with a verdict for 24 / 48 / 80 GB.

Examples:

    memdlm plan --config configs/paper_llada.yaml
    memdlm plan --config configs/paper_llada.yaml --per-device-train-batch-size 2 --gradient-checkpointing false
    memdlm plan --model path/to/model --use-lora --bf16 --max-length 4096 --devices 8 --fsdp "full_shard auto_wrap"
"""

from __future__ import annotations

import argparse
import json
import os

PLAN_ONLY = "(memdlm plan: no run directory)"


def run(argv: list[str], prog: str = "memdlm plan") -> int:
    from memdlm.training.options import parse
    from memdlm.training.plan import make_plan, render

    pre = argparse.ArgumentParser(prog=prog, add_help=False,
                                  description="The plan's own options; every memdlm train option follows.")
    pre.add_argument("--devices", type=int, default=int(os.environ.get("WORLD_SIZE", 1)),
                     help="Devices the run shards over with --fsdp (default: WORLD_SIZE, else 1).")
    pre.add_argument("--json", action="store_true", help="Print the plan as one JSON object.")
    plan_args, rest = pre.parse_known_args(argv)
    if any(a in ("-h", "--help") for a in rest):
        pre.print_help()
    if not any(a == "--output-dir" or a.startswith("--output-dir=") or a == "--output_dir" for a in rest):
        rest = [*rest, "--output-dir", PLAN_ONLY]  # a plan writes nothing; train's parser needs the field
    setup, _ = parse(rest, prog, description=__doc__)
    if plan_args.devices < 1:
        from memdlm.errors import ConfigError

        raise ConfigError(f"--devices must be >= 1, got {plan_args.devices}")
    plan = make_plan(setup, devices=plan_args.devices)
    print(json.dumps(plan.to_dict(), indent=2) if plan_args.json else render(plan))
    return 0
