#!/usr/bin/env bash
# Create .venv and install memdlm with its development extras, at the exact versions of
# requirements/lock.txt (every direct and transitive dependency; the versions the README's
# figures and the test suite were measured with). pyproject.toml keeps loose ranges for users
# who install into their own environments; `bash scripts/release_check.sh` runs the suite on
# the newest versions those ranges allow and prints what changed against the lock.
# On a machine without CUDA, torch is installed first as the CPU wheel torch==2.13.0 (a looser
# pin would pull a multi-GB CUDA build). Set MEMDLM_TORCH_INDEX to a wheel index URL if your
# pip cannot find a CPU build by itself.
#   MEMDLM_VENV=DIR        install into DIR instead of .venv
#   MEMDLM_UNPINNED=1      ignore the lock (newest allowed versions; what release_check.sh uses)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${MEMDLM_VENV:-.venv}
LOCK=()
[ "${MEMDLM_UNPINNED:-0}" = 1 ] || LOCK=(-c requirements/lock.txt)
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
. "$VENV/bin/activate"
python -m pip install --quiet --upgrade pip
if ! command -v nvidia-smi >/dev/null 2>&1; then
  python -m pip install --quiet "torch==2.13.0" ${MEMDLM_TORCH_INDEX:+--index-url "$MEMDLM_TORCH_INDEX"}
fi
python -m pip install --quiet "${LOCK[@]}" -e ".[dev]"
python -c "import torch, transformers, memdlm; print(f'memdlm {memdlm.__version__}: torch {torch.__version__}, transformers {transformers.__version__}')"
