"""Plot the fifth session's recall probes: per-query accuracy against steps, copy level dashed.

    python scripts/experiments/plot_recall_probes.py docs/results/recall_search/fifth_session

Reads the probe logs in that folder (``minimal_*.log`` from mqar_minimal_transformer.py,
``probe_*.log`` from mqar_recipe_probe.py: lines ``step S loss L acc A ...``) and writes
``curves.png`` beside them: the minimal transformer's controls on the left, the stock
classes on the right.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

LABELS = {
    "minimal_ca": "causal (Zoology setting)", "minimal_ca02": "causal, init N(0, 0.02)",
    "minimal_bi": "bidirectional MDLM", "minimal_bishift": "bidirectional, Dream-style shift",
    "minimal_birope": "bidirectional, RoPE", "minimal_biprev": "bidirectional + previous token",
    "minimal_biprev02": "bidirectional + previous token, init N(0, 0.02)",
    "probe_cb3": "ConvBERT, conv 3", "probe_deb3": "DeBERTa-v2, conv 3",
    "probe_mb_infill": "MobileBERT, 4 answers, lr 2e-3", "probe_mb_sep": "MobileBERT, answers 5 back, lr 2e-3", "probe_mb_infill_5e4": "MobileBERT, 4 answers, lr 5e-4",
    "probe_mb_sep_1e3": "MobileBERT, answers 5 back, lr 1e-3", "probe_mb_q1": "MobileBERT, 1 query, lr 5e-4",
}


def curve(path: Path) -> tuple[list[int], list[float]]:
    found = re.findall(r"^step (\d+) loss [0-9.]+ acc ([0-9.]+)", path.read_text(), re.M)
    return [int(s) for s, _ in found], [100 * float(a) for _, a in found]


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(sys.argv[1])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, prefix, title in ((axes[0], "minimal_", "60-line transformer (4 answers, each after its query)"),
                              (axes[1], "probe_", "stock transformers classes")):
        for path in sorted(folder.glob(f"{prefix}*.log")):
            steps, acc = curve(path)
            if steps:
                ax.plot(steps, acc, "o-", ms=3, label=LABELS.get(path.stem, path.stem))
        ax.axhline(12.5, color="gray", ls="--", lw=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("training steps (batch 128)")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("held-out queries answered (%); dashed: copy level")
    axes[0].set_ylim(0, 100)
    fig.tight_layout()
    fig.savefig(folder / "curves.png", dpi=110)


if __name__ == "__main__":
    main()
