"""Long-context evaluation suite: several runs, several tasks, several context lengths.

The paper's Table 1 compares three modes -- Standard MDLM, MemDLM Train-Only and
MemDLM Train & Inference -- on the same tasks over context lengths. This suite
adds a fourth cell, "Standard + adaptation", so the 2 x 2 {Standard, MemDLM
training} x {no adaptation, adaptation at inference} separates what training buys
from what test-time adaptation buys::

    runs = default_runs("runs/std", "runs/mem")       # the 2 x 2
    result = evaluate_suite(runs, ["kv", "niah"], [128, 256], n=50)
    save_suite(result, "eval_out")                     # suite.json, suite.md, suite.png

Rules:

- **Paired items.** For each (task, length) the held-out items (the tasks' *eval*
  split, :func:`memdlm.eval.heldout.heldout_samples` with one task) are generated
  once and every run answers exactly those items, with the same per-item seeds
  (sampling and adaptation). Differences between runs are therefore paired and
  :func:`paired_bootstrap` gives their confidence intervals over items.
- **Decoding** as in :func:`memdlm.eval.heldout.evaluate_samples`: greedy, one
  token per step, room for the longest reference answer plus 2 tokens (the model
  must end its answer with EOS).
- **Scores.** ``score`` is the task's official metric
  (:func:`memdlm.tasks.scoring.score_samples`, 0-100); every metric is a mean over
  items, so ``item_scores`` (each item scored alone) average exactly to it.
  ``exact_match`` compares the stripped answer with the stripped reference
  response (0-1, as in ``heldout.py``).
- **Too-short contexts.** Some tasks need a minimum length (their needles alone
  do not fit); such a (task, length) cell is skipped with the generator's reason
  recorded, never a crash.
- **Models** are loaded once per model directory; runs sharing a directory reuse
  it, and a model is released before the next directory is loaded.
- **Tokenizer.** Items are generated (and their lengths counted) with the first
  run's tokenizer; a run whose tokenizer differs is evaluated on the same texts and
  a warning says the lengths are counted in the first run's tokens.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from memdlm.config import EVAL_BATCH_SIZE
from memdlm.stats import RESAMPLES
from memdlm.stats import paired_difference
from memdlm.eval.heldout import heldout_samples
from memdlm.eval.heldout import answer_sampler_config
from memdlm.sampling.generation import generate
from memdlm.tasks.scoring import score_details, score_samples
from memdlm.tasks.seeds import HELDOUT_SEED
from memdlm.tasks import get_task
from memdlm.backbones.context import check_overflow_choice
from memdlm.runs.placement import record as placement_record
from memdlm.outputs import write_json_atomic
from memdlm.runs.placement import resolve_device, resolve_dtype
from memdlm.runs.run import Run
from memdlm.outputs import write_json_atomic, write_text_atomic

logger = logging.getLogger("memdlm")

SUITE_VERSION = 1


# ---------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """One column of the table: a model directory, evaluated with or without
    inference-time adaptation (``memory``)."""

    name: str
    model_dir: str
    memory: bool = False


def parse_run_spec(text: str) -> RunSpec:
    """``"NAME=DIR"`` or ``"NAME=DIR:memory"`` -> :class:`RunSpec`.

    The name may contain spaces (quote it on the command line); ``:memory`` (also
    ``:mem``) at the end turns on inference-time adaptation. A directory that itself
    ends in ``:memory`` cannot be named this way (rename it).
    """
    if "=" not in text:
        raise ValueError(f"run spec {text!r} must look like NAME=DIR or NAME=DIR:memory")
    name, _, target = text.partition("=")
    name, target = name.strip(), target.strip()
    memory = False
    for suffix in (":memory", ":mem"):
        if target.endswith(suffix):
            target, memory = target[: -len(suffix)], True
            break
    if not name:
        raise ValueError(f"run spec {text!r} has an empty name")
    if not target:
        raise ValueError(f"run spec {text!r} has an empty model directory")
    return RunSpec(name, target, memory)


STANDARD, STANDARD_ADAPT = "Standard", "Standard + adaptation"
TRAIN_ONLY, TRAIN_AND_INFERENCE = "MemDLM Train-Only", "MemDLM Train & Inference"


def default_runs(standard_dir: str | None, memdlm_dir: str | None) -> list[RunSpec]:
    """The 2 x 2 {Standard, MemDLM training} x {no adaptation, adaptation at inference}, in
    table order.

    Either directory may be None: then only the other model's two runs are given.
    """
    runs = []
    if standard_dir is not None:
        runs += [RunSpec(STANDARD, str(standard_dir), False),
                 RunSpec(STANDARD_ADAPT, str(standard_dir), True)]
    if memdlm_dir is not None:
        runs += [RunSpec(TRAIN_ONLY, str(memdlm_dir), False),
                 RunSpec(TRAIN_AND_INFERENCE, str(memdlm_dir), True)]
    if not runs:
        raise ValueError("give a standard and/or a MemDLM model directory")
    return runs


def _check_runs(runs: list[RunSpec]) -> None:
    if not runs:
        raise ValueError("no runs to evaluate")
    names = [r.name for r in runs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"run names must be unique; repeated: {dup}")


# ---------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------


def paired_bootstrap(a_items, b_items, n_boot: int = RESAMPLES, seed: int = 0,
                     confidence: float = 0.95) -> tuple[float, tuple[float, float]]:
    """Mean paired difference ``mean(b - a)`` over items and its percentile bootstrap CI.

    ``a_items[i]`` and ``b_items[i]`` are the two runs' scores (or correctness,
    bools count as 0/1) on the *same* item i. The interval is the project's one
    bootstrap (:func:`memdlm.stats.paired_difference` with one seed: the same
    random draw and quantile rule as the exposure-bias ratios and the reproduction's
    claims). A difference whose interval contains 0 is unresolved: the items do not
    tell the two runs apart.
    """

    d = paired_difference([a_items], [b_items], resamples=n_boot, seed=seed, confidence=confidence)
    return d["estimate"], (d["low"], d["high"])


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------


def item_key(sample) -> str:
    """A short stable id of a held-out item (its prompt and response)."""
    digest = hashlib.sha1(f"{sample.task}\0{sample.prompt}\0{sample.response}".encode())
    return digest.hexdigest()[:12]


def _suite_items(tokenizer, tasks, lengths, n, seed):
    """``{(task, length): samples or reason}``: each cell's items, made once."""

    items = {}
    for task in tasks:
        for length in lengths:
            try:
                items[(task, length)] = heldout_samples(tokenizer, [task], length, n, seed)
            except ValueError as err:  # too short for the task's needles
                items[(task, length)] = f"{type(err).__name__}: {err}"
                logger.warning("skipping %s at %d tokens: %s", task, length, err)
    return items


