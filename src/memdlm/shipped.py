"""Models shipped inside the package, loadable by name (no path, no download).

``memdlm train --model mqar-base`` and ``memdlm generate --model mqar-base`` resolve
the name to ``memdlm/assets/models/<name>/`` (weights, config, tokenizer and its
provenance: ``provenance.json``, written by ``scripts/ship_model.py``, with the commit,
command, seed, training time, machine and measured quality, and ``PROVENANCE.md``, the
same record rendered for a reader by :func:`render_provenance`). An existing directory
always wins over a shipped name, so a local folder called ``mqar-base`` is never
shadowed.
"""

from __future__ import annotations

import json
from pathlib import Path

SHIPPED_DIR = Path(__file__).parent / "assets" / "models"
PROVENANCE_JSON = "provenance.json"
PROVENANCE_MD = "PROVENANCE.md"


def shipped_models() -> list[str]:
    """Names of the shipped models (directories with a config.json)."""
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / "config.json").is_file())


def resolve_model(name_or_path: str) -> str:
    """A local directory as given, else the shipped model of that name, else the input
    unchanged (the caller reports a missing directory and lists :func:`shipped_models`)."""
    if Path(name_or_path).is_dir():
        return name_or_path
    shipped = SHIPPED_DIR / name_or_path
    if "/" not in name_or_path and (shipped / "config.json").is_file():
        return str(shipped)
    cached = hub_cache_snapshot(name_or_path)
    return cached or name_or_path


def hub_cache_snapshot(name: str) -> str | None:
    """The local Hugging Face hub cache's snapshot of model ``owner/name`` (downloaded
    earlier, e.g. ``hf download GSAI-ML/LLaDA-8B-Instruct``), or None; nothing is downloaded."""
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        return None
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(name, local_files_only=True)
    except Exception:  # not cached (or not a valid repo id): the caller reports the missing model
        return None


def missing_model_hint() -> str:
    names = shipped_models()
    return f" (shipped models, usable by name: {', '.join(names)})" if names else ""


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
