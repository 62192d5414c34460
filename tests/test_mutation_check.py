"""The standing mutation check's fast subset (scripts/mutation_check.py --fast): the five
one-line wrong results issue 25 found no test catching must each fail their tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_mutation_names_existing_tests_and_matches_its_file_once():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import mutation_check
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    mutations = mutation_check.load_mutations()
    assert len(mutations) >= 30 and sum(m.fast for m in mutations) >= 5
    assert len({m.id for m in mutations}) == len(mutations)
    for m in mutations:
        assert mutation_check.stale_reason(m, ROOT / "src") is None, m.id
        for target in m.tests:
            assert (ROOT / target.split("::")[0]).is_file(), (m.id, target)


@pytest.mark.slow
def test_fast_mutants_are_killed():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "mutation_check.py"), "--fast", "--no-baseline",
                           "--jobs", "2"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "0 survived, 0 stale, 0 errors" in proc.stdout
