"""Models shipped inside the package, loadable by name (no path, no download).

``memdlm train --model mqar-base`` and ``memdlm generate --model mqar-base`` resolve
the name to ``memdlm/assets/models/<name>/`` (weights, config, tokenizer and a
``PROVENANCE.json`` saying how it was trained). An existing directory always wins
over a shipped name, so a local folder called ``mqar-base`` is never shadowed.
"""

from __future__ import annotations

from pathlib import Path

SHIPPED_DIR = Path(__file__).parent / "assets" / "models"


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
    return name_or_path


def missing_model_hint() -> str:
    names = shipped_models()
    return f" (shipped models, usable by name: {', '.join(names)})" if names else ""
