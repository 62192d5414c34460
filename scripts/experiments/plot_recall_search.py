"""Plot the recall-search curves: held-out MDLM loss of the project runs against the copy level.

    python scripts/experiments/plot_recall_search.py docs/results/recall_search

Reads the `memdlm train` logs kept in that folder (``run_*.log``: Trainer's eval lines) and
writes ``curves.png`` beside them.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

BATCH, SAMPLES = 128, 200_000  # the runs' batch size and dataset size (epoch -> step)
COPY_LEVEL_LOSS = 0.85  # an answer spread evenly over the 8 context values (RESULTS.md)


def curve(path: Path) -> list[tuple[int, float]]:
    text = path.read_text(errors="ignore")
    found = re.findall(r"\{'eval_loss': '([0-9.]+)'.*?'epoch': '([0-9.]+)'\}", text)
    return [(round(float(epoch) * SAMPLES / BATCH), float(loss)) for loss, epoch in found]


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(sys.argv[1])
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for log in sorted(folder.glob("run_*.log")):
        points = curve(log)
        if points:
            ax.plot(*zip(*points), marker="o", ms=3, label=log.stem.removeprefix("run_"))
    ax.axhline(COPY_LEVEL_LOSS, color="gray", ls="--", label="copy a random context value")
    ax.set_xlabel("training step (batch 128)")
    ax.set_ylabel("held-out MDLM loss")
    ax.set_title("mqar (8 pairs, 4 asked): no run left the copy level")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "curves.png", dpi=120)
    print(folder / "curves.png")


if __name__ == "__main__":
    main()
