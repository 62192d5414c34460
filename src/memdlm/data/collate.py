"""Tokenisation, length filtering, packing and the padding collator.

A tokenised example is ``{"input_ids": [...], "labels": [...]}`` where labels are
-100 on positions that are never masked nor scored (the prompt) and equal the
token elsewhere (the response and its EOS): *asymmetric masking*. The trainer
derives the maskable set as ``labels != -100``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from memdlm.diffusion.loss import IGNORE
from memdlm.backbones.tokenizer import token_ids


def encode_pair(tokenizer, prompt: str, response: str) -> dict:
    """Prompt ids (not maskable) + response ids + EOS (maskable)."""
    p = token_ids(tokenizer, prompt)
    r = token_ids(tokenizer, response) + [tokenizer.eos_token_id]
    return {"input_ids": p + r, "labels": [IGNORE] * len(p) + r}


def pack_texts(tokenizer, texts: list[str], block_size: int) -> list[dict]:
    """Concatenate texts (EOS between them) and cut into full blocks; every token maskable.

    The trailing remainder shorter than a block is dropped -- the caller reports it.
    """
    stream: list[int] = []
    for text in texts:
        stream += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    n_blocks = len(stream) // block_size
    blocks = [stream[i * block_size:(i + 1) * block_size] for i in range(n_blocks)]
    return [{"input_ids": b, "labels": list(b)} for b in blocks]


@dataclass
class DiffusionCollator:
    """Right-pads a list of examples into a batch.

    ``pad_with_eos`` follows LLaDA's SFT convention: the response is extended with
    EOS tokens that are attended to and are maskable targets, so the model learns
    where to stop. Otherwise padding is ignored by attention and loss.
    ``sample_seed`` (if examples carry one) is passed through so per-sample memory
    can draw each sample's random init independently of its batch mates.
    """

    pad_token_id: int
    eos_token_id: int | None = None
    pad_with_eos: bool = False
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: list[dict]) -> dict:
        length = max(len(e["input_ids"]) for e in examples)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            length = (length + m - 1) // m * m
        b = len(examples)
        fill = self.eos_token_id if self.pad_with_eos else self.pad_token_id
        input_ids = torch.full((b, length), fill, dtype=torch.long)
        labels = torch.full((b, length), IGNORE, dtype=torch.long)
        attention = torch.zeros((b, length), dtype=torch.long)
        for i, e in enumerate(examples):
            n = len(e["input_ids"])
            input_ids[i, :n] = torch.tensor(e["input_ids"])
            labels[i, :n] = torch.tensor(e["labels"])
            attention[i, :n] = 1
            if self.pad_with_eos:
                labels[i, n:] = self.eos_token_id
                attention[i, n:] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
        if all("sample_seed" in e for e in examples):
            batch["sample_seed"] = torch.tensor([e["sample_seed"] for e in examples], dtype=torch.long)
        return batch
