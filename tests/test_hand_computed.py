"""Numbers worked out by hand: every inner loss, one inner step (per-sample and batch-shared,
unclipped and clipped), the absorption ratio and the exposure-bias ratio of one tiny trajectory.

The expected values are written out below and derived in the comments; nothing here
recomputes them with the code under test.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from memdlm.memory.config import MemoryArguments
from memdlm.memory.inner_loop import InnerLoop, InnerLoopInputs, InnerLoopStats
from memdlm.memory.inner_losses import INNER_LOSS_CLASSES, CrossEntropy
from memdlm.memory.targets import Target
from memdlm.memory.trajectories import Stage, StageRole
from memdlm.diffusion.schedules import get_schedule

LN2, LN3 = math.log(2.0), math.log(3.0)


def logp(*probs: float) -> torch.Tensor:
    return torch.tensor([[math.log(p) for p in probs]])


# --- the five inner losses, one position each -------------------------------------------
def test_forward_and_reverse_kl_by_hand():
    # teacher p = (1/2, 1/2), student q = (1/4, 3/4)
    # KL(p || q) = 1/2 ln(2) + 1/2 ln(2/3) = 0.143841;  KL(q || p) = 1/4 ln(1/2) + 3/4 ln(3/2) = 0.130812
    student, teacher = logp(0.25, 0.75), logp(0.5, 0.5)
    forward = INNER_LOSS_CLASSES["kl"]().per_token(student, None, teacher, None)
    reverse = INNER_LOSS_CLASSES["reverse_kl"]().per_token(student, None, teacher, None)
    assert forward.item() == pytest.approx(0.1438410, abs=1e-6)
    assert reverse.item() == pytest.approx(0.1308120, abs=1e-6)
    # unnormalised logits give the same values (log-softmax inside)
    assert INNER_LOSS_CLASSES["kl"]().per_token(student + 3.0, None, teacher - 1.0, None).item() == \
        pytest.approx(0.1438410, abs=1e-6)


def test_hidden_mse_and_cosine_by_hand():
    h, t = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[1.0, 0.0, 0.0]])
    assert INNER_LOSS_CLASSES["hidden_mse"]().per_token(None, h, None, t).item() == pytest.approx(13 / 3)  # (0+4+9)/3
    h2, t2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    cosine = INNER_LOSS_CLASSES["hidden_cosine"]().per_token(None, h2, None, t2).item()
    assert cosine == pytest.approx(0.2928932, abs=1e-6)  # 1 - 1/sqrt(2)


def test_cross_entropy_inner_loss_by_hand():
    # two loss positions (row 0 col 1, row 1 col 0); student probs (1/4, 3/4) and (1/2, 1/2)
    clean = torch.tensor([[0, 1], [0, 0]])
    positions = torch.tensor([[False, True], [True, False]])
    stage = Stage("anchor", positions, positions, torch.zeros_like(positions), StageRole.ANCHOR)
    logits = torch.cat([logp(0.25, 0.75), logp(0.5, 0.5)])
    dense = CrossEntropy().student(None, clean, None, stage, 2, None, forward=lambda _pos: logits)
    expected = torch.tensor([[0.0, math.log(4 / 3)], [LN2, 0.0]])  # -ln(3/4) at token 1, -ln(1/2) at token 0
    torch.testing.assert_close(dense, expected)


# --- one inner step on a toy model whose logits are the fast weights' output -------------
MASK_ID = 2  # vocabulary {0, 1, mask}


class Toy(nn.Module):
    """Token -> one-hot(3) -> ``proj`` (the fast-weight target, zero weight) -> identity head.

    With a dense memory D (3 x 3) the logits at a masked position are D e_mask = D[:, 2], so
    one SGD step on the cross-entropy moves only column 2 of D, by -lr * (sum over the
    positions of w * (softmax - onehot(target))) / normaliser.
    """

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(model_type="toy")
        self.proj = nn.Linear(3, 3, bias=False)
        self.head = nn.Linear(3, 3, bias=False)
        with torch.no_grad():
            self.proj.weight.zero_()
            self.head.weight.copy_(torch.eye(3))
        self.requires_grad_(False)

    def get_output_embeddings(self):
        return self.head

    def forward(self, input_ids, attention_mask=None, use_cache=None):
        hidden = nn.functional.one_hot(input_ids, 3).float()
        return SimpleNamespace(logits=self.head(self.proj(hidden)))


def toy_loop(per_sample: bool, **memory) -> InnerLoop:
    model = Toy()
    target = Target("proj", model.proj, -1, 3, 3)
    args = MemoryArguments(**{"trajectory": "anchor_only", "inner_lr": 0.3, **memory})
    return InnerLoop(model, [target], args, hidden_size=3, mask_token_id=MASK_ID,
                     schedule=get_schedule("linear"), per_sample=per_sample, weighting="scheduler")


def toy_inputs() -> InnerLoopInputs:
    # 4 maskable tokens per sample. Sample 0: x0 = 0 1 0 0, masked {0, 1}: t = 1/2, w = 2,
    #   sum of (p - e_y) over its masked positions, p = (1/3, 1/3, 1/3): (-1/3, -1/3, 2/3).
    # Sample 1: x0 = 1 1 0 1, masked {0, 1, 3}: t = 3/4, w = 4/3, sum: 3 (p - e_1) = (1, -2, 1).
    clean = torch.tensor([[0, 1, 0, 0], [1, 1, 0, 1]])
    anchor = torch.tensor([[True, True, False, False], [True, True, False, True]])
    ones = torch.ones(2, 4, dtype=torch.long)
    return InnerLoopInputs(clean, ones, ones.bool(), anchor, torch.tensor([5, 6]), 0)


def column(memory, slot: int) -> list[float]:
    d = memory.tensors[0][0][slot]
    assert torch.count_nonzero(d[:, :2]) == 0  # only the mask token's column moves
    return d[:, 2].tolist()


def test_per_sample_inner_step_by_hand_unclipped():
    # slot 0: grad = 2 * (-1/3, -1/3, 2/3) / 4 = (-1/6, -1/6, 1/3); D = -0.3 grad
    # slot 1: grad = 4/3 * (1, -2, 1) / 4 = (1/3, -2/3, 1/3);         D = -0.3 grad
    memory, stats = toy_loop(True, memory_dense=True, inner_clip="none").run(toy_inputs())
    assert column(memory, 0) == pytest.approx([0.05, 0.05, -0.1], abs=1e-6)
    assert column(memory, 1) == pytest.approx([-0.1, 0.2, -0.1], abs=1e-6)
    # the logged stage loss: mean over samples of w * sum(CE) / 4; CE = ln 3 everywhere (uniform)
    assert stats.summary()["stage_losses"]["anchor"] == pytest.approx((2 * 2 * LN3 / 4 + 4 / 3 * 3 * LN3 / 4) / 2)


def test_the_split_forward_goes_to_the_anchor_stage_by_role_not_name(monkeypatch):
    """Two stages whose names are swapped: the split forward still reaches the ANCHOR stage,
    and the fast weights equal those of the plain loop (the toy's "hidden states" are the
    anchor's token ids, so the split forward's upper half is the toy model itself)."""
    import dataclasses

    import memdlm.memory.inner_loop as inner_loop

    x = toy_inputs()
    plain, _ = toy_loop(True, memory_dense=True, inner_clip="none", trajectory="anchor_consistent").run(x)
    loop = toy_loop(True, memory_dense=True, inner_clip="none", trajectory="anchor_consistent")
    stages = loop.trajectory.stages
    loop.trajectory.stages = lambda inputs: [dataclasses.replace(s, name=n)
                                             for s, n in zip(stages(inputs), ["anchor", "pre_anchor_1"])]
    calls = []

    def upper(model, hidden, attention_mask, k, positions):
        calls.append(positions)
        return model(input_ids=hidden).logits[positions]

    monkeypatch.setattr(inner_loop, "upper", upper)  # the name the inner loop calls
    anchor_ids = torch.where(x.anchor, MASK_ID, x.clean_ids)
    split, stats = loop.run(x, anchor_hidden=anchor_ids)
    assert len(calls) == 1 and torch.equal(calls[0], x.anchor)  # the second stage, named "pre_anchor_1"
    assert list(stats.stage_losses) == ["anchor", "pre_anchor_1"]
    torch.testing.assert_close(split.tensors[0][0], plain.tensors[0][0], rtol=0, atol=1e-7)


def test_per_sample_inner_step_by_hand_clipped():
    # clip norm 0.5: slot 0's gradient norm sqrt(6)/6 = 0.408 stays; slot 1's sqrt(6)/3 = 0.816
    # is scaled by 0.5 / 0.816 = 0.612372: (0.204124, -0.408248, 0.204124); D = -0.3 x that
    loop = toy_loop(True, memory_dense=True, inner_clip="per_param", inner_clip_norm=0.5)
    memory, stats = loop.run(toy_inputs())
    assert column(memory, 0) == pytest.approx([0.05, 0.05, -0.1], abs=1e-6)
    assert column(memory, 1) == pytest.approx([-0.0612372, 0.1224745, -0.0612372], abs=1e-6)
    assert (stats.summary()["clip_fired"], stats.clip_checked) == (1, 2)


def test_batch_shared_inner_step_by_hand():
    # One slot, the batch's weighted sum over the batch's maskable count (8):
    # (2 (-1/3, -1/3, 2/3) + 4/3 (1, -2, 1)) / 8 = (2/3, -10/3, 8/3) / 8 = (1/12, -5/12, 1/3);
    # D = -0.3 x that. (Per sample then summed would be (1/6, -5/6, 2/3): twice as far.)
    memory, _ = toy_loop(False, memory_dense=True, inner_clip="none").run(toy_inputs())
    assert memory.num_slots == 1
    assert column(memory, 0) == pytest.approx([-0.025, 0.125, -0.1], abs=1e-6)


def test_low_rank_first_step_moves_b_by_scale_times_a():
    # delta = scale * B A x with B = 0: dL/dB = scale * g (A e_mask)^T, dL/dA = 0.
    # rank 1, alpha 3 -> scale 3; slot 0's g = (-1/6, -1/6, 1/3) (as above).
    loop = toy_loop(True, memory_rank=1, memory_alpha=3.0, inner_clip="none")
    x = toy_inputs()
    a0 = loop.fresh_memory(x).tensors[0][0][0, 0, 2].item()  # A's entry for the mask token (its seed's draw)
    memory, _ = loop.run(x)
    a, b = memory.tensors[0]
    assert a[0, 0, 2].item() == a0  # A does not move on the first step
    assert b[0, :, 0].tolist() == pytest.approx([-0.3 * 3 * g * a0 for g in (-1 / 6, -1 / 6, 1 / 3)], abs=1e-6)



class ToyWithConstant(Toy):
    """As ``Toy``, with a constant fourth input feature and base weights 2 I: a memory learnt
    at one position moves the logits of every token, the teacher's clean tokens included."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 3, bias=False)
        with torch.no_grad():
            self.proj.weight.copy_(torch.cat([2 * torch.eye(3), torch.zeros(3, 1)], 1))
        self.requires_grad_(False)

    def forward(self, input_ids, attention_mask=None, use_cache=None):
        hidden = nn.functional.one_hot(input_ids, 3).float()
        hidden = torch.cat([hidden, torch.ones_like(hidden[..., :1])], -1)
        return SimpleNamespace(logits=self.head(self.proj(hidden)))


