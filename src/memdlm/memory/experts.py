"""Fast weights for fused MoE experts (transformers 5.x ``*Experts`` modules).

In transformers 5.x the routed experts of an MoE layer are one module holding
fused 3-D parameters -- ``gate_up_proj`` ``[E, 2I, H]`` (or ``up_proj`` without a
gate) and ``down_proj`` ``[E, H, I]`` -- looped over the experts tokens were
routed to. They are not ``nn.Linear`` modules, so the linear-layer hooks of
:mod:`memdlm.memory.fast_weights` never reach them, and an additive delta on the
module's output would be wrong: the gate/up delta acts *before* the expert's
non-linearity.

Design. Every (expert e, projection p) pair is a target of its own
(``Target(kind="expert", param=p, expert=e)``), so each expert has its own
low-rank (or dense) delta per memory slot, its own random A, and its own
per-parameter gradient clipping -- exactly as if the experts were separate
linear layers. While a memory is active, one forward hook per experts module
reads the module's routing inputs (hidden states ``[T, H]``, ``top_k_index``
and ``top_k_weights`` ``[T, k]``) and adds, for every token t and each expert e
it was routed to,

    w_{t,e} * ( f_e(x_t; W + dW_s) - f_e(x_t; W) )          s = slot of t's sample

where ``f_e`` is the expert (gate/up projection, gate, down projection, and the
optional post-expert norm) and ``dW_s`` the slot's deltas of expert e. The base
output itself comes from the module's own forward (whatever experts
implementation the model uses: eager, batched or grouped matmuls), and with a
zero delta the correction is exactly zero (both terms are computed by the same
operations), so a fresh memory leaves the model's outputs bit-for-bit unchanged.
A token is changed only through the deltas of the experts it is routed to.

Cost: in adapted layers each routed (token, expert) pair pays one extra gate/up
and two extra down projections, in float32 (deltas are float32; the correction
is cast to the output's dtype).

Tokens are mapped to samples by position: the MoE block flattens ``[b, l, H]``
to ``[b*l, H]`` in row-major order before calling the experts (as every
transformers MoE block does), so token t belongs to sample ``t // l``.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn as nn

from memdlm.backbones.partitioned import full_shape, refuse_partitioned


def fused_expert_params(module: nn.Module) -> list[tuple[str, int, int]] | None:
    """``[(param, in_features, out_features), ...]`` of a fused experts module, else None.

    Recognised: a module with 3-D ``down_proj`` and ``gate_up_proj`` (or ``up_proj``)
    parameters, as transformers' ``@use_experts_implementation`` classes hold them
    (``is_transposed`` layouts store ``[E, in, out]`` instead of ``[E, out, in]``).
    """
    down = getattr(module, "down_proj", None)
    if not isinstance(down, nn.Parameter) or len(full_shape(down)) != 3:  # ZeRO-3 empties .shape
        return None
    first = "gate_up_proj" if isinstance(getattr(module, "gate_up_proj", None), nn.Parameter) else "up_proj"
    up = getattr(module, first, None)
    if not isinstance(up, nn.Parameter) or len(full_shape(up)) != 3:
        return None
    out = []
    for name, weight in ((first, up), ("down_proj", down)):
        e, rows, cols = full_shape(weight)
        in_f, out_f = (rows, cols) if getattr(module, "is_transposed", False) else (cols, rows)
        out.append((name, in_f, out_f))
    return out


def num_experts(module: nn.Module) -> int:
    return int(full_shape(module.down_proj)[0])


# --- applying the deltas ------------------------------------------------------------
def _weight(module: nn.Module, param: str, e: int) -> torch.Tensor:
    """Expert e's weight as ``[out, in]``, float32."""
    w = getattr(module, param)[e]
    return (w.t() if getattr(module, "is_transposed", False) else w).float()


def _bias(module: nn.Module, param: str, e: int) -> torch.Tensor | None:
    if not getattr(module, "has_bias", False):
        return None
    b = getattr(module, f"{param}_bias", None)
    return None if b is None else b[e].float()


def slot_delta(group: list[torch.Tensor], x: torch.Tensor, slots: torch.Tensor | None,
               scale: float) -> torch.Tensor:
    """Per-token delta ``[n, out]`` for inputs ``x`` ``[n, in]`` whose memory slots are ``slots``.

    ``group`` is ``[A [S, r, in], B [S, out, r]]`` (low rank) or ``[D [S, out, in]]``
    (dense). With S > 1 the slots are handled in one matmul each way: every token's
    projection onto all slots' factors is computed and the other slots' blocks masked
    out (cheap: the rank is small), instead of gathering a matrix per token.
    """
    n_slots = group[0].shape[0]
    if n_slots == 1 or slots is None:
        if len(group) == 1:
            return x @ group[0][0].t()
        a, b = group
        return (x @ a[0].t()) @ b[0].t() * scale
    if len(group) == 1:  # dense: [n, S*out] -> pick each token's slot
        d = group[0]
        every = (x @ d.reshape(-1, d.shape[-1]).t()).view(x.shape[0], n_slots, d.shape[1])
        return every[torch.arange(x.shape[0], device=x.device), slots]
    a, b = group
    rank = a.shape[1]
    u = x @ a.reshape(n_slots * rank, a.shape[-1]).t()  # [n, S*r]
    keep = (slots[:, None] == torch.arange(n_slots, device=x.device)[None, :])  # [n, S]
    u = u * keep.repeat_interleave(rank, dim=1).to(u.dtype)
    return (u @ b.permute(0, 2, 1).reshape(n_slots * rank, b.shape[1])) * scale