def _answer_cell(model, tokenizer, samples, memory, batch_size, progress, sampler=None,
                 context_overflow: str = "refuse") -> dict:
    """Generate and score one run on one cell's items."""

    config = answer_sampler_config(tokenizer, samples, **(sampler or {}))  # the held-out decoding
    start = time.perf_counter()
    counts: dict = {}
    texts = generate(model, tokenizer, [s.prompt for s in samples], config, memory=memory,
                     seeds=list(range(len(samples))), batch_size=batch_size, progress=progress,
                     stats=counts, context_overflow=context_overflow)
    seconds = time.perf_counter() - start
    task = samples[0].task
    item_scores = [score_samples(task, [t], [s]) for t, s in zip(texts, samples)]
    exact = [t.strip() == s.response.strip() for t, s in zip(texts, samples)]
    cell = {
        "score": score_samples(task, texts, samples),
        "exact_match": sum(exact) / len(exact),
        "n": len(samples),
        "seconds": round(seconds, 3),
        "model_calls": counts["model_calls"],  # forward passes of the sampler, all batches
        "mean_calls_per_item": sum(counts["calls_per_sample"]) / len(samples),
        "item_keys": [item_key(s) for s in samples],
        "item_scores": item_scores,
        "item_correct": exact,
        "predictions": texts,
        "context": counts["context"],  # the model's limit and prompts truncated / run past it
        "unmask_rule": counts["unmask_rule"],  # the decoding rule used ("native" resolved)
    }
    recall = score_details(task, texts, samples)
    if recall:  # associative recall: reference levels and where wrong answers came from
        cell["recall"] = recall
    return cell