def test_the_kl_teacher_sees_the_memory_written_so_far():
    """Stage 1's teacher runs with the fresh (zero) memory; stage 2's with stage 1's update."""
    model = ToyWithConstant()
    args = MemoryArguments(inner_loss="kl", memory_dense=True, inner_clip="none", inner_lr=1.0)
    loop = InnerLoop(model, [Target("proj", model.proj, -1, 4, 3)], args, hidden_size=4, mask_token_id=MASK_ID,
                     schedule=get_schedule("linear"), per_sample=True, weighting="scheduler")
    probe = torch.tensor([[0, 1], [1, 0]])  # one row per memory slot
    bare = model(input_ids=probe).logits
    moved = []
    teacher = loop.loss_fn.teacher

    def spy(*args):
        moved.append(not torch.equal(model(input_ids=probe).logits, bare))  # inside the teacher's context
        return teacher(*args)

    loop.loss_fn.teacher = spy
    memory, stats = loop.run(toy_inputs())
    assert list(stats.stage_losses) == ["pre_anchor_1", "anchor"]
    assert moved == [False, True]
    assert memory.tensors[0][0][:, :, 3].abs().sum() > 0  # the constant feature's column learnt

# --- the absorption ratio -------------------------------------------------------------------
def test_absorption_ratio_by_hand():
    from memdlm.diffusion.loss import absorption_ratio

    assert absorption_ratio(torch.tensor(0.6), torch.tensor(2.4)) == pytest.approx(0.25)  # with / without
    assert absorption_ratio(torch.tensor(3.0), torch.tensor(2.0)) == pytest.approx(1.5)


