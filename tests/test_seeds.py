"""Seed ranges (memdlm.tasks.seeds): every pair of uses draws disjoint item seeds in its split,
except the two declared shared bases, whose uses draw different tasks; the values are the
ones the committed results were made with; every use reads its seed from there."""

from __future__ import annotations

import inspect
import itertools
import json
from pathlib import Path

import pytest

from memdlm.tasks import seeds
from memdlm.tasks.seeds import RANGES, SHARED, SeedRange, item_seed

ROOT = Path(__file__).resolve().parents[1]


def test_item_seed_ranges_by_hand():
    assert item_seed(2, 5) == 2 * 1_000_003 + 5
    one = SeedRange("a", "eval", 3, items=10)
    assert one.item_seeds() == range(3_000_009, 3_000_019)
    many = SeedRange("b", "eval", 3, items=10, bases=2)  # bases 3 and 4
    assert many.item_seeds() == range(3_000_009, 4_000_022)
    direct = SeedRange("c", "eval", 70, items=5, direct=True)
    assert direct.item_seeds() == range(70, 75)
    # adjacent bases touch only when a base draws a full stride of items
    full = SeedRange("d", "eval", 4, items=seeds.ITEM_STRIDE)
    assert not full.overlaps(SeedRange("e", "eval", 5)) and full.overlaps(SeedRange("f", "eval", 4, items=1))
    assert not one.overlaps(SeedRange("g", "train", 3))  # another split never overlaps


def test_every_pair_of_ranges_is_disjoint_but_the_declared_shared_ones():
    names = [r.name for r in RANGES]
    assert len(set(names)) == len(names)
    overlapping = {frozenset({a.name, b.name}) for a, b in itertools.combinations(RANGES, 2) if a.overlaps(b)}
    assert overlapping == SHARED  # a new overlap fails here; so does a shared pair that no longer is


def test_the_eval_loss_bases_end_below_the_test_items():
    eval_loss = next(r for r in RANGES if r.name == "eval_loss")
    assert seeds.EVAL_LOSS_SEED + seeds.TRAIN_SEED_LIMIT - 1 < seeds.HELDOUT_SEED
    assert eval_loss.item_seeds().stop <= item_seed(seeds.HELDOUT_SEED, 0)


def test_shared_bases_draw_different_tasks():
    """dev / exposure (60,000) and probe / provenance (70,000) share item seeds; the task name
    seeds every sample, so they share no item while their tasks differ."""
    from memdlm.eval.exposure_bias import EXPOSURE_TASK
    from memdlm.reproduce.presets import PRESETS

    for preset in PRESETS.values():
        assert preset.eb_task not in preset.eval_tasks and EXPOSURE_TASK not in preset.eval_tasks
    provenance = {entry["task"] for path in (ROOT / "src/memdlm/assets/models").glob("*/provenance.json")
                  for entry in json.loads(path.read_text())["heldout"].values()}
    assert provenance and not provenance & {p.probe_task for p in PRESETS.values()}


def test_the_values_are_those_of_the_committed_results():
    full = ROOT / "docs/results/full"
    assert json.loads((full / "dev.json").read_text())["seed"] == seeds.DEV_SEED == 60_000
    assert json.loads((full / "seed0/eval.json").read_text())["seed"] == seeds.HELDOUT_SEED == 50_000
    for path in (ROOT / "src/memdlm/assets/models").glob("*/provenance.json"):
        entries = json.loads(path.read_text())["heldout"].values()
        assert {e["seed"] for e in entries} == {seeds.PROVENANCE_SEED}
    assert (seeds.EVAL_LOSS_SEED, seeds.EXPOSURE_SEED, seeds.EXPOSURE_CALIBRATION_SEED, seeds.PROBE_SEED,
            seeds.CURVE_SEED) == (10_000, 60_000, 65_000, 70_000, 80_000)


def test_every_use_reads_its_default_from_the_seeds_module(tok):
    from memdlm.eval.exposure_bias import heldout_pairs
    from memdlm.eval.heldout import heldout_samples
    from memdlm.eval.lm_eval_tasks import export_tasks
    from memdlm.tasks.dataset import SyntheticTaskDataset

    def default(fn, name="seed"):
        return inspect.signature(fn).parameters[name].default

    assert default(heldout_samples) == seeds.HELDOUT_SEED
    assert default(heldout_pairs) == seeds.EXPOSURE_SEED
    assert default(export_tasks) == seeds.EXPORT_SEED
    ds = SyntheticTaskDataset(tok, ["mqar"], [19], "eval", 3, seed=7)
    assert [ds[i]["sample_seed"] for i in range(3)] == [item_seed(7, i) for i in range(3)]


@pytest.mark.parametrize("path, name", [
    ("src/memdlm/reproduce/pipeline.py", "DEV_SEED"),
    ("src/memdlm/reproduce/pipeline.py", "EXPOSURE_CALIBRATION_SEED"),
    ("src/memdlm/reproduce/probe.py", "PROBE_SEED"),
    ("src/memdlm/training/train.py", "EVAL_LOSS_SEED"),
    ("scripts/ship_model.py", "PROVENANCE_SEED"),
    ("scripts/ship_model.py", "UNIGRAM_REFERENCE_SEED"),
    ("scripts/recall_curve.py", "CURVE_SEED"),
])
def test_scripts_and_cells_import_their_seed(path, name):
    """Each use names the constant (imported from memdlm.tasks.seeds), never a number of its own."""
    text = (ROOT / path).read_text()
    assert "from memdlm.tasks.seeds import" in text and name in text
    assert f"{name} = " not in text
