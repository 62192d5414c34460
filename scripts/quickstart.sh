#!/usr/bin/env bash
# One command from a fresh clone: set up, fine-tune the shipped associative-recall base
# with MemDLM on longer contexts, then compare base and fine-tuned model on held-out items
# at the fine-tuning length and beyond, beside the uniform and copy reference levels.
#   bash scripts/quickstart.sh [extra `memdlm train` flags]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
memdlm train --config configs/quickstart.yaml --output-dir runs/quickstart --overwrite-output-dir "$@"
LENGTHS=$(python -c "import yaml; l = yaml.safe_load(open('configs/quickstart.yaml'))['train_lengths']; print(max(l), 2 * max(l))")
# shellcheck disable=SC2086
memdlm eval --run "base (mqar-base)=mqar-base" --run "MemDLM fine-tuned=runs/quickstart" \
    --tasks mqar --lengths $LENGTHS --items 200 --output-dir runs/quickstart/eval --no-progress
echo "Held-out answers: runs/quickstart/eval/suite.md"
