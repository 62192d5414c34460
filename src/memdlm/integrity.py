"""Is a saved file whole? Structural checks that read a few bytes, not the tensors.

A kill or a full disk during a save leaves files cut short. Loading them fails deep
inside safetensors or torch with a message that names neither the file nor the fix;
these checks name both before anything is loaded. They judge structure only (a header
and the length it promises; a zip archive's central directory, which ``torch.save``
writes last): a file whose bytes were altered in place still passes.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

from memdlm.errors import ConfigError

# torch.save's zip archives a checkpoint holds (model weights are safetensors).
TORCH_FILE_SUFFIXES = (".pt", ".pth")


def damage(path: Path) -> str | None:
    """Why ``path`` cannot be loaded (``truncated``, ``not a ... file``), or None when it looks whole."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            return _safetensors_damage(path)
        if path.suffix in TORCH_FILE_SUFFIXES:
            return None if zipfile.is_zipfile(path) else "truncated or not a torch.save file (no zip directory)"
    except OSError as err:
        return f"unreadable ({err.strerror or err})"
    return None


def _safetensors_damage(path: Path) -> str | None:
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return f"truncated ({size} bytes, no header)"
        (length,) = struct.unpack("<Q", head)
        if length > size - 8:
            return f"truncated ({size} bytes, inside its {length}-byte header)"
        try:
            header = json.loads(handle.read(length))
            end = max((int(entry["data_offsets"][1]) for name, entry in header.items()
                       if name != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return "not a safetensors file (its header is not valid)"
    if size < 8 + length + end:
        return f"truncated ({size} of {8 + length + end} bytes)"
    return None


def damaged_files(directory: Path, patterns=("*.safetensors", "*.pt", "*.pth")) -> list[str]:
    """``name: reason`` for each damaged file directly in ``directory``."""
    found = sorted({p for pattern in patterns for p in Path(directory).glob(pattern) if p.is_file()})
    return [f"{p.name}: {reason}" for p in found if (reason := damage(p)) is not None]


def check_model_files(directory: Path) -> None:
    """Refuse a model directory whose weight files are cut short, naming the file."""
    for p in sorted(Path(directory).glob("*.safetensors")):
        reason = damage(p)
        if reason is not None:
            raise ConfigError(f"{p} is damaged ({reason}): it was cut short while being saved (a kill or a "
                              "full disk); save or copy the model again, or use a run's checkpoint-*/ "
                              "directory that is whole")
