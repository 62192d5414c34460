"""Multi-query associative recall (MQAR; Arora et al. 2023, "Zoology"), in words.

A sample lists N key-value pairs, keys and values single-token words from disjoint
pools (nouns, adjectives), then asks Q < N of the keys, in random order:

    prompt:   " k1 v1 k2 v2 ... kN vN | q1 q2 ... qQ"
    response: " a1 a2 ... aQ"            (a_j is the value paired with q_j)

Why this shape:
- **Q < N**: with every key asked, a masked answer could be found by elimination --
  the one context value not yet used by the visible answers -- without matching any
  key. With some keys unasked, their values stay candidates, so only key matching
  beats the copy level 1/N.
- **One query by default, its answer right after it.** Answer j sits exactly Q tokens
  after its query. With Q = 1 the masked answer is the query's neighbour, which a
  bidirectional model sees through a local operator (the shipped base's trigram
  embedding) instead of a position-routing attention head it would first have to
  learn; docs/RESULTS.md ("The associative-recall base") has the measurements that
  made this the default. ``mqar_q4`` keeps the four-query layout (answers 4 tokens
  after their queries) as the harder variant.
- **Fixed N and Q per variant**, so every answer sits at a fixed offset from its query
  and the response has exactly Q slots (Q x W with W-word values).
- **Multi-word values** (``mqar_v3``: every value three adjectives, all words of a sample
  distinct): the first word sits next to the query, each later word next to the previous
  one, so an answer is found one word at a time -- a response whose tokens depend on
  each other, for the samplers (held-out decoding commits one word of each answer per
  step, W steps).
- **Fresh assignments, no held-out tokens.** The key-to-value assignment is random in
  every sample, so it cannot be memorised; held-out items are fresh seeds of the same
  pools (holding tokens out would test untrained embeddings instead).
- **Values drawn without replacement**, so "copy a random context value" scores exactly
  1/N and every prediction names at most one context pair (the diagnostic below).
- **Filler**: with a target length above the bare sample, filler words (names and
  verbs, never keys or values) go between the pairs, which sit at random depths in
  their original order; the length is counted in the model's tokens like every task.

Scoring (:func:`recall_report`): per-query accuracy (answer j read as the j-th word of
the prediction) and all-correct accuracy, beside the two reference levels -- uniform
guessing (1/|values|) and copying a random context value (1/N) -- and how often a
prediction is the queried value, another context value or a word outside the context.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import lru_cache

from memdlm.data import words
from memdlm.tasks.base import Sample, Task, fit_filler, insert_at_random, register_task
from memdlm.tasks.base import get_task

QUERY_MARK = "|"


@lru_cache(maxsize=1)
def pools() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(keys, values, filler): disjoint word pools (words in two lists are dropped)."""
    nouns, adjectives = set(words.NOUNS), set(words.ADJECTIVES)
    keys = tuple(sorted(nouns - adjectives))
    values = tuple(sorted(adjectives - nouns))
    taken = nouns | adjectives
    filler = tuple(sorted({w for w in words.FIRST_NAMES + words.CWE_VERBS
                           if w.isalpha() and w.lower() not in taken}))
    return keys, values, filler


