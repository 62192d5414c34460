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


def filler_sentences(haystack: Haystack, rng: random.Random, n_words: int) -> list[str]:
    """The first ``n_words`` words of the haystack's sentence stream, as sentences.

    The last sentence is cut after the word that reaches ``n_words`` and closed with
    a period, so length fitting can add filler a word (1-3 tokens) at a time rather
    than a sentence (about 10 tokens) at a time. The stream is drawn from ``rng`` as
    it stands on entry; the built-in haystacks give streams whose first sentences do
    not depend on how many are asked for, so more words never change earlier text.
    """
    if n_words <= 0:
        return []
    state, asked = rng.getstate(), max(1, n_words // 4)
    while True:
        rng.setstate(state)
        sentences = haystack.sentences(rng, asked)
        if sum(len(s.split()) for s in sentences) >= n_words or asked >= n_words:
            break
        asked *= 2
    out, left = [], n_words
    for sentence in sentences:
        tokens = sentence.split()
        if len(tokens) >= left:
            if len(tokens) > left:
                sentence = " ".join(tokens[:left]).rstrip(",;:.!?") + "."
            out.append(sentence)
            break
        out.append(sentence)
        left -= len(tokens)
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
    raise ValueError(f"haystack {spec!r} is neither 'prose', 'noise' nor an existing file")
