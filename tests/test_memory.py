"""MemDLM parametric memory: the maths of the fast weights and the inner loop.

Letters refer to the MemDLM issue's "Done when" list.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from memdlm.diffusion.process import NoisedBatch, mdlm_loss
from memdlm.diffusion.loss import loss_weights, per_sample_loss
from memdlm.diffusion.masking import apply_mask, mask_with_probability
from memdlm.memory.config import MemoryArguments
from memdlm.memory.fast_weights import clip_global, clip_per_param
from memdlm.memory.inner_loop import InnerLoop, InnerLoopInputs, InnerLoopStats
from memdlm.memory.targets import find_targets, first_adapted_layer
from memdlm.memory.trajectories import TRAJECTORY_CLASSES, Stage, StageRole, TrajectoryInputs, get_trajectory
from memdlm.backbones.modeling import build_tiny_model
from memdlm.diffusion.schedules import get_schedule
from memdlm.backbones.tokenizer import load_tokenizer

torch.set_num_threads(1)
TOK = load_tokenizer()
MASK = TOK.mask_token_id


def tiny(layers=2, seed=0, **kw):
    return build_tiny_model(TOK, seed=seed, num_hidden_layers=layers, **kw)


def make_batch(lengths=(14, 9, 12, 7), prompt=(5, 3, 6, 2), t=(0.5, 0.3, 0.8, 0.6), seed=0):
    """A right-padded batch with prompts, random tokens and fixed anchors."""
    g = torch.Generator().manual_seed(seed)
    b, L = len(lengths), max(lengths)
    ids = torch.full((b, L), TOK.pad_token_id)
    attn = torch.zeros(b, L, dtype=torch.long)
    maskable = torch.zeros(b, L, dtype=torch.bool)
    for i, (n, p) in enumerate(zip(lengths, prompt)):
        ids[i, :n] = torch.randint(10, len(TOK), (n,), generator=g)
        attn[i, :n] = 1
        maskable[i, p:n] = True
    tt = torch.tensor(t)
    anchor = mask_with_probability(maskable, tt, generator=g)
    return ids, attn, maskable, anchor, tt


def loop_for(model, per_sample=True, weighting="scheduler", **kw):
    args = MemoryArguments(**kw)
    targets = find_targets(model, args.memory_scope, args.memory_layer_fraction, args.memory_target_modules)
    return InnerLoop(model, targets, args, hidden_size=model.config.hidden_size, mask_token_id=MASK,
                     schedule=get_schedule("linear"), per_sample=per_sample, weighting=weighting)


def inputs(ids, attn, maskable, anchor, seeds=None, step_seed=3):
    seeds = torch.arange(len(ids)) + 100 if seeds is None else seeds
    return InnerLoopInputs(ids, attn, maskable, anchor, seeds, step_seed)


def anchor_sums(model, memory, ids, attn, maskable, anchor, t):
    """Each sample's unnormalised weighted outer-loss sum at the anchor."""
    batch = NoisedBatch(ids, attn, maskable, anchor, apply_mask(ids, anchor, MASK), t, 1 / t)
    with memory.active():
        logits = model(input_ids=batch.noisy_ids, attention_mask=attn).logits
    nll = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none") * anchor
    return nll.sum(1) * batch.weight


# --- targets ---------------------------------------------------------------------------
def test_first_adapted_layer_floor_rule():
    assert first_adapted_layer(32, 0.1) == 28  # floor(32 * 0.9)
    assert first_adapted_layer(10, 0.1) == 9
    assert first_adapted_layer(4, 0.1) == 3  # at least one layer
    assert first_adapted_layer(16, 0.05) == 15 and first_adapted_layer(16, 0.1) == 14
    assert first_adapted_layer(1, 0.1) == 0


def test_default_targets_are_last_layer_ffn():
    model = tiny(layers=4)
    names = [t.name for t in find_targets(model)]
    assert names == [f"model.layers.3.mlp.{p}" for p in ("gate_proj", "up_proj", "down_proj")]
    attn = [t.name for t in find_targets(model, scope="ffn_attn")]
    assert "model.layers.3.self_attn.q_proj" in attn and len(attn) == 7


def test_no_target_is_a_clear_error():
    with pytest.raises(ValueError, match="no module matches"):
        find_targets(tiny(), pattern=r"does_not_exist")


