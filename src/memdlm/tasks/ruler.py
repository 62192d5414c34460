"""RULER-style synthetic tasks (Hsieh et al., 2024, "RULER: What's the real context size of
your long-context language models?"), rebuilt offline and scaled to short contexts.

Every template follows RULER's shape -- an instruction to memorise, the context, then the
question -- shortened for models that work at 128-1,024 tokens. The response (the
training target) is the answers joined by ", " after one space, e.g. " 1234567, 2345678".
All four tasks are scored with ``string_match_all``.

``niah``  one needle "One of the special magic numbers for {key} is: {value}." in the
          haystack; key = "adjective-noun", value = a 7-digit number. Prompt::

            Some special magic numbers are hidden in the following text. Memorize them; I will ask you about them afterwards.
            {context}
            Question: What is the special magic number for {key} mentioned in the provided text? Answer:

``mv``    multi-value NIAH: one key, 4 needles with different values at random depths
          (response: the values in the order they appear); same prompt, with
          "What are all the special magic numbers for {key} mentioned in the provided text?"
``vt``    variable tracking: "VAR ABCDE = 12345." then 4 hops "VAR FGHIJ = VAR ABCDE." in
          chain order at random depths; names are 5 capital letters, the value 5 digits;
          default haystack: RULER's noise sentences. Answer: the 5 names in chain order::

            Memorize the chain of variable assignments in the text.
            {context}
            Question: Which variables are assigned the value 12345? Answer:

``cwe``   common-words extraction; see :class:`CommonWordsTask` for the scaled-down rule.

Shortest lengths with the shipped tokenizer (prompt + response, no filler): niah ~85,
vt ~140, mv ~180, cwe ~100 tokens. Train and eval splits share no key, value, variable
name or word (``split_pool`` / ``random_number`` / ``split_of``).
"""

from __future__ import annotations

import math
import random
import string

from memdlm.data import words
from memdlm.tasks.base import (
    Sample,
    Task,
    fit_filler,
    fit_haystack,
    random_number,
    register_task,
    split_of,
    split_pool,
)
from memdlm.tasks.haystack import NoiseHaystack

NEEDLE = "One of the special magic numbers for {key} is: {value}."
NIAH_INSTRUCTION = ("Some special magic numbers are hidden in the following text. Memorize them; "
                    "I will ask you about them afterwards.")


def magic_keys(rng: random.Random, split: str, n: int) -> list[str]:
    """``n`` distinct "adjective-noun" keys, both words from the split's pools."""
    adjectives, nouns = split_pool(words.ADJECTIVES, split), split_pool(words.NOUNS, split)
    keys: list[str] = []
    while len(keys) < n:
        key = f"{rng.choice(adjectives)}-{rng.choice(nouns)}"
        if key not in keys:
            keys.append(key)
    return keys


def distinct_numbers(rng: random.Random, digits: int, split: str, n: int) -> list[str]:
    values: list[str] = []
    while len(values) < n:
        value = random_number(rng, digits, split)
        if value not in values:
            values.append(value)
    return values


def join_answers(answers: list[str]) -> str:
    """The response text: answers joined by ", " after a leading space."""
    return " " + ", ".join(answers)


class MagicNumberTask(Task):
    """NIAH with one key and ``values`` needles (1: ``niah``, 4: ``mv``)."""

    metric = "string_match_all"

    def __init__(self, name: str, values: int, digits: int = 7):
        if values < 1:
            raise ValueError("values must be at least 1")
        self.name, self.values, self.digits = name, values, digits

    def question(self, key: str) -> str:
        if self.values == 1:
            return f"What is the special magic number for {key} mentioned in the provided text?"
        return f"What are all the special magic numbers for {key} mentioned in the provided text?"

    def build(self, rng, split, length, count, haystack):
        (key,) = magic_keys(rng, split, 1)
        values = distinct_numbers(rng, self.digits, split, self.values)
        needles = [NEEDLE.format(key=key, value=v) for v in values]
        question = self.question(key)

        def render(context: str) -> Sample:
            prompt = f"{NIAH_INSTRUCTION}\n{context}\nQuestion: {question} Answer:"
            return Sample(self.name, prompt, join_answers(values), tuple(values),
                          {"key": key, "question": question})

        return fit_haystack(rng, haystack, needles, render, length, count)


def variable_names(rng: random.Random, split: str, n: int, letters: int = 5) -> list[str]:
    """``n`` distinct names of ``letters`` capital letters from the split (by ``split_of``)."""
    names: list[str] = []
    while len(names) < n:
        name = "".join(rng.choice(string.ascii_uppercase) for _ in range(letters))
        if split_of(name) == split and name not in names:
            names.append(name)
    return names


