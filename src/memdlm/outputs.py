"""Where results go: checked before the work, written as they are produced.

Every command that writes results creates and probes its output directory (or the
directory of its output file) first, so an unwritable place -- a read-only file system,
a file where the directory should be, no permission -- is one line before minutes of
work, not a traceback after them. Results are written atomically (a temporary file, then
a rename): a kill or a full disk never leaves half a JSON file under the final name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from memdlm.errors import ConfigError


def prepare_output_dir(path, flag: str = "--output-dir") -> Path:
    """Create ``path`` (and its parents) and write a probe file there; ConfigError naming
    ``flag`` and the reason when it cannot be written."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{flag} {out} is a file, not a directory; choose another path or move the file")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".memdlm_write_test.{os.getpid()}"  # one per process (DDP ranks)
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"cannot write the output directory {out} ({flag}): {err.strerror or err}") from None
    return out


def prepare_output_file(path, flag: str) -> Path:
    """Probe the directory of an output file, and refuse a directory given as the file."""
    out = Path(path)
    if out.is_dir():
        raise ConfigError(f"{flag} {out} is a directory; give a file name (e.g. {out / 'results.json'})")
    prepare_output_dir(out.parent if str(out.parent) else Path("."), flag=f"{flag} (its directory)")
    return out


def write_text_atomic(path, text: str) -> None:
    """Write to a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path, obj, **dump_args) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, **dump_args))