def test_trainer_logs_the_absorption_ratio_and_warns_below_its_level(caplog):
    from memdlm.training.memdlm_trainer import MemDLMTrainer

    logged = {}
    trainer = SimpleNamespace(log_metric=lambda k, v, **_: logged.__setitem__(k, v),
                              memory_args=MemoryArguments(absorption_warn=0.3),
                              state=SimpleNamespace(global_step=7))
    memory = SimpleNamespace(norm=lambda: torch.tensor(0.5), stats={})
    MemDLMTrainer._record(trainer, InnerLoopStats(), memory, torch.tensor(0.6), torch.tensor(2.4))
    assert logged["memory/absorption_ratio"] == pytest.approx(0.25)  # 0.6 / 2.4
    assert logged["memory/absorption_ratio_min"] == pytest.approx(0.25)  # the same value, reduced by min
    assert "step 7: anchor loss with memory is 0.250" in caplog.text  # below the 0.3 warning level
    caplog.clear()
    MemDLMTrainer._record(trainer, InnerLoopStats(), memory, torch.tensor(1.2), torch.tensor(2.4))
    assert logged["memory/absorption_ratio"] == pytest.approx(0.5) and "absorbing" not in caplog.text


def test_a_logging_window_logs_means_and_the_weakest_micro_batch():
    """Eight micro-batches' absorption: the logged ratio is their mean, ``..._min`` their smallest
    (one micro-batch at 0.014 among seven at 0.75: the mean 0.658 hides it)."""
    from memdlm.training.mdlm_trainer import window_values

    window = [0.75] * 7 + [0.014]
    logged = window_values({"memory/absorption_ratio": window, "memory/absorption_ratio_min": window,
                            "inner/clip_fraction": [0.0, 0.5], "unlogged": []})
    assert logged == {"memory/absorption_ratio": pytest.approx((7 * 0.75 + 0.014) / 8),
                      "memory/absorption_ratio_min": 0.014, "inner/clip_fraction": 0.25}


