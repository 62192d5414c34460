"""``bash scripts/gpu_check.sh --tiny``: the GPU check's code on the CPU, so it is known to run
before a GPU is lent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_tiny_prints_one_json_object():
    out = subprocess.run(["bash", str(ROOT / "scripts/gpu_check.sh"), "--tiny"], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["device"] == "cpu" and result["dtype"] == "float32"
    assert [(r["tokens"], r["checkpointing"]) for r in result["train"]] == [
        (96, False), (96, True), (128, False), (128, True)]
    for row in result["train"]:
        assert row["mdlm_step_s"] > 0 and row["memdlm_step_s"] > 0
        assert row["time_ratio"] == round(row["memdlm_step_s"] / row["mdlm_step_s"], 3)
    assert set(result["sampling"]) == {"fixed", "threshold", "threshold_dual_cache"}
    assert all(v["tokens_per_s"] > 0 for v in result["sampling"].values())
    adaptation = result["adaptation"]
    assert adaptation["batched_prompts_per_s"] > 0 and adaptation["sequential_prompts_per_s"] > 0
    assert result["model"]["class"] == "LlamaForCausalLM" and result["model"]["vocab_size"] == 126464
    assert result["wall_s"] < 300
