"""Fast weights on routed experts kept as a list of linear MLPs (LLaDA-MoE, LLaDA2).

Remote-code MoE blocks hold ``experts = nn.ModuleList([MLP, ...])`` and call each
expert on the rows routed to it: ``[n_routed, H]``, gathered from the flattened
``[b*l, H]`` hidden states by boolean masks, ``torch.where``, ``repeat_interleave``
or a sort by expert (eval paths). The experts' ``nn.Linear`` layers are ordinary
targets, but their hooks see 2-D inputs with no sample axis, so which memory slot
each row belongs to must come from the routing.

How: a pre-hook on the MoE block (the module owning ``experts``) hashes every row of
its input hidden states (exactly: over the float's bit pattern) and records each
token's slot; a pre-hook on each expert looks its input rows up among those hashes,
so each row gets its own token's slot, whatever gather the block used, and sets
them for the expert's linear hooks (:meth:`FastWeights._delta`), cleared after the
expert returns. Rows that are bit-identical across samples (the same prompt twice)
are assigned to those tokens in order of appearance.

Order of bit-identical rows. "k-th copy -> k-th token" is right only if the block hands an
expert its rows in token order. LLaDA2's eval path (``moe_infer``) orders them with
``argsort()``, which is unstable (on the CPU from 17 elements on), so the same prompt twice
in a batch swapped the two samples' slots. While rows are mapped to slots, each block's
forward therefore runs with every sort and argsort made stable (:class:`StableSorts`, a
``TorchFunctionMode``): the same values in the same places, ties kept in token order. Its
cost is Python dispatch on each torch call inside the block (the expert hooks' included),
only for per-sample memory on expert-list blocks.

Adaptation in eval mode: LLaDA2 runs its eval-mode MoE forward under
``torch.no_grad``, so the routed experts would get no gradient. During the inner
loop, blocks holding targeted expert lists are put in training mode (the block
alone, not its submodules: the same routing through the training path).
"""

from __future__ import annotations

import contextlib
import functools
import re

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode
from memdlm.memory.experts import _slot_of_token

EXPERT_IN_LIST = re.compile(r"^(.*)\.experts\.(\d+)\.")


def expert_list_blocks(model: nn.Module, target_names: list[str]) -> list[nn.Module]:
    """MoE blocks (owners of an ``experts`` ModuleList) holding at least one target, in order."""
    blocks, seen = [], set()
    for name in target_names:
        m = EXPERT_IN_LIST.match(name)
        if m is None or m.group(1) in seen:
            continue
        block = model.get_submodule(m.group(1))
        if isinstance(getattr(block, "experts", None), nn.ModuleList):
            seen.add(m.group(1))
            blocks.append(block)
    return blocks


def row_keys(rows: torch.Tensor) -> torch.Tensor:
    """An int64 hash per row of ``[n, H]``, equal for bit-identical rows."""
    bits = {4: torch.int32, 2: torch.int16, 8: torch.int64}[rows.element_size()]
    ints = rows.detach().contiguous().view(bits).long()
    g = torch.Generator().manual_seed(12345)
    coeff = torch.randint(1, 2**62, (rows.shape[-1],), generator=g, dtype=torch.int64).to(rows.device)
    return (ints * coeff).sum(-1)  # wraps around in int64: still deterministic


class RowSlots:
    """The per-token slots of the current MoE block call, and lookup of an expert's rows."""

    def __init__(self):
        self.keys = self.order = self.slots = None
        self.current: torch.Tensor | None = None  # slots of the rows the running expert got

    def record(self, hidden: torch.Tensor, slot_of_token: torch.Tensor) -> None:
        keys = row_keys(hidden.reshape(-1, hidden.shape[-1]))
        self.keys, self.order = keys.sort(stable=True)
        self.slots = slot_of_token

    def lookup(self, rows: torch.Tensor) -> torch.Tensor:
        """Slot of each row of ``rows`` ``[n, H]`` (the k-th copy of a repeated row -> k-th token)."""
        q = row_keys(rows)
        start = torch.searchsorted(self.keys, q)
        end = torch.searchsorted(self.keys, q, right=True)
        if not bool((end > start).all()):
            raise ValueError("an expert received rows that are not rows of its MoE block's input; memdlm "
                             "cannot tell which sample they belong to (docs/BACKBONES.md, MoE)")
        q_sorted, q_order = q.sort(stable=True)
        rank_sorted = torch.arange(len(q), device=q.device) - torch.searchsorted(q_sorted, q_sorted)
        rank = torch.empty_like(rank_sorted)
        rank[q_order] = rank_sorted
        token = self.order[torch.minimum(start + rank, end - 1)]
        return self.slots[token]


class StableSorts(TorchFunctionMode):
    """Every ``sort`` / ``argsort`` called inside runs with ``stable=True``."""

    SORTS = {torch.sort, torch.argsort, torch.Tensor.sort, torch.Tensor.argsort}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in self.SORTS and len(args) < 4:  # argsort(x, dim, descending, stable) given positionally
            kwargs["stable"] = True
        return func(*args, **kwargs)


def _sorting_stably(forward):
    @functools.wraps(forward)
    def run(*args, **kwargs):
        with StableSorts():
            return forward(*args, **kwargs)
    return run


@contextlib.contextmanager
def stable_sorts_in(blocks: list[nn.Module]):
    """Each block's forward runs under :class:`StableSorts` while active (its own forward,
    whatever wrapped it, is put back after)."""
    saved = [(block, block.__dict__.get("forward")) for block in blocks]
    for block in blocks:
        block.forward = _sorting_stably(block.forward)
    try:
        yield
    finally:
        for block, own in saved:
            if own is None:
                del block.forward
            else:
                block.forward = own


@contextlib.contextmanager
def route_rows_to_slots(blocks: list[nn.Module], fast_weights):
    """While active, ``fast_weights.row_slots.current`` holds the running expert's row slots."""

    state = fast_weights.row_slots
    handles = []

    def on_block(_module, args, kwargs):
        hidden = args[0] if args else next(iter(kwargs.values()))
        n_tokens = hidden.reshape(-1, hidden.shape[-1]).shape[0]
        state.record(hidden, _slot_of_token(fast_weights, n_tokens))

    def on_expert(_module, args):
        state.current = state.lookup(args[0].reshape(-1, args[0].shape[-1]))

    def after_expert(*_):
        state.current = None

    for block in blocks:
        handles.append(block.register_forward_pre_hook(on_block, with_kwargs=True))
        for expert in block.experts:
            handles.append(expert.register_forward_pre_hook(on_expert))
            handles.append(expert.register_forward_hook(after_expert))
    try:
        with stable_sorts_in(blocks):  # rows reach each expert in token order
            yield
    finally:
        for h in handles:
            h.remove()
        state.current = None


@contextlib.contextmanager
def blocks_in_training_mode(blocks: list[nn.Module]):
    """Blocks (not their submodules) in training mode, restored after: LLaDA2-style eval
    forwards under ``torch.no_grad`` take their autograd-friendly training path instead."""
    before = [b.training for b in blocks]
    for b in blocks:
        b.training = True
    try:
        yield
    finally:
        for b, mode in zip(blocks, before):
            b.training = mode
