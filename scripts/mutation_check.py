#!/usr/bin/env python
"""The standing mutation check: each curated one-line wrong result must make its tests fail.

    python scripts/mutation_check.py            # every mutation in tests/mutations.py
    python scripts/mutation_check.py --fast     # the fast subset (the suite runs it as a slow test)
    python scripts/mutation_check.py --only forward_kl_is_reverse_kl   # one (or a few) by id

For each mutation: its ``old`` text must occur exactly once in its file (else it is
reported *stale*: the code moved and the list must follow); a copy of ``src`` gets the
one-line change, and ``python -m pytest -x -q`` runs the mutation's tests with
PYTHONPATH pointing at the copy (the worktree's files are never touched). A failing
run *kills* the mutant; a passing run means it *survived*: a wrong result no test sees.
Before the mutants, the same tests run once on the unmutated copy (a test that fails
anyway would kill every mutant). Exit status 0 only when every mutant is killed.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIST = ROOT / "tests" / "mutations.py"
PYTEST = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-W", "ignore"]


def load_mutations(path: Path = LIST) -> list:
    spec = importlib.util.spec_from_file_location("memdlm_mutations", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building the class
    spec.loader.exec_module(module)
    return module.MUTATIONS


def stale_reason(mutation, src: Path) -> str | None:
    """Why a mutation cannot be applied to ``src`` as written (None: exactly one match)."""
    path = src / "memdlm" / mutation.file
    if not path.is_file():
        return f"{mutation.file} does not exist"
    count = path.read_text().count(mutation.old)
    if count != 1:
        return f"its old text occurs {count} times in {mutation.file} (must be exactly once)"
    if mutation.old == mutation.new:
        return "old and new are the same text"
    return None


def run_tests(tests, src: Path, timeout: float) -> tuple[str, float, str]:
    """(``passed`` / ``failed`` / ``error`` / ``timeout``, seconds, output tail) of the tests on ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    start = time.monotonic()
    try:
        proc = subprocess.run([*PYTEST, *tests], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - start, ""
    seconds = time.monotonic() - start
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
    # pytest: 0 all passed, 1 some failed; 2-5 interrupted, internal, usage error, nothing collected
    return {0: "passed", 1: "failed"}.get(proc.returncode, "error"), seconds, tail


def check_imports_from(src: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(src)}
    where = subprocess.run([sys.executable, "-c", "import memdlm; print(memdlm.__file__)"], env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    if not where.startswith(str(src)):
        raise SystemExit(f"memdlm imports from {where}, not from the copy {src}: check the environment")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fast", action="store_true", help="only the mutations marked fast")
    p.add_argument("--only", nargs="+", metavar="ID", help="only these mutation ids")
    p.add_argument("--list", action="store_true", help="list the mutations and exit")
    p.add_argument("--no-baseline", action="store_true", help="skip the run on the unmutated copy")
    p.add_argument("--timeout", type=float, default=900, help="seconds per test run (default 900)")
    p.add_argument("--jobs", type=int, default=1, help="mutants tested at once, each on its own copy of src")
    args = p.parse_args(argv)

    mutations = load_mutations()
    ids = [m.id for m in mutations]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise SystemExit(f"duplicate mutation ids: {duplicates}")
    if args.only:
        unknown = sorted(set(args.only) - set(ids))
        if unknown:
            raise SystemExit(f"unknown mutation ids {unknown}; --list shows them")
        mutations = [m for m in mutations if m.id in args.only]
    if args.fast:
        mutations = [m for m in mutations if m.fast]
    if args.list:
        for m in mutations:
            print(f"{m.id:50s} {m.file:32s} {' '.join(m.tests)}{'  [fast]' if m.fast else ''}")
        return 0

    started = time.monotonic()
    results: dict[str, list[str]] = {"killed": [], "survived": [], "stale": [], "error": []}
    with tempfile.TemporaryDirectory(prefix="memdlm-mutants-") as tmp:
        copies: queue.Queue = queue.Queue()  # one copy of src per worker, mutated and restored in turn
        for j in range(max(1, args.jobs)):
            src = Path(tmp) / f"w{j}" / "src"
            shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            copies.put(src)
        check_imports_from(src)
        if not args.no_baseline:
            tests = sorted({t for m in mutations for t in m.tests})
            outcome, seconds, tail = run_tests(tests, src, args.timeout)
            print(f"baseline (unmutated, {len(tests)} test targets): {outcome} in {seconds:.0f} s", flush=True)
            if outcome != "passed":
                print(tail)
                raise SystemExit("the named tests fail without any mutation: fix them first")

        def attempt(m) -> str:
            reason = stale_reason(m, ROOT / "src")  # the copies are being mutated
            if reason:
                print(f"STALE     {m.id}: {reason}", flush=True)
                return "stale"
            copy = copies.get()
            path = copy / "memdlm" / m.file
            original = path.read_text()
            path.write_text(original.replace(m.old, m.new))
            try:
                outcome, seconds, tail = run_tests(m.tests, copy, args.timeout)
            finally:
                path.write_text(original)
                copies.put(copy)
            status = {"failed": "killed", "timeout": "killed", "passed": "survived"}.get(outcome, "error")
            note = " (timeout)" if outcome == "timeout" else ""
            print(f"{status.upper():9s} {m.id} [{m.file}] {seconds:.0f} s{note}", flush=True)
            if status == "error":
                print("          " + tail.replace("\n", "\n          "), flush=True)
            return status

        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            for m, status in zip(mutations, pool.map(attempt, mutations)):
                results[status].append(m.id)
    total = time.monotonic() - started
    print(f"\n{len(results['killed'])} killed, {len(results['survived'])} survived, "
          f"{len(results['stale'])} stale, {len(results['error'])} errors "
          f"of {len(mutations)} mutations in {total:.0f} s")
    for status in ("survived", "stale", "error"):
        if results[status]:
            print(f"{status}: {', '.join(results[status])}")
    return 0 if len(results["killed"]) == len(mutations) else 1


if __name__ == "__main__":
    sys.exit(main())
