#!/usr/bin/env bash
# Train the shipped associative-recall base from nothing and ship it (issue 15):
#   bash scripts/train_recall_base.sh [RUNS_DIR]        (default: runs/)
# Stage 1 (configs/recall_base.yaml): 2-layer MobileBERT from scratch, 8 pairs without
# filler, until key matching has emerged. Stage 2 (configs/recall_base_long.yaml): the
# same task with filler up to 128 tokens. Then scripts/ship_model.py measures 500 fresh
# held-out items and copies the model with its provenance.json into
# src/memdlm/assets/models/mqar-base. Measured times: docs/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs}
memdlm train --config configs/recall_base.yaml --output-dir "$RUNS/recall-base-short" --overwrite-output-dir
memdlm train --config configs/recall_base_long.yaml --model "$RUNS/recall-base-short" \
    --output-dir "$RUNS/recall-base" --overwrite-output-dir
python scripts/ship_model.py "$RUNS/recall-base" --name mqar-base --task mqar --length 128 \
    --stages "$RUNS/recall-base-short" \
    --command "bash scripts/train_recall_base.sh"
