"""Simulated denoising trajectories for the inner loop (the MemDLM paper's anchor-consistent
trajectory and its ablations).

A trajectory turns the anchor (the outer loss's masked state x_t) into a list of
``Stage``s; each stage is one inner SGD step. All randomness is hashed from each
sample's seed (``masking.hashed_uniform``), so a sample's stages do not depend on
its batch mates.

anchor_consistent (default, K = pre_anchor_steps + 1 stages)::

    x_tpre: the anchor with more visible tokens masked, masked fraction
            min(1, max(s_pre * r, r)), r = the anchor's realised masked fraction
    pre-anchor stages j = 0..K-2: states revealing x_tpre's extra tokens toward x_t
            evenly (ceil(R / (K-1)) per stage); a stage with nothing left to reveal
            relative to the anchor is skipped
    anchor-to-target: the anchor itself, loss at its masked positions

progressive: the reference's inconsistent schedule -- fresh masks at fixed
fractions (0.8 ... 0.2), drawn independently of the anchor.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch

from memdlm.errors import ConfigError
from memdlm.diffusion.masking import extend_mask_to_fraction, hashed_uniform, masked_fraction, random_ranks


class StageRole(Enum):
    """What a stage's student state is, relative to the outer loss's anchor x_t."""

    PRE_ANCHOR = "pre_anchor"  # the anchor with more tokens masked (anchor-consistent)
    ANCHOR = "anchor"  # x_t itself: its lower layers' hidden states are the outer loss's
    INDEPENDENT = "independent"  # drawn without reference to the anchor (progressive)


@dataclass
class Stage:
    name: str  # a label for the logs (``InnerLoopStats.stage_losses``); code reads ``role``
    masked: torch.Tensor  # [b, l] the student state's masked set
    loss_positions: torch.Tensor  # [b, l] where the inner loss is taken
    teacher_masked: torch.Tensor  # [b, l] the next, less-masked state (all False: clean)
    role: StageRole


@dataclass
class TrajectoryInputs:
    anchor: torch.Tensor  # [b, l] masked set of x_t
    maskable: torch.Tensor  # [b, l]
    seeds: torch.Tensor  # [b] per-sample seeds for hashed randomness
    salt: int = 0


class Trajectory:
    name = "base"

    def __init__(self, args):
        self.args = args

    def stages(self, x: TrajectoryInputs) -> list[Stage]:  # pragma: no cover
        raise NotImplementedError

    def _uniform(self, x: TrajectoryInputs, purpose: int) -> torch.Tensor:
        return hashed_uniform(x.seeds, x.anchor.shape[1], salt=x.salt * 16 + purpose).to(x.anchor.device)


class AnchorConsistent(Trajectory):
    name = "anchor_consistent"
    include_pre, include_anchor = True, True

    def pre_anchor_states(self, x: TrajectoryInputs) -> list[torch.Tensor]:
        """Masked sets s_0 = x_tpre, ..., s_{K-2}; s_{K-1} would be the anchor."""
        r = masked_fraction(x.anchor, x.maskable)  # [b] realised, as the reference
        fraction = torch.clamp(torch.maximum(self.args.pre_anchor_scale * r, r), max=1.0)
        pre = extend_mask_to_fraction(x.anchor, x.maskable, fraction, scores=self._uniform(x, 1))
        to_reveal = pre & ~x.anchor  # [b, l]
        rank = random_ranks(to_reveal, scores=self._uniform(x, 2))
        n = self.args.pre_anchor_steps
        chunk = torch.ceil(to_reveal.sum(1).float() / n).long()  # [b] tokens revealed per stage
        return [pre & ~(to_reveal & (rank < j * chunk[:, None])) for j in range(n)]

    def stages(self, x):
        out = []
        if self.include_pre:
            states = self.pre_anchor_states(x)
            following = states[1:] + [x.anchor]
            for j, (state, nxt) in enumerate(zip(states, following)):
                left = state & ~x.anchor  # tokens this stage still has to reveal
                positions = state if self.args.pre_anchor_target == "broad" else left
                if self.args.loss_positions == "revealed":
                    positions = positions & ~nxt
                positions = positions & left.any(1, keepdim=True)  # nothing left: skip
                out.append(Stage(f"pre_anchor_{j + 1}", state, positions, nxt, StageRole.PRE_ANCHOR))
        if self.include_anchor:
            clean = torch.zeros_like(x.anchor)
            out.append(Stage("anchor", x.anchor, x.anchor, clean, StageRole.ANCHOR))
        return out


class PreAnchorOnly(AnchorConsistent):
    name = "pre_anchor_only"
    include_anchor = False


class AnchorOnly(AnchorConsistent):
    name = "anchor_only"
    include_pre = False


class Progressive(Trajectory):
    """Fixed masked fractions, each state drawn afresh (not consistent with the anchor)."""

    name = "progressive"

    def stages(self, x):
        states = []
        for k, ratio in enumerate(self.args.progressive_ratios):
            frac = torch.full((x.anchor.shape[0],), float(ratio), device=x.anchor.device)
            states.append(extend_mask_to_fraction(torch.zeros_like(x.anchor), x.maskable, frac,
                                                  scores=self._uniform(x, 3 + k)))
        following = states[1:] + [torch.zeros_like(x.anchor)]
        out = []
        for k, (state, nxt) in enumerate(zip(states, following)):
            positions = state & ~nxt if self.args.loss_positions == "revealed" else state
            out.append(Stage(f"progressive_{k + 1}", state, positions, nxt, StageRole.INDEPENDENT))
        return out


TRAJECTORY_CLASSES = {c.name: c for c in (AnchorConsistent, PreAnchorOnly, AnchorOnly, Progressive)}


def get_trajectory(args) -> Trajectory:
    try:
        return TRAJECTORY_CLASSES[args.trajectory](args)
    except KeyError:
        raise ConfigError(f"unknown trajectory {args.trajectory!r}; choose one of "
                         f"{sorted(TRAJECTORY_CLASSES)}") from None