class AssociativeRecallTask(Task):
    metric = "recall"
    fixed_slots = True  # exactly Q answer words: held-out decoding fills them all at once

    def __init__(self, name: str, pairs: int, queries: int = 1, value_words: int = 1):
        if value_words < 1:
            raise ValueError(f"{name}: value_words must be >= 1 (got {value_words})")
        if not 1 <= queries < pairs:
            raise ValueError(f"{name}: need 1 <= queries < pairs (got {queries} of {pairs}); "
                             "asking every key lets answers be found by elimination")
        self.name, self.pairs, self.queries, self.value_words = name, pairs, queries, value_words

    @property
    def decode_steps(self) -> int:
        """Held-out decoding steps: one word of every answer per step (1 for one-word values)."""
        return self.value_words

    def reference_levels(self) -> dict[str, float]:
        """Per-query accuracy (0-100) of the two non-solutions every score is read against."""
        return {"uniform": 100.0 / len(pools()[1]) ** self.value_words, "copy": 100.0 / self.pairs}

    def build(self, rng, split, length, count, haystack):
        key_pool, value_pool, filler_pool = pools()
        keys = rng.sample(key_pool, self.pairs)
        words_ = rng.sample(value_pool, self.pairs * self.value_words)  # = rng.sample(pool, N) for W = 1
        w = self.value_words
        values = [" ".join(words_[i * w:(i + 1) * w]) for i in range(self.pairs)]
        asked = rng.sample(range(self.pairs), self.queries)
        pair_texts = [f"{k} {v}" for k, v in zip(keys, values)]
        filler_seed, depth_seed = rng.random(), rng.random()
        answers = tuple(values[i] for i in asked)
        meta = {"keys": keys, "values": values, "asked": asked}
        tail = f" {QUERY_MARK} {' '.join(keys[i] for i in asked)}"
        response = " " + " ".join(answers)

        def build_n(n_filler: int) -> Sample:
            filler = random.Random(filler_seed).choices(filler_pool, k=n_filler)
            body = insert_at_random(random.Random(depth_seed), filler, pair_texts)
            return Sample(self.name, " " + " ".join(body) + tail, response, answers, meta)

        return fit_filler(build_n, length, count)


def prediction_words(text: str, n: int, words_per_answer: int = 1) -> list[str]:
    """The first ``n`` answers of a prediction, each ``words_per_answer`` words, lower-cased
    (as every scorer here compares), padded with "" (a missing answer is wrong)."""
    found = text.lower().split()[:n * words_per_answer]
    found += [""] * (n * words_per_answer - len(found))
    w = words_per_answer
    return [" ".join(found[i * w:(i + 1) * w]).strip() for i in range(n)]


def recall_report(predictions: Sequence[str], samples: Sequence, task: AssociativeRecallTask | None = None
                  ) -> dict:
    """Per-query and all-correct accuracy (0-100) with the reference levels and where the
    wrong answers came from. ``samples`` are recall :class:`Sample` objects (or row dicts);
    ``task``: theirs, or None to look it up by the first sample's task name (rows exported
    to lm-eval carry no name: the caller passes the task)."""
    if len(predictions) != len(samples):
        raise ValueError(f"{len(predictions)} predictions but {len(samples)} samples")
    if not samples:
        raise ValueError("nothing to score: no predictions")
    counts = {"queried": 0, "other_context": 0, "outside": 0}
    all_correct = 0
    for text, sample in zip(predictions, samples):
        row = sample if isinstance(sample, dict) else sample.to_row()
        task = task or get_recall_task(row["task"])
        answers = [a.lower() for a in row["answers"]]
        context_values = {v.lower() for v in row["meta"]["values"]}
        guesses = prediction_words(text, len(answers), task.value_words)
        hits = [g == a for g, a in zip(guesses, answers)]
        all_correct += all(hits)
        for guess, hit in zip(guesses, hits):
            kind = "queried" if hit else "other_context" if guess in context_values else "outside"
            counts[kind] += 1
    total = sum(counts.values())
    return {
        "per_query": 100.0 * counts["queried"] / total,
        "all_correct": 100.0 * all_correct / len(samples),
        "reference": task.reference_levels(),
        "chose": {k: 100.0 * v / total for k, v in counts.items()},
        "queries": total,
        "items": len(samples),
    }


def get_recall_task(name: str) -> AssociativeRecallTask:

    task = get_task(name)
    if not isinstance(task, AssociativeRecallTask):
        raise ValueError(f"task {name!r} is not an associative-recall task")
    return task


# The base task: 8 pairs, one asked (copy level 12.5%). Long-context variants add pairs
# here and filler through the length; mqar_q4 asks four keys at once.
register_task(AssociativeRecallTask("mqar", pairs=8))
register_task(AssociativeRecallTask("mqar4", pairs=4))
register_task(AssociativeRecallTask("mqar16", pairs=16))
register_task(AssociativeRecallTask("mqar32", pairs=32))
register_task(AssociativeRecallTask("mqar64", pairs=64))
register_task(AssociativeRecallTask("mqar_q4", pairs=8, queries=4))
register_task(AssociativeRecallTask("mqar_v3", pairs=8, value_words=3))
