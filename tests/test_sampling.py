"""Sampler tests: pure schedule kernels, a fixed-logits fake model, a tiny random Gemma3."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from memdlm.backbones.modeling import build_tiny_model
from memdlm.sampling.sampler import (
    Sampler,
    SamplerConfig,
    block_sizes,
    fill_after_eos,
    select_above_threshold,
    select_commits,
    steps_per_block,
    tokens_per_step,
)
from memdlm.backbones.tokenizer import load_tokenizer

torch.set_num_threads(1)

PROMPTS = ["The cat sat on", "Hello", "Numbers: 1 2 3 4 5 6 7"]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return build_tiny_model(tok, seed=0, num_hidden_layers=2)


def committed_per_step(out):
    return [step.committed.sum(1).tolist() for step in out.history]


def assert_eos_tail(out, eos_id):
    """After a sample's first EOS every response slot is EOS, and the response stops before it."""
    for resp, cut in zip(out.sequences.gather(1, out.response_positions).tolist(), out.responses):
        if eos_id in resp:
            first = resp.index(eos_id)
            assert resp[first:] == [eos_id] * (len(resp) - first)
            assert cut == resp[:first]


# -- pure kernels ------------------------------------------------------------


@pytest.mark.parametrize("n,steps", [(10, 3), (12, 4), (7, 7), (64, 5), (5, 1), (3, 5)])
def test_tokens_per_step(n, steps):
    counts = tokens_per_step(n, steps)
    assert counts.dtype == torch.long and counts.shape == (steps,)
    assert int(counts.sum()) == n
    assert (counts[:-1] >= counts[1:]).all()  # non-increasing
    assert int(counts.max() - counts.min()) <= 1
    assert counts.tolist()[: n % steps] == [n // steps + 1] * (n % steps)  # remainder first


def test_tokens_per_step_example_and_errors():
    assert tokens_per_step(10, 4).tolist() == [3, 3, 2, 2]
    with pytest.raises(ValueError):
        tokens_per_step(4, 0)


def test_block_and_step_split():
    assert block_sizes(10, 4) == [4, 4, 2]
    assert block_sizes(8, 4) == [4, 4]
    assert steps_per_block([4, 4], 5) == [3, 2]  # remainder to the earliest block
    # the short last block would get 3 steps for 2 slots: its surplus moves to block 0
    assert steps_per_block([4, 4, 2], 10) == [4, 4, 2]
    assert steps_per_block([4, 4, 2], 9) == [4, 3, 2]
    with pytest.raises(ValueError, match="num_blocks"):
        steps_per_block([4, 4, 2], 2)


def test_select_commits_topk_among_candidates():
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.7], [0.2, 0.3, 0.4, 0.5]])
    cand = torch.tensor([[False, True, True, True], [True, False, False, False]])
    got = select_commits(scores, cand, 2)
    # row 0: best candidates are 0.7 and 0.5 (0.9 is not a candidate); row 1: only one left
    assert got.tolist() == [[False, False, True, True], [True, False, False, False]]


def test_fill_after_eos():
    r = torch.tensor([[5, 2, 7, 8], [5, 6, 7, 8], [2, 1, 1, 9]])
    assert fill_after_eos(r, 2).tolist() == [[5, 2, 2, 2], [5, 6, 7, 8], [2, 2, 2, 2]]


# -- config ------------------------------------------------------------------


def test_config_validation():
    with pytest.raises(ValueError, match="steps must lie in"):
        SamplerConfig(max_new_tokens=8, steps=9)
    with pytest.raises(ValueError, match="fewer than the 3 blocks"):
        SamplerConfig(max_new_tokens=12, steps=2, block_length=4)
    with pytest.raises(ValueError, match="unknown remasking"):
        SamplerConfig(remasking="lowest")
    with pytest.raises(ValueError):
        SamplerConfig(temperature=-1.0)
    cfg = SamplerConfig(max_new_tokens=10, steps=9, block_length=4)
    plan = cfg.plan()
    assert [(p.start, p.end) for p in plan] == [(0, 4), (4, 8), (8, 10)]
    assert sum(len(p.counts) for p in plan) == 9
    assert all(f.metadata.get("help") for f in SamplerConfig.__dataclass_fields__.values())


def test_steps_over_n_raises_at_generate(model, tok):
    with pytest.raises(ValueError, match="steps must lie in"):
        Sampler(model, tok).generate(["hi"], max_new_tokens=4, steps=5)
    with pytest.raises(TypeError, match="unknown sampler options"):
        Sampler(model, tok).generate(["hi"], max_new_token=4)


