"""``memdlm reproduce``: the paper's claims, measured on a CPU with controls.

Every arm starts from the same shipped base (``mqar-base``, a 2-layer MobileBERT that
answers multi-query associative recall at ~95%) and trains the same outer LoRA adapter
(PEFT) with the same steps, data and learning rate on the base's long-context regime
(``mqar64``: 64 key-value pairs in 256 tokens, where the base answers ~55%): Standard
MDLM; MemDLM with a batch-shared memory (the paper's; the headline); MemDLM with a
per-sample memory. Each memory mode's rank and inner lr are calibrated on training
batches before any test item is seen. Then: the 2 x 2 {Standard, MemDLM} x {no
adaptation, adaptation at inference} at the fine-tuning length, 2x and 4x it, a
compute-matched Standard baseline, inner lr 0 against Standard, the trajectory
ablations (full), the exposure-bias analysis, and the in-weight retrieval probe (the
queried pair removed from the context). DIR/REPORT.md gathers it with plots, the
command, commit, config hash, versions, machine and wall time.

Presets (docs/REPRODUCE.md has the measured times on a 2-core CPU, one thread per process):
    smoke   a few steps of everything: checks the pipeline (about a minute)
    pilot   quick's design on a fraction of its samples (about 5 minutes)
    quick   one seed, 100 fine-tuning steps (18.8 minutes of cells)
    quick3  quick at seeds 0-2;  long / long3: quick's headline pair trained 300 steps, 1 / 3 seeds
    full    three paired seeds, the ablations, 1,024-token tests, 200 items (135 minutes of cells;
            58 minutes of wall time with one process per seed on 2 cores)

Every stage is cached in DIR: rerunning the same command skips finished cells and
resumes an interrupted training run from its newest checkpoint, so the full preset
can span sessions. A cell made with other settings is an error, never reused.

Examples:
    memdlm reproduce --preset smoke --output-dir runs/repro-smoke
    memdlm reproduce --preset quick --output-dir runs/repro-quick
    memdlm reproduce --preset full --output-dir runs/repro-full   # rerun: reuses every finished cell
    # seeds side by side, one process each (each one thread), then the report:
    for s in 0 1 2; do memdlm reproduce --preset full --output-dir runs/repro-full --threads 1 --only-seed $s & done; wait
    memdlm reproduce --preset full --output-dir runs/repro-full --threads 1
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

logger = logging.getLogger("memdlm")


def build_parser(prog: str) -> argparse.ArgumentParser:
    from memdlm.config import THREADS_HELP
    from memdlm.reproduce.presets import PRESETS

    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=list(PRESETS), default="quick",
                   help="How much to run (default: %(default)s).")
    p.add_argument("--output-dir", required=True, metavar="DIR",
                   help="Where every cell, the plots and REPORT.md go (reused when rerun).")
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    p.add_argument("--no-progress", action="store_true", help="No progress bars.")
    from memdlm.runs.placement import DEVICE_HELP, DTYPE_CHOICES, DTYPE_HELP

    p.add_argument("--device", default=None, help="Evaluation cells: " + DEVICE_HELP)
    p.add_argument("--dtype", default=None, choices=DTYPE_CHOICES, help="Evaluation cells: " + DTYPE_HELP)
    p.add_argument("--only-seed", type=int, default=None, metavar="S",
                   help="Compute only seed S's cells (and the shared ones every seed reads), write no report: "
                        "to run seeds side by side in one DIR, one process each. The preset's first seed computes "
                        "the shared cells; any other seed waits until they are written. Then the plain command "
                        "reuses every cell and writes the report (docs/REPRODUCE.md).")
    return p


HEAD_POLL_SECONDS = 30


def run_one_seed(repro, seed: int) -> None:
    """``--only-seed``: the shared cells (the first seed computes them, another waits for them),
    then that seed's cells."""
    from memdlm.errors import ConfigError

    seeds = repro.preset.seeds
    if seed not in seeds:
        raise ConfigError(f"--only-seed {seed}: preset {repro.preset.name!r} has seeds {list(seeds)}")
    if seed != seeds[0] and not repro.head_done():
        logger.info("seed %d waits for the shared cells in %s (the first seed, %d, computes them)",
                    seed, repro.out, seeds[0])
        while not repro.head_done():
            time.sleep(HEAD_POLL_SECONDS)
    repro.seed_cells(seed, repro.head())


