#!/usr/bin/env bash
# One command from a fresh clone: set up, fine-tune the shipped associative-recall base with
# MemDLM on a longer, harder context than it was trained on, and compare base and fine-tuned
# model on fresh held-out items at the fine-tuning length and twice it.
#   bash scripts/quickstart.sh [extra `memdlm train` flags]
# (Training a model from scratch instead: memdlm train --config configs/recall_base.yaml;
#  the older tiny key-value default: memdlm train --config configs/tiny.yaml.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
memdlm train --config configs/quickstart.yaml --output-dir runs/quickstart --overwrite-output-dir "$@"
memdlm eval --run base=mqar-base --run memdlm=runs/quickstart --run memdlm+adapt=runs/quickstart:memory \
    --tasks mqar32 --lengths 256 512 --items 200 --output-dir runs/quickstart/eval --no-progress
