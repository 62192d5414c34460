"""Shared fixtures: the shipped tokenizer, a tiny model factory, a mask-less tokenizer.

Tests run on one thread (the CI machines are small and shared); anything that trains or
runs the CLI end to end is marked ``slow``. The environment says one thread too, so the
commands' default (``config.default_threads``, which reads OMP_NUM_THREADS) and every
subprocess agree with it: plain ``pytest`` and ``scripts/test.sh`` do the same arithmetic.
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tok():
    """The shipped tokenizer, loaded once per session (``memdlm.backbones.tokenizer.load_tokenizer()``)."""
    from memdlm.backbones.tokenizer import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def make_tiny_model(tok):
    """``make_tiny_model(seed=0, num_hidden_layers=2, **overrides)``: a fresh tiny Gemma3."""
    from memdlm.backbones.modeling import build_tiny_model

    def make(seed: int = 0, num_hidden_layers: int = 2, **overrides):
        return build_tiny_model(tok, seed=seed, num_hidden_layers=num_hidden_layers, **overrides)

    return make


@pytest.fixture(scope="session")
def maskless_tokenizer():
    """A WordLevel fast tokenizer with pad and eos tokens but no mask token."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, "hello": 3, "world": 4}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>")


@pytest.fixture(scope="session")
def block_pair():
    """``block_pair(model, attn, block, slots, mode="dual")``: two ``BlockForward`` s over the
    same canvas mask, no cache and ``mode``, both started on block columns ``block`` of the
    response columns ``slots`` -- the comparison every block-cache exactness test makes."""
    import contextlib

    from memdlm.sampling.block_cache import BlockForward

    def make(model, attn, block, slots, mode: str = "dual"):
        pair = (BlockForward(model, attn, "none", contextlib.nullcontext),
                BlockForward(model, attn, mode, contextlib.nullcontext))
        for forward in pair:
            forward.start_block(block, slots)
        return pair

    return make
