"""The project's one bootstrap and the seed t-interval (memdlm.stats), checked by hand, and
that every caller (eval suite, exposure-bias ratios, reproduction) goes through it."""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import pytest

from memdlm.stats import (
    bootstrap,
    compare,
    item_mean,
    paired_difference,
    resample_indices,
    t_cdf_two_sided,
    t_interval,
    t_quantile,
    verdict,
)


def _linear_quantile(sorted_values, q):
    """Type-7 quantile by hand: position q (n - 1), linear between the neighbours."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (pos - lo) * (sorted_values[hi] - sorted_values[lo])


def test_bootstrap_pairs_items_across_seeds_by_hand():
    # Two training seeds, the same three items; per-item differences (arm B - arm A).
    seed0, seed1 = [1.0, 0.0, 4.0], [3.0, 2.0, 0.0]
    idx = np.array([[0, 0, 1], [2, 2, 2], [0, 1, 2], [1, 1, 0]])  # 4 resamples, injected
    # Each resample picks the *same* items in both seeds, then averages the two seed means:
    # [0,0,1]: seed0 (1+1+0)/3 = 2/3, seed1 (3+3+2)/3 = 8/3 -> 5/3
    # [2,2,2]: 4 and 0 -> 2;  [0,1,2]: 5/3 and 5/3 -> 5/3;  [1,1,0]: 1/3 and 7/3 -> 4/3
    by_hand = sorted([5 / 3, 2.0, 5 / 3, 4 / 3])
    est, lo, hi = bootstrap([seed0, seed1], 3, indices=idx, confidence=0.5)
    assert est == pytest.approx((5 / 3 + 5 / 3) / 2)
    assert lo == pytest.approx(_linear_quantile(by_hand, 0.25))  # 4/3 + 0.75 (1/3) = 1.583
    assert hi == pytest.approx(_linear_quantile(by_hand, 0.75))  # 5/3 + 0.25 (1/3) = 1.75
    assert (lo, hi) == pytest.approx((19 / 12, 7 / 4))


def test_bootstrap_exact_enumeration_of_two_items():
    # All 4 ordered draws of 2 items from 2: means 0, 0.5, 0.5, 1 (values 0 and 1).
    idx = np.array(list(product(range(2), repeat=2)))
    est, lo, hi = bootstrap([[0.0, 1.0]], 2, indices=idx, confidence=0.5)
    assert (est, lo, hi) == (0.5, 0.375, 0.625)  # quantiles 0.25 and 0.75 of [0, .5, .5, 1]


def test_paired_items_across_seeds_do_not_narrow_with_copies_of_a_seed():
    rng = np.random.default_rng(3)
    diffs = rng.normal(1.0, 2.0, size=40).tolist()
    one = compare([diffs])
    three = compare([diffs, diffs, diffs])  # three seeds that agree item for item
    # Resampling the same items in every seed: identical seeds add no information. (Drawing
    # items independently per seed would shrink the interval by about sqrt(3).)
    assert (three["low"], three["high"]) == pytest.approx((one["low"], one["high"]))
    assert three["seed_low"] == three["seed_high"] == pytest.approx(np.mean(diffs))  # sd 0


def test_resample_indices_are_the_one_seeded_draw():
    a = resample_indices(7, 50, seed=4)
    assert a.shape == (50, 7) and a.min() >= 0 and a.max() < 7
    assert np.array_equal(a, resample_indices(7, 50, seed=4))
    assert np.array_equal(a, np.random.default_rng(4).integers(0, 7, size=(50, 7)))
    assert not np.array_equal(a, resample_indices(7, 50, seed=5))


def test_t_quantiles_against_closed_forms_and_the_table():
    p = 0.975
    assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-10)  # 12.706
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-10)  # 4.303
    for df, table in ((3, 3.182446), (4, 2.776445), (5, 2.570582), (10, 2.228139), (30, 2.042272)):
        assert t_quantile(p, df) == pytest.approx(table, abs=2e-6)
    assert t_quantile(0.025, 4) == pytest.approx(-2.776445, abs=2e-6)
    assert t_cdf_two_sided(0.0, 3) == 0.0 and t_cdf_two_sided(1e9, 3) == pytest.approx(1.0)


def test_t_interval_by_hand_and_undefined_with_one_seed():
    # mean 2, sd 1, se 1/sqrt(3), t_{0.975, 2} = 4.302653
    lo, hi = t_interval([1.0, 2.0, 3.0])
    half = 4.302653 / math.sqrt(3)
    assert (lo, hi) == pytest.approx((2 - half, 2 + half), abs=1e-6)
    assert all(math.isnan(x) for x in t_interval([1.0]))
    d = compare([[1.0, 2.0, 3.0]])
    assert math.isnan(d["seed_low"]) and d["seeds"] == 1 and d["seed_values"] == [2.0]


def test_verdict_needs_both_intervals():
    def d(lo, hi, slo, shi, seeds=3):
        return {"estimate": (lo + hi) / 2, "low": lo, "high": hi, "seed_low": slo, "seed_high": shi,
                "seeds": seeds}

    assert verdict(d(0.1, 0.5, 0.2, 0.4)) == "reproduced"
    assert verdict(d(-0.5, -0.1, -0.4, -0.2)) == "opposite"
    assert verdict(d(-0.5, -0.1, -0.4, -0.2), better="lower") == "reproduced"
    assert verdict(d(0.1, 0.5, -0.2, 0.4)) == "unresolved: the seed interval holds 0 (items alone: reproduced)"
    assert verdict(d(-0.1, 0.5, 0.2, 0.4)) == "unresolved: the item interval holds 0 (seeds alone: reproduced)"
    assert verdict(d(-0.1, 0.5, -0.2, 0.4)) == "unresolved"
    assert verdict(d(0.1, 0.5, -0.4, -0.2)).startswith("unresolved: items say reproduced, seeds say opposite")
    one = d(0.1, 0.5, math.nan, math.nan, seeds=1)
    assert verdict(one) == "unresolved: one seed, no seed-level interval (items alone: reproduced)"
    assert verdict(None) == "not measured"


def test_the_old_overclaim_is_unresolved_now():
    # Three seeds on the same items, each with a clear item-level effect in a different
    # direction: the seed-level t-interval holds 0, so the verdict is not resolved.
    rng = np.random.default_rng(0)
    seeds = [(rng.normal(m, 1.0, 200)).tolist() for m in (-3.0, -2.0, 0.5)]
    d = compare(seeds)
    assert d["high"] < 0  # the item bootstrap alone would call it
    assert d["seed_low"] < 0 < d["seed_high"]
    assert verdict(d).startswith("unresolved")


# -- every caller uses it: same data, same interval -------------------------------------------


def test_suite_and_reproduction_give_the_same_interval_on_the_same_items():
    from memdlm.eval.suite import paired_bootstrap
    from memdlm.reproduce.report import score_difference

    a = [0.0, 100.0, 0.0, 100.0, 100.0, 0.0, 0.0, 100.0]
    b = [100.0, 100.0, 0.0, 100.0, 100.0, 100.0, 0.0, 100.0]
    suite = paired_bootstrap(a, b)
    shared = paired_difference([a], [b])
    cell = {"task": "kv", "length": 128, "skipped": None, "item_keys": [str(i) for i in range(len(a))],
            "results": {"Standard": {"item_scores": a}, "MemDLM Train-Only": {"item_scores": b}}}
    ev = {"runs": [{"name": "Standard", "model_dir": "s"}, {"name": "MemDLM Train-Only", "model_dir": "m"}],
          "cells": [cell]}
    repro = score_difference({0: {"eval": ev}}, "MemDLM Train-Only", [128])
    assert suite == (shared["estimate"], (shared["low"], shared["high"]))
    assert (repro["estimate"], repro["low"], repro["high"]) == (shared["estimate"], shared["low"], shared["high"])


def test_exposure_bias_ratio_intervals_are_the_shared_bootstrap():
    from memdlm.eval.exposure_bias import ExposureBiasResult

    rng = np.random.default_rng(1)
    items, steps = 9, 3
    per_item = {k: rng.uniform(0.5, 2.0, (items, steps)).tolist()
                for k in ("l_seq", "l_static", "l_static_same", "l_seq_random", "l_static_same_random")}
    per_item["masked"] = [[3, 2, 1]] * items
    losses = {k: np.mean(v, 0).tolist() for k, v in per_item.items() if k != "masked"}
    res = ExposureBiasResult(steps, list(range(items)), [3] * items, losses, per_item)
    ci = res.ratio_intervals(resamples=300, seed=2)["r_eb"]  # [S][2]
    # by hand from the project's one draw and the linear quantile rule
    idx = resample_indices(items, 300, seed=2)
    seq, static = np.asarray(per_item["l_seq"]), np.asarray(per_item["l_static"])
    ratios = seq[idx].mean(1) / static[idx].mean(1)  # [B, S]
    expected = np.quantile(ratios, [0.025, 0.975], axis=0).T
    assert np.allclose(ci, expected)
    assert res.to_dict(bootstrap=300)["r_eb_ci"] == res.ratio_intervals(resamples=300)["r_eb"]
    gaps = res.gaps()
    assert gaps["gap"] == pytest.approx([a - b for a, b in zip(losses["l_seq"], losses["l_static"])])


def test_item_mean_statistic():
    assert item_mean([1.0, 3.0, 5.0], np.array([[0, 2], [1, 1]])).tolist() == [3.0, 3.0]
