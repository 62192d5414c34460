"""MemDLM inner-loop settings (the paper's bi-level memory: targets, rank, inner SGD,
simulated trajectory). Defaults are the paper's.

Each choice-valued field maps to one small strategy class, looked up by name in its
registry (``trajectories.TRAJECTORY_CLASSES``, ``inner_losses.INNER_LOSS_CLASSES``,
``fast_weights.CLIPPERS``); the field's ``Literal`` is where the names are written, and
``tests/test_choices.py`` checks it against the registry. The table in docs/MEMDLM.md
lists the paper's score for each variant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from memdlm.errors import ConfigError
from memdlm.validation import check_choices, check_range


@dataclass
class MemoryArguments:
    """Parametric memory: fast weights written by an inner SGD loop."""

    memory_mode: Literal["shared", "per_sample"] = field(default="shared", metadata={
        "help": "Training: one fast-weight set per batch (shared, the reference's behaviour and the "
                "paper's numbers) or one per sample (per_sample: invariant to batch size, accumulation "
                "and ranks, but can memorise short answers -- see docs/MEMDLM.md). Inference always "
                "adapts per prompt."})
    shared_memory_ranks: Literal["local", "average"] = field(default="local", metadata={
        "help": "Batch-shared memory under several processes: each rank writes its own memory from its "
                "micro-batch (local), or the inner gradient is averaged over the ranks, weighted by each "
                "rank's share of the loss (average: the reference's behaviour; every rank writes the one "
                "memory a single process writes for the global batch). Ignored for per_sample memory."})
    memory_rank: int | None = field(default=None, metadata={
        "help": "Fast-weight rank. Default: the paper's 1.6 percent of the width (32 at width 2048), at least 1 "
                "-- rank 2 for the tiny default. The paper's absolute setting is 32."})
    memory_alpha: float | None = field(default=None, metadata={
        "help": "LoRA alpha of the fast weights; scale = alpha / rank. Default 2 x rank (paper: 64 / 32)."})
    memory_dense: bool = field(default=False, metadata={
        "help": "Dense full-rank deltas instead of low-rank (the paper's 'Full Param.' ablation)."})
    memory_scope: Literal["ffn", "ffn_attn"] = field(default="ffn", metadata={
        "help": "Modules that get fast weights: the FFN projections, or FFN and attention projections."})
    memory_layer_fraction: float = field(default=0.1, metadata={
        "help": "Adapt the last fraction of layers: first adapted layer = floor(L * (1 - f)), at least "
                "one layer (paper: 0.1)."})
    memory_target_modules: str | None = field(default=None, metadata={
        "help": "A regex over module names that overrides --memory_scope/--memory_layer_fraction."})
    inner_lr: float = field(default=0.1, metadata={"help": "Inner SGD learning rate (paper: 0.1)."})
    inner_clip: Literal["per_param", "global", "none"] = field(default="per_param", metadata={
        "help": "Inner gradient clipping: each fast-weight tensor on its own (paper), all of a memory's "
                "tensors together (global), or none."})
    inner_clip_norm: float = field(default=1.0, metadata={"help": "Inner clipping threshold (paper: 1.0)."})
    trajectory: Literal["anchor_consistent", "progressive", "pre_anchor_only", "anchor_only"] = field(
        default="anchor_consistent", metadata={
            "help": "Simulated trajectory: anchor-consistent pre-anchor stages then anchor-to-target "
                    "(paper); progressive = the reference's fixed ratios 0.8..0.2 independent of the "
                    "anchor; or only one of the two parts."})
    pre_anchor_steps: int = field(default=1, metadata={
        "help": "Pre-anchor SGD steps (K - 1; paper default 1, i.e. K = 2)."})
    pre_anchor_scale: float = field(default=1.5, metadata={
        "help": "Pre-anchor masked fraction = min(1, max(scale * r, r)), r = the anchor's realised "
                "masked fraction (paper: 1.5)."})
    pre_anchor_target: Literal["broad", "anchor_tokens"] = field(default="broad", metadata={
        "help": "Pre-anchor loss on every masked position of the noisier state (broad, paper) or only on "
                "the tokens the anchor reveals."})
    inner_loss: Literal["ce", "kl", "reverse_kl", "hidden_mse", "hidden_cosine"] = field(
        default="ce", metadata={
            "help": "Inner loss: cross-entropy to the clean tokens (paper), KL / reverse KL to a no-grad "
                    "teacher on the next, less-masked state, or MSE / cosine of the last hidden state."})
    loss_positions: Literal["masked", "revealed"] = field(default="masked", metadata={
        "help": "Inner loss on all masked positions of the student state, or only on those the next "
                "state reveals."})
    inner_weighting: Literal["scheduler", "uniform"] = field(default="scheduler", metadata={
        "help": "Inner-loss weight in training: w at each stage's realised masked fraction (reference) "
                "or 1. Inference-time adaptation always uses 1."})
    progressive_ratios: list[float] = field(default_factory=lambda: [0.8, 0.2], metadata={
        "help": "Masked fractions of the 'progressive' trajectory's stages, noisiest first."})
    adapt_mask_ratio: float = field(default=0.2, metadata={
        "help": "Inference-time adaptation: fraction of the prompt masked as the anchor (paper: 0.2)."})
    absorption_warn: float = field(default=0.05, metadata={
        "help": "Warn when the anchor loss with memory falls below this fraction of the loss without "
                "memory (the memory is absorbing the answer; see docs/MEMDLM.md)."})

    def __post_init__(self):
        check_choices(self)
        check_range(self, "memory_rank", 1, optional=True)
        check_range(self, "memory_alpha", 0, low_open=True, optional=True)
        check_range(self, "inner_clip_norm", 0, low_open=True)
        check_range(self, "progressive_ratios", 0, 1, low_open=True)
        check_range(self, "absorption_warn inner_lr", 0)
        if self.pre_anchor_steps < 1:
            raise ConfigError("pre_anchor_steps must be >= 1")
        if self.pre_anchor_scale < 1:
            raise ConfigError("pre_anchor_scale must be >= 1 (the pre-anchor state is noisier)")
        if not 0 < self.memory_layer_fraction <= 1:
            raise ConfigError("memory_layer_fraction must be in (0, 1]")
        if not 0 < self.adapt_mask_ratio <= 1:
            raise ConfigError("adapt_mask_ratio must be in (0, 1]")

    def rank_for(self, hidden_size: int) -> int:
        if self.memory_rank is not None:
            return self.memory_rank
        return max(1, min(32, round(hidden_size * 32 / 2048)))

    def scale_for(self, hidden_size: int) -> float:
        rank = self.rank_for(hidden_size)
        alpha = self.memory_alpha if self.memory_alpha is not None else 2.0 * rank
        return 1.0 if self.memory_dense else alpha / rank