def git_state() -> tuple[str, bool]:
    """(commit, dirty) of the source tree this package runs from; 'unknown' outside git."""
    root = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, check=True).stdout.strip())
        return commit, dirty
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)", False


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("memdlm", "torch", "transformers", "peft", "accelerate"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine(threads: int) -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.platform()}, {os.cpu_count()} CPU cores ({threads} threads used), {gpu}"


def crowded_threads(threads: int, load: float, cpus: int) -> str | None:
    """A warning when ``threads`` > 1 on a machine whose load average already fills its cores:
    each operation's threads wait at its barrier for the one the scheduler parked, so a step
    costs many times what it does on one thread (issue 22's session, 2-core VM at load 7-9: a
    MemDLM step of `quick` took 93 s with 2 threads, 6.5 s with 1). None when it does not apply."""
    if threads <= 1 or load < cpus:
        return None
    return (f"--threads {threads} on a machine with load average {load:.1f} on {cpus} cores: every "
            "operation waits for threads the scheduler has parked (measured up to 14x slower per step); "
            "use --threads 1 while the machine is shared")


def cell_seconds(out: Path) -> float:
    """Training and evaluation seconds recorded by the cells in ``out``, each counted once
    (calibration.json and control_lr0.json time the training runs they hold: left out)."""
    from memdlm.reproduce.pipeline import MEASUREMENT_CELLS

    total = sum(json.loads(p.read_text()).get("train_seconds", 0.0) for p in out.rglob("run_complete.json"))
    total += sum(json.loads(p.read_text()).get("seconds", 0.0) for name in MEASUREMENT_CELLS
                 for p in out.rglob(name))
    return total


def run(argv: list[str], prog: str = "memdlm reproduce") -> int:
    import torch

    from memdlm.config import resolve_threads
    from memdlm.outputs import prepare_output_dir
    from memdlm.reproduce.pipeline import Reproduction
    from memdlm.reproduce.presets import get_preset
    from memdlm.reproduce.report import write_report

    args = build_parser(prog).parse_args(argv)
    preset = get_preset(args.preset)
    threads = resolve_threads(args.threads)
    torch.set_num_threads(threads)
    crowded = crowded_threads(threads, os.getloadavg()[0], os.cpu_count() or 1)
    if crowded:
        logger.warning(crowded)
    out = prepare_output_dir(args.output_dir)  # before any cell: an unwritable place is one line
    start = time.perf_counter()
    commit, dirty = git_state()  # the code this invocation runs (cells reused from earlier ones may predate it)
    repro = Reproduction(preset, out, threads=threads, progress=not args.no_progress, device=args.device,
                         dtype=args.dtype)
    if args.only_seed is not None:
        run_one_seed(repro, args.only_seed)
        print(f"seed {args.only_seed}: cells in {out} (no report: run without --only-seed for it)", file=sys.stderr)
        return 0
    result = repro.run()
    provenance = {
        "command": "memdlm reproduce " + " ".join(shlex.quote(a) for a in argv),
        "commit": commit, "dirty": dirty, "preset": preset.name, "config_hash": preset.config_hash(),
        "versions": versions(), "machine": machine(threads),
        "wall_seconds": round(time.perf_counter() - start, 1), "cell_seconds": round(cell_seconds(out), 1),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    report = write_report(out, result, provenance)
    print(f"report: {report}", file=sys.stderr)
    return 0
