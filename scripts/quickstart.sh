#!/usr/bin/env bash
# One command from a fresh clone: set up, train the tiny default, answer held-out prompts.
#   bash scripts/quickstart.sh [extra `memdlm train` flags]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
memdlm train --config configs/tiny.yaml --output-dir runs/quickstart --overwrite-output-dir "$@"
echo "Held-out answers: runs/quickstart/heldout_eval.json"
