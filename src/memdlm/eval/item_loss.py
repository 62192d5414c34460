"""Held-out MDLM loss per item, memory off or adapted on the item's prompt.

    losses = item_losses(model, tokenizer, samples)                   # memory off
    losses = item_losses(model, tokenizer, samples, memory=run.memory())  # adapted on the prompt

Each item's loss is its response's (answer + EOS, as training scores it) masked-token
cross-entropy averaged over a fixed grid of K mask ratios ``t_j = (j + 1/2) / K``
(a midpoint rule for the integral over t in the uniform-weighted MDLM loss): at level j
each response token is masked with probability ``t_j``, at least one (the lowest draw),
from ``torch.Generator().manual_seed(seed * 7919 + j)`` with ``seed`` the item's own.
Per level the loss is the mean over the masked tokens; the item's loss the mean over
levels (nats per token).

Why this form: the training run's ``eval_loss`` is one number per evaluation (a
batch mean at one random draw of t per sequence), which cannot be compared item by
item. Here every arm sees the same items *and the same masks* (the masks depend on the
item's seed and the level only), so the arms' per-item differences are paired and go
through the project's bootstrap (:mod:`memdlm.stats`) like the retrieval scores.

With ``memory`` (a :class:`~memdlm.memory.adapt.PromptMemory`), each item gets fast
weights adapted on its prompt alone (the sampler's "Train & Inference" input), active
for every level's forward; the answer never enters the adaptation.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
import torch.nn.functional as F

from memdlm.config import EVAL_BATCH_SIZE
from memdlm.errors import ConfigError
from memdlm.eval.exposure_bias import encode_pairs
from memdlm.backbones.modeling import forward_logits

LEVELS = 8  # mask ratios per item: 1/16, 3/16, ..., 15/16


def level_masks(response_len: int, seed: int, levels: int = LEVELS) -> torch.Tensor:
    """``[levels, response_len]`` bool: level j masks each slot w.p. ``(j + 1/2) / levels``,
    at least its lowest draw; a function of (seed, j) alone."""
    rows = []
    for j in range(levels):
        u = torch.rand(response_len, generator=torch.Generator().manual_seed(seed * 7919 + j))
        masked = u < (j + 0.5) / levels
        masked[u.argmin()] = True
        rows.append(masked)
    return torch.stack(rows)


def _batch(prompts, responses, masks, pad_id: int, mask_id: int, device):
    """Rows ``[b * levels, L]`` (item-major): ids with the level's mask applied, attention
    mask, scored positions and the clean ids."""
    b, levels = len(prompts), masks[0].shape[0]
    width = max(len(p) + len(r) for p, r in zip(prompts, responses))
    clean = torch.full((b, width), pad_id, dtype=torch.long)
    scored = torch.zeros(b * levels, width, dtype=torch.bool)
    for i, (p, r) in enumerate(zip(prompts, responses)):  # host-side, once per batch
        clean[i, : len(p) + len(r)] = torch.tensor(list(p) + list(r))
        scored[i * levels:(i + 1) * levels, len(p): len(p) + len(r)] = masks[i]
    attn = (torch.arange(width)[None, :] < torch.tensor([len(p) + len(r) for p, r in zip(prompts, responses)])[:, None])
    clean = clean.repeat_interleave(levels, 0)
    attn = attn.repeat_interleave(levels, 0).long()
    noisy = clean.masked_fill(scored, mask_id)
    return noisy.to(device), attn.to(device), scored.to(device), clean.to(device)


def item_losses(model, tokenizer, samples, memory=None, levels: int = LEVELS, batch_size: int = EVAL_BATCH_SIZE,
                seeds=None, progress: bool = False) -> list[float]:
    """One loss per sample (nats/token, the module's definition), in order.

    ``samples``: objects with ``prompt`` and ``response`` (or (prompt, response) pairs);
    ``seeds``: one per sample (default 0, 1, ...), fixing its masks and its memory's init.
    """
    from tqdm.auto import tqdm


    if levels < 1:
        raise ConfigError(f"levels must be >= 1, got {levels}")
    prompts, responses = encode_pairs(tokenizer, samples)
    seeds = list(range(len(prompts))) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} samples")
    if memory is not None:
        memory.check_model(model)
        if any(not p for p in prompts):
            raise ValueError(f"item {next(i for i, p in enumerate(prompts) if not p)}: empty prompt; "
                             "memory is adapted on the prompt")
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: list[float] = []
    was_training = model.training
    model.eval()
    try:
        for start in tqdm(range(0, len(prompts), batch_size), desc="item losses", disable=not progress):
            ix = range(start, min(start + batch_size, len(prompts)))
            bp, br, bs = [prompts[i] for i in ix], [responses[i] for i in ix], [seeds[i] for i in ix]
            masks = [level_masks(len(r), s, levels) for r, s in zip(br, bs)]
            noisy, attn, scored, clean = _batch(bp, br, masks, pad_id, tokenizer.mask_token_id, device)
            context = contextlib.nullcontext()
            if memory is not None:
                fast = memory.adapt(bp, bs).detached()
                slots = torch.arange(len(bp), device=device).repeat_interleave(levels)  # row -> item
                context = dataclasses.replace(fast, slot_of_sample=slots).active()
            with torch.no_grad(), context:
                logits = forward_logits(model, noisy, attn, positions=scored).float()  # [n, V]
            nll = torch.zeros(scored.shape, device=device)
            nll[scored] = F.cross_entropy(logits, clean[scored], reduction="none")
            per_level = nll.sum(1) / scored.sum(1)  # [b * levels]
            out += per_level.view(len(bp), levels).mean(1).tolist()
    finally:
        model.train(was_training)
    return out


TEMPERATURES = tuple(round(0.5 + 0.05 * i, 2) for i in range(51))  # 0.5, 0.55, ..., 3.0


def temperature_nll(model, tokenizer, samples, temperatures=TEMPERATURES, levels: int = LEVELS,
                    batch_size: int = EVAL_BATCH_SIZE) -> dict[float, float]:
    """Static held-out NLL (nats per masked response token, pooled over items and the mask
    levels of :func:`level_masks`) of ``model`` with its logits divided by each temperature.
    The minimiser is the temperature that calibrates the model on these items."""

    prompts, responses = encode_pairs(tokenizer, samples)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    total = torch.zeros(len(temperatures), dtype=torch.float64)
    count = 0
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(prompts), batch_size):
            ix = range(start, min(start + batch_size, len(prompts)))
            bp, br = [prompts[i] for i in ix], [responses[i] for i in ix]
            masks = [level_masks(len(r), i, levels) for r, i in zip(br, ix)]
            noisy, attn, scored, clean = _batch(bp, br, masks, pad_id, tokenizer.mask_token_id, device)
            with torch.no_grad():
                logits = forward_logits(model, noisy, attn, positions=scored).float()  # [n, V]
                target = clean[scored]
                for k, t in enumerate(temperatures):
                    total[k] += F.cross_entropy(logits / t, target, reduction="sum").double().cpu()
            count += int(scored.sum())
    finally:
        model.train(was_training)
    return {float(t): float(v / count) for t, v in zip(temperatures, total)}
