"""Intervals for paired comparisons over seeds and items, and the verdict they imply."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence


def seed_item_bootstrap(diffs_by_seed: Sequence[Sequence[float]], n_boot: int = 2000, seed: int = 0,
                        confidence: float = 0.95) -> tuple[float, tuple[float, float]]:
    """Mean paired difference and its percentile interval, resampling seeds, then items.

    ``diffs_by_seed[s][i]`` is (arm B - arm A) on item i with training seed s. The
    estimate is the mean over seeds of each seed's mean over items; each resample draws
    seeds with replacement, then items with replacement within each drawn seed, so the
    interval carries both the training-seed and the test-item variance. With one seed
    it is the plain paired bootstrap over items.
    """
    groups = [list(map(float, g)) for g in diffs_by_seed if len(g)]
    if not groups:
        return math.nan, (math.nan, math.nan)
    estimate = sum(sum(g) / len(g) for g in groups) / len(groups)
    rng = random.Random(seed)
    stats = []
    for _ in range(n_boot):
        drawn = [groups[rng.randrange(len(groups))] for _ in groups]
        means = [sum(g[rng.randrange(len(g))] for _ in g) / len(g) for g in drawn]
        stats.append(sum(means) / len(means))
    stats.sort()
    lo = stats[int((1 - confidence) / 2 * (n_boot - 1))]
    hi = stats[int((1 + confidence) / 2 * (n_boot - 1))]
    return estimate, (lo, hi)


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
