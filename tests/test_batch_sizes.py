"""Inference batch sizes are written once (memdlm.config): every function's and command's
default reads one of the two constants, and they are the values the committed results record."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from memdlm.config import EVAL_BATCH_SIZE, GENERATION_BATCH_SIZE

ROOT = Path(__file__).resolve().parents[1]


def _default(fn) -> int:
    return inspect.signature(fn).parameters["batch_size"].default


def test_generation_functions_take_the_generation_batch():
    from memdlm.eval.heldout import evaluate_samples
    from memdlm.eval.lm_eval_model import MemdlmLM
    from memdlm.sampling.generation import generate

    assert {_default(generate), _default(evaluate_samples), _default(MemdlmLM.__init__)} == {GENERATION_BATCH_SIZE}


def test_item_by_item_evaluations_take_the_eval_batch():
    from memdlm.eval.exposure_bias import ExposureBiasConfig, exposure_bias_from_predictor, run_exposure_bias
    from memdlm.eval.item_loss import item_losses, temperature_nll
    from memdlm.eval.suite import evaluate_suite
    from memdlm.reproduce.probe import run_logprob_probe, run_probe

    functions = (evaluate_suite, item_losses, temperature_nll, run_exposure_bias, exposure_bias_from_predictor,
                 run_probe, run_logprob_probe)
    assert {_default(fn) for fn in functions} == {EVAL_BATCH_SIZE}
    assert ExposureBiasConfig().batch_size == EVAL_BATCH_SIZE


@pytest.mark.parametrize("module, expected", [
    ("memdlm.commands.generate", GENERATION_BATCH_SIZE), ("memdlm.commands.evaluate", EVAL_BATCH_SIZE)])
def test_command_flags_default_to_the_constants(module, expected):
    import importlib

    parser = importlib.import_module(module).build_parser("memdlm")
    assert parser.get_default("batch_size") == expected


def test_the_values_are_those_of_the_committed_results():
    suite = json.loads((ROOT / "docs/results/full/seed0/eval.json").read_text())
    bias = json.loads((ROOT / "docs/results/full/seed0/exposure_bias.json").read_text())
    metas = [r["meta"] for r in bias["results"].values()]
    assert suite["batch_size"] == EVAL_BATCH_SIZE == 8
    assert metas and {m["batch_size"] for m in metas} == {EVAL_BATCH_SIZE}
    assert GENERATION_BATCH_SIZE == 16  # memdlm generate / held-out accuracy since the first release
