"""benchmarks/ruler_cost.py: its defaults are the paper's setting, and its timer counts every request."""

from __future__ import annotations

import pytest
from file_modules import load_file


@pytest.fixture(scope="module")
def bench():
    return load_file("benchmarks/ruler_cost.py", "bench_ruler_cost")


def test_defaults_are_one_ruler_task_at_4096_tokens_with_and_without_memory(bench):
    args = bench.parse_args([])
    assert (args.task, args.length, args.memory, args.model) == ("ruler_vt", 4096, "both", "mqar-base")


def test_timer_counts_every_request_and_passes_answers_through(bench):
    class FakeLM:
        def generate_until(self, requests):
            return [f"answer {r}" for r in requests]

    lm = FakeLM()
    spent = bench.timed_generation(lm)
    assert lm.generate_until(["a", "b", "c"]) == ["answer a", "answer b", "answer c"]
    assert lm.generate_until(["d"]) == ["answer d"]
    assert spent["requests"] == 4 and spent["seconds"] >= 0
