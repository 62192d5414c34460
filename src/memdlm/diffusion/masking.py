"""Pure, vectorised masking kernels (no Python loops over samples, no ``.item()``).

Every function takes boolean position sets of shape ``[b, l]`` and an optional
``torch.Generator``, so the same seed gives the same masks on any machine.

Vocabulary used throughout the package:
- *maskable*: positions that may be noised and are scored (response tokens; every
  token for plain-text pre-training). Prompt and padding are never maskable.
- *masked*: the maskable positions replaced by the mask token in a noised state.
"""

from __future__ import annotations

import torch


def sample_times(
    batch_size: int, *, eps: float = 1e-3, generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """t ~ U(eps, 1), one per sequence: ``[b]``."""
    u = torch.rand(batch_size, generator=generator, device=device)
    return eps + (1.0 - eps) * u


def _uniform_scores(shape, generator, device, scores=None) -> torch.Tensor:
    if scores is not None:  # caller-provided uniforms (e.g. hashed, per-sample)
        if scores.shape != torch.Size(shape):
            raise ValueError(f"scores shape {tuple(scores.shape)} != {tuple(shape)}")
        return scores
    return torch.rand(shape, generator=generator, device=device)


def hashed_uniform(seeds: torch.Tensor, length: int, salt: int = 0) -> torch.Tensor:
    """Uniforms ``[b, length]`` that depend only on (seed of the row, position, salt).

    A counter-based hash instead of a generator stream: a sample's draws at
    position i are the same whatever its padded length and batch mates, which
    is what per-sample memory needs to be invariant to batching.
    """
    mask32 = 0xFFFFFFFF
    pos = torch.arange(length, device=seeds.device, dtype=torch.int64)
    seed = (seeds.to(torch.int64) ^ (seeds.to(torch.int64) >> 32)) & mask32
    x = (seed[:, None] * 1000003 + pos[None, :] * 7919 + (salt & mask32) * 104729) & mask32
    for _ in range(3):
        x = ((x >> 16) ^ x) * 0x45D9F3B & mask32
    x = (x >> 16) ^ x
    return (x.to(torch.float64) / 2**32).to(torch.float32)


def mask_with_probability(
    maskable: torch.Tensor, prob: torch.Tensor, *, generator: torch.Generator | None = None,
    at_least_one: bool = True, scores: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mask each maskable position independently with probability ``prob[b]``.

    With ``at_least_one`` a sequence with any maskable position gets at least one
    masked token (the one with the smallest uniform draw), so no anchor is empty:
    an empty anchor would give zero loss and, for MemDLM, nothing for the
    anchor-to-target stage to fit.
    """
    u = _uniform_scores(maskable.shape, generator, maskable.device, scores)  # [b, l]
    masked = (u < prob[:, None]) & maskable
    if at_least_one:
        first = u.masked_fill(~maskable, 2.0).argmin(dim=1)  # [b]
        needs_one = maskable.any(dim=1) & ~masked.any(dim=1)  # [b]
        forced = torch.zeros_like(masked)
        forced[torch.arange(len(first), device=first.device), first] = True
        masked = masked | (forced & needs_one[:, None])
    return masked


def masked_fraction(masked: torch.Tensor, maskable: torch.Tensor) -> torch.Tensor:
    """Realised masked fraction per sequence ``[b]`` (0 where nothing is maskable)."""
    return masked.sum(1).float() / maskable.sum(1).clamp_min(1).float()


def extend_mask_to_fraction(
    masked: torch.Tensor, maskable: torch.Tensor, fraction: torch.Tensor, *,
    generator: torch.Generator | None = None, scores: torch.Tensor | None = None,
) -> torch.Tensor:
    """A superset of ``masked`` covering ``ceil(fraction * n_maskable)`` positions.

    Extra positions are drawn uniformly among the still-visible maskable ones;
    already-masked positions are always kept (a noisier state consistent with the
    anchor). ``fraction`` is clamped to [0, 1]; the count never drops below the
    current number of masked positions.
    """
    n_maskable = maskable.sum(1)  # [b]
    target = torch.ceil(fraction.clamp(0, 1) * n_maskable.float() - 1e-6).long()
    target = torch.maximum(target, masked.sum(1))  # [b]
    score = _uniform_scores(masked.shape, generator, masked.device, scores)
    score = score.masked_fill(masked, -1.0).masked_fill(~maskable, 2.0)  # masked first, never others
    rank = score.argsort(dim=1).argsort(dim=1)  # [b, l] rank of each position
    return (rank < target[:, None]) & maskable


def random_ranks(
    positions: torch.Tensor, *, generator: torch.Generator | None = None,
    scores: torch.Tensor | None = None,
) -> torch.Tensor:
    """A uniformly random order over the True positions of each row: ``[b, l]``.

    True positions get ranks 0..n_b-1; other positions get ranks >= n_b.
    """
    score = _uniform_scores(positions.shape, generator, positions.device, scores)
    score = score.masked_fill(~positions, 2.0)
    return score.argsort(dim=1).argsort(dim=1)


def apply_mask(input_ids: torch.Tensor, masked: torch.Tensor, mask_token_id: int) -> torch.Tensor:
    """Replace masked positions by the mask token (at the id level, never in text)."""
    return input_ids.masked_fill(masked, mask_token_id)


def seeded_generator(*seeds: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator whose state depends only on ``seeds`` (e.g. run seed and step).

    Deriving masking randomness from (seed, step, micro-batch) rather than from a
    global RNG stream makes a resumed run draw exactly the masks of an
    uninterrupted one.
    """
    value = 0x9E3779B97F4A7C15
    for s in seeds:
        value = (value * 6364136223846793005 + int(s) + 1442695040888963407) % (1 << 63)
    g = torch.Generator(device=device)
    g.manual_seed(value)
    return g
