"""Models shipped inside the package, loadable by name (no path, no download).

``memdlm train --model mqar-base`` and ``memdlm generate --model mqar-base`` resolve
the name to ``memdlm/assets/models/<name>/`` (weights, config, tokenizer and its
provenance: ``provenance.json``, written by ``scripts/ship_model.py``, with the commit,
command, seed, training time, machine and measured quality, and ``PROVENANCE.md``, the
same record rendered for a reader by :func:`render_provenance`). An existing directory
always wins over a shipped name, so a local folder called ``mqar-base`` is never
shadowed.

A hub id (``--model ORG/NAME``) resolves to its snapshot in the local Hugging Face cache
(``$HF_HUB_CACHE``, else ``$HF_HOME/hub``), never downloaded: memdlm reads local files only
(``local_files_only``), with or without ``HF_HUB_OFFLINE``. A model that is not cached is
one line naming the cache directory and the variables that move it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

SHIPPED_DIR = Path(__file__).parents[1] / "assets" / "models"
PROVENANCE_JSON = "provenance.json"
PROVENANCE_MD = "PROVENANCE.md"


def shipped_models() -> list[str]:
    """Names of the shipped models (directories with a config.json)."""
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / "config.json").is_file())


# ORG/NAME as the hub spells repository ids (one slash, no leading dot or slash)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_model(name_or_path: str) -> str:
    """A local directory as given, else the shipped model of that name, else a hub id's
    snapshot in the local Hugging Face cache, else the input unchanged (the caller reports
    it missing with :func:`missing_model_message`)."""
    if Path(name_or_path).is_dir():
        return name_or_path
    shipped = SHIPPED_DIR / name_or_path
    if "/" not in name_or_path and (shipped / "config.json").is_file():
        return str(shipped)
    cached = cached_snapshot(name_or_path) if is_hub_id(name_or_path) else None
    return cached or name_or_path


def is_hub_id(name: str) -> bool:
    return bool(HUB_ID.match(name))


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now: ``HF_HUB_CACHE``, else
    ``HF_HOME``/hub, else huggingface_hub's default (which also honours the legacy
    ``HUGGINGFACE_HUB_CACHE`` and ``XDG_CACHE_HOME``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expandvars(os.environ["HF_HUB_CACHE"])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_snapshot(repo_id: str) -> str | None:
    """The cached snapshot directory of ``repo_id`` (its ``main`` ref), or None; never
    downloads (``local_files_only``)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(repo_id, cache_dir=str(hub_cache_dir()), local_files_only=True)
    except (LocalEntryNotFoundError, ValueError):  # not cached; or not a valid repo id after all
        return None


def missing_model_message(name_or_path: str) -> str:
    """One line for a model that is neither a directory, a shipped name nor a cached hub id."""
    names = shipped_models()
    shipped = f" (shipped models, usable by name: {', '.join(names)})" if names else ""
    if not is_hub_id(name_or_path):
        return f"model directory {name_or_path} does not exist{shipped}"
    return (f"model directory {name_or_path} does not exist, and as a hub id it is not in the local Hugging Face "
            f"cache {hub_cache_dir()} (set by HF_HUB_CACHE, else HF_HOME/hub); memdlm never downloads: put the "
            f"files there (e.g. `hf download {name_or_path}` on a machine online) or pass a local "
            f"directory{shipped}")


def load_provenance(name: str) -> dict:
    """The provenance record of a shipped model."""
    return json.loads((SHIPPED_DIR / name / PROVENANCE_JSON).read_text())


def _quality(cell: dict) -> str:
    refs = ", ".join(f"{k} {v:.4g}" for k, v in cell["reference"].items())
    if "per_query" in cell:  # a recall task: accuracy beside its reference levels
        return f"{cell['per_query']:.1f}% of queries right ({cell['decoding']}; reference levels: {refs})"
    return f"{cell['loss']:.4g}: {cell['metric']} (references: {refs})"


def render_provenance(record: dict) -> str:
    """``PROVENANCE.md``: the JSON record as text (nothing in it that the record lacks)."""
    m = record["machine"]
    lines = [f"# {record['name']}: provenance", "",
             f"- Command: `{record['command']}`",
             f"- Commit: `{record['commit']}`",
             f"- Seed: {record['seed']}",
             f"- Training time: {record['train_seconds']:.1f} s in all "
             + "(" + "; ".join(f"{s['run']}: {s['global_step']} steps on {', '.join(s['tasks'])} at "
                              f"{s['train_lengths']} tokens, {s['train_seconds']:.1f} s" for s in record["stages"]) + ")",
             f"- Machine: {m['platform']}, {m['cpus']} CPUs, {m['threads']} thread(s), torch {m['torch']}, "
             f"CUDA {'yes' if m['cuda'] else 'no'}",
             f"- Parameters: {record['parameters']:,}",
             f"- Shipped: {record['shipped_at']}", "",
             "Measured quality on fresh held-out items:", ""]
    lines += [f"- `{c['task']}` at {c['length']} tokens, {c['items']} items (seed {c['seed']}): {_quality(c)}"
              for c in record["heldout"].values()]
    return "\n".join(lines) + "\n"
