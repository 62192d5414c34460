"""Haystacks: the distractor text that needles hide in.

- ``prose`` (default): varied sentences from a small built-in grammar;
- ``noise``: RULER's repeated noise paragraph;
- ``file``: sentences of a text file the user gives.
"""

from __future__ import annotations

import random
import re
from bisect import bisect_left
from itertools import accumulate
from pathlib import Path

from memdlm.data import words
from memdlm.errors import ConfigError

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


class FillerStream:
    """One seed's filler, cut to any number of words (for length fitting).

    ``take(n)`` gives the first ``n`` words of the haystack's sentence stream as
    sentences, the last one cut short and closed with a period, so fitting can add
    filler a word (1-3 tokens) at a time rather than a sentence (about 10 tokens) at a
    time. Sentences are generated once (regenerated from the seed with a doubled count
    when more are needed); the built-in haystacks' streams do not depend on how many
    sentences are asked for, so more words never change the earlier text.
    """

    def __init__(self, haystack: Haystack, seed: float):
        self.haystack, self.seed = haystack, seed
        self._sentences: list[str] = []
        self._ends: list[int] = []  # cumulative word count at the end of each sentence

    def _grow(self, n_words: int) -> None:
        asked = max(16, 2 * len(self._sentences))
        while not self._ends or self._ends[-1] < n_words:
            self._sentences = self.haystack.sentences(random.Random(self.seed), asked)
            self._ends = list(accumulate(len(x.split()) for x in self._sentences))
            if asked >= n_words:  # each sentence has a word: the stream has run dry
                break
            asked *= 2

    def take(self, n_words: int) -> list[str]:
        if n_words <= 0:
            return []
        self._grow(n_words)
        i = bisect_left(self._ends, n_words)
        if i == len(self._ends):
            return list(self._sentences)
        out = self._sentences[: i + 1]
        if self._ends[i] > n_words:
            keep = n_words - (self._ends[i - 1] if i else 0)
            out[-1] = " ".join(out[-1].split()[:keep]).rstrip(",;:.!?") + "."
        return out


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

    raise ConfigError(f"--haystack {spec!r} is neither 'prose', 'noise' nor an existing file; "
                      "give one of the two names or the path of a text file")