def _routing(module: nn.Module, args: tuple, kwargs: dict):
    """(hidden_states, expert indices, routing weights) from the experts forward's call.

    The first three parameters of the forward, whatever they are called
    (``top_k_index``/``top_k_weights`` in Qwen-MoE and Mixtral, ``router_indices``/
    ``routing_weights`` in GPT-OSS), passed positionally or by name.
    """
    forward = inspect.unwrap(type(module).forward)
    try:
        bound = inspect.signature(forward).bind(module, *args, **kwargs)
    except TypeError:
        bound = None
    if bound is not None:
        values = list(bound.arguments.values())[1:4]
        if len(values) == 3 and all(isinstance(v, torch.Tensor) for v in values):
            return tuple(values)
    if len(args) >= 3:
        return args[0], args[1], args[2]
    raise ValueError(f"{type(module).__name__}.forward: cannot find the hidden states, expert indices "
                     "and routing weights among its arguments")


def _expert_change(module, e: int, x: torch.Tensor, deltas: dict) -> torch.Tensor:
    """f_e(x; W + dW) - f_e(x; W) in float32; ``deltas[param](input) -> [n, out]``.

    Both terms go through the same operations (sharing the base gate/up product), so
    a zero delta gives exactly zero.
    """
    first = "gate_up_proj" if getattr(module, "has_gate", True) and hasattr(module, "gate_up_proj") else "up_proj"
    base = torch.nn.functional.linear(x, _weight(module, first, e), _bias(module, first, e))
    moved = base + deltas[first](x) if first in deltas else base
    gate = module._apply_gate if first == "gate_up_proj" else module.act_fn
    h_base, h_moved = gate(base), gate(moved)
    w_down, b_down = _weight(module, "down_proj", e), _bias(module, "down_proj", e)
    out_base = torch.nn.functional.linear(h_base, w_down, b_down)
    out_moved = torch.nn.functional.linear(h_moved, w_down, b_down)
    if "down_proj" in deltas:
        out_moved = out_moved + deltas["down_proj"](h_moved)
    if getattr(module, "has_post_expert_norm", False):
        out_base, out_moved = module.post_expert_norm(out_base), module.post_expert_norm(out_moved)
    return out_moved - out_base


def experts_correction(module: nn.Module, groups: dict, hidden: torch.Tensor, top_k_index: torch.Tensor,
                       top_k_weights: torch.Tensor, slot_of_token: torch.Tensor | None,
                       scale: float) -> torch.Tensor:
    """sum_e w_{t,e} (f_e(x_t; W + dW) - f_e(x_t; W)) for every token: ``[T, H]`` float32.

    ``groups[(e, param)]`` holds expert e's fast-weight tensors for ``param``.
    """
    x_all = hidden.float()
    total = torch.zeros_like(x_all)
    n_exp = num_experts(module)
    hit = torch.unique(top_k_index)
    for e in hit.tolist():
        if e < 0 or e >= n_exp:  # expert-parallel sentinels
            continue
        mine = {p: g for (ee, p), g in groups.items() if ee == e}
        if not mine:
            continue
        token_idx, k_pos = torch.where(top_k_index == e)
        x = x_all[token_idx]
        slots = None if slot_of_token is None else slot_of_token[token_idx]
        deltas = {p: (lambda v, g=g, s=slots: slot_delta(g, v, s, scale)) for p, g in mine.items()}
        weight = top_k_weights[token_idx, k_pos].float()[:, None]
        total = total.index_add(0, token_idx, _expert_change(module, e, x, deltas) * weight)
    return total


def install_expert_hooks(fast_weights, changes: list | None) -> list:
    """Forward hooks adding the experts' corrections; returns their handles.

    ``fast_weights`` is a :class:`memdlm.memory.fast_weights.FastWeights`; targets of
    kind ``"expert"`` are grouped by their experts module (one hook per module).
    """
    by_module: dict[int, tuple[nn.Module, dict]] = {}
    for target, group in zip(fast_weights.targets, fast_weights.tensors):
        if getattr(target, "kind", "linear") != "expert":
            continue
        entry = by_module.setdefault(id(target.module), (target.module, {}))
        entry[1][(target.expert, target.param)] = group
    handles = []
    for module, groups in by_module.values():
        def hook(mod, args, kwargs, output, groups=groups):
            # runs after the module's forward, when ZeRO-3 has released the weights again
            refuse_partitioned(((f"{type(mod).__name__}.{n}", w) for n, w in mod.named_parameters(recurse=False)),
                               "the MoE experts' memory")
            hidden, top_k_index, top_k_weights = _routing(mod, args, kwargs)
            flat = hidden.reshape(-1, hidden.shape[-1])
            slot_of_token = _slot_of_token(fast_weights, flat.shape[0])
            corr = experts_correction(mod, groups, flat, top_k_index.reshape(flat.shape[0], -1),
                                      top_k_weights.reshape(flat.shape[0], -1), slot_of_token,
                                      fast_weights.scale)
            corr = corr.view(output.shape).to(output.dtype)
            if changes is not None:
                changes.append(corr.detach().norm() / output.detach().norm().clamp_min(1e-12))
            return output + corr

        handles.append(module.register_forward_hook(hook, with_kwargs=True))
    return handles


def _slot_of_token(fast_weights, n_tokens: int) -> torch.Tensor | None:
    """Each flattened token's memory slot (None: a single slot for every token)."""
    if fast_weights.num_slots == 1:
        return None
    per_sample = fast_weights.slot_of_sample
    n_samples = len(per_sample) if per_sample is not None else fast_weights.num_slots
    if n_tokens % n_samples:
        raise ValueError(f"experts got {n_tokens} tokens, not a multiple of the {n_samples} samples "
                         "the memory holds slots for")
    sample = torch.arange(n_tokens, device=fast_weights.tensors[0][0].device) // (n_tokens // n_samples)
    return sample if per_sample is None else per_sample.to(sample.device)[sample]
