"""Per-item held-out loss (memdlm.eval.item_loss): a hand computation, pairing, memory."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from memdlm.eval.item_loss import item_losses, level_masks

PAIRS = [(" alpha beta gamma |", " delta epsilon"), (" one two |", " three"),
         (" red green blue yellow |", " orange purple pink")]


@pytest.fixture(scope="module")
def model(make_tiny_model):
    return make_tiny_model(seed=3).eval()


def test_level_masks_are_seeded_nonempty_and_follow_the_grid():
    a, b = level_masks(400, seed=5), level_masks(400, seed=5)
    assert torch.equal(a, b) and not torch.equal(a, level_masks(400, seed=6))
    assert bool(a.any(1).all())  # every level scores at least one token
    fractions = a.float().mean(1)  # ~ (j + 1/2) / 8 with 400 draws
    assert torch.allclose(fractions, (torch.arange(8) + 0.5) / 8, atol=0.08)
    assert bool(level_masks(1, seed=0).all())  # one token: masked at every level


def test_matches_a_hand_computation(model, tok):
    """Item 0 by hand: mask each level's slots, full forward, mean CE there, mean over levels."""
    from memdlm.eval.exposure_bias import encode_pairs

    (prompt,), (response,) = encode_pairs(tok, PAIRS[:1])
    ids = torch.tensor([prompt + response])
    masks = level_masks(len(response), seed=0)
    per_level = []
    for m in masks:
        noisy = ids.clone()
        noisy[0, len(prompt):][m] = tok.mask_token_id
        with torch.no_grad():
            logits = model(input_ids=noisy, attention_mask=torch.ones_like(ids)).logits[0, len(prompt):]
        per_level.append(F.cross_entropy(logits[m].float(), ids[0, len(prompt):][m]).item())
    (got,) = item_losses(model, tok, PAIRS[:1])
    assert got == pytest.approx(sum(per_level) / len(per_level), abs=1e-5)


def test_paired_items_do_not_depend_on_batch_mates(model, tok):
    """The same item gets the same masks and loss alone or padded beside longer ones."""
    together = item_losses(model, tok, PAIRS, batch_size=3)
    alone = [item_losses(model, tok, [p], seeds=[i])[0] for i, p in enumerate(PAIRS)]
    assert together == pytest.approx(alone, abs=1e-5)
    assert item_losses(model, tok, PAIRS, seeds=[7, 8, 9]) != pytest.approx(together, abs=1e-6)


def test_memory_adapted_on_the_prompt(model, tok):
    from memdlm.runs.run import Run

    off = item_losses(model, tok, PAIRS, batch_size=2)
    inert = item_losses(model, tok, PAIRS, batch_size=2, memory=Run(model, tok).memory(inner_lr=0.0))
    assert inert == pytest.approx(off, abs=1e-5)  # inner lr 0: the memory machinery adds nothing
    active = item_losses(model, tok, PAIRS, batch_size=2, memory=Run(model, tok).memory(inner_lr=1.0))
    assert active != pytest.approx(off, abs=1e-4)
    with pytest.raises(ValueError, match="3 seeds for 2 samples"):
        item_losses(model, tok, PAIRS[:2], seeds=[0, 1, 2])
