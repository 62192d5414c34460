"""The one builder of the inner loop, and the memory's resolution (rank, scale, targets).

    settings (InnerLoopArguments) + model ──resolve_memory──► ResolvedMemory (rank, alpha, scale,
                                                               target names; saved in run_config.json)
    settings + resolution + LoopRole ──build_inner_loop──► InnerLoop

Training (``MemDLMTrainer``: its loop and its held-out loss with prompt memory), every
:class:`~memdlm.memory.adapt.PromptMemory` and the DDP probe build their loops here and
nowhere else, so a run adapts at inference with the rank, scale and modules it was
trained with (docs/ARCHITECTURE.md, "The memory settings' life").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from memdlm.backbones.modeling import unwrap
from memdlm.diffusion.schedules import get_schedule
from memdlm.errors import ConfigError
from memdlm.memory.config import RESOLVED_PART
from memdlm.memory.inner_loop import InnerLoop
from memdlm.memory.targets import canonical_name, targets_for, targets_named

# The settings each part of a resolution is derived from: an override of one of them
# resolves that part afresh; otherwise a run's saved resolution stands.
RANK_FIELDS = ("memory_rank", "memory_alpha", "memory_dense")
TARGET_FIELDS = ("memory_scope", "memory_layer_fraction", "memory_target_modules")


@dataclass(frozen=True)
class LoopRole:
    """How a loop writes: one slot per sample or one per batch, the inner loss's weight, and
    the schedule and normalisation that weight and the batch-shared reduction read."""

    per_sample: bool
    weighting: str
    schedule: str = "linear"
    normalization: str = "token"

    @classmethod
    def training(cls, memory_args, diffusion_args) -> LoopRole:
        """The training loop of ``memory_args`` (``memory_mode``, ``inner_weighting``) under the
        run's diffusion schedule and loss normalisation."""
        return cls(memory_args.memory_mode == "per_sample", memory_args.inner_weighting,
                   diffusion_args.schedule, diffusion_args.normalization)


# Inference-time adaptation: one memory per prompt (a batch-shared one would mix the prompts
# of a batch), every stage weighted 1 (the paper's; the schedule is then not read).
ADAPTATION = LoopRole(per_sample=True, weighting="uniform")


@dataclass(frozen=True)
class ResolvedMemory:
    """A memory's derived values: the rank and alpha (scale = alpha / rank, 1 when dense) and
    the target modules' names (:func:`~memdlm.memory.targets.canonical_name`, module order)."""

    rank: int
    alpha: float
    scale: float
    targets: tuple[str, ...]

    def to_dict(self) -> dict:
        return {**asdict(self), "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, saved: dict, where: str = RESOLVED_PART) -> ResolvedMemory:
        try:
            return cls(int(saved["rank"]), float(saved["alpha"]), float(saved["scale"]),
                       tuple(str(n) for n in saved["targets"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"{where}: not a memory resolution ({err!r}); restore the file the run "
                              "wrote") from None


def resolve_memory(model, settings, saved: ResolvedMemory | None = None, saved_settings=None) -> ResolvedMemory:
    """Rank, alpha, scale and targets of ``settings`` on ``model``. With ``saved`` (a run's
    resolution, made from ``saved_settings``), each part whose settings are unchanged is the
    saved one; the others are resolved afresh."""
    same = (lambda names: saved is not None and saved_settings is not None and
            all(getattr(settings, n) == getattr(saved_settings, n) for n in names))
    if same(RANK_FIELDS):
        rank, alpha, scale = saved.rank, saved.alpha, saved.scale
    else:
        hidden = unwrap(model).config.hidden_size
        rank, alpha, scale = settings.rank_for(hidden), settings.alpha_for(hidden), settings.scale_for(hidden)
    if same(TARGET_FIELDS):
        names = saved.targets
    else:
        names = tuple(canonical_name(t.name) for t in targets_for(model, settings))
    return ResolvedMemory(rank, float(alpha), float(scale), names)


def build_inner_loop(model, settings, role: LoopRole, *, mask_token_id: int,
                     resolved: ResolvedMemory | None = None) -> InnerLoop:
    """The inner loop on ``model`` (DDP-free; PEFT kept) with ``settings`` (any
    ``InnerLoopArguments``), writing as ``role`` says. ``resolved``: rank, scale and target
    names resolved before (a run's); None resolves them here, from ``settings``."""
    if resolved is None:
        hidden = unwrap(model).config.hidden_size
        targets, rank, scale = targets_for(model, settings), settings.rank_for(hidden), settings.scale_for(hidden)
    else:
        targets, rank, scale = targets_named(model, resolved.targets), resolved.rank, resolved.scale
    return InnerLoop(model, targets, settings, rank=rank, scale=scale, mask_token_id=mask_token_id,
                     schedule=get_schedule(role.schedule), per_sample=role.per_sample, weighting=role.weighting,
                     normalization=role.normalization)


__all__ = ["ADAPTATION", "LoopRole", "RANK_FIELDS", "RESOLVED_PART", "ResolvedMemory", "TARGET_FIELDS",
           "build_inner_loop", "resolve_memory"]
