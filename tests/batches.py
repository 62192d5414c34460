"""Random noised batches for the inner-loop and trainer tests (one recipe, several shapes)."""

from __future__ import annotations

import torch

from memdlm.diffusion.masking import mask_with_probability


def random_noised(tok, length: int, prompt: int, pad_from: int, seed: int = 0):
    """Three rows of ``length`` random ids: row 2 padded from ``pad_from``, the positions from
    ``prompt`` on maskable, masked at t = 0.3 / 0.6 / 0.9 with one generator seeded ``seed``.
    Returns (ids, attention mask, maskable, masked, t)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, len(tok), (3, length), generator=g)
    attn = torch.ones_like(ids)
    attn[2, pad_from:] = 0
    maskable = torch.zeros_like(ids, dtype=torch.bool)
    maskable[:, prompt:] = True
    maskable &= attn.bool()
    t = torch.tensor([0.3, 0.6, 0.9])
    masked = mask_with_probability(maskable, t, generator=g)
    return ids, attn, maskable, masked, t