def _tokenizer_signature(tokenizer) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha1(json.dumps(vocab).encode()).hexdigest()


def evaluate_suite(runs: list[RunSpec], tasks: list[str], lengths: list[int], n: int,
                   seed: int | None = None, batch_size: int = EVAL_BATCH_SIZE,
                   memory_overrides: dict | None = None,
                   progress: bool = True, trust_remote_code: bool = False,
                   loader=None, sampler: dict | None = None, partial_path=None, device: str | None = None,
                   dtype=None, context_overflow: str = "refuse") -> dict:
    """Evaluate every run on every (task, length) cell, on shared held-out items.

    Runs with ``memory=True`` adapt with their own run's prompt memory
    (:meth:`memdlm.runs.run.Run.memory`: the settings in ``run_config.json``, the defaults for a
    model that has none) with ``memory_overrides`` applied (None values keep the run's own).
    ``seed`` selects the held-out items (default ``memdlm.tasks.seeds.HELDOUT_SEED``).
    ``loader(dir) -> Run`` replaces loading from disk (tests, in-memory models).
    ``sampler`` overrides SamplerConfig fields of the held-out decoding (the fast-sampling
    flags of ``memdlm eval``: unmask rule, threshold, cap, cache); None keeps it as is.
    ``partial_path``: a JSON file rewritten (atomically) as each (run, task, length) cell
    finishes, so a failure later -- the last model, the report, a full disk -- loses none of
    the cells already computed (``{"finished": [{"run", "task", "length", "result"}]}``).
    ``device`` / ``dtype`` place every loaded model (:mod:`memdlm.runs.placement`; recorded per run
    in ``placement``); ``context_overflow`` is the rule for prompts past a model's context
    limit (:mod:`memdlm.backbones.context`; each cell's result records its ``context`` counts).

    Returns a JSON-ready dict: ``runs``, ``tasks``, ``lengths``, ``n``, ``seed``,
    ``memory_args`` and ``memory_overrides`` (per adapted run: the settings used, and which
    differ from the run's own) and ``cells``, one per (task, length) in task-major order, each
    ``{"task", "length", "skipped": None | reason, "item_keys", "answers",
    "results": {run name: {"score", "exact_match", "n", "seconds", "model_calls",
    "mean_calls_per_item", "item_keys", "item_scores", "item_correct", "predictions"}}}``.
    """

    _check_request(runs, tasks, lengths, n, context_overflow)  # before any model is loaded
    seed = HELDOUT_SEED if seed is None else seed
    loader = loader or (lambda d: _load(d, trust_remote_code, device, dtype))
    start = time.perf_counter()
    decoding = dict(batch_size=batch_size, progress=progress, sampler=sampler, context_overflow=context_overflow)
    items, results, records = _answer_all(runs, tasks, lengths, n, seed, loader, memory_overrides, decoding,
                                          partial_path)
    return {
        "version": SUITE_VERSION,
        "runs": [asdict(r) for r in runs],
        "tasks": list(tasks), "lengths": list(lengths), "n": n, "seed": seed,
        "batch_size": batch_size,
        "memory_args": records["memory_args"],  # per adapted run: the settings it was adapted with
        "memory_overrides": records["memory_overrides"],  # ... and which of them differ from the run's own
        "sampler": dict(sampler or {}),
        "placement": records["placement"],  # per run: the device and dtype it ran on
        "context_overflow": context_overflow,
        "cells": _suite_cells(items, results, runs),
        "seconds": round(time.perf_counter() - start, 1),
    }


