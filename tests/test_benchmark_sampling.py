"""benchmarks/sampling.py: the configuration grid and the speed-up at equal accuracy, by hand."""

from __future__ import annotations

import pytest
from file_modules import load_file


@pytest.fixture(scope="module")
def bench():
    return load_file("benchmarks/sampling.py", "bench_sampling")


def test_grid_has_fixed_steps_then_thresholds_per_cache(bench):
    grid = bench.sampler_grid(8, [0.5, 0.9], ["none", "dual"])
    assert [bench.label(g) for g in grid] == [
        "fixed S=8, cache none", "fixed S=8, cache dual", "fixed S=4, cache none", "fixed S=4, cache dual",
        "fixed S=2, cache none", "fixed S=2, cache dual", "threshold tau=0.5, cache none",
        "threshold tau=0.5, cache dual", "threshold tau=0.9, cache none", "threshold tau=0.9, cache dual"]
    assert [g["steps"] for g in bench.sampler_grid(3, [], ["none"])] == [3, 1]  # N/2 = N/4 = 1: once
    assert [g["steps"] for g in bench.sampler_grid(4, [], ["none"], blocks=2)] == [4, 2]  # a step per block


def row(rule, cache, score, calls, seconds, memory=False, **kw):
    config = {"unmask_rule": rule, "cache": cache, **kw}
    return {"config": bench_label(config), **config, "memory": memory, "score": score,
            "calls_per_item": calls, "seconds": seconds}


def bench_label(config):
    if config["unmask_rule"] == "fixed":
        return f"fixed S={config['steps']}, cache {config['cache']}"
    return f"threshold tau={config['threshold']}, cache {config['cache']}"


def test_speedup_at_equal_accuracy(bench):
    rows = [row("fixed", "none", 80.0, 8.0, 4.0, steps=8),
            row("fixed", "dual", 79.5, 8.0, 2.0, steps=8),
            row("fixed", "none", 70.0, 2.0, 1.0, steps=2),  # too inaccurate: 10 points below
            row("threshold", "none", 79.0, 3.0, 1.6, threshold=0.9),  # exactly 1 point below: counts
            row("threshold", "dual", 78.9, 2.5, 0.9, threshold=0.9),  # 1.1 points below: does not
            row("fixed", "none", 60.0, 8.0, 5.0, steps=8, memory=True),
            row("threshold", "none", 61.0, 4.0, 2.5, threshold=0.5, memory=True)]
    got = bench.speedups(rows, tolerance=1.0)
    assert got["no_memory"]["fewest_calls"] == "threshold tau=0.9, cache none"
    assert got["no_memory"]["speedup_calls"] == 2.67
    assert got["no_memory"]["fastest"] == "threshold tau=0.9, cache none"
    assert got["no_memory"]["speedup_time"] == round(4.0 / 1.6, 2)
    assert got["memory"]["speedup_calls"] == 2.0 and got["memory"]["speedup_time"] == 2.0
    assert got["no_memory"]["informative"] and got["memory"]["informative"]
    zero = [dict(r, score=0.0) for r in rows]
    assert not bench.speedups(zero, tolerance=1.0)["no_memory"]["informative"]


def test_median_seconds_over_rounds(bench):
    a = [row("fixed", "none", 50.0, 4.0, 3.0, steps=4)]
    rounds = [a, [dict(a[0], seconds=1.0)], [dict(a[0], seconds=2.0)]]
    assert bench.median_seconds(rounds)[0]["seconds"] == 2.0
    with pytest.raises(AssertionError, match="disagree"):
        bench.median_seconds([a, [dict(a[0], score=49.0)]])
