#!/usr/bin/env bash
# The release check: install memdlm into a fresh environment at the newest versions
# pyproject.toml allows (ignoring requirements/lock.txt), print every package whose version
# differs from the lock, then run the test suite there.
#   bash scripts/release_check.sh [pytest args]     e.g. -m "not slow"
#   bash scripts/release_check.sh --update-lock     also rewrite requirements/lock.txt from it
#                                                   (do that only after the suite passed)
set -euo pipefail
cd "$(dirname "$0")/.."
UPDATE=0
if [ "${1:-}" = "--update-lock" ]; then UPDATE=1; shift; fi
VENV=${MEMDLM_RELEASE_VENV:-.venv-newest}
rm -rf "$VENV"
MEMDLM_VENV="$VENV" MEMDLM_UNPINNED=1 bash scripts/setup.sh
. "$VENV/bin/activate"
frozen=$(mktemp)
python -m pip freeze --exclude-editable | grep -v '^memdlm' | sed -E 's/^(torch==[^+]*)\+.*/\1/' | sort -f > "$frozen"
echo "== versions that differ from requirements/lock.txt (lock -> newest allowed) =="
python - "$frozen" <<'PY'
import sys
def read(path):
    pins = {}
    for line in open(path):
        line = line.strip()
        if line and not line.startswith("#") and "==" in line:
            name, version = line.split("==", 1)
            pins[name.lower().replace("_", "-")] = version
    return pins
lock, new = read("requirements/lock.txt"), read(sys.argv[1])
changed = [(n, lock.get(n, "-"), new.get(n, "-")) for n in sorted(set(lock) | set(new)) if lock.get(n) != new.get(n)]
for name, old, fresh in changed:
    print(f"  {name}: {old} -> {fresh}")
print(f"  ({len(changed)} changed)" if changed else "  (none: the lock is the newest allowed set)")
PY
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
python -m pytest "$@"
if [ "$UPDATE" = 1 ]; then
  { sed -n '1,3p' requirements/lock.txt; cat "$frozen"; } > requirements/lock.txt.new
  mv requirements/lock.txt.new requirements/lock.txt
  echo "requirements/lock.txt rewritten from the newest allowed set"
fi
