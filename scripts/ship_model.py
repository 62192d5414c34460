"""Copy a finished run into the package as a shipped model, with its provenance.

    python scripts/ship_model.py RUN_DIR --name mqar-base --command "bash scripts/train_recall_base.sh" \\
        [--stages EARLIER_RUN ...] [--task mqar] [--lengths 19 128] [--items 500]

Measures the run on fresh held-out items at each length -- a recall task by accuracy
(every answer masked at once, the package's held-out decoding) beside its reference
levels; any other task by its per-item held-out loss (:mod:`memdlm.eval.item_loss`)
beside two references, uniform guessing (ln V) and a unigram model of the training
split's tokens (the simplest non-solution) -- copies the weights, config and tokenizer to
``src/memdlm/assets/models/NAME/`` and writes ``provenance.json`` beside them (and
``PROVENANCE.md``, the same record as text): the commit,
the command, the seed, the wall time of training, the machine and the measured quality
with its reference levels. Refuses a run without ``run_complete.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

import torch

from memdlm.eval.heldout import evaluate_samples, heldout_samples
from memdlm.backbones.modeling import load_model
from memdlm.backbones.shipped import PROVENANCE_JSON, PROVENANCE_MD, SHIPPED_DIR, render_provenance
from memdlm.tasks import get_task
from memdlm.tasks.seeds import PROVENANCE_SEED, UNIGRAM_REFERENCE_ITEMS, UNIGRAM_REFERENCE_SEED
from memdlm.backbones.tokenizer import load_tokenizer

FILES = ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json",
         "chat_template.jinja", "special_tokens_map.json", "generation_config.json")


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


def unigram_loss(tok, task: str, length: int, samples, train_items: int = UNIGRAM_REFERENCE_ITEMS) -> float:
    """Cross-entropy (nats/token) of the held-out responses under the unigram distribution
    of ``train_items`` other items' response tokens (``UNIGRAM_REFERENCE_SEED``, add-one smoothed): what a
    model that ignores every context would score."""
    from collections import Counter

    from memdlm.eval.exposure_bias import encode_pairs

    train = heldout_samples(tok, [task], length, train_items, seed=UNIGRAM_REFERENCE_SEED)
    counts = Counter(t for r in encode_pairs(tok, train)[1] for t in r)
    total, vocab = sum(counts.values()), len(tok)
    targets = [t for r in encode_pairs(tok, samples)[1] for t in r]
    return -sum(math.log((counts[t] + 1) / (total + vocab)) for t in targets) / len(targets)


def loss_against_references(model, tok, samples, task: str, length: int) -> dict:
    from memdlm.eval.item_loss import LEVELS, item_losses

    losses = item_losses(model, tok, samples)
    return {"metric": f"per-item held-out loss, nats/token (memdlm.eval.item_loss, {LEVELS} mask ratios)",
            "loss": round(sum(losses) / len(losses), 4),
            "reference": {"uniform": round(math.log(len(tok)), 4),
                          "unigram": round(unigram_loss(tok, task, length, samples), 4)}}


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
        samples = heldout_samples(tok, [args.task], length, args.items, seed=PROVENANCE_SEED)
        start = time.perf_counter()
        if get_task(args.task).fixed_slots:  # recall: every answer masked at once
            result = evaluate_samples(model, tok, samples, progress=False)
            measured = {"decoding": "every answer masked at once, greedy, one step",
                        **result["recall_by_task"][args.task]}
        else:
            measured = loss_against_references(model, tok, samples, args.task, length)
        heldout[str(length)] = {"task": args.task, "length": length, "items": args.items, "seed": PROVENANCE_SEED,
                                **measured, "seconds": round(time.perf_counter() - start, 1)}
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
    (out / PROVENANCE_JSON).write_text(json.dumps(provenance, indent=2) + "\n")
    (out / PROVENANCE_MD).write_text(render_provenance(provenance))
    print(json.dumps(provenance, indent=2))


if __name__ == "__main__":
    main()
