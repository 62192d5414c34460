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
from memdlm.memory.config import ADAPTATION_FIELDS, AdaptationArguments
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
    # Micro-batch: ``batch_size`` is the optimiser's batch, split into micro-batches of this many
    # samples (gradient accumulation ``batch_size / micro_batch``). A batch-shared memory is one
    # fast-weight set per micro-batch, so this is how many samples it spans (the issue-22 pilot:
    # 4, accumulation 8). None: one micro-batch of ``batch_size``.
    micro_batch: int | None = None
    # Outer-loss weight. The paper's is 1/t ("scheduler"); every fine-tune here uses "uniform"
    # because an mqar64 response is 2 tokens (the answer and EOS): with at least one token
    # masked per sequence, an anchor drawn at t = 0.001 weighs 1,000x, and over micro-batches
    # of 4 the 1/t loss swings by an order of magnitude from step to step (measured, 4 steps of
    # micro-batch 4: 2.2, 26.8, 19.8, 2.4 nats, gradient norms 15-208; docs/REPRODUCE.md). The full
    # preset measures the deviation: its PAPER_WEIGHTING_ARM is the headline MemDLM at 1/t.
    weighting: str = "uniform"

    def __post_init__(self):
        if self.micro_batch is not None and (self.micro_batch < 1 or self.batch_size % self.micro_batch):
            raise ConfigError(f"micro_batch {self.micro_batch} must divide batch_size {self.batch_size}")

    def options(self) -> dict:
        """Training options of this stage by field name (``training.options.setup_from_options``)."""
        micro = self.micro_batch or self.batch_size
        return {"tasks": list(self.tasks), "train_lengths": list(self.lengths),
                "max_steps": self.steps, "learning_rate": self.learning_rate,
                "per_device_train_batch_size": micro, "gradient_accumulation_steps": self.batch_size // micro,
                "warmup_steps": self.warmup,
                "logging_steps": self.logging_steps, "eval_steps": self.eval_steps,
                "save_steps": max(self.eval_steps, self.steps // 4), "num_eval_samples": self.eval_samples,
                "weighting": self.weighting, "normalization": self.normalization, "heldout_items": 0}


@dataclass(frozen=True)
class OuterLora:
    """The outer adapter every arm trains (PEFT LoRA on a frozen base, as in the paper).

    Rank: the paper's r = 32 at width 2,048 is 1.6% of the width; at width 128 that is
    rank 2, which leaves a 2-layer model almost no room to learn a longer context (a
    rank-2 update of a 128 x 128 projection). Rank 8 (6% of the width, alpha 16: the
    paper's alpha = 2 r, so scale 2) gives ~29k trainable parameters, 2% of the base's
    1.38M. Targets: every linear map inside the transformer blocks, MobileBERT's names
    for the paper's q/k/v/o/gate/up/down (``output.dense`` matches both the attention
    output and the FFN output); the trigram embedding's projection and the LM head's
    transform stay frozen, like the paper's embeddings and head. The learning rate is the
    fine-tune's (``TrainSpec.learning_rate``): 2e-5 is the paper's for a 7B base; an
    adapter on a model this small needs a much larger one (docs/REPRODUCE.md has the dev
    check that fixed it)."""

    r: int = 8
    alpha: int = 16
    targets: str = "query,key,value,output.dense,intermediate.dense"

    def options(self) -> dict:
        return {"use_lora": True, "lora_r": self.r, "lora_alpha": self.alpha, "lora_target_modules": self.targets}


@dataclass(frozen=True)
class Adaptation:
    """The one inference-time adaptation every arm gets (Standard + adaptation, Train &
    Inference, the held-out loss with prompt memory, exposure bias, the probe): the same
    settings for every arm, not each run's own training settings, so the 2 x 2 and the
    prompt-memory columns compare models under one adaptation. Defaults: the paper's inner
    lr 0.1 and trajectory (anchor-consistent, K = 2, anchor = 20% of the prompt masked), at
    the arms' rank. The memory's placement is the preset's (:attr:`Preset.memory_scope`,
    :attr:`Preset.memory_layer_fraction`), the one the MemDLM arms train with: written once."""

    rank: int = 2
    inner_lr: float = 0.1
    trajectory: str = "anchor_consistent"
    mask_ratio: float = 0.2

    def overrides(self, scope: str, layer_fraction: float) -> dict:
        """Every adaptation setting by field name, for ``Run.memory(**...)``: this adaptation's, the
        placement given, and each other ``AdaptationArguments`` field at its default (read from the
        dataclass), so an arm's own training settings (an ablation's trajectory) cannot leak into
        its adaptation. The fields whose default is None (alpha, the target regex) are left to the
        run: no arm sets them."""
        defaults = {name: field_default(AdaptationArguments, name) for name in ADAPTATION_FIELDS}
        chosen = {"memory_rank": self.rank, "inner_lr": self.inner_lr, "trajectory": self.trajectory,
                  "adapt_mask_ratio": self.mask_ratio, "memory_scope": scope, "memory_layer_fraction": layer_fraction}
        return {k: v for k, v in {**defaults, **chosen}.items() if v is not None}


@dataclass(frozen=True)
class ProbeControl:
    """The probe's positive control: a memory strong enough that it must move the answer if
    the probe can see anything (issue 22: this setting moved log p of the value +6.6 nats).
    Both layers, FFN and attention, rank 8, inner lr 10, ``steps`` anchor-to-target SGD steps
    on the full context with the queried value as the only target (its tokens masked, the
    rest visible)."""

    scope: str = "ffn_attn"
    layer_fraction: float = 1.0
    rank: int = 8
    inner_lr: float = 10.0
    steps: int = 5


# Preset fields added after committed reports, with the value that means "as before":
# Preset.to_dict leaves them out at that value.
ADDED_LATER = {"pace_rounds": 0, "pace_steps": 8, "eb_inner_candidates": ()}


@dataclass(frozen=True)
class Preset:
    name: str
    seeds: tuple[int, ...]
    finetune: TrainSpec  # every arm fine-tunes the shipped base on this, with the same outer adapter
    base_model: str = "mqar-base"  # a shipped model (memdlm.backbones.shipped) or a model directory
    lora: OuterLora = OuterLora()
    # MemDLM: batch-shared memory (the paper's; the headline) and per-sample memory (a
    # variant). The operating point is fixed by rule (issue 22; docs/REPRODUCE.md): the
    # paper's inner lr 0.1 and rank 2 (the paper's rank-to-width ratio, 32 / 2048, at width
    # 128), one candidate; Reproduction.calibrate still runs it per memory mode and reports its
    # absorption band. (The earlier rule searched inner lrs 0.3 / 1.0 for the largest change
    # inside an absorption band and chose memories that were inert after 40 steps.)
    inner_candidates: tuple[tuple[int, float], ...] = ((2, 0.1),)
    # Where the memory sits (issue 22). The paper's "last 10%" of a 2-layer model is layer 1's FFN,
    # with only the LM head after it; in the paper's models an attention layer follows the first
    # adapted layer (LLaDA-8B: 29-31 of 32). Fraction 1.0 adapts the FFNs of both layers: the
    # first adapted layer is 0, and layer 1's attention reads its output.
    memory_scope: str = "ffn"
    memory_layer_fraction: float = 1.0
    adaptation: Adaptation = Adaptation()
    calibration_steps: int | None = None  # None: as long as the fine-tune (where collapse shows)
    # The absorption band [floor, ceiling] the report shows beside each arm (the share of the anchor
    # loss the memory leaves). It no longer decides collapse (the base model's held-out loss does:
    # reproduce/rules.usability_note); a late absorption above the ceiling (the memory *raises* the
    # loss it was written from: the inner step overshoots; a smoke run at inner lr 1.0 measured
    # 2.3) is divergence, which makes an arm unusable.
    absorption_floor: float = 0.8
    absorption_ceiling: float = 1.0
    # Usability's minimum effect, nats per response token (reproduce/rules.usability_note): an arm
    # is unusable when its base model (memory off) is worse than Standard by MORE than this, i.e.
    # the per-item difference's paired-item interval lies entirely above it. Declared before the
    # quick and full runs (after the pilot, where a zero minimum flagged the exposure-bias MemDLM
    # for +0.001 nats [+0.000, +0.002] on 4 items). Why 0.01: a per-token likelihood ratio of
    # e^0.01 = 1.01 is practically null, about half the smallest held-out-loss effect measured for
    # the claim (the issue-22 audit's active pilot: -0.019 nats, seed means -0.024 / -0.024 /
    # -0.008), and it still flags the collapse the rule exists for (the old full report's headline:
    # +0.056, items [+0.020, +0.094]).
    usability_min_effect: float = 0.01
    # Capability gate: a retrieval verdict needs Standard's dev score >= the task's copy
    # level + this many score points (reproduce/rules.capability_gate).
    capability_margin: float = 10.0
    compute_matched: bool = True  # Standard given MemDLM's measured training time
    # How the compute-matched arm's steps are counted. 0: from the two arms' own optimiser-step
    # seconds, each timed in its own run (quick and the earlier reports: the machine's load can
    # change between the runs; quick's seed 0 got 5.3x MemDLM's steps where a side-by-side ratio
    # was 1.87x). > 0: MemDLM steps x the ratio of their per-step seconds measured side by side
    # (Reproduction.pace: this many alternating rounds of ``pace_steps`` steps of each arm's real
    # settings, medians), once per reproduction, so both arms are timed under the same load.
    pace_rounds: int = 0
    pace_steps: int = 8
    per_sample_arm: bool = True  # the per-sample memory variant, every seed
    lr0_control_steps: int = 6
    # name -> overrides of the headline MemDLM arm's training options (memory settings; or the outer
    # weighting, PAPER_WEIGHTING_ARM)
    ablations: dict[str, dict] = field(default_factory=dict)
    benchmark_rounds: int = 0  # > 0: time and peak memory per step, side by side (benchmarks/train_step.py)
    # evaluation (test items: the tasks' eval split at HELDOUT_SEED; dev items: DEV_SEED)
    eval_tasks: tuple[str, ...] = ("mqar64",)
    eval_lengths: tuple[int, ...] = (256, 512, 1024)  # the fine-tuning length, 2x and 4x
    eval_items: int = 50
    dev_items: int = 50
    # Exposure bias (paper Fig. 3: long responses, 48 steps). An mqar64 answer is one word,
    # so this analysis has its own pair of arms: Standard and MemDLM (batch-shared, the
    # headline's operating point) fine-tuned alike, with the same outer adapter, from a base
    # that continues prose (``prose-base``: mqar-base trained on ``prose`` by
    # scripts/train_prose_base.sh), on ``prose_cont`` (>= 49-token continuations), then
    # decoded in eb_steps steps. Why prose and not a long retrieval chain: docs/REPRODUCE.md.
    eb_base: str = "prose-base"
    eb_finetune: TrainSpec = TrainSpec(("prose_cont",), (128,), steps=100, learning_rate=1e-3, batch_size=32,
                                       warmup=0.1, logging_steps=5, eval_steps=50, eval_samples=32, micro_batch=4)
    eb_task: str = "prose_cont"
    # The exposure-bias MemDLM's memory. Empty: the headline's operating point (quick, long: on
    # prose its memory is inert, absorption 0.99-1.00 every logged step, relative change ~1e-3,
    # the clip never acting, because a prose anchor has ~30 masked targets per sample whose
    # gradients average out, against mqar's 2). Candidates (rank, inner lr): the headline's rule
    # (Reproduction.calibrate) run on the exposure-bias fine-tune of seed 0 -- the candidate with
    # the largest late relative change whose late absorption lies in the band -- and that point is
    # also the pair's inference-time adaptation (one adaptation for both arms of the pair).
    eb_inner_candidates: tuple[tuple[int, float], ...] = ()
    eb_items: int = 16
    eb_steps: int = 48
    eb_length: int = 128  # 79 prompt + 49 response tokens: each of the 48 steps costs 5 forwards per item
    # matched calibration: each exposure-bias model is temperature-scaled to its static NLL on
    # this many held-out items of their own seed range; the flattening control is Standard with
    # its logits divided by eb_flatten_temperature (issue 22's audit: 1.6 made it "flatter")
    eb_calibration_items: int = 32
    eb_flatten_temperature: float = 1.6
    probe_task: str = "mqar64"  # the queried pair removed: no context value is the answer
    probe_items: int = 50
    probe_length: int = 256
    probe_control: ProbeControl = ProbeControl()

    def to_dict(self) -> dict:
        """The preset as JSON-ready data. Fields added after reports were committed are left out
        while they hold their neutral value (:data:`ADDED_LATER`), so a committed report's
        ``config_hash`` still names the preset it ran."""
        return {k: v for k, v in asdict(self).items() if k not in ADDED_LATER or v != ADDED_LATER[k]}

    def config_hash(self) -> str:
        """sha256 of the preset's canonical JSON (12 hex digits in the report)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


# The long-context regime of the shipped base: more pairs than it was trained on (8). On
# 100 dev items (seed 60000; docs/REPRODUCE.md) the base answers mqar32 at 256 tokens 75%
# and mqar64 55% (copy levels 3.1% and 1.6%), flat in length up to 1,024 tokens; a
# Standard LoRA fine-tune of 100 steps (batch 32, lr 1e-3) reaches 90% on mqar32 (near
# saturation: little room for MemDLM to show a gain) and 75% / 75% / 66% on mqar64 at
# 256 / 512 / 1,024 tokens -- far from both the copy level and saturation. So every arm
# fine-tunes on mqar64 at 256 tokens; the test lengths are 256, 2x and 4x. Quick and full
# share the fine-tune, so full can reuse quick's calibration and seed-0 cells.
# Micro-batches of 4 (accumulation 8): the batch-shared memory spans 4 samples, as in the
# issue-22 pilot (absorption 0.60-0.93 all run, the clip acting on 3-4% of tensors).
_FINETUNE = TrainSpec(("mqar64",), (256,), steps=100, learning_rate=1e-3, batch_size=32, warmup=0.1,
                      logging_steps=5, eval_steps=50, eval_samples=32, micro_batch=4)

SMOKE = Preset(
    name="smoke", seeds=(0,),
    finetune=TrainSpec(("mqar16",), (64,), steps=6, learning_rate=1e-3, batch_size=4, logging_steps=1,
                       eval_steps=3, eval_samples=4, micro_batch=2),
    lr0_control_steps=3, ablations={"anchor_only": {"trajectory": "anchor_only"}},
    eval_tasks=("mqar16",), eval_lengths=(64, 128), eval_items=4, dev_items=4, pace_rounds=1, pace_steps=2,
    eb_inner_candidates=((2, 0.1), (2, 1.0)),
    eb_finetune=TrainSpec(("prose_cont",), (128,), steps=4, learning_rate=1e-3, batch_size=4, logging_steps=1,
                          eval_steps=2, eval_samples=4, micro_batch=2),
    eb_items=2, eb_calibration_items=2, eb_steps=48, eb_length=128, probe_task="mqar16", probe_items=4, probe_length=64,
)

QUICK = Preset(
    name="quick", seeds=(0,), finetune=_FINETUNE,
    eval_lengths=(256, 512),  # the trained length and 2x: 4x is the full preset's (CPU time)
    eval_items=100, dev_items=100, eb_items=16, probe_items=64,
)

# The full preset's arm that measures the outer-weighting deviation (TrainSpec.weighting): the
# headline MemDLM trained with the paper's 1/t outer loss ("scheduler"), everything else alike.
# The report compares it with the headline (uniform) as a deviation, not as a trajectory ablation
# the paper ranks: the rows say whether our choice changes MemDLM's retrieval or held-out loss.
# (A Standard arm at 1/t would measure the baseline's deviation too; left out for CPU time.)
PAPER_WEIGHTING_ARM = "paper_weighting"

FULL = replace(
    QUICK, name="full", seeds=(0, 1, 2),
    ablations={
        # the trajectory's consistency (progressive: fresh masks independent of the anchor) and
        # the roles of its two parts (only the pre-anchor stages, only the anchor stage)
        "anchor_only": {"trajectory": "anchor_only"},
        "pre_anchor_only": {"trajectory": "pre_anchor_only"},
        "progressive": {"trajectory": "progressive"},
        PAPER_WEIGHTING_ARM: {"weighting": "scheduler"},
    },
    eval_lengths=(256, 512, 1024), eval_items=200, probe_items=200, eb_items=32, benchmark_rounds=15,
    pace_rounds=5, eb_inner_candidates=((2, 0.1), (2, 1.0), (2, 3.0), (2, 10.0)),
)

# The quick preset's design at a small fraction of its samples: it fine-tunes 20 steps of 16
# (micro-batches of 4, accumulation 4), the exposure-bias pair 10, skips the per-sample and
# compute-matched arms and evaluates few items: it shows the pipeline and the memory's strength,
# not a verdict. Same operating point, adaptation, probe and controls as quick and full.
#
# CPU time (2-core VM shared with other jobs, load average 7, 1 thread; measured by
# `python benchmarks/reproduce_cost.py --threads 1`, 4 steps and 8 items per rate, 2 min 40 s):
# optimiser-step seconds MemDLM 4.8 (batch-shared) / 4.3 (per-sample), Standard 2.0, the
# exposure-bias pair 3.4 / 0.9; per item: answering 0.03 / 0.08 / 0.18 s at 256 / 512 / 1,024
# tokens (0.17 / 0.33 / 0.91 s with the adaptation), held-out loss 0.16 s (0.27 adapted), one
# exposure-bias analysis 2.7 s, the probe 0.56 s per model. Estimated from them: `quick` ~46 min
# (training 34, evaluation 12), `full` ~5.4 h (training 3.3 h, evaluation 2.1 h), leaving out
# the evaluations during training, checkpoint saves, model loading and full's cost benchmark.
# The pilot's 40.7 min of cells (52 s per MemDLM step of 16) were mostly `--threads 2` on this
# machine at load 9-15: a quick MemDLM step took 93 s with 2 threads and 6.5 s with 1 at load
# 7-9 (commands/reproduce.crowded_threads warns); at the rates above the pilot is ~5 min.
PILOT = replace(
    QUICK, name="pilot",
    finetune=replace(_FINETUNE, steps=20, batch_size=16, logging_steps=2, eval_steps=10, eval_samples=16),
    eb_finetune=replace(QUICK.eb_finetune, steps=10, batch_size=16, logging_steps=2, eval_steps=10,
                        eval_samples=16),
    per_sample_arm=False, compute_matched=False, lr0_control_steps=3,
    eval_items=24, dev_items=24, eb_items=4, eb_calibration_items=8, probe_items=16,
)

# Issue 22: does the sign hold with longer training? Quick's headline pair (Standard and the
# batch-shared MemDLM, same data, adapter and operating point) fine-tuned 3x longer: 300 steps
# of 32 instead of 100. The per-sample and compute-matched arms are left out (CPU time; the
# question is the pair's sign); everything else -- evaluation, probe, exposure-bias pair,
# controls -- as quick. ~35 min of cells on this 2-core CPU at 1 thread (quick: 18.7 min).
LONG = replace(
    QUICK, name="long", finetune=replace(_FINETUNE, steps=300, eval_steps=100),
    per_sample_arm=False, compute_matched=False,
)

# Quick's design at three seeds (issue 22: >= 3 seeds throughout): every arm of quick, seeds 0-2,
# so a claim can get its seed-level t-interval without full's ablations, 1,024-token tests and
# 200 items (full: ~3 h of cells here). Seed 0's training cells are quick's own.
QUICK3 = replace(QUICK, name="quick3", seeds=(0, 1, 2))

# `long` at three seeds: the one seed trained 3x longer separated on held-out loss (-0.072,
# items [-0.139, -0.008]); a finding needs the seed-level interval.
LONG3 = replace(LONG, name="long3", seeds=(0, 1, 2))

PRESETS = {p.name: p for p in (SMOKE, PILOT, QUICK, QUICK3, LONG, LONG3, FULL)}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