# -- fixed-logits fake model: the selection maths ----------------------------


class FixedLogits(nn.Module):
    """Logits that depend only on the absolute position: ``table[pos]``."""

    def __init__(self, table):
        super().__init__()
        self.register_buffer("table", table)
        self.head = nn.Identity()  # the "output embedding" that forward_logits hooks

    def get_output_embeddings(self):
        return self.head

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        b, width = input_ids.shape
        return SimpleNamespace(logits=self.head(self.table[:width].expand(b, -1, -1)))


def fixed_model(tok, prompt_len, peaks, strengths, extra=None):
    """Response slot j proposes token peaks[j] with logit strengths[j] (others 0)."""
    vocab = len(tok)
    table = torch.zeros(prompt_len + len(peaks) + 4, vocab)
    for j, (t, s) in enumerate(zip(peaks, strengths)):
        table[prompt_len + j, t] = s
    for (pos, t), v in (extra or {}).items():
        table[prompt_len + pos, t] = v
    return FixedLogits(table)


def test_low_confidence_commits_most_confident_first(tok):
    prompt = [10, 11, 12]
    peaks, strengths = [100, 101, 102, 103], [1.0, 5.0, 3.0, 8.0]
    # a huge mask-token logit at slot 0 and pad at slot 2: both must be ignored
    fake = fixed_model(tok, 3, peaks, strengths,
                       extra={(0, tok.mask_token_id): 50.0, (2, tok.pad_token_id): 50.0})
    sampler = Sampler(fake, tok, SamplerConfig(max_new_tokens=4, steps=4))
    out = sampler.generate([prompt], return_history=True)
    order = [int(s.committed[0].nonzero()) - 3 for s in out.history]
    assert order == [3, 1, 2, 0]  # by decreasing strength
    assert out.responses == [peaks]
    # two per step: {3, 1} then {2, 0}
    out = sampler.generate([prompt], steps=2, return_history=True)
    firsts = (out.history[0].committed[0].nonzero().flatten() - 3).tolist()
    assert sorted(firsts) == [1, 3]
    # blocks of 2: block 0 first (slot 1 before slot 0), then block 1 (3 before 2)
    out = sampler.generate([prompt], block_length=2, return_history=True)
    order = [int(s.committed[0].nonzero()) - 3 for s in out.history]
    assert order == [1, 0, 3, 2]



def test_random_remasking_commits_independently_of_confidence(tok):
    """With per-request seeds, random remasking's commit order is the seed's alone: reversing
    the confidence profile changes nothing, and over seeds every slot is committed first."""
    peaks = [100, 101, 102, 103]
    rising, falling = [1.0, 5.0, 3.0, 8.0], [8.0, 3.0, 5.0, 1.0]

    def order(strengths, seed):
        sampler = Sampler(fixed_model(tok, 3, peaks, strengths), tok,
                          SamplerConfig(max_new_tokens=4, steps=4, remasking="random"))
        out = sampler.generate([[10, 11, 12]], seeds=[seed], return_history=True)
        assert out.responses == [peaks]  # temperature 0: each slot's own argmax
        return [int(s.committed[0].nonzero()) - 3 for s in out.history]

    orders = {seed: order(rising, seed) for seed in range(12)}
    assert all(order(falling, seed) == orders[seed] for seed in (0, 1, 2))
    assert {o[0] for o in orders.values()} == {0, 1, 2, 3}  # low confidence would always start at 3
    assert len({tuple(o) for o in orders.values()}) > 3

def test_eos_fills_later_slots_and_cuts_response(tok):
    eos = tok.eos_token_id
    peaks, strengths = [100, 101, eos, 103, 104, 105], [1.0, 2.0, 9.0, 8.0, 7.0, 6.0]
    fake = fixed_model(tok, 2, peaks, strengths)
    sampler = Sampler(fake, tok, SamplerConfig(max_new_tokens=6, steps=6))
    out = sampler.generate([[10, 11]], return_history=True)
    resp = out.sequences[0, out.response_positions[0]].tolist()
    assert resp == [100, 101, eos, eos, eos, eos]
    assert out.responses == [[100, 101]]
    assert out.texts == [tok.decode([100, 101])]
    # EOS committed at step 0 fills slots 3..5 in the same step; two more commits finish it
    assert committed_per_step(out) == [[4], [1], [1], [0], [0], [0]]
    # without stop_at_eos, EOS is an ordinary token
    out = sampler.generate([[10, 11]], stop_at_eos=False, return_history=True)
    assert out.responses == [peaks]
    assert committed_per_step(out) == [[1]] * 6


