"""The MDLM loss: weights, normalisers, the dense NLL, the noised batch and the full loss.

The reference numbers below are computed by hand in the comments.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from memdlm.data.collate import IGNORE, DiffusionCollator
from memdlm.diffusion.process import NoisedBatch, masked_nll, mdlm_loss, noise_batch
from memdlm.diffusion.loss import (
    NORMALIZATIONS,
    loss_weights,
    per_sample_loss,
    reduce_loss,
    scatter_token_nll,
    sequence_sums,
)
from memdlm.diffusion.masking import seeded_generator
from memdlm.diffusion.schedules import CosineSchedule, LinearSchedule

T = torch.tensor([1e-3, 0.1, 0.25, 0.5, 0.9, 1.0])

# --- loss_weights -----------------------------------------------------------------------


def cosine_weight(t: float) -> float:
    """(pi/2) sin(pi t/2) / (1 - cos(pi t/2)), in float64."""
    return (math.pi / 2) * math.sin(math.pi * t / 2) / (1 - math.cos(math.pi * t / 2))


def test_linear_scheduler_weight_is_one_over_t():
    # float32: 1 - (1 - t) loses ~1e-5 relative at t = 1e-3; well inside 1e-4.
    torch.testing.assert_close(loss_weights(T, "scheduler", LinearSchedule()), 1.0 / T,
                               rtol=1e-4, atol=0)
    assert loss_weights(torch.tensor([0.25]), "scheduler", LinearSchedule()).item() == 4.0


def test_cosine_scheduler_weight():
    t = torch.tensor([0.05, 0.1, 0.25, 0.5, 0.9, 1.0])
    expected = torch.tensor([cosine_weight(x) for x in t.tolist()])
    torch.testing.assert_close(loss_weights(t, "scheduler", CosineSchedule()), expected,
                               rtol=1e-5, atol=0)
    # t = 1: (pi/2) * 1 / (1 - 0) = pi/2.
    torch.testing.assert_close(loss_weights(torch.tensor([1.0]), "scheduler", CosineSchedule()),
                               torch.tensor([math.pi / 2]))


def test_cosine_scheduler_weight_accurate_near_eps():
    t = torch.tensor([1e-3, 2e-3, 1e-2])
    expected = torch.tensor([cosine_weight(x) for x in t.tolist()])
    torch.testing.assert_close(loss_weights(t, "scheduler", CosineSchedule()), expected,
                               rtol=1e-3, atol=0)


@pytest.mark.parametrize("schedule", [LinearSchedule(), CosineSchedule()])
def test_uniform_weight_is_one(schedule):
    assert torch.equal(loss_weights(T, "uniform", schedule), torch.ones_like(T))


def test_unknown_weighting_lists_names():
    with pytest.raises(ValueError, match=r"'elbo'.*scheduler.*uniform"):
        loss_weights(T, "elbo", LinearSchedule())


# --- reduce_loss on a [2, 5] example ----------------------------------------------------
#
# Row 0: prompt of 2, 3 maskable tokens (positions 2-4), masked at 2 and 4 with NLL 0.5, 1.5.
# Row 1: prompt of 1, 4 maskable tokens (positions 1-4), masked at 1, 2, 3 with NLL 2.0, 1.0, 0.5.
# t = (0.5, 0.25), linear schedule: w = (2, 4).
# Weighted sums: row 0 = 2 * (0.5 + 1.5) = 4; row 1 = 4 * (2.0 + 1.0 + 0.5) = 14.
#   token    = (4 + 14) / (3 + 4)        = 18/7
#   sequence = (4/3 + 14/4) / 2          = 29/12
#   batch    = (4 + 14) / 2              = 9
#   per-sample = (4/3, 14/4)

NLL = torch.tensor([[0.0, 0.0, 0.5, 0.0, 1.5],
                    [0.0, 2.0, 1.0, 0.5, 0.0]])
MASKABLE = torch.tensor([[False, False, True, True, True],
                         [False, True, True, True, True]])
WEIGHT = torch.tensor([2.0, 4.0])


def test_sequence_sums_by_hand():
    torch.testing.assert_close(sequence_sums(NLL, WEIGHT), torch.tensor([4.0, 14.0]))


@pytest.mark.parametrize("normalization, expected", [
    ("token", 18 / 7), ("sequence", 29 / 12), ("batch", 9.0),
])
def test_reduce_loss_by_hand(normalization, expected):
    got = reduce_loss(NLL, WEIGHT, MASKABLE, normalization)
    assert got.shape == ()
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_reduce_loss_default_is_token():
    assert reduce_loss(NLL, WEIGHT, MASKABLE).item() == pytest.approx(18 / 7, rel=1e-6)


def test_per_sample_loss_by_hand():
    torch.testing.assert_close(per_sample_loss(NLL, WEIGHT, MASKABLE), torch.tensor([4 / 3, 3.5]))


def test_per_sample_loss_ignores_batch_mates():
    alone = per_sample_loss(NLL[:1], WEIGHT[:1], MASKABLE[:1])
    torch.testing.assert_close(alone, per_sample_loss(NLL, WEIGHT, MASKABLE)[:1])


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_normaliser_counts_maskable_not_masked(normalization):
    """Moving or splitting the masked tokens (same maskable set) changes only the numerator."""
    # Row 0 now has one masked token carrying the same NLL (2.0) instead of two: same loss.
    one_masked = NLL.clone()
    one_masked[0] = torch.tensor([0.0, 0.0, 0.0, 2.0, 0.0])
    base = reduce_loss(NLL, WEIGHT, MASKABLE, normalization)
    assert reduce_loss(one_masked, WEIGHT, MASKABLE, normalization).item() == pytest.approx(base.item())
    # Row 0's NLL doubled at other positions: numerator changes, denominator does not.
    doubled = NLL.clone()
    doubled[0] = torch.tensor([0.0, 0.0, 1.0, 3.0, 0.0])
    expected = {"token": (8 + 14) / 7, "sequence": (8 / 3 + 14 / 4) / 2, "batch": (8 + 14) / 2}
    assert reduce_loss(doubled, WEIGHT, MASKABLE, normalization).item() == pytest.approx(
        expected[normalization])


def test_more_maskable_tokens_change_only_the_denominator():
    more = MASKABLE.clone()
    more[0, 1] = True  # row 0 now has 4 maskable tokens, same masked NLL
    assert reduce_loss(NLL, WEIGHT, more, "token").item() == pytest.approx(18 / 8)
    assert reduce_loss(NLL, WEIGHT, more, "sequence").item() == pytest.approx((4 / 4 + 14 / 4) / 2)
    assert reduce_loss(NLL, WEIGHT, more, "batch").item() == pytest.approx(9.0)


def test_unknown_normalization_lists_names():
    with pytest.raises(ValueError, match=r"'masked'.*token.*sequence.*batch"):
        reduce_loss(NLL, WEIGHT, MASKABLE, "masked")


# --- scatter_token_nll ------------------------------------------------------------------


def test_scatter_token_nll_matches_cross_entropy():
    g = torch.Generator().manual_seed(0)
    positions = torch.tensor([[False, True, False, True, True],
                              [True, False, False, False, True]])
    targets = torch.randint(0, 11, (2, 5), generator=g)
    full_logits = torch.randn(2, 5, 11, generator=g)
    nll = scatter_token_nll(full_logits[positions], targets, positions)
    assert nll.shape == (2, 5) and nll.dtype == torch.float32
    for b in range(2):
        for i in range(5):
            if positions[b, i]:
                ref = F.cross_entropy(full_logits[b, i][None], targets[b, i][None])
                torch.testing.assert_close(nll[b, i], ref)
            else:
                assert nll[b, i] == 0.0


def test_scatter_token_nll_upcasts_low_precision_logits():
    positions = torch.tensor([[True, True]])
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]], dtype=torch.bfloat16)
    nll = scatter_token_nll(logits, torch.tensor([[0, 2]]), positions)
    assert nll.dtype == torch.float32
    # -log softmax: log(1 + e^-2 + e^-3) and log 3.
    expected = torch.tensor([[math.log(1 + math.exp(-2) + math.exp(-3)), math.log(3)]])
    torch.testing.assert_close(nll, expected, atol=1e-6, rtol=1e-6)


# --- noise_batch and mdlm_loss ----------------------------------------------------------


def collated(pad_id: int = 0) -> dict:
    """Two examples: prompt 3 + response 3 tokens (padded to 7), and prompt 1 + response 6."""
    examples = [
        {"input_ids": [40, 41, 42, 50, 51, 52], "labels": [IGNORE] * 3 + [50, 51, 52],
         "sample_seed": 17},
        {"input_ids": [60, 70, 71, 72, 73, 74, 75], "labels": [IGNORE] + [70, 71, 72, 73, 74, 75],
         "sample_seed": 18},
    ]
    return DiffusionCollator(pad_token_id=pad_id)(examples)


EXPECTED_MASKABLE = torch.tensor([[False, False, False, True, True, True, False],
                                  [False, True, True, True, True, True, True]])


def noised(inputs, seed=0, mask_id=1, weighting="scheduler", schedule=None, n_copies=1):
    if n_copies > 1:
        inputs = {k: v.repeat(n_copies, *([1] * (v.dim() - 1))) for k, v in inputs.items()}
    return noise_batch(inputs, schedule=schedule or LinearSchedule(), weighting=weighting,
                       eps=1e-3, mask_token_id=mask_id, generator=seeded_generator(seed))


def test_noise_batch_replaces_exactly_the_masked_positions():
    inputs = collated()
    batch = noised(inputs, n_copies=200)
    clean = batch.clean_ids
    assert torch.equal(batch.maskable, EXPECTED_MASKABLE.repeat(200, 1))
    assert torch.equal(batch.maskable, inputs["labels"].repeat(200, 1) != IGNORE)
    assert not (batch.masked & ~batch.maskable).any()
    assert (batch.masked.sum(1) >= 1).all()
    assert (batch.noisy_ids[batch.masked] == 1).all()
    assert torch.equal(batch.noisy_ids[~batch.masked], clean[~batch.masked])
    assert (batch.t >= 1e-3).all() and (batch.t <= 1).all()
    torch.testing.assert_close(batch.weight, 1.0 / batch.t, rtol=1e-4, atol=0)
    assert batch.sample_seed.tolist() == [17, 18] * 200
    assert torch.equal(batch.attention_mask, inputs["attention_mask"].repeat(200, 1))


def test_noise_batch_same_generator_same_noise():
    a, b = noised(collated(), seed=4), noised(collated(), seed=4)
    assert torch.equal(a.masked, b.masked) and torch.equal(a.t, b.t)


def test_noise_batch_uniform_weighting():
    assert torch.equal(noised(collated(), weighting="uniform").weight, torch.ones(2))



def test_noise_batch_masks_with_the_schedules_probability():
    """Under the cosine schedule a sequence at time t is masked with probability
    1 - cos(pi t / 2) (0.29 at t = 0.5), not t: the realised fraction over 400 sequences of
    400 maskable tokens follows it (binomial sd <= 0.025 per sequence), and the weight is
    the cosine ELBO weight (pi/2) sin(pi t / 2) / (1 - cos(pi t / 2))."""
    import math

    from memdlm.diffusion.schedules import CosineSchedule

    n = 400
    inputs = {"input_ids": torch.full((n, n), 5), "labels": torch.full((n, n), 5),
              "attention_mask": torch.ones(n, n, dtype=torch.long)}
    batch = noised(inputs, schedule=CosineSchedule())
    fraction = batch.masked.float().mean(1)
    expected = 1 - torch.cos(0.5 * math.pi * batch.t)
    assert (fraction - expected).abs().mean() < 0.03
    assert (fraction - batch.t).abs().mean() > 0.1  # what masking with probability t would give
    t = batch.t.double()  # float64: 1 - cos cancels near t = 0
    weight = 0.5 * math.pi * torch.sin(0.5 * math.pi * t) / (1 - torch.cos(0.5 * math.pi * t))
    torch.testing.assert_close(batch.weight.double(), weight, rtol=1e-4, atol=0)

def hand_mdlm_loss(model, batch: NoisedBatch, normalization: str) -> float:
    """From the full logits ``[b, l, V]``: CE at masked positions, times w(t), normalised."""
    logits = model(input_ids=batch.noisy_ids, attention_mask=batch.attention_mask).logits
    total, per_row = 0.0, []
    for b in range(batch.clean_ids.shape[0]):
        row = 0.0
        for i in range(batch.clean_ids.shape[1]):
            if batch.masked[b, i]:
                ce = F.cross_entropy(logits[b, i][None].float(), batch.clean_ids[b, i][None])
                row += (1.0 / batch.t[b].item()) * ce.item()
        total += row
        per_row.append(row / batch.maskable[b].sum().item())
    if normalization == "token":
        return total / batch.maskable.sum().item()
    return sum(per_row) / len(per_row)


@pytest.mark.parametrize("normalization", ["token", "sequence"])
def test_mdlm_loss_matches_hand_computation(make_tiny_model, tok, normalization):
    model = make_tiny_model(seed=0).eval()
    inputs = collated(pad_id=tok.pad_token_id)
    batch = noised(inputs, seed=3, mask_id=tok.mask_token_id)
    with torch.no_grad():
        got = mdlm_loss(model, batch, normalization).item()
        ref = hand_mdlm_loss(model, batch, normalization)
    assert got == pytest.approx(ref, rel=1e-5, abs=1e-5)
    assert math.isfinite(got) and got > 0


def test_masked_nll_zero_off_masked_positions(make_tiny_model, tok):
    model = make_tiny_model(seed=0).eval()
    batch = noised(collated(pad_id=tok.pad_token_id), seed=5, mask_id=tok.mask_token_id)
    with torch.no_grad():
        nll = masked_nll(model, batch.noisy_ids, batch.attention_mask, batch.clean_ids, batch.masked)
    assert (nll[~batch.masked] == 0).all()
    assert (nll[batch.masked] > 0).all()


# --- what the loss relies on in the backbone --------------------------------------------


def test_tiny_backbone_is_bidirectional_and_ignores_padding(make_tiny_model):
    model = make_tiny_model(seed=0).eval()
    ids = torch.tensor([[40, 41, 42, 43, 44, 45]])
    changed_last = ids.clone()
    changed_last[0, -1] = 99
    pad = torch.tensor([[1, 1, 1, 0, 0, 0]])
    with torch.no_grad():
        full = model(input_ids=ids).logits
        # A masked diffusion model must see the right context: position 0 depends on position 5.
        assert (full[0, 0] - model(input_ids=changed_last).logits[0, 0]).abs().max() > 1e-3
        # Padded positions (attention 0) do not influence the real ones, whatever they hold.
        padded_a = model(input_ids=torch.tensor([[40, 41, 42, 0, 0, 0]]), attention_mask=pad).logits
        padded_b = model(input_ids=torch.tensor([[40, 41, 42, 7, 8, 9]]), attention_mask=pad).logits
        short = model(input_ids=ids[:, :3]).logits
    torch.testing.assert_close(padded_a[0, :3], padded_b[0, :3])
    torch.testing.assert_close(padded_a[0, :3], short[0], atol=1e-5, rtol=1e-5)


def test_forward_logits_at_positions_equals_full_logits(make_tiny_model):
    from memdlm.backbones.modeling import forward_logits

    model = make_tiny_model(seed=1).eval()
    ids = torch.tensor([[40, 41, 42, 43, 44, 45], [50, 51, 52, 53, 54, 55]])
    positions = torch.tensor([[False, True, False, True, False, True],
                              [True, False, False, False, False, False]])
    with torch.no_grad():
        full = forward_logits(model, ids)
        picked = forward_logits(model, ids, positions=positions)
    assert full.shape == (2, 6, model.config.vocab_size) and picked.shape == (4, full.shape[-1])
    torch.testing.assert_close(picked, full[positions], atol=1e-5, rtol=1e-5)
