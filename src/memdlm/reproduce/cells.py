"""Cached, resumable cells: each piece of the reproduction runs once and is reused.

A cell is a directory (training) or a JSON file (evaluation) under the output
directory. Beside it, ``<cell>.settings.json`` records the settings it was made
with; a finished cell whose settings differ from the current ones is an error that
names the cell, never a silent reuse. A training cell killed midway resumes from
its newest complete checkpoint (``memdlm train --resume``); an evaluation cell is
written atomically, so a kill leaves either nothing or the whole result.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from memdlm.errors import ConfigError, Stopped
from memdlm.runs.directory import holds_run
from memdlm.training.train import write_json_atomic
from memdlm.training.options import setup_from_options
from memdlm.training.train import train

logger = logging.getLogger("memdlm")


def _settings_file(cell: Path) -> Path:
    return cell.with_name(cell.name + ".settings.json")


def check_settings(cell: Path, settings: dict) -> None:
    """Record ``settings`` for ``cell``, or fail if the cell was made with others.

    Paths in the settings (the runs an evaluation cell reads) are compared by where they lie
    relative to the cell (:func:`_cell_relative`), not by their spelling: the same finished
    reproduction reached through an absolute path, another relative one, or a copy of its
    directory is the same."""
    path = _settings_file(cell)
    canonical = _cell_relative(json.loads(json.dumps(settings, sort_keys=True)), cell)
    if path.is_file():
        recorded = _cell_relative(json.loads(path.read_text()), cell)
        if recorded != canonical:
            changed = sorted(k for k in set(recorded) | set(canonical) if recorded.get(k) != canonical.get(k))
            raise ConfigError(
                f"cached cell {cell} was made with different settings ({', '.join(changed)}); "
                "delete it (and what depends on it) or use another --output-dir")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, canonical)


PATH_LEVELS = 3  # cells lie at most two folders below the reproduction's directory


def _cell_relative(value, cell: Path):
    """``value`` with each string naming a path near ``cell`` (under one of its nearest
    ``PATH_LEVELS`` folders) written as ``@cell:<path relative to the cell's folder>``."""
    if isinstance(value, dict):
        return {k: _cell_relative(v, cell) for k, v in value.items()}
    if isinstance(value, list):
        return [_cell_relative(v, cell) for v in value]
    if not isinstance(value, str) or "/" not in value or value.startswith("@cell:"):
        return value
    import os

    here = Path(os.path.abspath(cell))
    target = Path(os.path.abspath(value))
    if any(target == folder or folder in target.parents for folder in list(here.parents)[:PATH_LEVELS]
           if folder != Path(folder.anchor)):
        return "@cell:" + os.path.relpath(target, here.parent)
    return value


def train_cell(cell: Path, options: dict, runtime: dict | None = None, progress: bool = True) -> dict:
    """Train (or reuse) the run in ``cell``; returns its ``run_complete.json`` summary.

    ``options`` are training options by field name (:mod:`memdlm.training.options`);
    ``runtime`` options (threads) change how fast, not what, and are not recorded.
    """

    check_settings(cell, options)
    done = cell / "run_complete.json"
    if done.is_file():
        logger.info("reusing %s", cell)
        return json.loads(done.read_text())
    # A cell killed midway (with or without a checkpoint) is continued; check_settings above
    # made sure it is this cell's run.
    resume = holds_run(cell)
    setup = setup_from_options({**options, **(runtime or {}), "output_dir": str(cell), "disable_tqdm": not progress})
    logger.info("training %s%s", cell, " (resuming)" if resume else "")
    try:
        return train(setup, resume=resume)
    except Stopped as stop:  # SIGTERM / Ctrl-C: the way on is the same reproduce command
        raise Stopped(stop.signal_name, f"stopped by {stop.signal_name} while training {cell}; run the same "
                                        "memdlm reproduce command again to continue (the cell resumes from its "
                                        "newest checkpoint)") from None


def json_cell(path: Path, settings: dict, compute: Callable[[], dict]) -> dict:
    """The JSON result at ``path``, computed (and written atomically) if missing."""
    check_settings(path, settings)
    if path.is_file():
        logger.info("reusing %s", path)
        return json.loads(path.read_text())
    start = time.perf_counter()
    result = compute()
    result.setdefault("seconds", round(time.perf_counter() - start, 1))
    write_json_atomic(path, result)
    return result
