#!/usr/bin/env bash
# One short GPU check (at most 8 minutes on one H100/H200): MemDLM / MDLM step time and peak
# memory on a ~1.4B LLaDA-shaped random model in bf16 at 2,048 and 4,096 tokens (checkpointing
# off and on), sampling and batched-adaptation throughput; one JSON object on the last line.
#   bash scripts/gpu_check.sh          # on the GPU
#   bash scripts/gpu_check.sh --tiny   # a tiny model on the CPU (what tests/test_gpu_check.py runs)
# Progress lines go to stderr; docs/SCALING.md says how to read the result. PYTHON names the
# interpreter (default: `python` on PATH, e.g. an activated .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 480 "${PYTHON:-python}" scripts/gpu_check.py "$@"
