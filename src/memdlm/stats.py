"""Intervals for paired comparisons: one bootstrap for the whole project, and a seed-level
t-interval beside it (a claim is reproduced only when both intervals exclude zero).

    d = compare([[b - a for a, b in zip(std_items, mem_items)] for each training seed])
    d["low"], d["high"]            # paired-item bootstrap interval
    d["seed_low"], d["seed_high"]  # t-interval over the seed means (NaN with one seed)
    verdict(d, better="higher")    # "reproduced" only when both intervals say so

Design. Every arm answers the same test items with the same per-item seeds, and every
training seed is evaluated on those same items. So:

1. **Items, paired across seeds.** One resample is one draw of n item indices with
   replacement; the *same* indices select the items of every seed (and of both arms,
   since a difference is taken per item). The resampled statistic is the mean over
   seeds of each seed's statistic on the drawn items. Seeds are not resampled: with
   three seeds a percentile bootstrap over seeds is far too narrow, so the seed-level
   uncertainty has its own interval (2).
2. **Seeds: a t-interval over the seed means**: ``mean +- t_{(1+c)/2, S-1} sd / sqrt(S)``
   with the exact Student-t quantile for integer degrees of freedom
   (:func:`t_quantile`). With one seed it is undefined (NaN), never invented.
3. **One random generator and one quantile rule**: NumPy's ``default_rng(seed)``
   (PCG64) draws the indices as one ``[resamples, n]`` array
   (:func:`resample_indices`); the interval is NumPy's default ("linear", type 7)
   quantile of the resampled statistics at ``(1 - c) / 2`` and ``(1 + c) / 2``;
   resamples whose statistic is NaN are left out. The same data therefore give the
   same interval wherever they are bootstrapped: the eval suite, the exposure-bias
   ratios, the reproduction's claims.
4. **A verdict is resolved only when both intervals are**, on the same side of zero
   (:func:`verdict`). Otherwise it is unresolved, and says which interval holds zero;
   with one seed it says the seed-level interval is undefined.

A statistic is ``statistic(group, idx) -> array``: ``group`` is one seed's data (any
object: a list of per-item values, a dict of per-item arrays), ``idx`` an integer array
``[B, n]`` of item indices (one row per resample), the result ``[B]`` or ``[B, ...]``
(e.g. one ratio per denoising step). :func:`item_mean` is the plain mean over items.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

RESAMPLES = 2000  # bootstrap resamples everywhere unless a caller asks otherwise
CONFIDENCE = 0.95

Statistic = Callable[[object, np.ndarray], np.ndarray]


def _check(confidence: float, resamples: int) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")


def resample_indices(n_items: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """``[resamples, n_items]`` item indices drawn with replacement: the project's one draw."""
    if n_items < 1:
        raise ValueError("the bootstrap needs at least one item")
    return np.random.default_rng(seed).integers(0, n_items, size=(resamples, n_items))


def item_mean(group, idx: np.ndarray) -> np.ndarray:
    """The mean over the selected items of one seed's per-item values: ``[B]``."""
    return np.asarray(group, dtype=np.float64)[idx].mean(-1)


