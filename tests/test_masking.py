"""Noise schedules and masking kernels: pure tensor maths, checked against hand computations."""

from __future__ import annotations

import math
from itertools import permutations

import pytest
import torch

from memdlm.diffusion.masking import (
    apply_mask,
    extend_mask_to_fraction,
    hashed_uniform,
    mask_with_probability,
    masked_fraction,
    random_ranks,
    sample_times,
    seeded_generator,
)
from memdlm.diffusion.schedules import CosineSchedule, LinearSchedule, get_schedule

T_GRID = torch.tensor([0.0, 1e-3, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])


def prompt_response_maskable(prompt_lens: list[int], total_lens: list[int], length: int) -> torch.Tensor:
    """[b, length] bool: True on positions prompt_len..total_len-1 of each row (the response)."""
    pos = torch.arange(length)[None, :]
    p = torch.tensor(prompt_lens)[:, None]
    n = torch.tensor(total_lens)[:, None]
    return (pos >= p) & (pos < n)


# --- schedules --------------------------------------------------------------------------


def test_linear_mask_probability_is_t():
    torch.testing.assert_close(LinearSchedule().mask_probability(T_GRID), T_GRID)


def test_cosine_mask_probability():
    expected = torch.tensor([1.0 - math.cos(math.pi * t / 2) for t in T_GRID.tolist()])
    torch.testing.assert_close(CosineSchedule().mask_probability(T_GRID), expected)
    # Hand values: t = 1/2 -> 1 - sqrt(2)/2, t = 1 -> 1 (everything masked).
    got = CosineSchedule().mask_probability(torch.tensor([0.5, 1.0]))
    torch.testing.assert_close(got, torch.tensor([1 - math.sqrt(0.5), 1.0]))


def test_get_schedule_by_name_and_unknown_lists_names():
    assert isinstance(get_schedule("linear"), LinearSchedule)
    assert isinstance(get_schedule("cosine"), CosineSchedule)
    with pytest.raises(ValueError, match=r"'bogus'.*cosine.*linear"):
        get_schedule("bogus")


