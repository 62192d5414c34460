"""Scripts and benchmarks are files, not package modules: load one by path (the tests of
benchmarks/ and scripts/ import them this way)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_file(relative_path: str, name: str):
    """The module at ``ROOT / relative_path``, executed under ``name``."""
    spec = importlib.util.spec_from_file_location(name, ROOT / relative_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
