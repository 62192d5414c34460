"""``memdlm lm-eval``: lm-evaluation-harness with a memdlm model (needs ``pip install 'memdlm[lmeval]'``).

memdlm registers its model (``memdlm.eval.lm_eval_model``) and hands over to lm-eval's own
``run`` command, so every harness flag works (``--gen_kwargs``, ``--output_path``,
``--log_samples``, ``--metadata``, ``--num_fewshot``, ``--seed``, ...; the harness's
underscores or dashes, e.g. ``--model-args`` = ``--model_args``), under ``torchrun`` /
``accelerate launch`` too. Examples:

    # lm-eval's own RULER task at 4,096 tokens; the tokenizer for its data is the run's
    memdlm lm-eval --model-args pretrained=RUN --tasks ruler_vt --metadata '{"max_seq_lengths":[4096]}' --limit 2
    # our generated tasks, exported offline: <task>_<length> names, or sizes from --export-lengths
    memdlm lm-eval --model-args pretrained=runs/tiny-mem,memory=True --tasks memdlm_kv,memdlm_niah \\
        --export-lengths 128 1024 --output-path results/
    # a task whose data lives on the hub, from a local copy (docs/LM_EVAL.md)
    memdlm lm-eval --model-args pretrained=RUN --tasks babilong_qa1 --local-dataset babilong_qa1=qa1.jsonl
    # two processes (CPU: gloo; GPUs: one each)
    torchrun --nproc-per-node 2 -m memdlm.cli lm-eval --model-args pretrained=RUN --tasks ruler_vt ...

Model arguments (``--model-args k=v,...``): see ``memdlm.eval.lm_eval_model``; ``pretrained``
(a run or model directory, or a shipped model's name) is required and is also the tokenizer
the harness's RULER / BABILong data builders use unless ``--metadata`` names another.
``--device`` and ``--batch-size`` (also accepted inside ``--model-args``) go to the model;
``--dtype`` and ``--context-overflow`` are memdlm's flags for the same model arguments.
Results: lm-eval's (``--output_path DIR`` or ``FILE.json``, which lm-eval stamps with the
date); memdlm's settings (device, dtype, context limit and the requests truncated or run past
it, memory) are in ``config.memdlm``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path

from memdlm.errors import ConfigError, UserError
from memdlm.runs.directory import check_finished

INSTALL_HINT = "lm-eval is not installed: pip install 'memdlm[lmeval]'"
MODEL_NAME = "memdlm"
# the harness's flags whose values memdlm reads or fills in
_MOVED_TO_FLAGS = ("device", "batch_size")


class HubDataError(UserError, RuntimeError):
    """A task's data is on the Hugging Face hub, which cannot be reached, and not local."""


