"""Fast weights: transient low-rank (or dense) deltas applied through forward hooks.

The deltas live here, outside the module tree -- never in ``model.parameters()``,
state dicts, checkpoints, PEFT adapters or the outer optimiser, so DDP / FSDP /
DeepSpeed never see them. A ``FastWeights`` holds, for each target module, one
delta per *slot*: per-sample memory has a slot per sample, batch-shared memory one
slot for the whole batch. While ``active()``, each target's output gets

    y_b += scale * x_b A_s^T B_s^T        (low rank, s = slot of sample b)
    y_b += x_b D_s^T                       (dense)

computed for all samples at once with batched matmuls (no loop over samples).
Fused MoE experts (3-D parameters, not ``nn.Linear``) get one delta per expert and
slot, applied inside the experts computation (:mod:`memdlm.memory.experts`).
A starts Kaiming-uniform from a per-slot seed and B at zero (as the reference and
LoRA do): the initial delta is zero, yet the first SGD step can move B.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch

from memdlm.diffusion.masking import seeded_generator
from memdlm.memory.expert_lists import RowSlots, route_rows_to_slots
from memdlm.memory.experts import install_expert_hooks, slot_delta
from memdlm.memory.targets import Target


@dataclass
class FastWeights:
    targets: list[Target]
    tensors: list[list[torch.Tensor]]  # per target: [A [S,r,in], B [S,out,r]] or [D [S,out,in]]
    scale: float
    slot_of_sample: torch.Tensor | None = None  # [b]; None: slot i <-> sample i (per-sample)
    stats: dict = field(default_factory=dict)
    # slots of the rows the running list-expert got (memory.expert_lists); None elsewhere
    row_slots: RowSlots = field(default_factory=RowSlots, repr=False)

    # --- construction -----------------------------------------------------------------
    @classmethod
    def fresh(cls, targets: list[Target], *, rank: int, scale: float, dense: bool,
              slot_seeds: list[int], device, slot_of_sample: torch.Tensor | None = None) -> FastWeights:
        """Zero deltas for ``len(slot_seeds)`` slots; A drawn from each slot's own seed."""
        slots = len(slot_seeds)
        if dense:
            tensors = [[torch.zeros(slots, t.out_features, t.in_features, device=device)] for t in targets]
        else:
            a = _initial_a(targets, rank, slot_seeds, device)
            tensors = [[a_t, torch.zeros(slots, t.out_features, rank, device=device)] for a_t, t in zip(a, targets)]
        return cls(targets, tensors, scale, slot_of_sample)

    @property
    def num_slots(self) -> int:
        return self.tensors[0][0].shape[0]

    def params(self) -> list[torch.Tensor]:
        return [p for group in self.tensors for p in group]

    def replace(self, flat: list[torch.Tensor]) -> FastWeights:
        """The same structure holding new tensors (e.g. after an SGD step)."""
        it = iter(flat)
        tensors = [[next(it) for _ in group] for group in self.tensors]
        return FastWeights(self.targets, tensors, self.scale, self.slot_of_sample, dict(self.stats))

    def requires_grad_(self) -> FastWeights:
        return self.replace([p.detach().requires_grad_(True) for p in self.params()])

    def detached(self) -> FastWeights:
        return self.replace([p.detach() for p in self.params()])

    def slot(self, i: int) -> FastWeights:
        """Slot i alone (for comparing a sample's memory in and out of a batch)."""
        return self.replace([p[i:i + 1] for p in self.params()])

    def norm(self) -> torch.Tensor:
        """Mean over slots of the delta's Frobenius norm summed in quadrature over targets."""
        sq = 0.0
        for group in self.tensors:
            if len(group) == 1:
                sq = sq + group[0].pow(2).sum(dim=(1, 2))
            else:  # ||scale * B A||_F without forming B A
                a, b = group
                sq = sq + (self.scale ** 2) * torch.einsum("sor,srq,soq->s", b, a @ a.transpose(1, 2), b)
        return sq.clamp_min(0).sqrt().mean()

    # --- application ------------------------------------------------------------------
    def _delta(self, group: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        if x32.dim() == 2:  # rows of a list-of-MLP expert, [n_routed, in]: slots from the routing
            slots = self.row_slots.current
            if slots is None or slots.shape[0] != x32.shape[0]:
                if self.num_slots > 1:
                    raise ValueError(f"a fast-weight target got a 2-D input {tuple(x.shape)} outside a known MoE "
                                     "expert list: which sample each row belongs to is unknown")
                slots = None
            return slot_delta(group, x32, slots, self.scale)
        params = group
        if self.num_slots == 1:  # one memory for every sample
            params = [p.expand(x32.shape[0], *p.shape[1:]) for p in group]
        elif self.slot_of_sample is not None:
            params = [p[self.slot_of_sample] for p in group]
        if len(params) == 1:  # dense: [b, l, in] @ [b, in, out]
            return torch.bmm(x32, params[0].transpose(1, 2))
        a, b = params
        return torch.bmm(torch.bmm(x32, a.transpose(1, 2)), b.transpose(1, 2)) * self.scale

    @contextlib.contextmanager
    def active(self, measure: bool = False, calls: set | None = None):
        """Add the deltas to the targets' outputs for forward passes inside the block.

        With ``measure``, records ||delta|| / ||output|| per target call in
        ``stats["relative_change"]`` (0-d tensors, read once when logged): how large a
        perturbation the memory is relative to the adapted layers' own outputs. ``calls`` collects the indices
        of the linear targets that ran.
        """
        handles = []
        changes = self.stats.setdefault("relative_change", []) if measure else None
        for index, (target, group) in enumerate(zip(self.targets, self.tensors)):
            if target.kind != "linear":  # fused MoE experts: one hook per experts module, below
                continue

            def hook(_module, args, output, group=group, index=index):
                if calls is not None:
                    calls.add(index)
                delta = self._delta(group, args[0]).to(output.dtype)
                if changes is not None:
                    changes.append(delta.detach().norm() / output.detach().norm().clamp_min(1e-12))
                return output + delta

            handles.append(target.module.register_forward_hook(hook))
        handles += install_expert_hooks(self, changes)
        blocks = list({id(t.block): t.block for t in self.targets if t.block is not None}.values())
        routing = route_rows_to_slots(blocks, self) if blocks and self.num_slots > 1 else contextlib.nullcontext()
        try:
            with routing:
                yield self
        finally:
            for h in handles:
                h.remove()


def _initial_a(targets: list[Target], rank: int, slot_seeds: list[int], device) -> list[torch.Tensor]:
    """A ``[S, rank, in]`` per target, Kaiming-uniform (a=sqrt(5), as nn.Linear / LoRA A).

    Each (slot seed, target) pair keeps its own generator -- the draws of a sample do not
    depend on its batch mates -- so the draws stay one per pair, on the host, written into one
    buffer that reaches the device in a single non-blocking copy (one copy per target would
    make the host wait for the device's queue each time).
    """
    sizes = [len(slot_seeds) * rank * t.in_features for t in targets]
    host = torch.empty(sum(sizes))
    blocks = [b.view(len(slot_seeds), rank, t.in_features) for b, t in zip(host.split(sizes), targets)]
    for ti, (block, t) in enumerate(zip(blocks, targets)):
        for s, seed in enumerate(slot_seeds):
            torch.rand(rank, t.in_features, generator=seeded_generator(seed, ti), out=block[s])
        block.mul_(2).sub_(1).mul_(1.0 / math.sqrt(t.in_features))
    moved = host.to(device, non_blocking=True)
    return [b.view(len(slot_seeds), rank, t.in_features) for b, t in zip(moved.split(sizes), targets)]


# --- inner-loop gradient clipping (pure functions over per-slot gradients) ----------
def _coefficient(norm: torch.Tensor, max_norm: float) -> torch.Tensor:
    # torch.nn.utils.clip_grad_norm_'s rule: scale by max_norm / (norm + 1e-6) when above.
    return (max_norm / (norm + 1e-6)).clamp(max=1.0)


def _slot_norm(g: torch.Tensor) -> torch.Tensor:
    return g.flatten(1).norm(dim=1)  # [S]


def clip_per_param(grads: list[torch.Tensor], max_norm: float) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each tensor of each slot clipped to ``max_norm`` on its own (the paper's default).
    The count of clipped tensors stays a tensor: reading it would stall a GPU's queue."""
    norms = [_slot_norm(g) for g in grads]
    out = [g * _coefficient(n, max_norm).view(-1, *[1] * (g.dim() - 1)) for g, n in zip(grads, norms)]
    return out, (torch.stack(norms) > max_norm).sum()


def clip_global(grads: list[torch.Tensor], max_norm: float) -> tuple[list[torch.Tensor], torch.Tensor]:
    """All tensors of a slot clipped together by their joint norm."""
    norm = torch.stack([_slot_norm(g).pow(2) for g in grads]).sum(0).sqrt()  # [S]
    coef = _coefficient(norm, max_norm)
    return [g * coef.view(-1, *[1] * (g.dim() - 1)) for g in grads], (norm > max_norm).sum()


def clip_none(grads, max_norm):
    return list(grads), 0


CLIPPERS = {"per_param": clip_per_param, "global": clip_global, "none": clip_none}