def _check_request(runs: list[RunSpec], tasks: list[str], lengths: list[int], n: int,
                   context_overflow: str) -> None:
    """Runs, tasks, lengths, item count and overflow rule, checked before any model loads."""
    _check_runs(runs)
    if not tasks or not lengths:
        raise ValueError("need at least one task and one length")
    if n < 1:
        raise ValueError(f"need at least one item per cell, got n={n}")

    for task in tasks:  # unknown or unscorable tasks fail before any model is loaded
        if get_task(task).plain_text:
            raise ValueError(f"task {task!r} is plain text for pre-training: it has no answers to score")

    check_overflow_choice(context_overflow)


def _answer_all(runs, tasks, lengths, n, seed, loader, memory_overrides, decoding: dict, partial_path):
    """Every run answers every cell: ``(items, results, records)``.

    ``items`` is :func:`_suite_items` (made with the first model's tokenizer), ``results``
    ``{(task, length, run name): cell}``, ``records`` the per-run ``memory_args``,
    ``memory_overrides`` and ``placement``. ``decoding``: ``batch_size``, ``progress``,
    ``sampler``, ``context_overflow``.
    """
    from tqdm.auto import tqdm

    # Runs grouped by model directory, in first-appearance order: each model loaded once.
    groups: dict[str, list[RunSpec]] = {}
    for run in runs:
        groups.setdefault(run.model_dir, []).append(run)

    items = None
    records: dict[str, dict] = {"memory_args": {}, "memory_overrides": {}, "placement": {}}
    reference_signature = None
    results: dict[tuple[str, int, str], dict] = {}
    total = len(runs) * len(tasks) * len(lengths)
    bar = tqdm(total=total, desc="eval", disable=not decoding["progress"])
    for model_dir, group in groups.items():
        loaded = loader(model_dir)
        model, tokenizer = loaded.model, loaded.tokenizer
        model.eval()
        signature = _tokenizer_signature(tokenizer)
        if items is None:  # the first run's tokenizer sizes the items
            items = _suite_items(tokenizer, tasks, lengths, n, seed)
            reference_signature = signature
        elif signature != reference_signature:
            logger.warning("%s has a different tokenizer from %s: its items' lengths are counted "
                           "in the first run's tokens", model_dir, runs[0].model_dir)
        for run in group:
            run_memory = _prepare_run(run, loaded, model, memory_overrides, records)
            _answer_run(run, model, tokenizer, items, run_memory, decoding, results, partial_path, bar)
        del model, loaded
    bar.close()
    return items, results, records


def _prepare_run(run: RunSpec, loaded, model, memory_overrides: dict | None, records: dict):
    """Record where ``run`` runs and, for an adapted run, the memory settings it adapts with;
    returns its prompt memory (None without adaptation)."""

    records["placement"][run.name] = placement_record(model)
    run_memory = loaded.memory(**(memory_overrides or {})) if run.memory else None
    if run_memory is not None:
        record = run_memory.record()
        records["memory_args"][run.name] = record["memory_args"]
        records["memory_overrides"][run.name] = record["memory_overrides"]
    return run_memory


def _answer_run(run: RunSpec, model, tokenizer, items: dict, run_memory, decoding: dict, results: dict,
                partial_path, bar) -> None:
    """One run on every cell that is not skipped; each finished cell goes into ``results`` (and
    the partial file) at once."""
    batch_size = decoding["batch_size"]
    for (task, length), samples in items.items():
        bar.set_description(f"{run.name} | {task}@{length}")
        if not isinstance(samples, str):
            cell = _answer_cell(model, tokenizer, samples, run_memory, batch_size,
                                progress=decoding["progress"] and len(samples) > batch_size,
                                sampler=decoding["sampler"], context_overflow=decoding["context_overflow"])
            results[(task, length, run.name)] = cell
            if partial_path is not None:
                _write_partial(partial_path, results)
            bar.set_postfix(score=f"{cell['score']:.1f}")
        bar.update(1)


