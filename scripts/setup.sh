#!/usr/bin/env bash
# Create .venv and install memdlm with its development extras.
# On a machine without CUDA, torch is pinned to the CPU wheel torch==2.13.0 first
# (a looser pin would pull a multi-GB CUDA build). Set MEMDLM_TORCH_INDEX to a
# wheel index URL if your pip cannot find a CPU build by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
if ! command -v nvidia-smi >/dev/null 2>&1; then
  python -m pip install --quiet "torch==2.13.0" ${MEMDLM_TORCH_INDEX:+--index-url "$MEMDLM_TORCH_INDEX"}
fi
python -m pip install --quiet -e ".[dev]"
python -c "import torch, transformers, memdlm; print(f'memdlm {memdlm.__version__}: torch {torch.__version__}, transformers {transformers.__version__}')"