# --- (a) per-sample isolation ------------------------------------------------------------
def test_per_sample_memory_equals_memory_computed_alone():
    model = tiny()
    ids, attn, maskable, anchor, t = make_batch()
    loop = loop_for(model, memory_rank=4)
    seeds = torch.tensor([11, 22, 33, 44])
    memory, _ = loop.run(inputs(ids, attn, maskable, anchor, seeds))
    sums = anchor_sums(model, memory, ids, attn, maskable, anchor, t)
    for i in range(4):
        n = int(attn[i].sum())
        one = [x[i:i + 1, :n] for x in (ids, attn, maskable, anchor)]
        alone, _ = loop.run(inputs(*one, seeds[i:i + 1]))
        for p_batch, p_alone in zip(memory.slot(i).params(), alone.params()):
            torch.testing.assert_close(p_batch, p_alone, atol=1e-5, rtol=0)
        alone_sum = anchor_sums(model, alone, *one, t[i:i + 1])
        torch.testing.assert_close(sums[i:i + 1], alone_sum, atol=1e-5, rtol=1e-5)
    assert memory.norm() > 0  # the memory was actually written


# --- (b) one inner step by hand ----------------------------------------------------------
def test_clip_per_param_and_global_by_hand():
    g1 = torch.tensor([[[3.0, 4.0]], [[0.3, 0.4]]])  # slot norms 5 and 0.5
    g2 = torch.tensor([[[0.0, 12.0]], [[0.0, 0.0]]])  # slot norms 12 and 0
    (c1, c2), fired = clip_per_param([g1, g2], 1.0)
    torch.testing.assert_close(c1[0], g1[0] * (1 / (5 + 1e-6)))
    torch.testing.assert_close(c1[1], g1[1])  # below the threshold: untouched
    torch.testing.assert_close(c2[0], g2[0] * (1 / (12 + 1e-6)))
    assert fired == 2
    (d1, d2), fired = clip_global([g1, g2], 1.0)
    joint = math.sqrt(25 + 144)  # slot 0: 13
    torch.testing.assert_close(d1[0], g1[0] / (joint + 1e-6))
    torch.testing.assert_close(d2[0], g2[0] / (joint + 1e-6))
    torch.testing.assert_close(d1[1], g1[1])  # slot 1 joint norm 0.5
    assert fired == 1


@pytest.mark.parametrize("clip", ["per_param", "global"])
def test_one_inner_step_equals_hand_computed_clipped_sgd(clip):
    model = tiny()
    ids, attn, maskable, anchor, t = make_batch()
    loop = loop_for(model, memory_rank=4, inner_clip=clip, inner_clip_norm=0.05, inner_lr=0.1)
    x = inputs(ids, attn, maskable, anchor)
    memory = loop.fresh_memory(x)
    # Give B a non-zero start so both A and B have gradients.
    memory = memory.replace([p if i % 2 == 0 else torch.randn_like(p) * 0.1 for i, p in enumerate(memory.params())])
    stage = Stage("anchor", anchor, anchor, torch.zeros_like(anchor), StageRole.ANCHOR)
    loop_stats = InnerLoopStats()
    new = loop.step(memory, stage, x, loop_stats)

    # By hand: full forward (autograd everywhere), CE at the anchor, w = 1/r per sample,
    # each sample's sum over its own maskable count, summed over samples.
    leaves = [p.clone().requires_grad_(True) for p in memory.params()]
    with memory.replace(leaves).active():
        logits = model(input_ids=apply_mask(ids, anchor, MASK), attention_mask=attn).logits
    nll = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none") * anchor
    r = anchor.sum(1) / maskable.sum(1)
    total = ((nll.sum(1) / r) / maskable.sum(1)).sum()
    grads = torch.autograd.grad(total, leaves)
    expected = []
    if clip == "per_param":
        for p, g in zip(memory.params(), grads):
            for s in range(g.shape[0]):
                n = g[s].norm()
                coef = min(1.0, 0.05 / (n.item() + 1e-6))
                expected.append((s, p[s] - 0.1 * coef * g[s]))
    else:
        for s in range(grads[0].shape[0]):
            n = torch.sqrt(sum(g[s].pow(2).sum() for g in grads))
            coef = min(1.0, 0.05 / (n.item() + 1e-6))
            for p, g in zip(memory.params(), grads):
                expected.append((s, p[s] - 0.1 * coef * g[s]))
    got = [(s, p[s]) for p in new.params() for s in range(p.shape[0])]
    if clip == "global":  # same pairs, different order
        got = [(s, p[s]) for s in range(grads[0].shape[0]) for p in new.params()]
    for (s1, e), (s2, g) in zip(expected, got):
        assert s1 == s2
        torch.testing.assert_close(g, e, atol=1e-6, rtol=1e-5)
    assert loop_stats.summary()["clip_fired"] > 0  # the small threshold actually clipped


