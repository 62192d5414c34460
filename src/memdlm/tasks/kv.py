"""Key-value retrieval in a haystack with distractor keys (the tiny default's task).

Prompt: facts "The value of {key} is {value}." for the queried key and
``distractors`` other keys, scattered through filler, then the question
"Question: what is the value of {key}? Answer:". The response is the value.
Keys are adjective-noun pairs (``kv``) or single nouns (``kv1``), values
``digits``-digit numbers; both come from disjoint train / eval pools.

Which pool a two-word key belongs to is decided by the *pair* (``split_of("odd
tulip")``): a held-out key is a combination never used as a key in training, made of
words that training keys also use. Splitting by *word* instead (``kv_strict``) makes
held-out keys out of words the model has never read at all; their token embeddings are
then untrained (tied embeddings only ever see them as softmax negatives), which tests
something else -- matching vectors the model never learned -- and the tiny default
scores near zero on it at any length we can train on a CPU (docs/RESULTS.md).
"""

from __future__ import annotations

from functools import cache

from memdlm.data import words
from memdlm.tasks.base import (
    Sample,
    Task,
    fit_haystack,
    random_number,
    register_task,
    split_of,
    split_pool,
)


def needle(key: str, value: str) -> str:
    """The sentence that states a key's value (what the retrieval probe removes)."""
    return f"The value of {key} is {value}."


@cache
def _value_pool_size(digits: int, split: str) -> int:
    """How many ``digits``-digit values the split holds (:func:`random_number`'s pool)."""
    return sum(split_of(str(v)) == split for v in range(10 ** (digits - 1), 10**digits))


class KeyValueTask(Task):
    name = "kv"
    metric = "string_match_all"

    def __init__(self, distractors: int = 3, digits: int = 4, key_words: int = 2, name: str = "kv",
                 train_min_distractors: int | None = None, split_words: bool = False,
                 train_all_keys: float = 0.0, all_keys: bool = False):
        self.distractors = distractors
        self.train_all_keys = train_all_keys
        self.all_keys = all_keys
        self.split_words = split_words
        self.train_min_distractors = train_min_distractors
        self.digits = digits
        self.key_words = key_words
        self.name = name

    def reference_levels(self) -> dict[str, float]:
        """Expected score (0-100, per asked key) of the two non-solutions on the eval split:
        ``copy`` a random one of the context's values (1 / keys in the context) and
        ``uniform``-ly guess a value of the split's pool."""
        return {"uniform": 100.0 / _value_pool_size(self.digits, "eval"),
                "copy": 100.0 / (self.distractors + 1)}

    def _keys(self, rng, split, n):
        by_word = self.split_words or self.key_words == 1
        adjectives = split_pool(words.ADJECTIVES, split) if by_word else words.ADJECTIVES
        nouns = split_pool(words.NOUNS, split) if by_word else words.NOUNS
        keys: list[str] = []
        while len(keys) < n:
            key = rng.choice(nouns) if self.key_words == 1 else f"{rng.choice(adjectives)} {rng.choice(nouns)}"
            if key not in keys and (by_word or split_of(key) == split):
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
        needles = [needle(k, v) for k, v in zip(keys, values)]
        query = rng.randrange(len(keys))
        rng.shuffle(needles)
        meta = {"key": keys[query], "keys": keys, "values": values}
        if self.all_keys or (split == "train" and len(keys) > 1 and rng.random() < self.train_all_keys):
            return fit_haystack(rng, haystack, needles, self._all_keys_render(rng, keys, values, meta),
                                length, count)

        def render(context: str) -> Sample:
            prompt = f"{context} Question: what is the value of {keys[query]}? Answer:"
            return Sample(self.name, prompt, " " + values[query], (values[query],), meta)

        return fit_haystack(rng, haystack, needles, render, length, count)

    def _all_keys_render(self, rng, keys, values, meta):
        """Every key asked at once, in a random order: one sample then trains the lookup
        once per key instead of once (denser supervision for the same forward pass)."""
        order = rng.sample(range(len(keys)), len(keys))
        asked = ", ".join(keys[i] for i in order)
        answers = tuple(values[i] for i in order)

        def render(context: str) -> Sample:
            prompt = f"{context} Question: what are the values of {asked}? Answer:"
            return Sample(self.name, prompt, " " + ", ".join(answers), answers, meta)

        return render


register_task(KeyValueTask())
register_task(KeyValueTask(key_words=1, name="kv1"))  # one-word keys (split by word)
register_task(KeyValueTask(name="kv_strict", split_words=True))  # held-out keys of unseen words
register_task(KeyValueTask(distractors=1, name="kv_d1"))  # one distractor: the easiest selection
# A curriculum for training from scratch: training samples hold 0-3 distractor keys
# (uniformly), so the model first learns to copy a value, then to pick the right one;
# evaluation samples always hold 3, exactly like ``kv``.
register_task(KeyValueTask(name="kv_curriculum", train_min_distractors=0))
# The same without zero-distractor samples: every training sample needs the key to answer.
register_task(KeyValueTask(name="kv_curriculum1", train_min_distractors=1))
# The tiny default's training task: the curriculum, and half of the training samples ask
# for every key's value at once; evaluation samples are exactly ``kv``'s.
register_task(KeyValueTask(name="kv_dense", train_min_distractors=0, train_all_keys=0.5))
# Every key asked, in both splits: 4 values, about 22 response tokens (exposure bias).
register_task(KeyValueTask(name="kv_all", all_keys=True))
