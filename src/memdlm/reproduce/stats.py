"""Intervals for paired comparisons over seeds and items, and the verdict they imply."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

NEAR_ZERO = 2.0  # score points: below this for both arms, a comparison says nothing


def nanmean(xs) -> float:
    """Mean of the values that are neither None nor NaN (NaN when none are)."""
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return sum(xs) / len(xs) if xs else math.nan


def seed_then_item_bootstrap(groups: Sequence, n_items: Callable[[object], int],
                             statistic: Callable[[object, Sequence[int]], float], n_boot: int = 2000,
                             seed: int = 0, confidence: float = 0.95) -> tuple[float, tuple[float, float]]:
    """An estimate over training seeds and its percentile interval, resampling seeds, then items.

    ``groups[s]`` holds seed s's paired per-item data (``n_items(group)`` items) and
    ``statistic(group, item_indices)`` reduces a selection of its items to a number.
    The estimate is the mean over seeds of the statistic on all items; each resample
    draws seeds with replacement, then items with replacement within each drawn seed,
    so the interval carries both the training-seed and the test-item variance. With
    one seed it is the plain bootstrap over items. NaN statistics are left out.
    """
    if not groups:
        return math.nan, (math.nan, math.nan)
    estimate = nanmean([statistic(g, range(n_items(g))) for g in groups])
    rng = random.Random(seed)
    stats = []
    for _ in range(n_boot):
        drawn = [groups[rng.randrange(len(groups))] for _ in groups]
        values = []
        for g in drawn:
            n = n_items(g)
            values.append(statistic(g, [rng.randrange(n) for _ in range(n)]))
        stats.append(nanmean(values))
    stats = sorted(x for x in stats if not math.isnan(x))
    if not stats:
        return estimate, (math.nan, math.nan)
    lo = stats[int((1 - confidence) / 2 * (len(stats) - 1))]
    hi = stats[int((1 + confidence) / 2 * (len(stats) - 1))]
    return estimate, (lo, hi)


def seed_item_bootstrap(diffs_by_seed: Sequence[Sequence[float]], n_boot: int = 2000, seed: int = 0,
                        confidence: float = 0.95) -> tuple[float, tuple[float, float]]:
    """Mean paired difference over seeds and items: ``diffs_by_seed[s][i]`` is (arm B -
    arm A) on item i with training seed s (:func:`seed_then_item_bootstrap` of the mean)."""
    groups = [list(map(float, g)) for g in diffs_by_seed if len(g)]
    return seed_then_item_bootstrap(groups, len, lambda g, idx: sum(g[i] for i in idx) / len(idx),
                                    n_boot, seed, confidence)


def verdict(low: float, high: float, better: str = "higher") -> str:
    """``reproduced`` when the interval lies on the paper's side of zero, ``opposite``
    when it lies on the other side, ``unresolved`` when it contains zero."""
    if math.isnan(low) or math.isnan(high):
        return "not measured"
    sign = 1 if better == "higher" else -1
    lo, hi = sorted((sign * low, sign * high))
    if lo > 0:
        return "reproduced"
    if hi < 0:
        return "opposite"
    return "unresolved"


def score_verdict(d: dict | None, better: str = "higher") -> str:
    """:func:`verdict` of a score comparison, or "both near 0" when neither arm scores."""
    if d is None:
        return "not measured"
    if d["both_near_zero"]:
        return f"both near 0 (< {NEAR_ZERO:g} points): nothing to compare"
    return verdict(d["low"], d["high"], better)
