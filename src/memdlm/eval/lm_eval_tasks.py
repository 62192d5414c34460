"""Our generated tasks as local lm-eval tasks (offline; no lm-eval import needed here).

    from memdlm.eval.lm_eval_tasks import export_tasks
    names = export_tasks(["kv", "niah"], [128, 1024], n=100, out_dir="lmeval_tasks", tokenizer=tok)
    # -> memdlm_kv_128, memdlm_kv_1024, memdlm_niah_128, memdlm_niah_1024
    lm_eval.simple_evaluate(model=..., tasks=names,
                            task_manager=TaskManager(include_path="lmeval_tasks", include_defaults=False))

Per (task, length) the export writes ``memdlm_<task>_<length>.jsonl`` -- ``n`` items
of the task's *eval* split (keys, values and names never seen in training) with
seeds ``seed, seed + 1, ...`` (default 70,000, apart from the held-out set's
50,000) -- and ``memdlm_<task>_<length>.yaml``: a ``generate_until`` task over
that file (absolute path, as lm-eval resolves relative ``data_files`` against the
working directory) with ``datasets``' cache inside ``out_dir``. The prompt is the
document text; generation stops at a newline or after ``max_gen_toks`` = the
longest reference answer in tokens + 2 (room for EOS, as the held-out evaluation
does). The metric is the task's own scorer (``Task.metric``:
``string_match_all``, ``babilong`` or ``recall``; 0-100, from
:mod:`memdlm.tasks.scoring`) through :func:`process_results`, which the YAML names
as ``!function memdlm.eval.lm_eval_tasks.process_results`` (lm-eval imports it by
module path, so no helper file is copied next to the YAMLs).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from memdlm.tasks.seeds import EXPORT_SEED
from memdlm.tasks import get_task
from memdlm.backbones.tokenizer import count_tokens_fn
from memdlm.tasks.scoring import score_samples

PREFIX = "memdlm_"
STOP_STRINGS = ("\n",)
_NAME = re.compile(rf"^{PREFIX}(?P<task>.+?)(?:_(?P<length>\d+))?$")


def lm_eval_task_name(task: str, length: int) -> str:
    return f"{PREFIX}{task}_{int(length)}"


def parse_task_name(name: str) -> tuple[str, int | None]:
    """``memdlm_kv_128`` -> ("kv", 128); ``memdlm_kv`` -> ("kv", None)."""
    match = _NAME.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not a memdlm lm-eval task name ({PREFIX}<task>[_<length>])")
    length = match.group("length")
    return match.group("task"), (int(length) if length else None)


def export_tasks(task_names, lengths, n: int, out_dir, tokenizer, seed: int = EXPORT_SEED) -> list[str]:
    """Write a JSONL file and a task YAML per (task, length); returns the lm-eval task names."""

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    count = count_tokens_fn(tokenizer)
    names = []
    for task_name in task_names:
        task = get_task(task_name)  # unknown names fail here, listing the valid ones
        for length in lengths:
            name = lm_eval_task_name(task_name, length)
            samples = [task.sample(seed + i, "eval", int(length), count) for i in range(n)]
            data = out / f"{name}.jsonl"
            data.write_text("".join(json.dumps(_row(s)) + "\n" for s in samples))
            longest = max(count(s.response) for s in samples)
            (out / f"{name}.yaml").write_text(task_yaml(name, data, task.metric, longest + 2, out / "hf_cache"))
            names.append(name)
    return names


def _row(sample) -> dict:
    # meta varies in shape between tasks (and could between items): one JSON string keeps
    # the column types fixed for the datasets JSON loader.
    return {"task": sample.task, "prompt": sample.prompt, "target": sample.response.strip(),
            "answers": list(sample.answers), "meta_json": json.dumps(sample.meta)}


def task_yaml(name: str, data_file: Path, metric: str, max_gen_toks: int, cache_dir: Path) -> str:
    """The lm-eval task config (YAML text; JSON scalars are valid YAML)."""
    q = json.dumps
    return "\n".join([
        f"task: {name}",
        "dataset_path: json",
        "dataset_kwargs:",
        f"  data_files: {{test: {q(str(data_file))}}}",
        f"  cache_dir: {q(str(cache_dir))}",
        "test_split: test",
        "output_type: generate_until",
        'doc_to_text: "{{prompt}}"',
        'doc_to_target: "{{target}}"',
        "generation_kwargs:",
        f"  until: {q(list(STOP_STRINGS))}",
        f"  max_gen_toks: {int(max_gen_toks)}",
        "process_results: !function memdlm.eval.lm_eval_tasks.process_results",
        "metric_list:",
        f"  - metric: {metric}",
        "    aggregation: mean",
        "    higher_is_better: true",
        "metadata:",
        "  version: 1.0",
        "",
    ])


def process_results(doc: dict, results: list[str]) -> dict:
    """lm-eval hook: the task's metric (0-100) of one prediction against the doc's answers."""

    row = {"answers": list(doc["answers"]), "meta": json.loads(doc.get("meta_json") or "{}")}
    return {get_task(doc["task"]).metric: score_samples(doc["task"], [results[0]], [row])}
