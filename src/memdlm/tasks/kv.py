"""Key-value retrieval in a haystack with distractor keys (the tiny default's task).

Prompt: facts "The value of {key} is {value}." for the queried key and
``distractors`` other keys, scattered through filler, then the question
"Question: what is the value of {key}? Answer:". The response is the value.
Keys are adjective-noun pairs (``kv``) or single nouns (``kv1``), values
``digits``-digit numbers; both come from disjoint train / eval pools.
"""

from __future__ import annotations

from memdlm.data import words
from memdlm.tasks.base import Sample, Task, fit_haystack, random_number, register_task, split_pool


class KeyValueTask(Task):
    name = "kv"
    metric = "string_match_all"

    def __init__(self, distractors: int = 3, digits: int = 4, key_words: int = 2, name: str = "kv",
                 train_min_distractors: int | None = None):
        self.distractors = distractors
        self.train_min_distractors = train_min_distractors
        self.digits = digits
        self.key_words = key_words
        self.name = name

    def _keys(self, rng, split, n):
        adjectives = split_pool(words.ADJECTIVES, split)
        nouns = split_pool(words.NOUNS, split)
        keys: list[str] = []
        while len(keys) < n:
            key = rng.choice(nouns) if self.key_words == 1 else f"{rng.choice(adjectives)} {rng.choice(nouns)}"
            if key not in keys:
                keys.append(key)
        return keys

    def build(self, rng, split, length, count, haystack):
        if split == "train" and self.train_min_distractors is not None:
            n = rng.randint(self.train_min_distractors, self.distractors)
            while True:  # a short context holds fewer distractors: drop some until it fits
                try:
                    return self._build(rng, split, length, count, haystack, n)
                except ValueError:
                    if n == self.train_min_distractors:
                        raise
                    n -= 1
        return self._build(rng, split, length, count, haystack, self.distractors)

    def _build(self, rng, split, length, count, haystack, n_distractors):
        keys = self._keys(rng, split, n_distractors + 1)
        values = [random_number(rng, self.digits, split) for _ in keys]
        needles = [f"The value of {k} is {v}." for k, v in zip(keys, values)]
        query = rng.randrange(len(keys))
        rng.shuffle(needles)
        meta = {"key": keys[query], "keys": keys, "values": values}

        def render(context: str) -> Sample:
            prompt = f"{context} Question: what is the value of {keys[query]}? Answer:"
            return Sample(self.name, prompt, " " + values[query], (values[query],), meta)

        return fit_haystack(rng, haystack, needles, render, length, count)


register_task(KeyValueTask())
register_task(KeyValueTask(key_words=1, name="kv1"))  # one-word keys: an easier variant
# A curriculum for training from scratch: training samples hold 0-3 distractor keys
# (uniformly), so the model first learns to copy a value, then to pick the right one;
# evaluation samples always hold 3, exactly like ``kv``.
register_task(KeyValueTask(name="kv_curriculum", train_min_distractors=0))