# --- (c) first-order outer gradient ------------------------------------------------------
def test_outer_gradient_is_first_order_and_differs_from_second_order():
    model = tiny(attn_implementation="eager")
    ids, attn, maskable, anchor, t = make_batch()
    batch = NoisedBatch(ids, attn, maskable, anchor, apply_mask(ids, anchor, MASK), t, 1 / t)
    loop = loop_for(model, memory_rank=4, inner_clip="none", inner_lr=0.5)
    x = inputs(ids, attn, maskable, anchor)
    params = [p for p in model.parameters() if p.requires_grad]

    memory, _ = loop.run(x)  # what the trainer does
    with memory.active():
        first = torch.autograd.grad(mdlm_loss(model, batch), params)
    constants = memory.replace([p.clone() for p in memory.params()])  # phi as plain constants
    with constants.active():
        expected = torch.autograd.grad(mdlm_loss(model, batch), params)
    for a, b in zip(first, expected):
        torch.testing.assert_close(a, b)

    # Second order: unroll the inner SGD steps differentiably (phi depends on theta).
    phi = loop.fresh_memory(x)
    for stage in loop.trajectory.stages(TrajectoryInputs(anchor, maskable, x.sample_seeds, x.step_seed)):
        live = phi.replace([p if p.requires_grad else p.clone().requires_grad_(True) for p in phi.params()])
        with live.active():
            logits = model(input_ids=apply_mask(ids, stage.masked, MASK), attention_mask=attn).logits
        nll = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none") * stage.loss_positions
        w = loss_weights((stage.masked.sum(1) / maskable.sum(1)).clamp_min(1e-3), "scheduler", get_schedule("linear"))
        loss = per_sample_loss(nll, w, maskable).sum()
        g = torch.autograd.grad(loss, live.params(), create_graph=True)
        phi = live.replace([p - 0.5 * gi for p, gi in zip(live.params(), g)])
    with phi.active():
        second = torch.autograd.grad(mdlm_loss(model, batch), params)
    for p_fo, p_memory in zip(phi.params(), memory.params()):  # same memory values...
        torch.testing.assert_close(p_fo.detach(), p_memory, atol=1e-5, rtol=1e-4)
    diff = max((a - b).abs().max().item() for a, b in zip(first, second))
    assert diff > 1e-6  # ...but the second-order gradient differs: the check can fail


# --- (d) reset / no memory ---------------------------------------------------------------
def test_fresh_memory_and_reset_leave_outputs_exactly_unchanged():
    model = tiny()
    ids, attn, maskable, anchor, t = make_batch()
    bare = model(input_ids=ids, attention_mask=attn).logits
    loop = loop_for(model, memory_rank=4)
    x = inputs(ids, attn, maskable, anchor)
    with loop.fresh_memory(x).active():  # B = 0: delta exactly zero
        assert torch.equal(model(input_ids=ids, attention_mask=attn).logits, bare)
    memory, _ = loop.run(x)
    with memory.active():
        adapted = model(input_ids=ids, attention_mask=attn).logits
    assert not torch.equal(adapted, bare)
    assert torch.equal(model(input_ids=ids, attention_mask=attn).logits, bare)  # hooks removed


