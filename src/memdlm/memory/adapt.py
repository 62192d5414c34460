"""Inference-time adaptation ("Train & Inference"): write a memory from the prompt.

The prompt becomes the maskable part; the anchor is the prompt with a random
``mask_ratio`` (paper: 0.2) masked; the trajectory (pre-anchor at 1.5x, then
anchor-to-target: two SGD steps by default) runs with uniform weights, one memory
per prompt, each from its own seed. Generate inside ``memory.active()``.
"""

from __future__ import annotations

import torch

from memdlm.memory.inner_loop import InnerLoop, prompt_anchor


def adapt_on_prompts(loop: InnerLoop, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     prompt_positions: torch.Tensor, mask_ratio: float, seeds: torch.Tensor):
    """Per-prompt fast weights for a right-padded batch of prompts."""
    if not loop.per_sample:
        raise ValueError("inference-time adaptation needs a per-sample inner loop")
    inputs = prompt_anchor(input_ids, attention_mask, prompt_positions, mask_ratio, seeds)
    with torch.enable_grad():
        memory, _ = loop.run(inputs)
    return memory


def build_adaptation_loop(model, memory_args, mask_token_id: int) -> InnerLoop:
    """A per-sample, uniformly weighted inner loop for ``model`` (inference settings)."""
    from memdlm.memory.targets import find_targets
    from memdlm.modeling import unwrap
    from memdlm.schedules import get_schedule

    a = memory_args
    targets = find_targets(model, a.memory_scope, a.memory_layer_fraction, a.memory_target_modules)
    return InnerLoop(model, targets, a, hidden_size=unwrap(model).config.hidden_size,
                     mask_token_id=mask_token_id, schedule=get_schedule("linear"), per_sample=True,
                     weighting="uniform")
