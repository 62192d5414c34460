#!/usr/bin/env bash
# Train the shipped prose base from the shipped mqar-base and ship it (issue 16):
#   bash scripts/train_prose_base.sh [RUNS_DIR]        (default: runs/)
# configs/prose_base.yaml: full fine-tune on plain prose at 256 tokens; then
# scripts/ship_model.py measures the per-item held-out loss on prose_cont beside uniform
# guessing and a unigram model, and copies the model with its provenance.json into
# src/memdlm/assets/models/prose-base. Measured time: docs/REPRODUCE.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs}
memdlm train --config configs/prose_base.yaml --output-dir "$RUNS/prose-base" --overwrite-output-dir
python scripts/ship_model.py "$RUNS/prose-base" --name prose-base --task prose_cont --lengths 256 \
    --items 200 --command "bash scripts/train_prose_base.sh"
