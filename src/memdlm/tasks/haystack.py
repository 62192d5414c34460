"""Haystacks: the distractor text that needles hide in.

- ``prose`` (default): varied sentences from a small built-in grammar;
- ``noise``: RULER's repeated noise paragraph;
- ``file``: sentences of a text file the user gives.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from memdlm.data import words

RULER_NOISE = ("The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.",
               "There and back again.")


class Haystack:
    name = "base"

    def sentences(self, rng: random.Random, n: int) -> list[str]:  # pragma: no cover
        raise NotImplementedError


class ProseHaystack(Haystack):
    name = "prose"

    def sentences(self, rng, n):
        out = []
        for _ in range(n):
            s = (f"{rng.choice(words.FILLER_SUBJECTS)} {rng.choice(words.FILLER_VERBS)} "
                 f"{rng.choice(words.FILLER_OBJECTS)} {rng.choice(words.FILLER_ENDINGS)}.")
            out.append(s[0].upper() + s[1:])
        return out


class NoiseHaystack(Haystack):
    name = "noise"

    def sentences(self, rng, n):
        return [RULER_NOISE[i % len(RULER_NOISE)] for i in range(n)]


class FileHaystack(Haystack):
    """Consecutive sentences of a user's text file, from a random start."""

    name = "file"

    def __init__(self, path: str | Path):
        text = Path(path).read_text(encoding="utf-8")
        self._sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]
        if len(self._sentences) < 2:
            raise ValueError(f"haystack file {path} has fewer than 2 sentences")

    def sentences(self, rng, n):
        start = rng.randrange(len(self._sentences))
        return [self._sentences[(start + i) % len(self._sentences)] for i in range(n)]


def default_haystack() -> Haystack:
    return ProseHaystack()


def get_haystack(spec: str) -> Haystack:
    """``prose``, ``noise`` or a path to a text file."""
    if spec == "prose":
        return ProseHaystack()
    if spec == "noise":
        return NoiseHaystack()
    if Path(spec).is_file():
        return FileHaystack(spec)
    raise ValueError(f"haystack {spec!r} is neither 'prose', 'noise' nor an existing file")