def build_parser(prog: str) -> argparse.ArgumentParser:
    """memdlm's own flags; everything else goes to lm-eval's ``run``."""
    from memdlm.config import THREADS_HELP
    from memdlm.backbones.context import OVERFLOW_CHOICES, OVERFLOW_HELP
    from memdlm.eval.lm_eval_tasks import EXPORT_SEED
    from memdlm.runs.placement import DTYPE_CHOICES, DTYPE_HELP

    p = argparse.ArgumentParser(prog=prog, description=__doc__, add_help=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-h", "--help", action="store_true", help="This help, then lm-eval run's.")
    p.add_argument("--export-lengths", type=int, nargs="+", default=[],
                   help="Context lengths (tokens) for memdlm_<task> names given without a length.")
    p.add_argument("--export-n", type=int, default=100, help="Items exported per memdlm task and length.")
    p.add_argument("--export-seed", type=int, default=EXPORT_SEED,
                   help="First eval-split seed of the exported items (default %(default)s).")
    p.add_argument("--export-dir", default=None,
                   help="Keep the exported JSONL/YAML task files here (default: a temporary folder).")
    p.add_argument("--local-dataset", action="append", default=[], metavar="TASK=PATH",
                   help="Run lm-eval task TASK on a local data file (.jsonl/.json/.csv/.parquet) or "
                        "dataset folder instead of its hub dataset (repeatable; docs/LM_EVAL.md).")
    p.add_argument("--dtype", default=None, choices=DTYPE_CHOICES, help=DTYPE_HELP)
    p.add_argument("--context-overflow", default=None, choices=OVERFLOW_CHOICES,
                   help=OVERFLOW_HELP + " Default: the model argument's (refuse).")
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    p.add_argument("--allow-incomplete", action="store_true",
                   help="Use a run directory that has no run_complete.json (an unfinished or failed "
                        "run) anyway, with a warning.")
    return p


def harness_parser() -> argparse.ArgumentParser:
    """lm-eval's own ``run`` command line (its parser, built by its ``Run`` subcommand)."""
    from lm_eval._cli.run import Run

    parser = argparse.ArgumentParser(prog="memdlm lm-eval")
    Run.create(parser.add_subparsers(dest="command"))
    return parser


def _run_options(parser: argparse.ArgumentParser) -> set[str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices["run"]._option_string_actions)


def harness_argv(argv: list[str], options: set[str]) -> list[str]:
    """``argv`` with memdlm's dashed spelling of harness flags (``--model-args``) turned
    into the harness's (``--model_args``); values and unknown flags are left alone."""
    out = []
    for arg in argv:
        flag, eq, value = arg.partition("=")
        if flag.startswith("--") and flag not in options and "--" + flag[2:].replace("-", "_") in options:
            arg = "--" + flag[2:].replace("-", "_") + eq + value
        out.append(arg)
    return out


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


def prepare_namespace(ns: argparse.Namespace, ours: argparse.Namespace) -> dict:
    """Fill in the harness namespace for the memdlm model; returns its model arguments."""
    from memdlm.runs.placement import resolve_device
    from memdlm.backbones.shipped import resolve_model

    if ns.model not in (None, MODEL_NAME):
        raise ConfigError(f"--model {ns.model}: memdlm lm-eval runs the memdlm model; use lm-eval itself "
                          "for other models")
    ns.model = MODEL_NAME
    model_args = dict(ns.model_args or {})
    if "pretrained" not in model_args:
        raise ConfigError("--model-args needs pretrained=DIR (a run or model directory, or a shipped model's name)")
    check_finished(str(model_args["pretrained"]), ours.allow_incomplete)
    model_args["pretrained"] = resolve_model(str(model_args["pretrained"]))  # a path the tokenizer loads from
    for name in _MOVED_TO_FLAGS:  # lm-eval passes these as keywords of their own
        if name in model_args:
            if getattr(ns, name, None) is not None:
                raise ConfigError(f"{name} is given twice (--{name.replace('_', '-')} and in --model-args): keep one")
            setattr(ns, name, str(model_args.pop(name)))
    for name in ("dtype", "context_overflow"):
        value = getattr(ours, name)
        if value is not None:
            if name in model_args and str(model_args[name]) != value:
                raise ConfigError(f"{name} is given twice (--{name.replace('_', '-')} and in --model-args): keep one")
            model_args[name] = value
    from memdlm.config import GENERATION_BATCH_SIZE

    ns.device = resolve_device(ns.device)  # lm-eval's own default is cuda:0 even without a GPU
    if getattr(ns, "batch_size", None) is None:
        ns.batch_size = str(GENERATION_BATCH_SIZE)
    ns.model_args = model_args
    return model_args


def local_dataset_yaml(task: str, config_path: Path, data: Path, split: str) -> str:
    """A task config that is lm-eval's ``task`` with its data read from ``data`` (the harness's
    own local-dataset route: ``dataset_path`` a loader name or folder, ``data_files`` the split)."""
    q = json.dumps
    loaders = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
    lines = [f"task: {task}", f"include: {q(str(config_path))}", "custom_dataset: null"]
    if data.is_dir():
        lines += [f"dataset_path: {q(str(data))}", "dataset_name: null", "dataset_kwargs: {}"]
    else:
        if data.suffix not in loaders:
            raise ConfigError(f"--local-dataset {task}={data}: use a {'/'.join(loaders)} file or a dataset folder")
        lines += [f"dataset_path: {loaders[data.suffix]}", "dataset_name: null",
                  f"dataset_kwargs: {{data_files: {{{q(split)}: {q(str(data))}}}}}"]
    return "\n".join(lines) + "\n"


def task_config_file(task: str, include: list[str]) -> Path | None:
    """The YAML file that defines lm-eval task ``task`` (include folders win over the
    harness's own, as in lm-eval); a text search, not lm-eval's full index (~20 s)."""
    import re

    import lm_eval.tasks

    pattern = re.compile(rf"^task:\s*['\"]?{re.escape(task)}['\"]?\s*$", re.MULTILINE)
    for root in [*map(Path, reversed(include)), Path(lm_eval.tasks.__file__).parent]:
        for path in sorted(root.rglob("*.yaml")):
            if pattern.search(path.read_text(encoding="utf-8", errors="ignore")):
                return path
    return None


def write_local_datasets(specs: list[str], include: list[str], out_dir: Path) -> None:
    """One override YAML per ``TASK=PATH`` in ``out_dir`` (a folder lm-eval includes)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    for spec in specs:
        task, sep, path = spec.partition("=")
        if not sep or not task or not path:
            raise ConfigError(f"--local-dataset {spec!r}: expected TASK=PATH")
        data = Path(path).expanduser().resolve()
        if not data.exists():
            raise ConfigError(f"--local-dataset {spec}: {data} does not exist")
        config_file = task_config_file(task, include)
        if config_file is None:
            raise ConfigError(f"--local-dataset {spec}: lm-eval has no task {task!r} defined by a YAML file")
        config = load_yaml(config_file, resolve_func=False, recursive=True)
        split = config.get("test_split") or config.get("validation_split") or "test"
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"memdlm_local_{task}.yaml").write_text(local_dataset_yaml(task, config_file, data, split))


def hub_data_error(err: BaseException, tasks: list[str]) -> HubDataError | None:
    """A one-line error when ``err`` is a failed hub download (None otherwise)."""
    chain, cur = [], err
    while cur is not None and len(chain) < 10:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    text = " ".join(f"{type(e).__module__}.{type(e).__name__}: {e}" for e in chain)
    nltk = "punkt" in text and "LookupError" in text
    hub = any(type(e).__module__.split(".")[0] in ("huggingface_hub", "requests", "httpx", "urllib3")
              or "DatasetNotFoundError" in type(e).__name__ or isinstance(e, ConnectionError) for e in chain)
    hub = hub or "offline mode" in text.lower() or "couldn't reach" in text.lower()
    if not (hub or nltk):
        return None
    what = "NLTK's punkt_tab data" if nltk else "a dataset on the Hugging Face hub"
    first = str(chain[-1]).splitlines()[0][:200] if chain else ""
    return HubDataError(
        f"tasks {', '.join(tasks)} need {what}, which is unreachable from here and not stored locally "
        f"({type(chain[-1]).__name__}: {first}); provide it locally: --local-dataset TASK=FILE for a task "
        "that reads one dataset (babilong_qa1..qa20), or a Hugging Face cache / NLTK_DATA folder copied from a "
        "connected machine (exact commands: docs/LM_EVAL.md)")


def print_help(prog: str) -> None:
    build_parser(prog).print_help()
    print("\n--- lm-eval run's flags (dashes or underscores) ---\n")
    sub = next(a for a in harness_parser()._actions if isinstance(a, argparse._SubParsersAction))
    sub.choices["run"].print_help()


def run(argv: list[str], prog: str = "memdlm lm-eval") -> int:
    ours, rest = build_parser(prog).parse_known_args(argv)
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        print(f"{prog}: error: {INSTALL_HINT}", file=sys.stderr)
        return 2
    if ours.help:
        print_help(prog)
        return 0
    import torch

    from memdlm.config import resolve_threads
    from memdlm.eval.lm_eval_model import register
    from memdlm.outputs import prepare_output_file

    parser = harness_parser()
    ns = parser.parse_args(["run", *harness_argv(rest, _run_options(parser))])
    if not ns.tasks:
        raise ConfigError("--tasks is required (comma-separated lm-eval task names or memdlm_<task>_<length>)")
    prepare_namespace(ns, ours)
    torch.set_num_threads(resolve_threads(ours.threads))
    if ns.output_path and str(ns.output_path).endswith(".json"):  # before the work: an unwritable
        prepare_output_file(ns.output_path, "--output-path")  # place must not lose the results
    elif ns.output_path:
        from memdlm.outputs import prepare_output_dir

        prepare_output_dir(ns.output_path, flag="--output-path")
    ours_tasks, others = resolve_tasks(list(ns.tasks), ours.export_lengths)
    with tempfile.TemporaryDirectory(prefix="memdlm_lmeval_") as tmp:
        include = [ns.include_path] if ns.include_path else []
        if ours_tasks:
            export_dir = Path(ours.export_dir or Path(tmp) / "export").resolve()
            tokenizer = _tokenizer(ns.model_args["pretrained"], bool(ns.model_args.get("trust_remote_code")))
            names = _export(ours_tasks, ours, ns.limit, tokenizer, export_dir)
            ns.tasks = names + others
            include.append(str(export_dir))
        if ours.local_dataset:
            local_dir = Path(tmp) / "local"
            write_local_datasets(ours.local_dataset, include, local_dir)
            include.append(str(local_dir))
        ns.include_path = include or None
        register()
        try:
            with task_errors_named():
                ns.func(ns)
        except UserError:
            raise
        except Exception as err:  # noqa: BLE001 -- only hub/offline failures become one line
            hub = hub_data_error(err, others)
            if hub is None:
                raise
            raise hub from err
    return 0


@contextlib.contextmanager
def task_errors_named():
    """An unknown task name (lm-eval raises it before any item is evaluated) as one line; data
    that cannot be fetched is :func:`hub_data_error`'s."""
    try:
        yield
    except KeyError as err:
        if "not a registered task" not in str(err):
            raise
        raise ConfigError(f"unknown lm-eval task: {err.args[0]}; `lm-eval ls tasks` lists lm-eval's tasks, and "
                          "ours are named memdlm_<task>_<length>") from None
    except ValueError as err:  # lm-eval's run command: "Tasks not found: a, b"
        if not str(err).startswith("Tasks not found"):
            raise
        raise ConfigError(f"unknown lm-eval task: {str(err).split(':', 1)[1].strip()}; `lm-eval ls tasks` lists "
                          "lm-eval's tasks, and ours are named memdlm_<task>_<length>") from None


def _tokenizer(path: str, trust_remote_code: bool):
    from memdlm.backbones.tokenizer import load_tokenizer

    return load_tokenizer(path, trust_remote_code)


def _export(pairs: list[tuple[str, int]], ours, limit, tokenizer, out_dir: Path) -> list[str]:
    from memdlm.eval.lm_eval_tasks import export_tasks

    n = ours.export_n if limit is None or limit < 1 else min(ours.export_n, int(limit))
    names = []
    for task, length in dict.fromkeys(pairs):  # order kept, duplicates dropped
        names += export_tasks([task], [length], n, out_dir, tokenizer, seed=ours.export_seed)
    return names
