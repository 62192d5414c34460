#!/usr/bin/env bash
# One command from a fresh clone: set up (if needed) and run the test suite.
#   bash scripts/test.sh [pytest args]     e.g. -m "not slow" for the fast subset
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/memdlm ] || bash scripts/setup.sh
. .venv/bin/activate
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
python -m pytest "$@"
