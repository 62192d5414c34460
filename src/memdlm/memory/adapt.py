"""Inference-time adaptation ("Train & Inference"): write a memory from the prompt.

The prompt becomes the maskable part; the anchor is the prompt with a random
``mask_ratio`` (paper: 0.2) masked; the trajectory (pre-anchor at 1.5x, then
anchor-to-target: two SGD steps by default) runs as :data:`memory.builder.ADAPTATION`
says (uniform weights, one memory per prompt), each from its own seed. Generate inside
``memory.active()``.

Every inference path adapts through one :class:`PromptMemory`, normally a run's
(``memdlm.runs.run.Run.memory``), so generation, the evaluation suite, the exposure-bias
analysis, the lm-eval model, the probe and the benchmarks all adapt with the same
settings as training did, plus only the overrides the caller names.
"""

from __future__ import annotations

from dataclasses import asdict

import torch

from memdlm.memory.builder import ADAPTATION, ResolvedMemory, build_inner_loop, resolve_memory
from memdlm.memory.fast_weights import FastWeights
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


def right_pad(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids ``[b, l]`` and their attention mask."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        attn[i, :len(r)] = 1
    return ids.to(device), attn.to(device)


class PromptMemory:
    """Adapts per-prompt memories for one model with one set of memory settings.

    ``settings`` (:class:`~memdlm.memory.config.AdaptationArguments`) are complete: a run's
    own with ``overrides`` applied (``overrides`` only say which were changed, for the
    record). ``resolved``: the rank, scale and target names to adapt with (a run's saved
    resolution, :func:`memdlm.memory.builder.resolve_memory`); None resolves them from
    ``settings``. The inner loop is built once, here; :meth:`adapt` is the one call every
    inference path makes.
    """

    def __init__(self, model, tokenizer, settings, overrides: dict | None = None,
                 resolved: ResolvedMemory | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings
        self.overrides = dict(overrides or {})
        self.resolved = resolved or resolve_memory(model, settings)
        self.loop = build_inner_loop(model, settings, ADAPTATION, mask_token_id=tokenizer.mask_token_id,
                                     resolved=self.resolved)

    def adapt(self, prompts: list[list[int]], seeds) -> FastWeights:
        """Fast weights with slot i adapted on ``prompts[i]`` (token ids) from ``seeds[i]``.

        The model runs in eval mode meanwhile (dropout off); its mode is restored.
        """
        device = next(self.model.parameters()).device
        ids, attn = right_pad(prompts, self.tokenizer.pad_token_id, device)
        seeds = seeds if isinstance(seeds, torch.Tensor) else torch.tensor(list(seeds))
        was_training = self.model.training
        self.model.eval()
        try:
            return self.adapt_positions(ids, attn, attn.bool(), seeds)
        finally:
            self.model.train(was_training)

    def adapt_positions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        prompt_positions: torch.Tensor, seeds: torch.Tensor) -> FastWeights:
        """Fast weights adapted on the ``prompt_positions`` of a right-padded batch ``[b, l]``
        (the trainer's held-out loss: the prompt part of each example), model mode as it is."""
        return adapt_on_prompts(self.loop, input_ids, attention_mask, prompt_positions,
                                self.settings.adapt_mask_ratio, seeds)

    def check_model(self, model) -> None:
        """Refuse to adapt for another model than the one the loop hooks."""
        if model is not self.model:
            raise ValueError("this PromptMemory was built for another model; build it from the run "
                             "whose model generates (run.memory())")

    def record(self) -> dict:
        """The settings used, which of them were overridden, and the rank, alpha, scale and
        targets adapted with (JSON-ready)."""
        return {"memory_args": asdict(self.settings), "memory_overrides": dict(self.overrides),
                "memory_resolved": self.resolved.to_dict()}

    def describe(self) -> str:
        s = self.settings
        text = (f"rank {self.loop.rank}, scope {s.memory_scope}, trajectory {s.trajectory}, inner lr "
                f"{s.inner_lr}, adapt mask ratio {s.adapt_mask_ratio}")
        return text + (f" (overridden: {self.overrides})" if self.overrides else "")
