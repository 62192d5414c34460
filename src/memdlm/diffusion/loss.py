"""The MDLM objective, shared by the outer loss and the MemDLM inner loss.

For a noised state x_t with masked set M (a subset of the maskable set A)::

    L = sum_{i in M} w(t) * -log p_theta(x0_i | x_t)  /  normaliser

with ``w(t) = -alpha'(t) / (1 - alpha(t))`` ("scheduler"; 1/t for the linear
schedule) or 1 ("uniform"). Normalisers divide by *maskable* counts, never by
masked counts -- dividing by |M| would cancel the 1/t weight's unbiasedness:

- ``token``: the batch's sum over the batch's total maskable count (default);
- ``sequence``: each sequence's sum over its own maskable count, averaged;
- ``batch``: the batch's sum over the batch size.

Per-sample variants (``per_sample_loss``) divide each sample's sum by its own
maskable count, so a sample's value does not depend on its batch mates: the
MemDLM inner loop needs exactly that for per-sample memory.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F

from memdlm.errors import ConfigError

# The label of positions that are never masked nor scored (the prompt, padding): the
# maskable set is ``labels != IGNORE`` (torch's cross-entropy ignore index).
IGNORE = -100

Normalization = Literal["token", "sequence", "batch"]
Weighting = Literal["scheduler", "uniform"]
NORMALIZATIONS = get_args(Normalization)
WEIGHTINGS = get_args(Weighting)


def loss_weights(t: torch.Tensor, weighting: str, schedule) -> torch.Tensor:
    """Per-sequence weight ``[b]`` at (possibly realised) times ``t``."""
    if weighting == "scheduler":
        return schedule.elbo_weight(t)
    if weighting == "uniform":
        return torch.ones_like(t)
    raise ConfigError(f"unknown weighting {weighting!r}; choose one of {WEIGHTINGS}")


def scatter_token_nll(
    logits: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor,
) -> torch.Tensor:
    """Dense ``[b, l]`` negative log-likelihoods from logits at ``positions`` only.

    ``logits`` is ``[n, V]`` for the n True entries of ``positions`` (row-major
    order, as ``positions.nonzero()`` lists them); zeros elsewhere.
    """
    nll = torch.zeros(positions.shape, dtype=torch.float32, device=logits.device)
    picked = F.cross_entropy(logits.float(), targets[positions], reduction="none")  # [n]
    return nll.index_put(tuple(positions.nonzero().t()), picked)


def sequence_sums(nll: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted per-sequence sums ``[b]`` (nll is zero off the scored positions)."""
    return weight * nll.sum(dim=1)


def reduce_loss(
    nll: torch.Tensor, weight: torch.Tensor, maskable: torch.Tensor,
    normalization: str = "token",
) -> torch.Tensor:
    """Scalar MDLM loss from dense per-token NLL ``[b, l]`` and weights ``[b]``."""
    sums = sequence_sums(nll, weight)  # [b]
    n_maskable = maskable.sum(dim=1).float()  # [b]
    if normalization == "token":
        return sums.sum() / n_maskable.sum().clamp_min(1.0)
    if normalization == "sequence":
        return (sums / n_maskable.clamp_min(1.0)).mean()
    if normalization == "batch":
        return sums.sum() / nll.shape[0]
    raise ConfigError(f"unknown normalization {normalization!r}; choose one of {NORMALIZATIONS}")


def per_sample_loss(nll: torch.Tensor, weight: torch.Tensor, maskable: torch.Tensor) -> torch.Tensor:
    """Each sample's weighted sum over its own maskable count: ``[b]``."""
    return sequence_sums(nll, weight) / maskable.sum(dim=1).float().clamp_min(1.0)


def absorption_ratio(loss_with_memory: torch.Tensor, loss_without: torch.Tensor) -> float:
    """The anchor loss with the memory over the same loss without it (MemDLM's collapse
    diagnostic): near 1, the memory barely helps; near 0, it has absorbed the targets."""
    return (loss_with_memory.detach() / loss_without.detach().clamp_min(1e-12)).item()
