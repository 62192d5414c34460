"""LLaDA2's own decoding (``unmask_rule="llada2"``): block-causal attention on a fixed block grid.

Written from the published description of LLaDA2's ``generate`` (inclusionAI, LLaDA2.0 model
card and the docstring of its modeling file): "a template of the full desired length, filled
with the mask token, processed in blocks; a block-diagonal causal attention mask ensures that
generation within a block can attend to all previous blocks but not future ones; a sampled
token is kept if its probability is above the threshold, and if not enough tokens meet it,
the ones with the highest confidence are chosen".

1. **Grid.** Blocks of ``size`` positions are counted from position 0 of the sequence, not
   from the first response slot: a sample with a P-token prompt and N new tokens owns the
   canvas ``[0, end)``, ``end = ceil((P + N) / size) * size``; its first block holds the
   prompt's last ``P % size`` tokens and the first response slots, and the slots past
   ``P + N`` in its last block are decoded with the rest and dropped. Every sample of a batch
   shares the grid (block g is columns ``[g size, (g + 1) size)``), so a batch steps through
   the blocks together; a sample whose prompt covers block g, or whose canvas has ended,
   rides along without committing anything.
2. **Attention.** Position i sees position j iff ``j // size <= i // size`` (and j is not
   padding); the model runs on the canvas up to the current block's end, with
   ``position_ids`` 0, 1, ...: the later blocks are invisible anyway.
3. **Steps.** Each block runs at most ``steps`` steps; step i's quota k_i is the even split of
   ``size`` tokens over ``steps`` steps (remainder to the earliest; zeros past ``size``). A step
   commits every masked slot of the block whose confidence (the model's probability of its
   proposal) is above ``threshold`` if there are at least k_i of them, else the k_i most
   confident (:func:`memdlm.sampling.sampler.select_above_threshold_or_top_k`); the block ends when it has no mask.
4. **EOS** (``stop_at_eos``). Within a block EOS is an ordinary token; after a block, a sample
   with an EOS in its response stops (its later slots become EOS, and the response is cut
   before the first EOS as usual).

The memory of inference-time adaptation is adapted before decoding, with full attention
(:class:`memdlm.memory.adapt.PromptMemory`), as MemDLM's reference does; only the
decoding forwards use this mask.
"""

from __future__ import annotations

import torch

from memdlm.backbones.modeling import logits_only_at, unwrap


def grid_end(prompt_length: int, n_new: int, size: int) -> int:
    """One past the last canvas position of a sample: the block boundary at or after P + N."""
    return -(-(prompt_length + n_new) // size) * size


def block_causal_keep(attn: torch.Tensor, size: int) -> torch.Tensor:
    """``[b, L]`` padding mask -> ``[b, 1, L, L]`` bool: query i sees key j iff block(j) <= block(i)."""
    width = attn.shape[1]
    block = torch.arange(width, device=attn.device) // size  # [L]
    causal = block[None, :] <= block[:, None]  # [L(query), L(key)]
    return causal[None, None] & attn.bool()[:, None, None, :]


def prepared_mask(model, keep: torch.Tensor) -> torch.Tensor:
    """A 4-D ``keep`` mask in the form the attention takes: bool for sdpa (and remote code,
    which converts it), additive in the weights' dtype for transformers' eager attention."""
    if getattr(unwrap(model).config, "_attn_implementation", "sdpa") != "eager":
        return keep
    dtype = next(model.parameters()).dtype
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)


class BlockCausalForward:
    """The model calls of one block-causal decode: logits of block g's columns, call counts.

    ``attn``: the canvas's padding mask ``[b, L]``; ``context``: a factory of the context
    entered around every call (the inference memory's hooks).
    """

    mode = "none"  # no key/value cache on this path

    def __init__(self, model, attn: torch.Tensor, size: int, context):
        self.model, self.size, self.context = model, size, context
        self.keep = block_causal_keep(attn, size)  # [b, 1, L, L]
        self.calls = 0
        self.calls_per_sample = torch.zeros(attn.shape[0], dtype=torch.long, device=attn.device)

    def start_block(self, block: int) -> None:
        self.end = (block + 1) * self.size  # the canvas is cut here (rule 2)

    def logits(self, x: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """Logits at the current block's columns ``[b, size, V]`` for canvas ``x`` ``[b, L]``."""
        b, end = x.shape[0], self.end
        at_block = torch.zeros(b, end, dtype=torch.bool, device=x.device)
        at_block[:, end - self.size:] = True
        positions = torch.arange(end, device=x.device).expand(b, -1)  # [b, end]
        mask = prepared_mask(self.model, self.keep[:, :, :end, :end])
        with self.context(), logits_only_at(self.model, at_block):
            logits = self.model(input_ids=x[:, :end], attention_mask=mask, position_ids=positions,
                                use_cache=False).logits
        self.calls += 1
        self.calls_per_sample += active.long()
        return logits.view(b, self.size, -1)