def test_eos_fill_overrides_earlier_commits(tok):
    eos = tok.eos_token_id
    # slot 3 (token 103) is committed first, then EOS at slot 1: slot 3 must become EOS
    fake = fixed_model(tok, 1, [100, eos, 102, 103], [1.0, 5.0, 2.0, 9.0])
    out = Sampler(fake, tok, SamplerConfig(max_new_tokens=4, steps=4)).generate([[7]])
    assert out.sequences[0, 1:].tolist() == [100, eos, eos, eos]


# -- tiny random Gemma3 ------------------------------------------------------


def test_counts_blocks_prompt_and_no_mask_left(model, tok):
    cfg = SamplerConfig(max_new_tokens=10, steps=7, block_length=4, stop_at_eos=False)
    out = Sampler(model, tok, cfg).generate(PROMPTS, return_history=True)
    expected = torch.cat([p.counts for p in cfg.plan()]).tolist()  # steps 3,2,2 over blocks 4,4,2
    assert expected == [2, 1, 1, 2, 2, 1, 1]
    assert len(out.history) == cfg.steps
    for step, k in zip(out.history, expected):
        assert step.committed.sum(1).tolist() == [k] * len(PROMPTS)
    enc = tok(PROMPTS, add_special_tokens=False)["input_ids"]
    for i, p in enumerate(enc):
        assert out.sequences[i, : len(p)].tolist() == p  # prompt untouched
        assert (out.sequences[i, len(p) + 10:] == tok.pad_token_id).all()  # right padding
        for step in out.history:
            assert not step.committed[i, : len(p)].any()
    resp = out.sequences.gather(1, out.response_positions)
    assert not (resp == tok.mask_token_id).any()
    assert not (resp == tok.pad_token_id).any()
    # block order: block j+1 untouched until block j is complete
    blocks = [(0, 4), (4, 8), (8, 10)]
    for step in out.history:
        state = step.state.gather(1, out.response_positions)
        done = step.committed.gather(1, out.response_positions)
        for j, (s, e) in enumerate(blocks):
            if done[:, s:e].any():
                for s0, e0 in blocks[:j]:
                    assert not (state[:, s0:e0] == tok.mask_token_id).any()
                for s1, e1 in blocks[j + 1:]:
                    assert not done[:, s1:e1].any()


def test_random_remasking_counts(model, tok):
    cfg = SamplerConfig(max_new_tokens=9, steps=4, remasking="random", stop_at_eos=False)
    out = Sampler(model, tok, cfg).generate(PROMPTS[:2], return_history=True)
    assert committed_per_step(out) == [[3, 3], [2, 2], [2, 2], [2, 2]]
    assert not (out.sequences == tok.mask_token_id).any()


def test_batched_equals_single_greedy(model, tok):
    sampler = Sampler(model, tok, SamplerConfig(max_new_tokens=8, steps=4, block_length=4))
    batched = sampler.generate(PROMPTS)
    assert_eos_tail(batched, tok.eos_token_id)
    for i, p in enumerate(PROMPTS):
        alone = sampler.generate([p])
        assert alone.responses[0] == batched.responses[i]
        assert alone.texts[0] == batched.texts[i]


def test_seeds(model, tok):
    sampler = Sampler(model, tok, SamplerConfig(max_new_tokens=12, steps=6, temperature=1.0,
                                                stop_at_eos=False))
    a = sampler.generate(PROMPTS, seed=1)
    b = sampler.generate(PROMPTS, seed=1)
    c = sampler.generate(PROMPTS, seed=2)
    assert torch.equal(a.sequences, b.sequences)
    assert_eos_tail(sampler.generate(PROMPTS * 4, stop_at_eos=True), tok.eos_token_id)
    assert not torch.equal(a.sequences, c.sequences)
    # per-request seeds: a sample's result does not depend on its batch mates
    both = sampler.generate(PROMPTS[:2], seeds=[5, 6], remasking="random")
    alone = sampler.generate(PROMPTS[1:2], seeds=[6], remasking="random")
    assert both.responses[1] == alone.responses[0]
    with pytest.raises(ValueError, match="seeds"):
        sampler.generate(PROMPTS, seeds=[1])