def _seed_mean(values: list[np.ndarray]) -> np.ndarray:
    """Mean over seeds, ignoring NaN (NaN where every seed is NaN), without warnings."""
    stacked = np.stack(values)
    finite = ~np.isnan(stacked)
    count = finite.sum(0)
    total = np.where(finite, stacked, 0.0).sum(0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _quantiles(stats: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """The percentile interval along axis 0, NaN resamples left out (NaN if all are)."""
    q = [(1 - confidence) / 2, (1 + confidence) / 2]
    if not np.isnan(stats).any():
        lo, hi = np.quantile(stats, q, axis=0)
        return lo, hi
    flat = stats.reshape(stats.shape[0], -1)
    out = np.full((2, flat.shape[1]), np.nan)
    for j in range(flat.shape[1]):
        col = flat[~np.isnan(flat[:, j]), j]
        if col.size:
            out[:, j] = np.quantile(col, q)
    return out[0].reshape(stats.shape[1:]), out[1].reshape(stats.shape[1:])


def bootstrap(groups: Sequence, n_items: int, statistic: Statistic = item_mean,
              resamples: int = RESAMPLES, seed: int = 0, confidence: float = CONFIDENCE,
              indices: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(estimate, low, high) of the mean over seeds of ``statistic``, items paired across seeds.

    ``groups[s]`` is seed s's data on the same ``n_items`` items. ``indices`` (``[B,
    n_items]``) replaces the random draw (tests). Scalars for a ``[B]`` statistic,
    arrays for a ``[B, ...]`` one.
    """
    _check(confidence, resamples)
    if not groups:
        raise ValueError("the bootstrap needs at least one seed")
    idx = resample_indices(n_items, resamples, seed) if indices is None else np.asarray(indices)
    everything = np.arange(n_items)[None, :]  # [1, n]: the estimate on all items
    estimate = _seed_mean([np.asarray(statistic(g, everything), dtype=np.float64)[0] for g in groups])
    stats = _seed_mean([np.asarray(statistic(g, idx), dtype=np.float64) for g in groups])  # [B, ...]
    low, high = _quantiles(stats, confidence)
    return estimate, low, high


# --------------------------------------------------------------------------- seeds
def t_cdf_two_sided(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer ``df`` >= 1, exactly (Abramowitz and
    Stegun 26.7.3-4: a finite series in theta = atan(t / sqrt(df)))."""
    if df < 1 or int(df) != df:
        raise ValueError(f"df must be a positive integer, got {df}")
    theta = math.atan(abs(t) / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2:  # odd: (2/pi) [theta + sin(theta) (cos + 2/3 cos^3 + ... + cos^(df-2))]
        total, term = 0.0, math.cos(theta)
        for j in range(1, df - 1, 2):  # powers 1, 3, ..., df - 2
            total += term
            term *= (j + 1) / (j + 2) * c2
        return 2 / math.pi * (theta + math.sin(theta) * total)
    total, term = 0.0, 1.0  # even: sin(theta) [1 + 1/2 cos^2 + (1 3)/(2 4) cos^4 + ...]
    for j in range(0, df - 1, 2):  # powers 0, 2, ..., df - 2
        total += term
        term *= (j + 1) / (j + 2) * c2
    return math.sin(theta) * total


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with integer ``df`` (bisection on the exact CDF)."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p == 0.5:
        return 0.0
    target = abs(2 * p - 1)  # P(|T| <= t) for the upper quantile
    lo, hi = 0.0, 1.0
    while t_cdf_two_sided(hi, df) < target:
        lo, hi = hi, 2 * hi
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_cdf_two_sided(mid, df) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    return math.copysign((lo + hi) / 2, p - 0.5)


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """``mean +- t sd / sqrt(S)`` over the finite values (sd with S - 1); NaN with fewer than two."""
    _check(confidence, 1)
    xs = [float(x) for x in values if x is not None and not math.isnan(x)]
    if len(xs) < 2:
        return math.nan, math.nan
    mean = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
    half = t_quantile((1 + confidence) / 2, len(xs) - 1) * sd / math.sqrt(len(xs))
    return mean - half, mean + half


# ----------------------------------------------------------------- comparisons
def compare(groups: Sequence, statistic: Statistic = item_mean, n_items: int | None = None,
            resamples: int = RESAMPLES, seed: int = 0, confidence: float = CONFIDENCE,
            indices: np.ndarray | None = None) -> dict:
    """Both intervals of a scalar statistic, JSON-ready.

    ``groups``: one entry per training seed (default statistic: per-item differences,
    ``groups[s][i]`` = arm B - arm A on item i). Returns ``estimate`` (mean over seeds),
    ``low``/``high`` (paired-item bootstrap), ``seed_values`` (the statistic of each
    seed on all its items), ``seed_low``/``seed_high`` (t-interval; NaN with one seed),
    ``seeds``, ``items`` and ``confidence``.
    """
    if n_items is None:
        sizes = {len(g) for g in groups}
        if len(sizes) != 1:
            raise ValueError(f"every seed must hold the same items; got item counts {sorted(sizes)}")
        n_items = sizes.pop()
    estimate, low, high = bootstrap(groups, n_items, statistic, resamples, seed, confidence, indices)
    everything = np.arange(n_items)[None, :]
    seed_values = [float(np.asarray(statistic(g, everything), dtype=np.float64)[0]) for g in groups]
    seed_low, seed_high = t_interval(seed_values, confidence)
    return {"estimate": float(estimate), "low": float(low), "high": float(high),
            "seed_values": seed_values, "seed_low": seed_low, "seed_high": seed_high,
            "seeds": len(groups), "items": n_items, "confidence": confidence}


def paired_difference(a_by_seed: Sequence[Sequence[float]], b_by_seed: Sequence[Sequence[float]],
                      **kwargs) -> dict:
    """:func:`compare` of ``mean(b - a)``: ``a_by_seed[s][i]`` and ``b_by_seed[s][i]`` are the
    two arms' values on item i with training seed s (bools count as 0/1)."""
    if len(a_by_seed) != len(b_by_seed):
        raise ValueError(f"{len(a_by_seed)} seeds for one arm, {len(b_by_seed)} for the other")
    diffs = []
    for s, (a, b) in enumerate(zip(a_by_seed, b_by_seed)):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape or a.ndim != 1:
            raise ValueError(f"seed {s}: paired items need two equally long 1-d lists, got "
                             f"{a.shape} and {b.shape}")
        diffs.append(b - a)
    return compare(diffs, **kwargs)


def side(low: float, high: float) -> int:
    """+1 when the interval lies above zero, -1 below, 0 when it holds zero (or is NaN)."""
    if math.isnan(low) or math.isnan(high):
        return 0
    if low > 0:
        return 1
    if high < 0:
        return -1
    return 0


def interval_verdict(low: float, high: float, better: str = "higher") -> str:
    """One interval read against the paper's direction: ``reproduced`` (on its side of
    zero), ``opposite`` (on the other side), ``unresolved`` (it holds zero)."""
    if math.isnan(low) or math.isnan(high):
        return "not measured"
    s = side(low, high) * (1 if better == "higher" else -1)
    return {1: "reproduced", -1: "opposite", 0: "unresolved"}[s]


def verdict(d: dict | None, better: str = "higher") -> str:
    """The verdict of a :func:`compare` result: resolved only when the item bootstrap and
    the seed t-interval both lie on the same side of zero.

    ``reproduced`` / ``opposite`` (relative to the paper's direction ``better``), else
    ``unresolved: ...`` naming why: the item interval holds zero, the seed interval holds
    zero, they disagree, or there is one seed (no seed-level interval; the item
    interval's reading is added).
    """
    if d is None or math.isnan(d["low"]) or math.isnan(d["high"]):
        return "not measured"
    items = interval_verdict(d["low"], d["high"], better)
    if d["seeds"] < 2 or math.isnan(d["seed_low"]):
        return f"unresolved: one seed, no seed-level interval (items alone: {items})"
    seeds = interval_verdict(d["seed_low"], d["seed_high"], better)
    if items == seeds and items != "unresolved":
        return items
    if items == "unresolved" and seeds == "unresolved":
        return "unresolved"
    if items == "unresolved":
        return f"unresolved: the item interval holds 0 (seeds alone: {seeds})"
    if seeds == "unresolved":
        return f"unresolved: the seed interval holds 0 (items alone: {items})"
    return f"unresolved: items say {items}, seeds say {seeds}"


__all__ = ["RESAMPLES", "CONFIDENCE", "resample_indices", "item_mean", "bootstrap", "t_cdf_two_sided",
           "t_quantile", "t_interval", "compare", "paired_difference", "side", "interval_verdict",
           "verdict"]
