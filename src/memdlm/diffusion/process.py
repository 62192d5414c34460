"""One noised batch and the MDLM loss on it -- the forward process used everywhere.

    x0 --(mask maskable tokens w.p. 1 - alpha(t))--> x_t
    loss = sum_{masked i} w(t) * -log p(x0_i | x_t) / normaliser      (memdlm.diffusion.loss)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from memdlm.diffusion.loss import IGNORE, loss_weights, reduce_loss, scatter_token_nll
from memdlm.diffusion.masking import apply_mask, mask_with_probability, sample_times
from memdlm.backbones.modeling import forward_logits


@dataclass
class NoisedBatch:
    clean_ids: torch.Tensor  # [b, l] x0
    attention_mask: torch.Tensor  # [b, l]
    maskable: torch.Tensor  # [b, l] bool: response (or every) token, never prompt/pad
    masked: torch.Tensor  # [b, l] bool: the anchor's masked set, a subset of maskable
    noisy_ids: torch.Tensor  # [b, l] x_t
    t: torch.Tensor  # [b] sampled times
    weight: torch.Tensor  # [b] w(t)
    sample_seed: torch.Tensor | None = None  # [b], for per-sample memory init


def noise_batch(inputs: dict, *, schedule, weighting: str, eps: float, mask_token_id: int,
                generator: torch.Generator | None) -> NoisedBatch:
    """Sample t per sequence and mask maskable tokens (at least one per sequence)."""
    clean = inputs["input_ids"]
    maskable = inputs["labels"] != IGNORE  # [b, l]
    t = sample_times(clean.shape[0], eps=eps, generator=generator, device=clean.device)  # [b]
    masked = mask_with_probability(maskable, schedule.mask_probability(t), generator=generator)
    return NoisedBatch(
        clean_ids=clean, attention_mask=inputs["attention_mask"], maskable=maskable, masked=masked,
        noisy_ids=apply_mask(clean, masked, mask_token_id), t=t,
        weight=loss_weights(t, weighting, schedule), sample_seed=inputs.get("sample_seed"),
    )


def masked_nll(model, noisy_ids, attention_mask, clean_ids, positions) -> torch.Tensor:
    """Dense ``[b, l]`` NLL of the clean tokens at ``positions`` (logits only there)."""
    logits = forward_logits(model, noisy_ids, attention_mask, positions=positions)  # [n, V]
    return scatter_token_nll(logits, clean_ids, positions)


def mdlm_loss(model, batch: NoisedBatch, normalization: str = "token") -> torch.Tensor:
    """The Standard MDLM loss at the batch's anchor state."""
    nll = masked_nll(model, batch.noisy_ids, batch.attention_mask, batch.clean_ids, batch.masked)
    return reduce_loss(nll, batch.weight, batch.maskable, normalization)
