"""``memdlm lm-eval``: lm-evaluation-harness tasks with a memdlm model (needs ``pip install 'memdlm[lmeval]'``).

Examples:

    # our generated tasks, exported offline: <task>_<length> names, or sizes from --export-lengths
    memdlm lm-eval --model-args pretrained=runs/tiny --tasks memdlm_kv_128 --limit 20
    memdlm lm-eval --model-args pretrained=runs/tiny-mem,memory=True --tasks memdlm_kv,memdlm_niah \\
        --export-lengths 128 1024 --output-path results/lmeval.json
    # one GPU; lm-eval's own tasks (their data must be reachable), log-likelihood by Monte Carlo
    memdlm lm-eval --model-args pretrained=DIR,mc_samples=64,batch_size=32 --tasks piqa --device cuda
    # several GPUs: one process each, with its own --device cuda:i and part of the task list

Model arguments (comma-separated key=value): pretrained, memory, adapt_mask_ratio, steps,
max_new_tokens, block_length, temperature, remasking, batch_size, mc_samples, seed,
greedy_check (decode|none), max_length, device, dtype, trust_remote_code -- see
``memdlm.eval.lm_eval_model``. Task names starting with ``memdlm_`` are exported
from ``memdlm.tasks`` (eval split) into --export-dir (a temporary folder unless
given) and loaded from there; lm-eval's built-in tasks are indexed only when
another name is asked for.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

from memdlm.errors import ConfigError
from memdlm.run_dir import check_finished

INSTALL_HINT = "lm-eval is not installed: pip install 'memdlm[lmeval]'"


def build_parser(prog: str) -> argparse.ArgumentParser:
    from memdlm.config import THREADS_HELP
    from memdlm.eval.lm_eval_tasks import EXPORT_SEED

    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-args", required=True,
                   help="Comma-separated key=value model arguments; pretrained=DIR is required.")
    p.add_argument("--tasks", required=True,
                   help="Comma-separated task names: memdlm_<task>_<length>, memdlm_<task> (sized by "
                        "--export-lengths), or any lm-eval task.")
    p.add_argument("--export-lengths", type=int, nargs="+", default=[],
                   help="Context lengths (tokens) for memdlm_<task> names given without a length.")
    p.add_argument("--export-n", type=int, default=100, help="Items exported per memdlm task and length.")
    p.add_argument("--export-seed", type=int, default=EXPORT_SEED,
                   help="First eval-split seed of the exported items (default %(default)s).")
    p.add_argument("--export-dir", default=None,
                   help="Keep the exported JSONL/YAML task files here (default: a temporary folder).")
    p.add_argument("--include-path", default=None, help="A folder of extra lm-eval task YAMLs.")
    p.add_argument("--limit", type=float, default=None,
                   help="Items per task (below 1: a fraction). For quick checks only.")
    p.add_argument("--num-fewshot", type=int, default=None, help="Few-shot examples per prompt.")
    p.add_argument("--batch-size", type=int, default=None, help="Overrides batch_size in --model-args.")
    p.add_argument("--device", default=None, help="Overrides device in --model-args (cpu, cuda, cuda:1).")
    p.add_argument("--apply-chat-template", action="store_true",
                   help="Wrap prompts in the tokenizer's chat template.")
    p.add_argument("--log-samples", action="store_true", help="Include per-item outputs in the JSON.")
    p.add_argument("--seed", type=int, default=0, help="lm-eval's Python/NumPy/torch seed.")
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    p.add_argument("--allow-incomplete", action="store_true", help="Use a run directory that has no run_complete.json (an unfinished or failed run) anyway, with a warning.")
    p.add_argument("--output-path", default=None, help="Write the results as JSON here.")
    return p


def resolve_tasks(names: list[str], lengths: list[int]) -> tuple[list[tuple[str, int]], list[str]]:
    """Split task names into memdlm (task, length) pairs to export and the rest, in order."""
    from memdlm.eval.lm_eval_tasks import PREFIX, parse_task_name

    ours, others = [], []
    for name in names:
        if not name.startswith(PREFIX):
            others.append(name)
            continue
        task, length = parse_task_name(name)
        if length is None and not lengths:
            raise ConfigError(f"{name} has no length: name it {name}_<length> or give --export-lengths")
        ours += [(task, length)] if length is not None else [(task, n) for n in lengths]
    return ours, others


def run(argv: list[str], prog: str = "memdlm lm-eval") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
        from lm_eval.utils import handle_non_serializable, make_table, simple_parse_args_string
    except ImportError:
        print(f"{prog}: error: {INSTALL_HINT}", file=sys.stderr)
        return 2
    import torch

    from memdlm.config import resolve_threads
    from memdlm.eval.lm_eval_model import MemdlmLM, register
    from memdlm.outputs import prepare_output_file, write_json_atomic

    torch.set_num_threads(resolve_threads(args.threads))
    if args.output_path:  # before the evaluation: an unwritable place must not lose its results
        prepare_output_file(args.output_path, "--output-path")
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    ours, others = resolve_tasks(names, args.export_lengths)
    model_args = simple_parse_args_string(args.model_args)
    if not model_args.get("pretrained"):
        raise ConfigError("--model-args needs pretrained=DIR")
    check_finished(model_args["pretrained"], args.allow_incomplete)
    register()
    model = MemdlmLM.create_from_arg_obj(model_args, {"batch_size": args.batch_size, "device": args.device})
    with tempfile.TemporaryDirectory(prefix="memdlm_lmeval_") as tmp:
        include = [args.include_path] if args.include_path else []
        task_list = others
        if ours:
            task_list = _export(ours, args, model.tokenizer, Path(args.export_dir or tmp)) + others
            include.append(str(Path(args.export_dir or tmp).resolve()))
        manager = TaskManager(include_path=include or None, include_defaults=bool(others))
        with task_errors_named(others):
            results = lm_eval.simple_evaluate(
                model=model, tasks=task_list, task_manager=manager, limit=_limit(args.limit),
                num_fewshot=args.num_fewshot, log_samples=args.log_samples,
                apply_chat_template=args.apply_chat_template, random_seed=args.seed,
                numpy_random_seed=args.seed, torch_random_seed=args.seed, fewshot_random_seed=args.seed)
    if results is None:  # a non-zero rank in a distributed run
        return 0
    if model.memory_record is not None:  # the memory settings the run adapted with
        results["memdlm_memory"] = model.memory_record
    print(make_table(results))
    if "groups" in results:
        print(make_table(results, "groups"))
    if args.output_path:
        out = Path(args.output_path)
        write_json_atomic(out, results, default=handle_non_serializable, ensure_ascii=False)
        print(f"results written to {out}")
    return 0


@contextlib.contextmanager
def task_errors_named(others: list[str]):
    """lm-eval's failures to find or load a task (raised before any item is evaluated) as one line:
    an unknown name (KeyError), or a data set that is not on this machine while offline."""
    try:
        yield
    except KeyError as err:
        if "not a registered task" not in str(err):
            raise
        raise ConfigError(f"unknown lm-eval task: {err.args[0]}; `lm-eval ls tasks` lists lm-eval's tasks, and "
                          "ours are named memdlm_<task>_<length>") from None
    except ConnectionError as err:  # datasets raises it for a data set it cannot fetch (offline mode too)
        raise ConfigError(f"the data of lm-eval task(s) {', '.join(others) or '?'} is not available: {err}; "
                          "download it once with network access (or unset HF_DATASETS_OFFLINE)") from None


def _export(pairs: list[tuple[str, int]], args, tokenizer, out_dir: Path) -> list[str]:
    from memdlm.eval.lm_eval_tasks import export_tasks

    n = args.export_n if args.limit is None or args.limit < 1 else min(args.export_n, int(args.limit))
    names = []
    for task, length in dict.fromkeys(pairs):  # order kept, duplicates dropped
        names += export_tasks([task], [length], n, out_dir, tokenizer, seed=args.export_seed)
    return names


def _limit(limit: float | None):
    return int(limit) if limit is not None and limit >= 1 else limit
