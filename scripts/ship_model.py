"""Copy a finished run into the package as a shipped model, with its provenance.

    python scripts/ship_model.py RUN_DIR --name mqar-base --command "bash scripts/train_recall_base.sh" \\
        [--stages EARLIER_RUN ...] [--task mqar] [--lengths 19 128] [--items 500]

Measures the run on fresh held-out items at each length (every answer masked at once, the
package's held-out decoding), copies the weights, config and tokenizer to
``src/memdlm/assets/models/NAME/`` and writes ``PROVENANCE.json`` beside them: the commit,
the command, the seed, the wall time of training, the machine and the measured quality
with its reference levels. Refuses a run without ``run_complete.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

import torch

from memdlm.eval.heldout import evaluate_samples, heldout_samples
from memdlm.modeling import load_model
from memdlm.shipped import SHIPPED_DIR
from memdlm.tokenizer import load_tokenizer

FILES = ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json",
         "chat_template.jinja", "special_tokens_map.json", "generation_config.json")
SHIPPED_SEED = 70_000  # held-out items for the provenance, disjoint from HELDOUT_SEED's


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}


def commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def stage_record(run: Path) -> dict:
    """One training stage: its directory, steps, wall time, task mix and lengths."""
    summary = json.loads((run / "run_complete.json").read_text())
    data = json.loads((run / "run_config.json").read_text()).get("data", {})
    return {"run": run.name, "global_step": summary.get("global_step"),
            "train_seconds": summary.get("train_seconds"), "tasks": data.get("tasks"),
            "train_lengths": data.get("train_lengths")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--name", required=True)
    ap.add_argument("--command", required=True, help="The command that trained the run (recorded).")
    ap.add_argument("--task", default="mqar")
    ap.add_argument("--lengths", type=int, nargs="+", default=[19, 128])
    ap.add_argument("--stages", nargs="*", default=[],
                    help="Earlier runs this one continued from (their training time counts too).")
    ap.add_argument("--items", type=int, default=500)
    args = ap.parse_args()
    run = Path(args.run_dir)
    if not (run / "run_complete.json").is_file():
        raise SystemExit(f"{run}: no run_complete.json (not a finished run)")
    summary = json.loads((run / "run_complete.json").read_text())
    run_config = json.loads((run / "run_config.json").read_text())
    tok, model = load_tokenizer(str(run)), load_model(str(run)).eval()
    heldout = {}
    for length in args.lengths:
        samples = heldout_samples(tok, [args.task], length, args.items, seed=SHIPPED_SEED)
        start = time.perf_counter()
        result = evaluate_samples(model, tok, samples, progress=False)
        heldout[str(length)] = {"task": args.task, "length": length, "items": args.items, "seed": SHIPPED_SEED,
                                "decoding": "every answer masked at once, greedy, one step",
                                **result["recall_by_task"][args.task],
                                "seconds": round(time.perf_counter() - start, 1)}
    stages = [stage_record(Path(stage)) for stage in args.stages] + [stage_record(run)]
    out = SHIPPED_DIR / args.name
    out.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        if (run / name).is_file():
            shutil.copy2(run / name, out / name)
    provenance = {
        "name": args.name, "commit": commit(), "command": args.command,
        "seed": run_config["train"]["seed"],
        "train_seconds": round(sum(s["train_seconds"] or 0 for s in stages), 1),
        "stages": stages, "parameters": summary.get("parameters"),
        "machine": machine(), "heldout": heldout,
        "shipped_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    (out / "PROVENANCE.json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(json.dumps(provenance, indent=2))


if __name__ == "__main__":
    main()
