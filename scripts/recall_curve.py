"""Accuracy of a recall model against context length and number of pairs (issue 15, item 5).

    python scripts/recall_curve.py --model mqar-base --out docs/results/recall_base

For every (pairs, length) cell it answers fresh held-out items of the matching ``mqar``
variant (every answer masked at once, greedy: the package's held-out decoding) and
records per-query accuracy beside the two reference levels -- uniform guessing and
copying a random context value (1/pairs) -- and where the wrong answers came from.
Writes ``curve.json`` and ``curve.png`` (accuracy against length, one line per pairs
count, its copy level dashed in the same colour). Cells shorter than the bare sample
(pairs without filler) are skipped and say so.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from memdlm.errors import ConfigError
from memdlm.eval.heldout import evaluate_samples, heldout_samples
from memdlm.backbones.modeling import load_model
from memdlm.backbones.shipped import resolve_model
from memdlm.tasks import get_task
from memdlm.tasks.seeds import CURVE_SEED
from memdlm.backbones.tokenizer import load_tokenizer

VARIANTS = {4: "mqar4", 8: "mqar", 16: "mqar16", 32: "mqar32"}


def measure(model, tok, pairs: int, length: int, items: int) -> dict | None:
    task = VARIANTS[pairs]
    try:
        samples = heldout_samples(tok, [task], length, items, seed=CURVE_SEED)
    except ConfigError as err:  # the bare sample does not fit: nothing to measure here
        return {"pairs": pairs, "length": length, "skipped": str(err)}
    result = evaluate_samples(model, tok, samples, progress=False, batch_size=32)
    report = result["recall_by_task"][task]
    return {"pairs": pairs, "length": length, "task": task, **report}


def plot(cells: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, pairs in enumerate(sorted({c["pairs"] for c in cells})):
        rows = [c for c in cells if c["pairs"] == pairs and "per_query" in c]
        if not rows:
            continue
        color = f"C{i}"
        ax.plot([c["length"] for c in rows], [c["per_query"] for c in rows], "o-", color=color,
                label=f"{pairs} pairs")
        ax.axhline(100 / pairs, color=color, ls="--", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("queries answered (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    ax.legend(title="dashed: copy level", fontsize=8, title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mqar-base", help="run directory or shipped model name")
    ap.add_argument("--pairs", type=int, nargs="+", default=[4, 8, 16, 32], choices=sorted(VARIANTS))
    ap.add_argument("--lengths", type=int, nargs="+", default=[19, 32, 64, 128, 256, 512, 1024])
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--out", default="docs/results/recall_base")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    path = resolve_model(args.model)
    tok, model = load_tokenizer(path), load_model(path).eval()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start, cells = time.perf_counter(), []
    for pairs in args.pairs:
        for length in args.lengths:
            cell = measure(model, tok, pairs, length, args.items)
            cells.append(cell)
            shown = (f"{cell['per_query']:.1f}% (copy {100 / pairs:.1f}%, another context value "
                     f"{cell['chose']['other_context']:.1f}%)" if "per_query" in cell else "skipped: too short")
            print(f"{pairs:>2} pairs, {length:>4} tokens: {shown}", flush=True)
    seconds = round(time.perf_counter() - start, 1)
    record = {"model": args.model, "items": args.items, "seed": CURVE_SEED, "seconds": seconds,
              "uniform": get_task("mqar").reference_levels()["uniform"], "cells": cells}
    (out / "curve.json").write_text(json.dumps(record, indent=2))
    plot(cells, out / "curve.png", f"{args.model}: {args.items} fresh held-out items per point")
    print(json.dumps({"seconds": seconds, "cells": len(cells), "out": str(out)}))


if __name__ == "__main__":
    main()