def _suite_cells(items: dict, results: dict, runs: list[RunSpec]) -> list[dict]:
    """The result's ``cells``, one per (task, length) in task-major order."""
    cells = []
    for (task, length), samples in items.items():
        skipped = samples if isinstance(samples, str) else None
        cell = {"task": task, "length": length, "skipped": skipped, "item_keys": [], "answers": [],
                "results": {}}
        if skipped is None:
            cell["item_keys"] = [item_key(s) for s in samples]
            cell["answers"] = [list(s.answers) for s in samples]
            cell["results"] = {run.name: results[(task, length, run.name)] for run in runs}
        cells.append(cell)
    return cells


def _write_partial(path, results: dict) -> None:

    write_json_atomic(path, {"finished": [{"task": task, "length": length, "run": name, "result": cell}
                                          for (task, length, name), cell in results.items()]})


def _load(model_dir: str, trust_remote_code: bool, device: str | None = None, dtype=None):

    return Run.load(model_dir, trust_remote_code, dtype=resolve_dtype(dtype), device=resolve_device(device))


def get_cell(result: dict, task: str, length: int) -> dict:
    for cell in result["cells"]:
        if cell["task"] == task and cell["length"] == length:
            return cell
    raise KeyError(f"no cell for task {task!r} at length {length}")


# ---------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------


def _fmt(x: float) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}"


def run_means(result: dict) -> dict[str, float]:
    """Each run's mean score over the evaluated (not skipped) cells."""
    out = {}
    for run in result["runs"]:
        scores = [c["results"][run["name"]]["score"] for c in result["cells"] if not c["skipped"]]
        out[run["name"]] = sum(scores) / len(scores) if scores else float("nan")
    return out


def to_markdown(result: dict, n_boot: int = RESAMPLES) -> str:
    """The paper's Table-1 layout: a row per (task, length), a column per run.

    Then the exact-match table, paired differences of every run against the first
    (mean difference in score points and its 95% bootstrap CI over items; an
    interval containing 0 is marked unresolved), and the skipped cells.
    """
    names = [r["name"] for r in result["runs"]]
    head = "| Task | Length | " + " | ".join(names) + " |"
    rule = "|---|---:|" + "---:|" * len(names)
    lines = [f"## Score (task metric, 0-100; {result['n']} items per cell, seed {result['seed']})",
             "", head, rule]
    for c in result["cells"]:
        row = [_fmt(c["results"][nm]["score"]) if not c["skipped"] else "skipped" for nm in names]
        lines.append(f"| {c['task']} | {c['length']} | " + " | ".join(row) + " |")
    means = run_means(result)
    lines.append("| **mean** | | " + " | ".join(_fmt(means[nm]) for nm in names) + " |")

    lines += ["", "## Exact match (%)", "", head, rule]
    for c in result["cells"]:
        row = [_fmt(100 * c["results"][nm]["exact_match"]) if not c["skipped"] else "skipped"
               for nm in names]
        lines.append(f"| {c['task']} | {c['length']} | " + " | ".join(row) + " |")

    if len(names) > 1:
        base = names[0]
        lines += ["", f"## Paired difference vs {base} (score points, 95% bootstrap CI over items)",
                  "", "| Task | Length | " + " | ".join(names[1:]) + " |",
                  "|---|---:|" + "---:|" * (len(names) - 1)]
        for c in result["cells"]:
            if c["skipped"]:
                continue
            row = []
            for nm in names[1:]:
                diff, (lo, hi) = paired_bootstrap(c["results"][base]["item_scores"],
                                                  c["results"][nm]["item_scores"], n_boot=n_boot)
                flag = "" if lo > 0 or hi < 0 else " (unresolved)"
                row.append(f"{diff:+.1f} [{lo:+.1f}, {hi:+.1f}]{flag}")
            lines.append(f"| {c['task']} | {c['length']} | " + " | ".join(row) + " |")

    lines += _recall_tables(result, names)
    skipped = [c for c in result["cells"] if c["skipped"]]
    if skipped:
        lines += ["", "## Skipped cells", ""]
        lines += [f"- {c['task']} at {c['length']} tokens: {c['skipped']}" for c in skipped]
    lines += ["", "Runs: " + "; ".join(
        f"{r['name']} = {r['model_dir']}" + (" (inference-time adaptation)" if r["memory"] else "")
        for r in result["runs"])]
    return "\n".join(lines) + "\n"


