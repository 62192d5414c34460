"""The inner loop: write fast weights from a simulated trajectory (first-order).

    phi_0 = fresh (delta 0)
    for each stage k of the trajectory:          # K = 2 by default
        L_k = inner loss at stage k with phi_k active      (per sample, own normaliser)
        phi_{k+1} = phi_k - lr * clip(grad_phi L_k)        (plain SGD)
    return phi_K, detached: the outer loss treats it as a constant

Only the fast weights get gradients (``torch.autograd.grad`` w.r.t. them alone),
and the layers below the first adapted layer run without autograd: their
activations are the same constants for every stage.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

import torch

from memdlm.diffusion.loss import loss_weights, per_sample_loss, reduce_loss
from memdlm.diffusion.masking import apply_mask, masked_fraction, seeded_generator
from memdlm.memory.expert_lists import blocks_in_training_mode
from memdlm.memory.fast_weights import CLIPPERS, FastWeights
from memdlm.memory.inner_losses import get_inner_loss
from memdlm.memory.targets import Target, first_layer_module
from memdlm.memory.trajectories import StageRole, TrajectoryInputs, get_trajectory
from memdlm.diffusion.masking import hashed_uniform, mask_with_probability
from memdlm.backbones.split_forward import upper

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def autograd_from(layer: torch.nn.Module | None):
    """Run a forward with autograd off until ``layer`` starts (then on)."""
    if layer is None:
        yield
        return
    previous = torch.is_grad_enabled()
    torch.set_grad_enabled(False)

    def enable(*_):  # returns None: a pre-hook's return value would replace the inputs
        torch.set_grad_enabled(previous)

    handle = layer.register_forward_pre_hook(enable)
    try:
        yield
    finally:
        handle.remove()
        torch.set_grad_enabled(previous)


@dataclass
class InnerLoopInputs:
    clean_ids: torch.Tensor  # [b, l]
    attention_mask: torch.Tensor  # [b, l]
    maskable: torch.Tensor  # [b, l]
    anchor: torch.Tensor  # [b, l] masked set of the anchor x_t
    sample_seeds: torch.Tensor  # [b]
    step_seed: int = 0  # shared by the batch (run seed, step)


@dataclass
class InnerLoopStats:
    """The loop's statistics, kept as tensors on the loop's device: reading one stalls a GPU's
    queue, so the hot path never does; :meth:`summary` reads them all at once."""

    stage_losses: dict = field(default_factory=dict)  # stage name -> 0-d mean inner loss (NaN: none finite)
    clip_fired: torch.Tensor | int = 0  # tensors clipped, over slots and stages
    clip_checked: int = 0  # tensors the clip looked at (known on the host)
    skipped_nonfinite: torch.Tensor | int = 0  # slot-stages whose loss was not finite

    def add_stage(self, name: str, losses: torch.Tensor, finite: torch.Tensor) -> None:
        """Record one stage's per-slot losses ``[slots]``: the mean of the finite ones, and
        the count of the others. The mean is the finite losses' sum over their number, which
        is what ``losses[finite].mean()`` computes, without the host reading ``finite``."""
        losses = losses.detach()
        self.stage_losses[name] = torch.where(finite, losses, torch.zeros_like(losses)).sum() / finite.sum()
        self.skipped_nonfinite = self.skipped_nonfinite + (~finite).sum()

    def summary(self) -> dict:
        """Every statistic as a Python number, read from the device in one transfer."""
        names = list(self.stage_losses)
        values = [*self.stage_losses.values(), self.clip_fired, self.skipped_nonfinite]
        tensors = [v for v in values if isinstance(v, torch.Tensor)]
        # float32 holds the losses exactly, and the counts (< 2**24) too
        read = iter(torch.stack([t.float() for t in tensors]).tolist() if tensors else [])
        host = [next(read) if isinstance(v, torch.Tensor) else v for v in values]
        return {"stage_losses": dict(zip(names, host[:len(names)])), "clip_fired": int(host[-2]),
                "clip_checked": self.clip_checked, "skipped_nonfinite": int(host[-1])}


class InnerLoop:
    """Writes a memory for a batch. ``per_sample`` picks one slot per sample or one per batch."""

    def __init__(self, model, targets: list[Target], args, *, mask_token_id: int, schedule, per_sample: bool,
                 weighting: str, normalization: str = "token", rank: int | None = None,
                 scale: float | None = None, hidden_size: int | None = None):
        # Built by memory/builder.build_inner_loop (rank and scale resolved there); tests may
        # give ``hidden_size`` instead, and rank and scale are derived from ``args``.
        self.model = model
        self.targets = targets
        self.args = args
        self.rank = rank if rank is not None else args.rank_for(hidden_size)
        self.scale = scale if scale is not None else args.scale_for(hidden_size)
        self.mask_token_id = mask_token_id
        self.schedule = schedule
        self.per_sample = per_sample
        self.weighting = weighting
        self.normalization = normalization
        self.trajectory = get_trajectory(args)
        self.loss_fn = get_inner_loss(args.inner_loss)
        self.clip = CLIPPERS[args.inner_clip]
        self.first_layer = first_layer_module(model, targets)
        # MoE blocks of list-of-MLP experts: run in training mode during adaptation (expert_lists)
        self.expert_blocks = list({id(t.block): t.block for t in targets if t.block is not None}.values())
        self.warned_no_gradient = False

    # --- memory slots ---------------------------------------------------------------
    def fresh_memory(self, x: InnerLoopInputs) -> FastWeights:
        device = x.clean_ids.device
        if self.per_sample:
            # The per-slot generators are seeded on the host: the step's one read of the device
            # (free where the seeds are on the CPU).
            seeds = [int(s) * 7919 + x.step_seed for s in x.sample_seeds.tolist()]
            return FastWeights.fresh(self.targets, rank=self.rank, scale=self.scale,
                                     dense=self.args.memory_dense, slot_seeds=seeds, device=device)
        slot = torch.zeros(x.clean_ids.shape[0], dtype=torch.long, device=device)
        return FastWeights.fresh(self.targets, rank=self.rank, scale=self.scale,
                                 dense=self.args.memory_dense, slot_seeds=[x.step_seed], device=device,
                                 slot_of_sample=slot)

    # --- the loop -------------------------------------------------------------------
    @property
    def first_layer_index(self) -> int:
        return min((t.layer for t in self.targets if t.layer >= 0), default=0)

    def run(self, x: InnerLoopInputs, anchor_hidden: torch.Tensor | None = None
            ) -> tuple[FastWeights, InnerLoopStats]:
        """The final fast weights (detached) and the loop's statistics.

        ``anchor_hidden``: the anchor's hidden states entering the first adapted layer
        (from ``split_forward.lower``); the anchor stage then runs only the upper
        layers on them instead of a full forward, when the inner loss accepts that
        (``InnerLoss.accepts_split_forward``: cross-entropy).
        """
        memory, stats = self.fresh_memory(x), InnerLoopStats()
        stages = self.trajectory.stages(TrajectoryInputs(x.anchor, x.maskable, x.sample_seeds, x.step_seed))
        for stage in stages:
            forward = None
            if anchor_hidden is not None and stage.role is StageRole.ANCHOR and self.loss_fn.accepts_split_forward:

                hidden = anchor_hidden.detach()
                k = self.first_layer_index

                def forward(positions, hidden=hidden, k=k):
                    return upper(self.model, hidden, x.attention_mask, k, positions)
            memory = self.step(memory, stage, x, stats, forward)
        return memory.detached(), stats

    def stage_weights(self, stage, x: InnerLoopInputs) -> torch.Tensor:
        t = masked_fraction(stage.masked, x.maskable).clamp_min(1e-3)  # realised fraction, [b]
        return loss_weights(t, self.weighting, self.schedule)

    def step(self, memory: FastWeights, stage, x: InnerLoopInputs, stats: InnerLoopStats,
             forward=None) -> FastWeights:
        with blocks_in_training_mode(self.expert_blocks):
            return self._step(memory, stage, x, stats, forward)

    def _step(self, memory: FastWeights, stage, x: InnerLoopInputs, stats: InnerLoopStats,
              forward=None) -> FastWeights:
        args = (self.model, x.clean_ids, x.attention_mask, stage, self.mask_token_id)
        with torch.no_grad(), memory.active():
            teacher_out = self.loss_fn.teacher(*args)
        live = memory.requires_grad_()
        lower_without_autograd = autograd_from(self.first_layer) if forward is None else contextlib.nullcontext()
        # The hooks stay on through the backward: gradient checkpointing recomputes the
        # adapted layers then, and must see the same fast weights.
        calls: set = set()
        with live.active(calls=calls):
            with lower_without_autograd:
                dense = self.loss_fn.student(*args, teacher_out, forward=forward)
                weight = self.stage_weights(stage, x)
                if self.per_sample:
                    losses = per_sample_loss(dense, weight, x.maskable)  # [b]
                else:
                    losses = reduce_loss(dense, weight, x.maskable, self.normalization)[None]  # [1]
            finite = torch.isfinite(losses)  # [slots]
            stats.add_stage(stage.name, losses, finite)
            if not losses.requires_grad:  # nothing to learn from (no loss positions anywhere)
                return memory
            total = torch.where(finite, losses, torch.zeros_like(losses)).sum()
            grads = torch.autograd.grad(total, live.params(), allow_unused=True)
        self.warn_if_no_gradient(live, grads, calls)
        grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, live.params())]
        grads = [_zero_bad_slots(g, finite) for g in grads]
        if not self.per_sample and self.args.shared_memory_ranks == "average":
            share = x.maskable.sum() if self.normalization == "token" else x.clean_ids.shape[0]
            grads = average_over_ranks(grads, finite.all() * share)  # a rank with a bad loss adds 0
        grads, fired = self.clip(grads, self.args.inner_clip_norm)
        stats.clip_fired = stats.clip_fired + fired
        stats.clip_checked += len(grads) * memory.num_slots
        lr = self.args.inner_lr
        return memory.replace([p.detach() - lr * g for p, g in zip(memory.params(), grads)])

    def warn_if_no_gradient(self, memory: FastWeights, grads, calls: set) -> None:
        """Warn (once) about targets that ran but got no gradient: their memory never moves.

        A routed expert no token reached legitimately gets none (it did not run); a target
        that ran without autograd (remote code under ``torch.no_grad``) is a silent loss.
        """
        if self.warned_no_gradient:
            return
        it = iter(grads)
        per_target = [[next(it) for _ in group] for group in memory.tensors]
        starved = [t.name for i, (t, gs) in enumerate(zip(memory.targets, per_target))
                   if i in calls and all(g is None for g in gs)]
        if starved:
            self.warned_no_gradient = True
            logger.warning("%d of %d fast-weight targets ran but received no gradient during adaptation "
                           "(e.g. %s): their forward runs without autograd, so their memory stays zero",
                           len(starved), len(memory.targets), starved[0])


def average_over_ranks(grads: list[torch.Tensor], share: torch.Tensor) -> list[torch.Tensor]:
    """The batch-shared memory's inner gradient over every rank's samples: each rank's
    gradient times its share of the loss's denominator (maskable tokens, or sequences; 0-d,
    0 when the rank's loss was not finite), summed over the ranks and divided by the summed
    shares. Unchanged in one process. No host read: zero total share gives zero gradients."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return grads
    device = grads[0].device
    flat = torch.cat([g.reshape(-1) for g in grads] + [torch.ones(1, device=device)]) * share
    dist.all_reduce(flat)
    total = flat[-1]
    flat = torch.where(total > 0, flat[:-1] / total, torch.zeros_like(flat[:-1]))
    out, start = [], 0
    for g in grads:
        out.append(flat[start:start + g.numel()].view_as(g))
        start += g.numel()
    return out