# --- (e) inner lr = 0 is Standard MDLM -------------------------------------------------------
@pytest.mark.parametrize("per_sample", [True, False])
def test_inner_lr_zero_gives_standard_mdlm_loss_and_gradients(per_sample):
    model = tiny()
    ids, attn, maskable, anchor, t = make_batch()
    batch = NoisedBatch(ids, attn, maskable, anchor, apply_mask(ids, anchor, MASK), t, 1 / t)
    params = [p for p in model.parameters() if p.requires_grad]
    standard = mdlm_loss(model, batch)
    g_standard = torch.autograd.grad(standard, params)
    loop = loop_for(model, per_sample=per_sample, inner_lr=0.0)
    memory, _ = loop.run(inputs(ids, attn, maskable, anchor))
    with memory.active():
        mem = mdlm_loss(model, batch)
    g_mem = torch.autograd.grad(mem, params)
    assert torch.equal(mem, standard)
    assert all(torch.equal(a, b) for a, b in zip(g_mem, g_standard))


# --- (f) no base gradient, no graph below the first adapted layer ------------------------------
def test_inner_loop_gives_no_base_gradient_and_no_graph_below_first_layer():
    model = tiny(layers=4)
    ids, attn, maskable, anchor, t = make_batch()
    seen = {}

    def recorder(i):
        def hook(_m, _a, out):
            seen.setdefault(i, []).append(out.requires_grad)
        return hook

    handles = [layer.register_forward_hook(recorder(i)) for i, layer in enumerate(model.model.layers)]
    emb = []
    handles.append(model.model.embed_tokens.register_forward_hook(lambda m, a, o: emb.append(o.requires_grad)))
    loop = loop_for(model)
    loop.run(inputs(ids, attn, maskable, anchor))
    for h in handles:
        h.remove()
    assert all(p.grad is None for p in model.parameters())
    assert not any(emb)
    for i in range(3):  # layers 0..2 lie below the first adapted layer (3)
        assert not any(seen[i]), f"layer {i} built an autograd graph"
    assert all(seen[3])


# --- non-finite inner losses --------------------------------------------------------------
def test_nonfinite_inner_loss_skips_only_that_sample():
    model = tiny()
    ids, attn, maskable, anchor, t = make_batch()
    loop = loop_for(model, memory_rank=4)
    target = loop.targets[-1].module

    def poison(_m, _a, out):  # NaN in sample 1's activations only
        out = out.clone()
        out[1] = float("nan")
        return out

    handle = target.register_forward_hook(poison)
    memory, stats = loop.run(inputs(ids, attn, maskable, anchor))
    handle.remove()
    assert stats.summary()["skipped_nonfinite"] == 2  # sample 1, in both stages
    fresh = loop.fresh_memory(inputs(ids, attn, maskable, anchor))
    for p, p0 in zip(memory.params(), fresh.params()):
        assert torch.equal(p[1], p0[1])  # untouched
        assert torch.isfinite(p).all()
    assert not torch.equal(memory.params()[1][0], fresh.params()[1][0])  # others learned


# --- (g) trajectories on hand-made inputs ----------------------------------------------------
def hand_inputs():
    maskable = torch.zeros(2, 24, dtype=torch.bool)
    maskable[:, 4:] = True  # 20 maskable per row
    anchor = torch.zeros_like(maskable)
    anchor[0, [4, 9, 14, 19]] = True  # r = 0.2
    anchor[1, 4:] = True  # fully masked: nothing left to reveal
    return TrajectoryInputs(anchor, maskable, torch.tensor([5, 6]))


def test_anchor_consistent_k3_reveal_counts_and_positions():
    args = MemoryArguments(pre_anchor_steps=2, pre_anchor_scale=2.0)
    x = hand_inputs()
    stages = get_trajectory(args).stages(x)
    assert [s.name for s in stages] == ["pre_anchor_1", "pre_anchor_2", "anchor"]
    s0, s1, anchor = stages[0].masked[0], stages[1].masked[0], stages[2].masked[0]
    assert s0.sum() == 8 and s1.sum() == 6 and anchor.sum() == 4  # 0.2*2 -> 8, reveal 4 in 2 stages of 2
    assert bool((s1 <= s0).all()) and bool((anchor <= s1).all())  # each state contains the next
    assert bool((s0 <= x.maskable[0]).all())
    assert torch.equal(stages[0].loss_positions[0], s0)  # broad clean target
    assert torch.equal(stages[0].teacher_masked[0], s1)
    assert torch.equal(stages[2].loss_positions[0], anchor) and not stages[2].teacher_masked.any()
    # Row 1 is fully masked: the pre-anchor stages have nothing to reveal and are skipped.
    assert not stages[0].loss_positions[1].any() and not stages[1].loss_positions[1].any()
    assert stages[2].loss_positions[1].sum() == 20


