"""Task interface, the train/eval split rule and length fitting."""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from memdlm.errors import ConfigError
from memdlm.tasks.haystack import FillerStream
from memdlm.tasks.haystack import default_haystack

TokenCounter = Callable[[str], int]
SPLITS = ("train", "eval")
EVAL_FRACTION_PERCENT = 25  # of every item pool (keys, values, names) held out for evaluation


@dataclass(frozen=True)
class Sample:
    """One generated example. ``response`` is the training target text;
    ``answers`` are the references the scorer looks for in a prediction."""

    task: str
    prompt: str
    response: str
    answers: tuple[str, ...]
    meta: dict = field(default_factory=dict)

    def to_row(self) -> dict:
        return {"task": self.task, "prompt": self.prompt, "response": self.response,
                "answers": list(self.answers), "meta": self.meta}


def split_of(item: str) -> str:
    """Stable train/eval assignment of a key, value or name (independent of seed)."""
    bucket = zlib.crc32(item.encode("utf-8")) % 100
    return "eval" if bucket < EVAL_FRACTION_PERCENT else "train"


def split_pool(items: list[str], split: str) -> list[str]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    pool = [x for x in items if split_of(x) == split]
    if not pool:
        raise ValueError(f"the {split} split of this pool is empty")
    return pool


def random_number(rng: random.Random, digits: int, split: str) -> str:
    """A ``digits``-digit number (no leading zero) from the requested split."""
    while True:
        value = str(rng.randrange(10 ** (digits - 1), 10**digits))
        if split_of(value) == split:
            return value


def fit_filler(
    build: Callable[[int], Sample], target_tokens: int, count: TokenCounter,
    max_filler: int = 1 << 16,
) -> Sample:
    """The sample with the most filler units (sentences, words, list entries) that fits.

    ``build(n)`` must return the sample with ``n`` filler units (deterministic in n),
    and its length (prompt + response tokens) should not shrink as n grows. Returns
    ``build(n)`` for the largest n <= ``max_filler`` whose length is <= the target, so
    the result falls short of the target by less than one unit. Search: jump by the
    estimated number of units left, then interpolate inside the bracket (bisecting
    when interpolation stalls) -- about 5 builds instead of binary search's 2 log2 n.
    """
    samples: dict[int, tuple[Sample, int]] = {}

    def length(n: int) -> int:
        if n not in samples:
            s = build(n)
            samples[n] = (s, count(s.prompt) + count(s.response))
        return samples[n][1]

    base = length(0)
    if base > target_tokens:
        raise ValueError(
            f"target length {target_tokens} tokens is shorter than the sample without filler "
            f"({base} tokens); ask for a longer context or fewer needles")
    # 1. bracket: length(lo) <= target < length(hi)
    lo, hi, n = 0, None, 1
    while hi is None:
        n = min(n, max_filler)
        if length(n) > target_tokens:
            hi = n
        elif n == max_filler:
            return samples[n][0]
        else:
            lo = n
            per_unit = max(length(n) - base, 1) / n
            n += max(1, int((target_tokens - length(n)) / per_unit) + 1)
    # 2. shrink the bracket to adjacent n
    bisect_next = False
    while hi - lo > 1:
        if bisect_next:
            mid = (lo + hi) // 2
        else:
            frac = (target_tokens - length(lo)) / max(length(hi) - length(lo), 1)
            mid = min(hi - 1, max(lo + 1, lo + int(frac * (hi - lo))))
        width = hi - lo
        if length(mid) <= target_tokens:
            lo = mid
        else:
            hi = mid
        bisect_next = (hi - lo) > width // 2
    return samples[lo][0]


def insert_at_random(
    rng: random.Random, filler: list[str], needles: list[str], keep_order: bool = True,
) -> list[str]:
    """Insert needles between filler sentences at random depths (order kept if asked)."""
    slots = sorted(rng.randrange(len(filler) + 1) for _ in needles)
    if not keep_order:
        needles = rng.sample(needles, len(needles))
    out, j = [], 0
    for i in range(len(filler) + 1):
        while j < len(needles) and slots[j] == i:
            out.append(needles[j])
            j += 1
        if i < len(filler):
            out.append(filler[i])
    return out


def fit_haystack(
    rng: random.Random, haystack, needles: list[str], render: Callable[[str], Sample],
    target_tokens: int, count: TokenCounter, keep_order: bool = True,
) -> Sample:
    """Hide ``needles`` in haystack filler and size the filler to ``target_tokens``.

    ``render(context)`` turns the context text (filler sentences and needles joined by
    spaces) into the sample. The filler is measured in words (see
    :class:`memdlm.tasks.haystack.FillerStream`), so the result falls short of the
    target by at most about one word's tokens. Needles go at uniformly random sentence
    boundaries (:func:`insert_at_random`), in the given order when ``keep_order``.
    """

    filler, depth_seed = FillerStream(haystack, rng.random()), rng.random()

    def build(n_words: int) -> Sample:
        body = insert_at_random(random.Random(depth_seed), filler.take(n_words), needles,
                                keep_order)
        return render(" ".join(body))

    return fit_filler(build, target_tokens, count)


class Task:
    """Base class. Subclasses set ``name`` and implement ``build``; every other behaviour
    below has a default, and code outside ``tasks/`` reads these attributes and nothing
    else about a task (never its class).

    - ``metric``: the scoring rule's name in :data:`memdlm.tasks.scoring.METRICS` (an
      unknown name fails when scored, listing the valid ones; tests/test_scoring.py checks
      the registered tasks' names);
    - ``plain_text``: every token of a sample is a denoising target (pre-training text:
      the prompt is not held fixed, and there is no answer to score);
    - ``fixed_slots``: the answer has a fixed number of token slots, so held-out decoding
      masks them all at once and fills them in ``decode_steps`` steps (otherwise one
      token per step, the model ending its answer with EOS);
    - ``labels``: the answer labels the ``babilong`` metric looks for;
    - ``reference_levels()``: the scores of guessing and of copying a context value, or None.
    """

    name = "base"
    metric = "string_match_all"
    plain_text = False
    fixed_slots = False
    decode_steps = 1
    labels: tuple[str, ...] = ()

    def reference_levels(self) -> dict[str, float] | None:
        """Scores (0-100) of the two non-solutions -- ``uniform`` guessing, ``copy``-ing a
        random context value -- that a score is read against; None: the task defines none."""
        return None

    def sample(self, seed: int, split: str, length: int, count: TokenCounter, haystack=None) -> Sample:
        """The sample for (seed, split, length): same arguments, same sample."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")

        haystack = haystack or default_haystack()
        rng = random.Random(f"{self.name}:{split}:{length}:{seed}")
        return self.build(rng, split, length, count, haystack)

    def build(self, rng, split, length, count, haystack) -> Sample:  # pragma: no cover
        raise NotImplementedError


_REGISTRY: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    _REGISTRY[task.name] = task
    return task


# Modules of this package that define no tasks and are not imported to register them:
# ``dataset`` (the torch Dataset over registered tasks) imports torch, which looking tasks
# up does not need. Every other module is imported, so a new generator module registers
# its tasks by existing.
NOT_GENERATORS = frozenset({"dataset"})


def _load_builtin() -> None:
    """Import every generator module of ``memdlm.tasks`` (each registers its tasks)."""
    import importlib
    import pkgutil
    from pathlib import Path

    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name not in NOT_GENERATORS:
            importlib.import_module(f"{__package__}.{info.name}")


def task_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_task(name: str) -> Task:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; choose one of {sorted(_REGISTRY)}") from None
