"""``memdlm eval``: long-context evaluation of one or more runs over tasks and lengths.

Every run answers the same held-out items (the tasks' eval split, generated once per
task and length), so differences between runs are paired; the report gives each
run's task score (0-100, the task's official metric), exact match, and paired
bootstrap intervals against the first run.

Examples:

    # the 2 x 2 of {Standard, MemDLM training} x {no adaptation, adaptation at inference}
    memdlm eval --standard runs/std --memdlm runs/mem --tasks kv niah --lengths 128 256 512 \\
        --items 50 --output-dir eval_out

    # any runs, by hand; ":memory" adapts on each prompt before answering
    memdlm eval --run "Standard=runs/std" --run "MemDLM T&I=runs/mem:memory" \\
        --tasks mv vt --lengths 256 512 --output-dir eval_out

    # fast sampling: confidence-threshold decoding with a dual key/value cache
    memdlm eval --memdlm runs/mem --tasks kv --lengths 256 --output-dir eval_fast \\
        --unmask-rule threshold --threshold 0.9 --cache dual

Writes OUT/suite.json (per-item results), OUT/suite.md (the table) and OUT/suite.png
(score vs length, a panel per task). OUT is created and probed before any model is
loaded; while the suite runs, OUT/suite.partial.json holds every cell finished so far. A (task, length) too short for the task's
needles (e.g. mv below ~180 tokens, vt below ~136, longresp below ~244) is skipped
and listed in the report.
"""

from __future__ import annotations

import argparse

from memdlm.errors import ConfigError
from memdlm.integrity import check_model_files
from memdlm.memory.config import add_adaptation_flags, adaptation_overrides
from memdlm.runs.directory import check_finished

TASKS = ("kv", "niah")  # defaults of --tasks and --lengths
LENGTHS = (128, 256, 512)


def build_parser(prog: str) -> argparse.ArgumentParser:
    from memdlm.config import EVAL_BATCH_SIZE, THREADS_HELP
    from memdlm.tasks import task_names
    from memdlm.tasks.seeds import HELDOUT_SEED

    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    runs = p.add_argument_group("runs (a column each)")
    runs.add_argument("--run", action="append", default=[], metavar="NAME=DIR[:memory]",
                      help="A run to evaluate (repeatable): a name, its model directory, and "
                           "':memory' for inference-time adaptation.")
    runs.add_argument("--standard", metavar="DIR",
                      help="A Standard-MDLM model: adds 'Standard' and 'Standard + adaptation'.")
    runs.add_argument("--memdlm", metavar="DIR",
                      help="A MemDLM-trained model: adds 'MemDLM Train-Only' and "
                           "'MemDLM Train & Inference'.")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), metavar="TASK",
                   help=f"Tasks (default: {' '.join(TASKS)}). Registered: {' '.join(task_names())}.")
    p.add_argument("--lengths", nargs="+", type=int, default=list(LENGTHS), metavar="TOKENS",
                   help=f"Context lengths in tokens, prompt plus answer (default: {' '.join(map(str, LENGTHS))}).")
    p.add_argument("--items", type=int, default=50, help="Held-out items per (task, length) (default %(default)s).")
    p.add_argument("--batch-size", type=int, default=EVAL_BATCH_SIZE,
                   help="Prompts per generation batch (default %(default)s).")
    p.add_argument("--seed", type=int, default=None,
                   help=f"Seed of the held-out items (default: {HELDOUT_SEED}, memdlm.tasks.seeds.HELDOUT_SEED).")
    p.add_argument("--output-dir", required=True, metavar="OUT", help="Where the report goes.")
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    p.add_argument("--trust-remote-code", action="store_true", help="Allow model code from the run directories.")
    p.add_argument("--allow-incomplete", action="store_true", help="Use a run directory that has no run_complete.json (an unfinished or failed run) anyway, with a warning.")
    p.add_argument("--no-progress", action="store_true", help="No progress bars.")
    from memdlm.commands.sampler_flags import FAST_SAMPLING_FIELDS, add_sampler_flags

    add_sampler_flags(p.add_argument_group("fast sampling (defaults: today's decoding)"), FAST_SAMPLING_FIELDS)
    from memdlm.runs.placement import add_inference_flags

    add_inference_flags(p)
    add_adaptation_flags(p)
    return p


def resolve_runs(args) -> list:
    from memdlm.eval.suite import default_runs, parse_run_spec

    runs = []
    if args.standard or args.memdlm:
        runs += default_runs(args.standard, args.memdlm)
    try:
        runs += [parse_run_spec(text) for text in args.run]
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if not runs:
        raise ConfigError("give --standard DIR and/or --memdlm DIR, or at least one --run NAME=DIR[:memory]")
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ConfigError(f"run names must be unique, got {names}")
    return runs


def run(argv: list[str], prog: str = "memdlm eval") -> int:
    args = build_parser(prog).parse_args(argv)
    runs = resolve_runs(args)
    overrides = adaptation_overrides(args, any(r.memory for r in runs), "give --memdlm or a run NAME=DIR:memory")
    for spec in runs:
        check_finished(spec.model_dir, args.allow_incomplete)
        check_model_files(spec.model_dir)  # a damaged weight file: one line before any work
    if args.items < 1 or args.batch_size < 1:
        raise ConfigError("--items and --batch-size must be >= 1")
    if any(length < 1 for length in args.lengths):
        raise ConfigError(f"--lengths must be positive, got {args.lengths}")
    import torch

    from memdlm.commands.sampler_flags import FAST_SAMPLING_FIELDS, sampler_values
    from memdlm.config import resolve_threads
    from memdlm.eval.suite import PARTIAL_FILE, evaluate_suite, save_suite, to_markdown
    from memdlm.outputs import prepare_output_dir
    from memdlm.sampling.sampler import SamplerConfig
    from memdlm.tasks import task_names

    unknown = sorted(set(args.tasks) - set(task_names()))
    if unknown:
        raise ConfigError(f"unknown tasks {unknown}; choose from {task_names()}")
    torch.set_num_threads(resolve_threads(args.threads))
    try:
        sampler = SamplerConfig(**sampler_values(args, FAST_SAMPLING_FIELDS))  # fail before loading models
    except ValueError as err:
        raise ConfigError(str(err)) from err
    out = prepare_output_dir(args.output_dir)  # before the work: an unwritable place loses nothing
    result = evaluate_suite(runs, args.tasks, args.lengths, args.items, seed=args.seed,
                            batch_size=args.batch_size,
                            memory_overrides=overrides,
                            progress=not args.no_progress, trust_remote_code=args.trust_remote_code,
                            sampler={name: getattr(sampler, name) for name in FAST_SAMPLING_FIELDS},
                            partial_path=out / PARTIAL_FILE, device=args.device, dtype=args.dtype,
                            context_overflow=args.context_overflow)
    result["threads"] = torch.get_num_threads()
    paths = save_suite(result, args.output_dir)
    print(to_markdown(result))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
