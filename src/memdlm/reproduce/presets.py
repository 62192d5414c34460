"""The mini reproduction's presets: every knob of one run, fixed before any test result.

A preset is data, not code: the pipeline reads nothing else, its JSON form is hashed
into the report (``config_hash``), and a cached cell is reused only while the hash of
the settings it depends on is unchanged. How the operating point was chosen (on the
dev split, before the test items were looked at) is written in docs/REPRODUCE.md.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace

from memdlm.config import DiffusionArguments, field_default
from memdlm.errors import ConfigError
from memdlm.training.args import TrainConfig


@dataclass(frozen=True)
class TrainSpec:
    """One training stage: generated tasks, lengths, steps and optimiser settings.

    Batch size, warmup and normalisation default to ``memdlm train``'s own defaults (read
    from the dataclass fields, not retyped); logging, evaluation cadence and held-out
    samples are the reproduction's own, smaller than a standalone run's."""

    tasks: tuple[str, ...]
    lengths: tuple[int, ...]
    steps: int
    learning_rate: float
    batch_size: int = field_default(TrainConfig, "per_device_train_batch_size")
    warmup: float = field_default(TrainConfig, "warmup_steps")
    logging_steps: int = 10
    eval_steps: int = 100
    eval_samples: int = 32
    normalization: str = field_default(DiffusionArguments, "normalization")  # "sequence" with plain text (below)

    def options(self) -> dict:
        """Training options of this stage by field name (``training.options.setup_from_options``)."""
        return {"tasks": list(self.tasks), "train_lengths": list(self.lengths),
                "max_steps": self.steps, "learning_rate": self.learning_rate,
                "per_device_train_batch_size": self.batch_size, "warmup_steps": self.warmup,
                "logging_steps": self.logging_steps, "eval_steps": self.eval_steps,
                "save_steps": max(self.eval_steps, self.steps // 4), "num_eval_samples": self.eval_samples,
                "weighting": "uniform", "normalization": self.normalization, "heldout_items": 0}


@dataclass(frozen=True)
class Preset:
    name: str
    seeds: tuple[int, ...]
    base: TrainSpec  # Standard MDLM pre-training from scratch: plain text and the task mix
    finetune: TrainSpec  # both methods fine-tune the same base checkpoint on this
    tiny_layers: int = 2  # the tiny default's depth (docs/RESULTS.md: 2 layers learn retrieval fastest)
    tiny_intermediate_size: int = 256
    # MemDLM: per-sample memory (the headline). Rank and inner lr are chosen from these
    # (rank, lr) candidates on training batches (Reproduction.calibrate), separately for
    # each memory mode; rank 2 is the paper's rank-to-width ratio (32 / 2048) at width
    # 128, lr 0.1 the paper's inner lr.
    inner_candidates: tuple[tuple[int, float], ...] = ((2, 0.1), (2, 0.3), (2, 1.0), (8, 0.1), (8, 0.3), (8, 1.0))
    calibration_steps: int | None = None  # None: as long as the fine-tune (where collapse shows)
    absorption_floor: float = 0.8  # late absorption below it: calibration rejects, the report says collapsed
    # Capability gate: a retrieval verdict needs Standard's dev score >= the task's copy
    # level + this many score points (reproduce/stats.capability_gate).
    capability_margin: float = 10.0
    shared_memory_arm: bool = True  # the batch-shared mode, once (first seed), for parity
    compute_matched: bool = True  # Standard given MemDLM's measured wall time
    lr0_control_steps: int = 6
    ablations: dict[str, dict] = field(default_factory=dict)  # name -> memory overrides
    benchmark_rounds: int = 0  # > 0: time and peak memory per step, side by side (benchmarks/train_step.py)
    # evaluation (test items: the tasks' eval split at HELDOUT_SEED; dev items: DEV_SEED)
    eval_tasks: tuple[str, ...] = ("kv", "mv")
    eval_lengths: tuple[int, ...] = (128, 256)
    eval_items: int = 50
    dev_items: int = 50
    eb_task: str = "mv"  # held-out responses of 35 tokens: enough for 32 denoising steps
    eb_items: int = 16
    eb_steps: int = 16
    eb_length: int = 256
    probe_task: str = "kv_d1"  # one distractor: with the needle removed, only a wrong value is left
    probe_items: int = 50
    probe_length: int = 128

    def to_dict(self) -> dict:
        return asdict(self)

    def config_hash(self) -> str:
        """sha256 of the preset's canonical JSON (12 hex digits in the report)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


# One plain-text sample per three task samples: a base that reads prose and has learned
# some retrieval. Fine-tuning keeps the short lengths (without them the first version
# of this preset unlearned retrieval: 0% on the dev items) and adds the test tasks'
# formats: one distractor, and every key asked at once (kv_dense, train split).
_BASE_MIX = ("prose", "kv_curriculum", "kv_curriculum", "kv_curriculum")
_FINETUNE_MIX = ("kv_curriculum", "kv_d1", "kv_dense")

SMOKE = Preset(
    name="smoke", seeds=(0,),
    base=TrainSpec(("prose", "kv_curriculum"), (64, 96), steps=12, learning_rate=2e-3, batch_size=4,
                   logging_steps=2, eval_steps=6, eval_samples=4, normalization="sequence"),
    finetune=TrainSpec(("kv_d1",), (64,), steps=6, learning_rate=1e-3, batch_size=4, logging_steps=1,
                       eval_steps=3, eval_samples=4),
    tiny_intermediate_size=128, inner_candidates=((2, 0.1), (2, 1.0)),
    lr0_control_steps=3, ablations={"anchor_only": {"trajectory": "anchor_only"}},
    eval_tasks=("kv_d1",), eval_lengths=(64, 96), eval_items=4, dev_items=4,
    eb_task="kv_d1", eb_items=2, eb_steps=4, eb_length=64, probe_items=4, probe_length=64,
)

QUICK = Preset(
    name="quick", seeds=(0,),
    # Per-sequence normalisation: with token normalisation a prose sample's ~100 target
    # tokens outweigh a key-value sample's ~5 about 20 to 1, and the second version's base
    # learned no retrieval at all (0% on dev items, the same answer for every prompt).
    base=TrainSpec(_BASE_MIX, (32, 48, 64, 96, 128), steps=2400, learning_rate=2e-3, logging_steps=50,
                   eval_steps=400, normalization="sequence"),
    finetune=TrainSpec(_FINETUNE_MIX, (48, 64, 96, 128), steps=400, learning_rate=1e-3, logging_steps=20,
                       eval_steps=100),
    eval_tasks=("kv_d1", "kv"), eval_lengths=(128, 192, 256), eval_items=100, dev_items=100,
    eb_task="kv_all", eb_items=32, eb_steps=16, eb_length=128, probe_items=100,
)

FULL = replace(
    QUICK, name="full", seeds=(0, 1, 2),
    ablations={
        # the trajectory's consistency (progressive: fresh masks independent of the anchor) and
        # the roles of its two parts (only the pre-anchor stages, only the anchor stage)
        "anchor_only": {"trajectory": "anchor_only"},
        "pre_anchor_only": {"trajectory": "pre_anchor_only"},
        "progressive": {"trajectory": "progressive"},
    },
    eval_items=200, probe_items=200, eb_items=64, benchmark_rounds=15,
)

PRESETS = {p.name: p for p in (SMOKE, QUICK, FULL)}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