# --- the exposure-bias ratio of one tiny trajectory ------------------------------------------
def eb_logits(ids, attention_mask, positions):
    """Prompt [2], response slots at columns 1 and 2 with truth (0, 1), vocabulary {0, 1, 2, mask=3}.
    Each slot's distribution depends only on what the other response slot shows."""
    table = {  # (column, what the other slot shows) -> probabilities of tokens 0, 1, 2
        (1, "mask"): (0.5, 0.2, 0.3), (1, "true"): (0.8, 0.1, 0.1), (1, "wrong"): (0.25, 0.5, 0.25),
        (2, "mask"): (0.1, 0.3, 0.6), (2, "true"): (0.1, 0.8, 0.1), (2, "wrong"): (0.25, 0.25, 0.5),
    }
    truth = {1: 0, 2: 1}
    rows = []
    for r, c in positions.nonzero().tolist():
        other = 3 - c
        seen = int(ids[r, other])
        kind = "mask" if seen == 3 else "true" if seen == truth[other] else "wrong"
        rows.append([math.log(p) for p in table[(c, kind)]] + [-math.inf])
    return torch.tensor(rows)


def test_exposure_bias_ratio_of_one_tiny_trajectory_by_hand():
    from memdlm.eval.exposure_bias import exposure_bias_from_predictor

    # Step 0: both slots masked everywhere: L_seq = L_static = (ln 2 + ln(10/3)) / 2, ratio 1.
    # Low confidence commits slot 2 (confidence 0.6 > 0.5) with its argmax, token 2: wrong.
    # Step 1: L_seq = CE(slot 1 | slot 2 wrong) = ln 4; the static input masks one slot with the
    # other true: CE = ln(1/0.8) = ln 1.25 for either slot. R_EB = ln 4 / ln 1.25 = 1.386294 / 0.223144 = 6.212568.
    result = exposure_bias_from_predictor(eb_logits, [[2]], [[0, 1]], steps=2, mask_id=3)
    first = (LN2 + math.log(10 / 3)) / 2
    assert result.losses["l_seq"] == pytest.approx([first, math.log(4)])
    assert result.losses["l_static"] == pytest.approx([first, math.log(1.25)])
    assert result.losses["l_static_same"] == pytest.approx([first, math.log(1.25)])
    assert result.ratios()["r_eb"] == pytest.approx([1.0, 6.212568], abs=1e-5)