def test_stage_roles_are_data_and_only_the_anchor_stage_is_the_anchor():
    """Code reads ``Stage.role`` (the split forward goes to the ANCHOR stage); the name is a label."""
    x = hand_inputs()
    roles = {name: [s.role for s in get_trajectory(MemoryArguments(trajectory=name, pre_anchor_steps=2)).stages(x)]
             for name in TRAJECTORY_CLASSES}
    assert roles == {"anchor_consistent": [StageRole.PRE_ANCHOR, StageRole.PRE_ANCHOR, StageRole.ANCHOR],
                     "pre_anchor_only": [StageRole.PRE_ANCHOR, StageRole.PRE_ANCHOR],
                     "anchor_only": [StageRole.ANCHOR],
                     "progressive": [StageRole.INDEPENDENT] * 2}  # the default ratios 0.8, 0.2
    for name in TRAJECTORY_CLASSES:
        for stage in get_trajectory(MemoryArguments(trajectory=name)).stages(x):
            is_anchor = torch.equal(stage.masked, x.anchor)
            assert (stage.role is StageRole.ANCHOR) == is_anchor
            if stage.role is StageRole.PRE_ANCHOR:  # more masked than the anchor, containing it
                assert bool((x.anchor <= stage.masked).all())


def test_pre_anchor_fraction_is_scale_times_realised_fraction():
    x = hand_inputs()
    for scale, expected in [(1.5, 6), (1.25, 5), (1.75, 7), (2.0, 8)]:  # ceil(s * 0.2 * 20)
        stage = get_trajectory(MemoryArguments(pre_anchor_scale=scale)).stages(x)[0]
        assert stage.masked[0].sum() == expected


def test_anchor_token_target_and_revealed_positions():
    x = hand_inputs()
    tokens = get_trajectory(MemoryArguments(pre_anchor_target="anchor_tokens")).stages(x)[0]
    revealed = get_trajectory(MemoryArguments(loss_positions="revealed")).stages(x)[0]
    only_new = tokens.masked[0] & ~x.anchor[0]
    assert torch.equal(tokens.loss_positions[0], only_new) and only_new.sum() == 2
    assert torch.equal(revealed.loss_positions[0], only_new)  # at K=2 the two coincide


def test_pre_anchor_only_anchor_only_and_progressive():
    x = hand_inputs()
    assert [s.name for s in get_trajectory(MemoryArguments(trajectory="pre_anchor_only")).stages(x)] == ["pre_anchor_1"]
    only = get_trajectory(MemoryArguments(trajectory="anchor_only")).stages(x)
    assert [s.name for s in only] == ["anchor"] and torch.equal(only[0].loss_positions, x.anchor)
    prog = get_trajectory(MemoryArguments(trajectory="progressive", progressive_ratios=[0.8, 0.5, 0.2])).stages(x)
    assert [int(s.masked[0].sum()) for s in prog] == [16, 10, 4]
    assert all(bool((s.masked <= x.maskable).all()) for s in prog)
    assert not any(bool((s.masked[0] == x.anchor[0]).all()) for s in prog)  # drawn independently


VARIANTS = [
    {}, {"trajectory": "progressive"}, {"trajectory": "pre_anchor_only"}, {"trajectory": "anchor_only"},
    {"pre_anchor_target": "anchor_tokens"}, {"pre_anchor_steps": 2}, {"pre_anchor_steps": 3},
    {"inner_loss": "kl"}, {"inner_loss": "reverse_kl"}, {"inner_loss": "hidden_mse"},
    {"inner_loss": "hidden_cosine"}, {"loss_positions": "revealed"}, {"memory_scope": "ffn_attn"},
    {"memory_layer_fraction": 1.0}, {"memory_dense": True}, {"inner_clip": "global", "inner_clip_norm": 0.01},
    {"inner_clip": "none"}, {"inner_clip_norm": 0.01}, {"pre_anchor_scale": 2.0},
]
# (variant, per_sample) pairs that must write exactly the default memory: the batch-shared
# gradient (normalised by the whole batch's maskable count) stays under the default clip
# norm 1, so the default clipping never fires there and "none" changes nothing.
SAME_AS_DEFAULT = {("inner_clip=none", False)}