class VariableTrackingTask(Task):
    """RULER VT with one chain of ``hops`` + 1 variables; noise haystack unless one is given."""

    name = "vt"
    metric = "string_match_all"

    def __init__(self, hops: int = 4, digits: int = 5):
        self.hops, self.digits = hops, digits

    def sample(self, seed, split, length, count, haystack=None):
        return super().sample(seed, split, length, count, haystack or NoiseHaystack())

    def build(self, rng, split, length, count, haystack):
        names = variable_names(rng, split, self.hops + 1)
        value = random_number(rng, self.digits, split)
        needles = [f"VAR {names[0]} = {value}."]
        needles += [f"VAR {b} = VAR {a}." for a, b in zip(names, names[1:])]
        question = f"Which variables are assigned the value {value}?"

        def render(context: str) -> Sample:
            prompt = (f"Memorize the chain of variable assignments in the text.\n{context}\n"
                      f"Question: {question} Answer:")
            return Sample(self.name, prompt, join_answers(names), tuple(names),
                          {"value": value, "question": question})

        return fit_haystack(rng, haystack, needles, render, length, count)


def cwe_pool(split: str) -> list[str]:
    """The common-words pool: every built-in adjective, noun and verb, of the given split."""
    return split_pool(sorted(set(words.ADJECTIVES + words.NOUNS + words.CWE_NOUNS
                                 + words.CWE_VERBS)), split)


class CommonWordsTask(Task):
    """Common-words extraction, scaled down from RULER so it fits short contexts.

    RULER repeats 10 common words 30 times and every other word 3 times (6 and 1 below
    4K tokens), with one few-shot example first. Here, for a requested length L tokens:

    - number of common words ``c = 10`` if L >= 256, else ``c = 4`` (10 words twice each
      do not fit in fewer than about 200 tokens with the shipped tokenizer);
    - each common word appears ``k = max(min(30, max(2, L // 128)), 2 * r)`` times,
      where ``r`` is the most times any other word appears;
    - the other ("uncommon") words are distinct words of the split's pool (the built-in
      adjectives, nouns and verbs: 247 eval / 766 train words), each once; the length is
      filled by adding uncommon words. Only when the list needs more uncommon words than
      the pool holds (from about 3.5K tokens for the eval split with the shipped
      tokenizer) does the pool cycle, so ``r = ceil(uncommon entries / (pool size - c))``;
      the rule for ``k`` keeps every common word at least twice as frequent as any other;
    - the list is shuffled and written "1. word 2. word ..." on one line. When it falls
      short of L by more than 2%, the next 32 pool words are tried as the last uncommon
      entry and the longest list that fits is kept. No few-shot example (it would not
      fit); the haystack argument is ignored.

    Template: "Below is a numbered list of words. Memorize the ones that appear most
    often.\n{list}\nQuestion: What are the {c} most common words in the list? Answer:"

    Answer: the ``c`` common words, in order of first appearance in the list.
    """

    name = "cwe"
    metric = "string_match_all"

    @staticmethod
    def num_common(length: int) -> int:
        return 10 if length >= 256 else 4

    @staticmethod
    def base_repeats(length: int) -> int:
        return min(30, max(2, length // 128))

    def build(self, rng, split, length, count, haystack):
        pool = cwe_pool(split)
        rng.shuffle(pool)
        c = self.num_common(length)
        common, uncommon = pool[:c], pool[c:]
        k_base = self.base_repeats(length)
        order_seed = rng.random()
        question = f"What are the {c} most common words in the list?"

        def build_list(n_uncommon: int) -> Sample:
            r = math.ceil(n_uncommon / len(uncommon))
            k = max(k_base, 2 * r)
            entries = common * k + [uncommon[i % len(uncommon)] for i in range(n_uncommon)]
            random.Random(order_seed).shuffle(entries)
            listing = " ".join(f"{i + 1}. {w}" for i, w in enumerate(entries))
            answers = sorted(common, key=entries.index)
            prompt = ("Below is a numbered list of words. Memorize the ones that appear most "
                      f"often.\n{listing}\nQuestion: {question} Answer:")
            return Sample(self.name, prompt, join_answers(answers), tuple(answers),
                          {"repeats": k, "uncommon": n_uncommon, "question": question})

        sample = fit_filler(build_list, length, count)
        return self._tighten(sample, build_list, uncommon, length, count)

    @staticmethod
    def _tighten(sample, build_list, uncommon, length, count, tries: int = 32):
        """Close a gap of over 2% of the length (one list entry is 4-8 tokens) by trying
        up to ``tries`` other words as the next uncommon entry; keep the longest fit."""
        n, slack = sample.meta["uncommon"], max(1, length // 50)
        best, best_len = sample, count(sample.prompt) + count(sample.response)
        for j in range(n + 1, min(len(uncommon), n + 1 + tries)):
            if length - best_len <= slack:
                break
            uncommon[n], uncommon[j] = uncommon[j], uncommon[n]
            candidate = build_list(n + 1)
            size = count(candidate.prompt) + count(candidate.response)
            if best_len < size <= length:
                best, best_len = candidate, size
            uncommon[n], uncommon[j] = uncommon[j], uncommon[n]
        return best


register_task(MagicNumberTask("niah", values=1))
register_task(MagicNumberTask("mv", values=4))
register_task(VariableTrackingTask())
register_task(CommonWordsTask())
