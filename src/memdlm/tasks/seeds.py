"""Which item seeds each use of the generated tasks draws: every seed range in one place.

A generated sample is a pure function of (task, split, length, item seed)
(:meth:`memdlm.tasks.base.Task.sample`). A dataset with base seed ``b``
(:class:`memdlm.tasks.dataset.SyntheticTaskDataset`, and everything built on it:
training data, the evaluation loss, held-out, dev, probe and exposure-bias items)
gives its item ``i`` the item seed ``b * ITEM_STRIDE + i`` (:func:`item_seed`), so
two bases share no item while each draws fewer than ``ITEM_STRIDE`` items. The
lm-eval export alone numbers its items directly (item seeds ``EXPORT_SEED + i``).

Uses that must not see each other's items take disjoint ranges of item seeds within
a split (:data:`RANGES`; ``tests/test_seeds.py`` checks every pair). The values are
those that made the committed results (docs/results, the shipped models'
provenance), so none may change without recomputing them. Two bases are shared,
each by uses that draw different tasks, and the task name is part of every sample's
random stream, so no item is shared (:data:`SHARED`):

- 60,000: the reproduction's dev items (its ``eval_tasks``, e.g. ``mqar64``) and the
  exposure-bias items (``prose_cont`` / ``longresp``). Moving either would change the
  committed ``dev.json`` or every ``exposure_bias.json`` (and the report built on them).
- 70,000: the reproduction's retrieval probe (``mqar64``) and the shipped models'
  provenance (``mqar``, ``prose_cont``). Moving either would change the committed
  ``probe.json`` cells or the held-out numbers in ``assets/models/*/provenance.json``.
"""

from __future__ import annotations

from dataclasses import dataclass

# Item seeds of one dataset base: b * ITEM_STRIDE + i, i < ITEM_STRIDE (more items than any
# use draws: training's default is 200,000).
ITEM_STRIDE = 1_000_003

TRAIN_SEED_LIMIT = 40_000  # training seeds 0 .. 39,999 keep their evaluation-loss bases below HELDOUT_SEED
EVAL_LOSS_SEED = 10_000  # the evaluation loss during training: base EVAL_LOSS_SEED + the training seed
HELDOUT_SEED = 50_000  # test items: held-out accuracy after training, memdlm eval, the reproduction's 2 x 2
DEV_SEED = 60_000  # the reproduction's dev items (operating-point check); shares its base with EXPOSURE_SEED
EXPOSURE_SEED = 60_000  # exposure-bias items; shares its base with DEV_SEED (different tasks)
EXPOSURE_CALIBRATION_SEED = 65_000  # the exposure-bias temperature fits, apart from the analysed items
PROBE_SEED = 70_000  # the reproduction's in-weight retrieval probe; shares its base with PROVENANCE_SEED
PROVENANCE_SEED = 70_000  # held-out numbers of a shipped model (scripts/ship_model.py)
CURVE_SEED = 80_000  # scripts/recall_curve.py: recall against context length
UNIGRAM_REFERENCE_SEED = 0  # scripts/ship_model.py: the items a unigram reference loss counts (eval split)
UNIGRAM_REFERENCE_ITEMS = 200
EXPORT_SEED = 70_000  # lm-eval export: item seeds EXPORT_SEED + i (direct, not a dataset base)


def item_seed(base: int, index: int) -> int:
    """The item seed of a dataset's item ``index`` at base seed ``base``."""
    return base * ITEM_STRIDE + index


@dataclass(frozen=True)
class SeedRange:
    """The item seeds one use draws in one split: ``bases`` consecutive dataset bases
    from ``first``, at most ``items`` items each; or, ``direct``, item seeds
    ``first .. first + items - 1``."""

    name: str
    split: str
    first: int
    items: int = ITEM_STRIDE
    bases: int = 1
    direct: bool = False

    def item_seeds(self) -> range:
        if self.direct:
            return range(self.first, self.first + self.items)
        last = self.first + self.bases - 1
        return range(item_seed(self.first, 0), item_seed(last, self.items))

    def overlaps(self, other: SeedRange) -> bool:
        a, b = self.item_seeds(), other.item_seeds()
        return self.split == other.split and a.start < b.stop and b.start < a.stop


RANGES = (
    SeedRange("train", "train", 0, bases=TRAIN_SEED_LIMIT),
    SeedRange("eval_loss", "eval", EVAL_LOSS_SEED, bases=TRAIN_SEED_LIMIT),
    SeedRange("heldout", "eval", HELDOUT_SEED),
    SeedRange("dev", "eval", DEV_SEED),
    SeedRange("exposure", "eval", EXPOSURE_SEED),
    SeedRange("exposure_calibration", "eval", EXPOSURE_CALIBRATION_SEED),
    SeedRange("probe", "eval", PROBE_SEED),
    SeedRange("provenance", "eval", PROVENANCE_SEED),
    SeedRange("curve", "eval", CURVE_SEED),
    SeedRange("unigram_reference", "eval", UNIGRAM_REFERENCE_SEED, items=UNIGRAM_REFERENCE_ITEMS),
    # up to the first base's items: disjoint from every dataset base >= 1
    SeedRange("export", "eval", EXPORT_SEED, items=ITEM_STRIDE - EXPORT_SEED, direct=True),
)

# Pairs of ranges that share item seeds, each drawing tasks the other never draws (the task
# name seeds every sample's stream). tests/test_seeds.py checks that the reproduction's
# presets and the shipped provenance keep them apart.
SHARED = frozenset({frozenset({"dev", "exposure"}), frozenset({"probe", "provenance"})})