def _recall_tables(result: dict, names: list[str]) -> list[str]:
    """Associative-recall cells: each run's per-query accuracy beside the two reference
    levels, and the share of wrong answers that named another context value."""
    cells = [c for c in result["cells"] if not c["skipped"] and "recall" in c["results"][names[0]]]
    if not cells:
        return []
    lines = ["", "## Associative recall: per-query accuracy (%) against its reference levels", "",
             "| Task | Length | uniform | copy a context value | "
             + " | ".join(f"{nm} (all right; other-context)" for nm in names) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(names)]
    for c in cells:
        ref = c["results"][names[0]]["recall"]["reference"]
        row = []
        for nm in names:
            r = c["results"][nm]["recall"]
            row.append(f"{r['per_query']:.1f} ({r['all_correct']:.1f}; {r['chose']['other_context']:.1f})")
        lines.append(f"| {c['task']} | {c['length']} | {ref['uniform']:.1f} | {ref['copy']:.1f} | "
                     + " | ".join(row) + " |")
    lines += ["", "A per-query score at the copy level means the model picks a context value "
              "without matching its key: not learned."]
    return lines


def plot_suite(result: dict, path) -> bool:
    """Score vs context length, one line per run (dashed: with adaptation), one panel
    per task (PNG). ``memdlm.eval.plots.plot_score_vs_length`` draws one panel; the
    suite needs a grid of them, hence this function.

    Returns False (and logs why) when matplotlib is missing or nothing was evaluated.
    """
    try:  # the Agg canvas directly: no pyplot, no global backend switch
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        logger.warning("matplotlib is not installed (pip install memdlm[plot]): no %s", path)
        return False
    tasks = [t for t in result["tasks"]
             if any(c["task"] == t and not c["skipped"] for c in result["cells"])]
    if not tasks:
        logger.warning("every cell was skipped: no %s", path)
        return False
    cols = min(3, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.4 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    markers = "osD^v<>p*"
    all_lengths = sorted(set(result["lengths"]))
    for ax, task in zip(axes.flat, tasks):
        cells = sorted((c for c in result["cells"] if c["task"] == task and not c["skipped"]),
                       key=lambda c: c["length"])
        for i, run in enumerate(result["runs"]):
            ax.plot([c["length"] for c in cells], [c["results"][run["name"]]["score"] for c in cells],
                    marker=markers[i % len(markers)], linestyle="--" if run["memory"] else "-",
                    label=run["name"])
        ax.set_title(task)
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("score")
        ax.set_ylim(-3, 103)
        if len(all_lengths) > 1:
            ax.set_xscale("log", base=2)
        ax.set_xticks(all_lengths, [str(n) for n in all_lengths])  # same axis in every panel
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.savefig(path, dpi=120)
    return True


PARTIAL_FILE = "suite.partial.json"  # the cells finished so far, while the suite runs


def save_suite(result: dict, out_dir) -> dict[str, Path]:
    """Write ``suite.json`` (everything, per-item results included), ``suite.md``
    (:func:`to_markdown`) and ``suite.png`` (:func:`plot_suite`) to ``out_dir``."""

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "suite.json", "md": out / "suite.md", "png": out / "suite.png"}
    write_json_atomic(paths["json"], result)
    (out / PARTIAL_FILE).unlink(missing_ok=True)  # suite.json holds every cell now
    write_text_atomic(paths["md"], to_markdown(result))
    if not plot_suite(result, paths["png"]):
        paths.pop("png")
    return paths


def load_suite(path) -> dict:
    """Read a ``suite.json`` (or the directory holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "suite.json"
    return json.loads(path.read_text())


__all__ = ["RunSpec", "parse_run_spec", "default_runs", "evaluate_suite", "paired_bootstrap",
           "to_markdown", "plot_suite", "save_suite", "load_suite", "get_cell", "run_means",
           "item_key"]