def test_token_id_and_tensor_inputs_and_train_state(model, tok):
    enc = tok(PROMPTS[:2], add_special_tokens=False)["input_ids"]
    sampler = Sampler(model, tok, SamplerConfig(max_new_tokens=6, steps=3))
    from_text = sampler.generate(PROMPTS[:2])
    from_ids = sampler.generate(enc)
    width = max(map(len, enc))
    left = torch.full((2, width), tok.pad_token_id)
    mask = torch.zeros(2, width, dtype=torch.long)
    for i, p in enumerate(enc):  # left padded on purpose: the sampler re-lays it out
        left[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    from_tensor = sampler.generate(left, attention_mask=mask)
    assert from_text.responses == from_ids.responses == from_tensor.responses
    model.train()
    sampler.generate(enc[:1])
    assert model.training
    model.eval()


def test_forward_context_wraps_every_forward(model, tok):
    calls = []

    @contextlib.contextmanager
    def ctx():
        calls.append("enter")
        yield

    cfg = SamplerConfig(max_new_tokens=6, steps=3, stop_at_eos=False)
    Sampler(model, tok, cfg, forward_context=ctx).generate(["hi"])
    assert calls == ["enter"] * 3


# -- threshold rule (Fast-dLLM's confidence-aware parallel decoding) ----------


def committed_slots(out, prompt_len):
    """Per step, the sorted response slots sample 0 committed (EOS fills included)."""
    return [(s.committed[0].nonzero().flatten() - prompt_len).tolist() for s in out.history]


def test_select_above_threshold_by_hand():
    conf = torch.tensor([[0.95, 0.2, 0.91, 0.5],     # slot 2 is above tau but not a candidate
                         [0.1, 0.3, 0.2, 0.05],      # none above: the most confident candidate
                         [0.99, 0.95, 0.97, 0.92],   # all above
                         [0.99, 0.95, 0.97, 0.92]])  # nothing left to commit
    cand = torch.tensor([[True, True, False, True], [True, True, True, False],
                         [True, True, True, True], [False] * 4])
    got = select_above_threshold(conf, cand, 0.9)
    assert got.tolist() == [[True, False, False, False], [False, True, False, False],
                            [True] * 4, [False] * 4]
    capped = select_above_threshold(conf, cand, 0.9, max_per_step=2)
    assert capped[2].tolist() == [True, False, True, False]  # the two most confident of four
    assert capped[:2].tolist() == got[:2].tolist()
    assert select_above_threshold(conf, cand, 0.0)[1].tolist() == [True, True, True, False]


def confidence_of(strength, tok, n_forbidden=2):
    """The fake model's probability of its peak: one logit ``strength``, the rest 0, forbidden -inf."""
    import math

    return math.exp(strength) / (math.exp(strength) + len(tok) - 1 - n_forbidden)


def test_threshold_commits_exactly_the_slots_above_tau(tok):
    peaks, strengths = [100, 101, 102, 103, 104, 105], [12.0, 5.0, 13.0, 9.0, 12.5, 4.0]
    conf = [confidence_of(s, tok) for s in strengths]
    assert [c >= 0.9 for c in conf] == [True, False, True, False, True, False]  # 12 -> 0.975, 9 -> 0.66
    fake = fixed_model(tok, 2, peaks, strengths)
    cfg = SamplerConfig(max_new_tokens=6, unmask_rule="threshold", threshold=0.9)
    out = Sampler(fake, tok, cfg).generate([[10, 11]], return_history=True)
    # step 0: the three above tau; then none is above: the most confident one per step
    assert committed_slots(out, 2) == [[0, 2, 4], [3], [1], [5]]
    assert out.responses == [peaks] and out.model_calls == 4 and out.calls_per_sample == [4]
    # a cap of one per step: confidence order 2, 4, 0, 3, 1, 5
    out = Sampler(fake, tok, cfg).generate([[10, 11]], max_per_step=1, return_history=True)
    assert committed_slots(out, 2) == [[2], [4], [0], [3], [1], [5]]
    # tau = 0 commits a whole block per call
    out = Sampler(fake, tok, cfg).generate([[10, 11]], threshold=0.0, block_length=4)
    assert out.model_calls == 2 and out.responses == [peaks]


def test_threshold_respects_blocks(tok):
    peaks, strengths = [100, 101, 102, 103, 104, 105], [12.0, 5.0, 13.0, 9.0, 12.5, 4.0]
    fake = fixed_model(tok, 2, peaks, strengths)
    cfg = SamplerConfig(max_new_tokens=6, block_length=3, unmask_rule="threshold", threshold=0.9)
    out = Sampler(fake, tok, cfg).generate([[10, 11]], return_history=True)
    # block 0 = slots 0..2, block 1 = slots 3..5; slot 4 (above tau) waits for block 1
    assert committed_slots(out, 2) == [[0, 2], [1], [4], [3], [5]]
    assert out.model_calls == 5
    assert [p.counts for p in cfg.plan()] == [None, None]
    # steps is not used by the threshold rule, so it is not validated against N either
    SamplerConfig(max_new_tokens=4, steps=64, unmask_rule="threshold")
    with pytest.raises(ValueError, match="low_confidence"):
        SamplerConfig(unmask_rule="threshold", remasking="random")
    with pytest.raises(ValueError, match="threshold must lie"):
        SamplerConfig(unmask_rule="threshold", threshold=1.5)
    with pytest.raises(ValueError, match="max_per_step"):
        SamplerConfig(max_per_step=0)


def test_threshold_eos_fills_and_skips_finished_blocks(tok):
    eos = tok.eos_token_id
    # EOS (slot 1) and slot 2 are above tau at step 0; the EOS fill overrides slot 2 and 3
    fake = fixed_model(tok, 1, [100, eos, 102, 103], [5.0, 12.0, 13.0, 4.0])
    cfg = SamplerConfig(max_new_tokens=4, unmask_rule="threshold", threshold=0.9)
    out = Sampler(fake, tok, cfg).generate([[7]], return_history=True)
    assert out.sequences[0, 1:].tolist() == [100, eos, eos, eos]
    assert out.responses == [[100]]
    assert committed_slots(out, 1) == [[1, 2, 3], [0]] and out.model_calls == 2
    # in blocks of 2, block 1 is all EOS after block 0: no call is spent on it
    out = Sampler(fake, tok, cfg).generate([[7]], block_length=2, return_history=True)
    assert out.sequences[0, 1:].tolist() == [100, eos, eos, eos]
    assert out.model_calls == 2 and len(out.history) == 2


def test_threshold_deterministic_and_batch_independent(model, tok):
    # tau chosen for this random model so that steps commit 0-4 slots per sample
    cfg = SamplerConfig(max_new_tokens=12, block_length=4, unmask_rule="threshold", threshold=5e-4,
                        stop_at_eos=False)
    sampler = Sampler(model, tok, cfg)
    batched = sampler.generate(PROMPTS, return_history=True)
    assert batched.calls_per_sample == [4, 3, 4] and batched.model_calls == 5  # data dependent
    for i, p in enumerate(PROMPTS):
        alone = sampler.generate([p])
        assert alone.responses[0] == batched.responses[i]
        assert alone.model_calls == alone.calls_per_sample[0] == batched.calls_per_sample[i]
    # temperature draws: the same seed gives the same result, per-sample seeds are batch-independent
    hot = dict(temperature=1.0, threshold=2.5e-4)  # near 1/V: draws land on both sides
    a = sampler.generate(PROMPTS, seed=3, **hot)
    b = sampler.generate(PROMPTS, seed=3, **hot)
    assert torch.equal(a.sequences, b.sequences) and a.model_calls == b.model_calls
    assert not torch.equal(a.sequences, sampler.generate(PROMPTS, seed=4, **hot).sequences)
    both = sampler.generate(PROMPTS, seeds=[5, 6, 7], **hot)
    assert len(set(both.calls_per_sample)) > 1  # samples took different numbers of steps
    for i, p in enumerate(PROMPTS):
        alone = sampler.generate([p], seeds=[5 + i], **hot)
        assert alone.responses[0] == both.responses[i]
        assert alone.calls_per_sample[0] == both.calls_per_sample[i]


def test_fixed_rule_reports_calls(model, tok):
    cfg = SamplerConfig(max_new_tokens=8, steps=4, block_length=4, stop_at_eos=False)
    out = Sampler(model, tok, cfg).generate(PROMPTS)
    assert out.model_calls == 4 and out.calls_per_sample == [4, 4, 4] and out.cache_used == "none"


def test_generate_flags_come_from_sampler_config():
    from memdlm.commands.generate import build_parser

    args = build_parser("memdlm generate").parse_args(["--model", "m"])
    assert args.steps is None  # unset: min(default steps, --max-new-tokens), resolved by `run`
    args.steps = SamplerConfig().steps
    assert SamplerConfig(**{f: getattr(args, f) for f in SamplerConfig.__dataclass_fields__}) == SamplerConfig()
    args = build_parser("memdlm generate").parse_args(
        ["--model", "m", "--unmask-rule", "threshold", "--threshold", "0.7", "--max-per-step", "4",
         "--cache", "dual", "--cache-refresh-steps", "2", "--stop-at-eos", "false"])
    assert (args.unmask_rule, args.threshold, args.max_per_step, args.cache, args.cache_refresh_steps,
            args.stop_at_eos) == ("threshold", 0.7, 4, "dual", 2, False)
    with pytest.raises(SystemExit):
        build_parser("memdlm generate").parse_args(["--model", "m", "--unmask-rule", "fast"])