def _zero_bad_slots(grad: torch.Tensor, finite: torch.Tensor) -> torch.Tensor:
    """Zero the gradient of slots whose loss (or gradient) is not finite: no update."""
    ok = finite.clone() if finite.numel() == grad.shape[0] else finite.all().expand(grad.shape[0])
    ok = ok & torch.isfinite(grad.flatten(1)).all(1)
    return torch.where(ok.view(-1, *[1] * (grad.dim() - 1)), grad, torch.zeros_like(grad))


def prompt_anchor(input_ids, attention_mask, prompt_positions, mask_ratio: float, seeds: torch.Tensor):
    """Inference-time adaptation inputs: the prompt is maskable, a random ``mask_ratio`` masked.

    Each prompt's mask comes from its own seed (hashed), so it is the same alone or
    in a batch. At least one prompt token is masked.
    """

    scores = hashed_uniform(seeds, input_ids.shape[1], salt=977).to(input_ids.device)
    prob = torch.full((input_ids.shape[0],), float(mask_ratio), device=input_ids.device)
    anchor = mask_with_probability(prompt_positions, prob, scores=scores)
    return InnerLoopInputs(input_ids, attention_mask, prompt_positions, anchor, seeds.to(input_ids.device))


def step_seed_of(*parts: int) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,), generator=seeded_generator(*parts)).item())


__all__ = ["InnerLoop", "InnerLoopInputs", "InnerLoopStats", "autograd_from", "prompt_anchor",
           "apply_mask", "step_seed_of"]