def test_schedule_rejects_bad_t():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        LinearSchedule().mask_probability(torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        LinearSchedule().elbo_weight(torch.tensor([-0.1]))
    with pytest.raises(TypeError, match="float"):
        LinearSchedule().mask_probability(torch.tensor([0, 1]))


def test_sample_times_in_range():
    t = sample_times(20_000, eps=1e-3, generator=seeded_generator(0))
    assert t.shape == (20_000,)
    assert t.min() >= 1e-3 and t.max() < 1.0
    # U(eps, 1): mean (1 + eps) / 2, sd of the mean ~ 0.29 / sqrt(20000) = 0.002.
    assert abs(t.mean().item() - (1 + 1e-3) / 2) < 0.01


# --- mask_with_probability --------------------------------------------------------------


@pytest.mark.parametrize("t", [0.1, 0.5, 0.9])
def test_realised_masked_fraction_tracks_t(t):
    maskable = torch.ones(2000, 64, dtype=torch.bool)
    prob = LinearSchedule().mask_probability(torch.full((2000,), t))
    masked = mask_with_probability(maskable, prob, generator=seeded_generator(1, int(t * 10)))
    # 128k Bernoulli(t) draws: sd of the mean <= 0.0014; 0.01 is > 7 sd.
    assert abs(masked.float().mean().item() - t) < 0.01
    per_row = masked_fraction(masked, maskable)
    assert abs(per_row.mean().item() - t) < 0.01
    # Per-row spread matches a binomial: sd sqrt(t(1-t)/64).
    assert abs(per_row.std().item() - math.sqrt(t * (1 - t) / 64)) < 0.01


def test_masked_fraction_tracks_per_row_t_with_prompt():
    """Each row has its own t; its masked fraction among response tokens follows it."""
    b = 4000
    maskable = prompt_response_maskable([10] * b, [110] * b, 120)  # 100 maskable per row
    g = seeded_generator(7)
    t = sample_times(b, generator=g)
    masked = mask_with_probability(maskable, LinearSchedule().mask_probability(t), generator=g)
    frac = masked_fraction(masked, maskable)
    # Unbiased per row: the mean residual is ~N(0, sd <= 0.05 / sqrt(4000) = 0.0008).
    assert abs((frac - t).mean().item()) < 0.005
    assert (frac - t).abs().max().item() < 0.25  # 5 sd of the worst row
    assert torch.corrcoef(torch.stack([frac, t]))[0, 1] > 0.99


def test_prompt_and_padding_never_masked():
    maskable = prompt_response_maskable([3, 0, 5], [8, 6, 9], 10)
    g = seeded_generator(3)
    for _ in range(50):
        masked = mask_with_probability(maskable, torch.ones(3), generator=g)
        assert not (masked & ~maskable).any()
    # At t = 1 everything maskable is masked, and nothing else.
    assert torch.equal(mask_with_probability(maskable, torch.ones(3)), maskable)


def test_at_least_one_masked_per_row_at_tiny_t():
    maskable = prompt_response_maskable([4] * 500, [6] * 250 + [20] * 250, 20)
    masked = mask_with_probability(maskable, torch.full((500,), 1e-3), generator=seeded_generator(0))
    counts = masked.sum(1)
    assert (counts >= 1).all()
    # P(two or more masked) at t = 1e-3 with <= 16 maskable tokens is < 2e-4 per row.
    assert (counts == 1).float().mean() > 0.98
    assert not (masked & ~maskable).any()


def test_at_least_one_can_be_turned_off():
    maskable = torch.ones(200, 5, dtype=torch.bool)
    masked = mask_with_probability(maskable, torch.zeros(200), generator=seeded_generator(0),
                                   at_least_one=False)
    assert not masked.any()


def test_rows_without_maskable_positions_mask_nothing():
    maskable = torch.tensor([[False] * 6, [False, False, True, True, False, False], [False] * 6])
    masked = mask_with_probability(maskable, torch.tensor([1e-3, 1e-3, 1.0]),
                                   generator=seeded_generator(0))
    assert not masked[0].any() and not masked[2].any()
    assert masked[1].sum() >= 1 and not (masked[1] & ~maskable[1]).any()


def test_mask_with_given_scores_by_hand():
    """With caller-provided uniforms the mask is exactly ``u < p`` on maskable positions."""
    u = torch.tensor([[0.10, 0.50, 0.90, 0.30],
                      [0.30, 0.20, 0.60, 0.80]])
    maskable = torch.tensor([[True, True, True, False],
                             [True, False, True, True]])
    masked = mask_with_probability(maskable, torch.tensor([0.4, 0.05]), scores=u)
    # Row 0: 0.10 < 0.4 and 0.30 < 0.4, but position 3 is not maskable.
    # Row 1: nothing below 0.05, so the forced one is the smallest *maskable* draw (0.30 at 0,
    # not 0.20 at the unmaskable position 1).
    assert masked.tolist() == [[True, False, False, False],
                               [True, False, False, False]]
    with pytest.raises(ValueError, match="shape"):
        mask_with_probability(maskable, torch.tensor([0.4, 0.05]), scores=u[:, :3])


def test_apply_mask():
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    masked = torch.tensor([[False, True, False], [True, False, True]])
    assert apply_mask(ids, masked, 1).tolist() == [[5, 1, 7], [1, 9, 1]]


def test_masked_fraction_by_hand():
    maskable = torch.tensor([[True, True, True, True, False], [False] * 5])
    masked = torch.tensor([[True, False, True, False, False], [False] * 5])
    assert masked_fraction(masked, maskable).tolist() == [0.5, 0.0]


# --- extend_mask_to_fraction ------------------------------------------------------------


@pytest.mark.parametrize("fraction, expected", [
    (0.0, 2),   # never fewer than already masked
    (0.25, 2),  # ceil(0.25 * 8) = 2 (exact, no spurious round-up)
    (0.3, 3),   # ceil(2.4) = 3
    (0.5, 4),   # ceil(4.0) = 4
    (0.55, 5),  # ceil(4.4) = 5
    (0.75, 6),  # ceil(6.0) = 6
    (1.0, 8),
    (1.7, 8),   # clamped to 1
])
def test_extend_mask_count_superset_maskable(fraction, expected):
    maskable = prompt_response_maskable([2] * 300, [10] * 300, 12)  # 8 maskable per row
    masked = torch.zeros_like(maskable)
    masked[:, 3] = masked[:, 7] = True  # 2 already masked
    out = extend_mask_to_fraction(masked, maskable, torch.full((300,), fraction),
                                  generator=seeded_generator(5))
    assert (out.sum(1) == expected).all()
    assert (out | ~masked).all()  # superset of the input
    assert not (out & ~maskable).any()  # only maskable positions


def test_extend_mask_per_row_targets_and_uniform_choice():
    maskable = prompt_response_maskable([0, 1, 0], [3, 8, 10], 10)  # 3, 7, 10 maskable
    masked = torch.zeros_like(maskable)
    masked[2, :6] = True  # row 2 already has 6 masked, more than its target
    fraction = torch.tensor([0.7, 1 / 7, 0.5])
    out = extend_mask_to_fraction(masked, maskable, fraction, generator=seeded_generator(0))
    # ceil(2.1) = 3; 1/7 * 7 = 1 (float fuzz must not make it 2); max(ceil(5), 6) = 6.
    assert out.sum(1).tolist() == [3, 1, 6]
    assert torch.equal(out[2], masked[2])
    # The added positions are uniform over the visible maskable ones: 1 of 7 in row 1.
    many = extend_mask_to_fraction(maskable[1:2].new_zeros(7000, 10), maskable[1:2].expand(7000, -1),
                                   torch.full((7000,), 1 / 7), generator=seeded_generator(1))
    hits = many.sum(0)[1:8].float() / 7000
    assert (hits - 1 / 7).abs().max() < 0.025  # sd 0.004 per position


def test_extend_mask_rows_without_maskable():
    maskable = torch.zeros(2, 4, dtype=torch.bool)
    out = extend_mask_to_fraction(maskable.clone(), maskable, torch.tensor([0.5, 1.0]))
    assert not out.any()


# --- random_ranks -----------------------------------------------------------------------


def test_random_ranks_is_a_permutation_of_true_positions():
    positions = torch.tensor([[False, True, True, False, True, False],
                              [True, True, True, True, True, True],
                              [False] * 6])
    for seed in range(20):
        ranks = random_ranks(positions, generator=seeded_generator(seed))
        for row, pos in zip(ranks, positions):
            n = int(pos.sum())
            assert sorted(row[pos].tolist()) == list(range(n))
            assert (row[~pos] >= n).all()
            assert sorted(row.tolist()) == list(range(6))


def test_random_ranks_uniform_over_orders():
    positions = torch.tensor([[True, False, True, True]]).expand(6000, -1)
    ranks = random_ranks(positions, generator=seeded_generator(2))[:, [0, 2, 3]]
    counts = {p: 0 for p in permutations(range(3))}
    for row in ranks.tolist():
        counts[tuple(row)] += 1
    assert sum(counts.values()) == 6000
    assert all(800 < c < 1200 for c in counts.values())  # 1000 expected, sd ~ 29


# --- randomness sources -----------------------------------------------------------------


def test_hashed_uniform_independent_of_batch_and_length():
    seeds = torch.tensor([5, 7, 123456789012, 7])
    big = hashed_uniform(seeds, 40, salt=3)
    alone = hashed_uniform(torch.tensor([7]), 17, salt=3)
    torch.testing.assert_close(big[1, :17], alone[0], rtol=0, atol=0)
    torch.testing.assert_close(big[1], big[3], rtol=0, atol=0)  # same seed, same row
    assert not torch.equal(big[0], big[1])  # different seeds differ
    assert not torch.equal(hashed_uniform(seeds, 40, salt=4), big)  # the salt matters
    assert big.dtype == torch.float32 and big.shape == (4, 40)


def test_hashed_uniform_is_uniform():
    u = hashed_uniform(torch.arange(200), 500)
    assert u.min() >= 0 and u.max() < 1
    hist = torch.histc(u, bins=10, min=0, max=1) / u.numel()
    assert (hist - 0.1).abs().max() < 0.01  # 100k draws: sd ~ 0.001 per bin
    # Neighbouring positions and neighbouring seeds are uncorrelated.
    c_pos = torch.corrcoef(torch.stack([u[:, :-1].flatten(), u[:, 1:].flatten()]))[0, 1]
    c_seed = torch.corrcoef(torch.stack([u[:-1].flatten(), u[1:].flatten()]))[0, 1]
    assert abs(c_pos) < 0.02 and abs(c_seed) < 0.02


def test_hashed_uniform_as_scores_gives_batch_invariant_masks():
    seeds = torch.tensor([11, 22])
    maskable = prompt_response_maskable([2, 1], [9, 6], 12)
    u = hashed_uniform(seeds, 12)
    both = mask_with_probability(maskable, torch.tensor([0.5, 0.5]), scores=u)
    one = mask_with_probability(maskable[1:, :8], torch.tensor([0.5]),
                                scores=hashed_uniform(seeds[1:], 8))
    assert torch.equal(both[1, :8], one[0])


def test_seeded_generator_same_seeds_same_draws():
    a = torch.rand(8, generator=seeded_generator(0, 3, 1))
    b = torch.rand(8, generator=seeded_generator(0, 3, 1))
    assert torch.equal(a, b)
    others = [(0, 3, 2), (0, 4, 1), (1, 3, 1), (3, 0, 1), (0, 3), (0, 3, 1, 0)]
    draws = [torch.rand(8, generator=seeded_generator(*s)) for s in others]
    assert all(not torch.equal(a, d) for d in draws)
    assert len({tuple(d.tolist()) for d in draws}) == len(others)