@pytest.fixture(scope="module")
def default_memories():
    """The default settings' memory for ``make_batch()``, per-sample and batch-shared."""
    model = tiny()
    ids, attn, maskable, anchor, t = make_batch()
    return {per_sample: loop_for(model, per_sample=per_sample, memory_rank=4).run(
        inputs(ids, attn, maskable, anchor))[0] for per_sample in (True, False)}


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(f"{k}={w}" for k, w in v.items()) or "default")
@pytest.mark.parametrize("per_sample", [True, False])
def test_every_variant_is_wired_and_equivariant_to_batch_order(variant, per_sample, default_memories):
    """Each option changes the memory written (it reaches the loop), and the memory of a
    reordered batch is the same memory reordered: per-sample slots follow their samples, the
    batch-shared slot does not change (up to float summation order)."""
    model = tiny()
    ids, attn, maskable, anchor, t = make_batch()
    loop = loop_for(model, per_sample=per_sample, memory_rank=4, **variant)
    x = inputs(ids, attn, maskable, anchor)
    memory, stats = loop.run(x)
    assert stats.summary()["skipped_nonfinite"] == 0 and memory.num_slots == (4 if per_sample else 1)
    reference = default_memories[per_sample]
    same = len(memory.params()) == len(reference.params()) and all(
        p.shape == q.shape and torch.allclose(p, q, atol=1e-6) for p, q in zip(memory.params(), reference.params()))
    name = ",".join(f"{k}={w}" for k, w in variant.items())
    assert same == (not variant or (name, per_sample) in SAME_AS_DEFAULT), "the option changed nothing" \
        if not same else "the option should not change the memory here"
    order = torch.tensor([2, 0, 3, 1])
    shuffled, _ = loop.run(inputs(*(v[order] for v in (ids, attn, maskable, anchor)), x.sample_seeds[order]))
    for p, q in zip(memory.params(), shuffled.params()):
        torch.testing.assert_close(q, p[order] if per_sample else p, atol=1e-6, rtol=1e-4)


def test_dense_memory_is_full_rank_delta():
    model = tiny()
    loop = loop_for(model, memory_dense=True)
    ids, attn, maskable, anchor, t = make_batch()
    memory, _ = loop.run(inputs(ids, attn, maskable, anchor))
    d = memory.tensors[0][0]
    assert d.shape == (4, loop.targets[0].out_features, loop.targets[0].in_features)
    # two SGD steps of a dense delta: a sum of outer products, one per scored position, far
    # above the low-rank memory's rank (here round(128 * 32 / 2048) = 2)
    assert int(torch.linalg.matrix_rank(d[0])) > max(4, loop.args.rank_for(model.config.hidden_size))


def test_fast_weights_are_not_model_parameters_or_state():
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n_params = len(list(model.parameters()))
    loop = loop_for(model)
    ids, attn, maskable, anchor, t = make_batch()
    memory, _ = loop.run(inputs(ids, attn, maskable, anchor))
    with memory.active():
        assert len(list(model.parameters())) == n_params
        assert set(model.state_dict()) == set(before)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_rank_scales_with_width():
    args = MemoryArguments()
    assert args.rank_for(2048) == 32 and args.rank_for(128) == 2 and args.rank_for(16) == 1
    assert args.scale_for(128) == 2.0  # alpha = 2 x rank, the paper's 64 / 32
    assert MemoryArguments(memory_rank=32).rank_for(128) == 32


def test_shared_memory_is_one_slot_for_the_whole_batch():
    model = tiny()
    ids, attn, maskable, anchor, t = make_batch()
    loop = loop_for(model, per_sample=False)
    memory, _ = loop.run(inputs(ids, attn, maskable, anchor))
    assert memory.num_slots == 1
    shared = copy.copy(memory)
    with shared.active():
        out = model(input_ids=ids, attention_mask=attn).logits
    with memory.slot(0).active():  # the same delta for every sample
        out2 = model(input_ids=ids, attention_mask=attn).logits
    torch.testing.assert_close(out, out2)
