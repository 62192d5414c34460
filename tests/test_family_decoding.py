"""The families' own decoding rules against references written here from their published
descriptions: Dream's (unmask_rule="dream" with maskgit_plus / topk_margin / entropy / origin) on
fixed logits, LLaDA2's (unmask_rule="llada2": block-causal attention, its threshold rule) on a
tiny model, with and without inference-time memory."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from memdlm.runs.run import Run
from memdlm.sampling.block_causal import block_causal_keep, grid_end
from memdlm.sampling.sampler import (
    Sampler,
    SamplerConfig,
    dream_counts,
    dream_transfer,
    select_above_threshold_or_top_k,
)


class PositionLogits(nn.Module):
    """Logits that depend only on the position: ``table[pos]`` (the canvas is ignored)."""

    def __init__(self, table):
        super().__init__()
        self.register_buffer("table", table)
        self.head = nn.Identity()  # the output embedding forward_logits hooks

    def get_output_embeddings(self):
        return self.head

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        b, width = input_ids.shape
        return SimpleNamespace(logits=self.head(self.table[:width].expand(b, -1, -1)))


def test_dream_counts_by_hand():
    # t = linspace(1, 1e-3, 5) = 1, .75025, .5005, .25075, .001
    # 10 * (1 - .75025) = 2.50 -> 2; 8 * (1 - .5005 / .75025) = 2.66 -> 2;
    # 6 * (1 - .25075 / .5005) = 2.99 -> 2; the last step takes the 4 left
    assert dream_counts(10, 4, 1e-3).tolist() == [2, 2, 2, 4]
    assert dream_counts(10, 1, 1e-3).tolist() == [10]
    counts = dream_counts(64, 64, 1e-3)
    assert int(counts.sum()) == 64 and int(counts[0]) == 0  # 64 * (1/64 - tiny) rounds down: no commit
    plan = SamplerConfig(max_new_tokens=10, steps=4, unmask_rule="dream").plan()
    assert [p.counts.tolist() for p in plan] == [[2, 2, 2, 4]]


def dream_reference(table, prompt_len: int, n: int, steps: int, eps: float, alg: str, forbidden) -> list[set]:
    """Dream's loop (greedy, one sample), written from its description: timesteps from 1 to eps;
    at step i, of the m masked slots commit int(m * (1 - s/t)) (all at the last step), those of
    highest confidence -- maskgit_plus: max probability; topk_margin: top-1 minus top-2;
    entropy: sum p log(p + 1e-10). Returns the response slots committed at each step."""
    logits = table[prompt_len:prompt_len + n].clone()
    logits[:, forbidden] = float("-inf")
    probs = logits.softmax(-1)
    top = probs.topk(2, dim=-1).values
    confidence = {"maskgit_plus": top[:, 0], "topk_margin": top[:, 0] - top[:, 1],
                  "entropy": (probs * (probs + 1e-10).log()).sum(-1)}[alg]
    times = torch.linspace(1, eps, steps + 1)
    masked, committed = set(range(n)), []
    for i in range(steps):
        t, s = times[i], times[i + 1]
        m = torch.tensor(len(masked)) / 1  # Dream: mask count over the batch of one, a float
        k = int(m * (1 - s / t)) if i < steps - 1 else len(masked)
        full = torch.full((n,), float("-inf"))
        full[list(masked)] = confidence[list(masked)]
        chosen = set(full.topk(k).indices.tolist()) if k > 0 else set()
        committed.append(chosen)
        masked -= chosen
    return committed


@pytest.mark.parametrize("alg, remasking", [("maskgit_plus", "low_confidence"), ("topk_margin", "topk_margin"),
                                            ("entropy", "entropy")])
def test_dream_rule_matches_the_reference_step_by_step(tok, alg, remasking):
    prompt, n, steps = [10, 11, 12], 12, 5
    table = torch.randn(len(prompt) + n + 2, len(tok), generator=torch.Generator().manual_seed(3)) * 3
    config = SamplerConfig(max_new_tokens=n, steps=steps, unmask_rule="dream", remasking=remasking,
                           stop_at_eos=False)
    sampler = Sampler(PositionLogits(table), tok, config)
    out = sampler.generate([prompt], return_history=True)
    got = [set((step.committed[0].nonzero().flatten() - len(prompt)).tolist()) for step in out.history]
    assert got == dream_reference(table, len(prompt), n, steps, 1e-3, alg, sampler.forbidden)
    assert [len(c) for c in got] == dream_counts(n, steps, 1e-3).tolist()
    assert out.model_calls == steps  # a step that commits nothing still calls the model, as Dream's


def test_confidence_rules_rank_differently(tok):
    """On these logits the three confidences order the slots differently, so the test above
    could tell them apart."""
    n = 12
    table = torch.randn(3 + n + 2, len(tok), generator=torch.Generator().manual_seed(3)) * 3
    orders = {tuple(map(frozenset, dream_reference(table, 3, n, 5, 1e-3, alg, [tok.mask_token_id])))
              for alg in ("maskgit_plus", "topk_margin", "entropy")}
    assert len(orders) == 3


def test_dream_options_are_checked():
    with pytest.raises(ValueError, match="dream_eps"):
        SamplerConfig(unmask_rule="dream", dream_eps=0.0)
    with pytest.raises(ValueError, match="steps must lie in"):
        SamplerConfig(max_new_tokens=4, steps=5, unmask_rule="dream")


def test_native_is_the_family_rule_and_is_recorded(tok):
    def typed(model_type):
        return SimpleNamespace(config=SimpleNamespace(model_type=model_type))

    assert SamplerConfig().unmask_rule == "native"
    assert SamplerConfig().for_model(typed("dream")).unmask_rule == "dream"
    assert SamplerConfig().for_model(typed("llada")).unmask_rule == "fixed"
    assert SamplerConfig(unmask_rule="fixed").for_model(typed("dream")).unmask_rule == "fixed"  # explicit wins
    llada2 = SamplerConfig().for_model(typed("llada2_moe"))  # LLaDA2's generate's own defaults
    assert (llada2.unmask_rule, llada2.block_length, llada2.threshold) == ("llada2", 32, 0.95)
    given = SamplerConfig(block_length=8, threshold=0.5).for_model(typed("llada2_moe"))
    assert (given.block_length, given.threshold) == (8, 0.5)
    assert SamplerConfig(unmask_rule="threshold").for_model(typed("llada")).threshold == 0.9
    prompt, n, steps = [10, 11, 12], 12, 5
    table = torch.randn(len(prompt) + n + 2, len(tok), generator=torch.Generator().manual_seed(3)) * 3
    model = PositionLogits(table)  # no config: not a known family, so LLaDA's fixed rule
    out = Sampler(model, tok, SamplerConfig(max_new_tokens=n, steps=steps)).generate([prompt], return_history=True)
    assert out.unmask_rule == "fixed"
    assert [int(step.committed[0].sum()) for step in out.history] == [3, 3, 2, 2, 2]  # 12 over 5, even


# -- Dream's origin ------------------------------------------------------------------


def test_dream_transfer_by_hand():
    # t = 1, .75025, .5005, .25075, .001: 1 - .75025 = .24975; 1 - .5005/.75025 = .33289;
    # 1 - .25075/.5005 = .49900; the last step commits every slot left
    torch.testing.assert_close(dream_transfer(4, 1e-3), torch.tensor([0.24975, 0.33289, 0.49900, 1.0]),
                               atol=5e-5, rtol=0)
    assert dream_transfer(1, 1e-3).tolist() == [1.0]


def origin_reference(table, prompt_len: int, n: int, steps: int, eps: float, seed: int, forbidden) -> list[list]:
    """Dream's ``origin`` (greedy, one sample), from its description: at step i each masked
    position draws a uniform (one draw per masked position, left to right, from the seeded
    generator) and takes its argmax token if the draw is below 1 - s/t (every one at the last
    step). Returns the response after each step (None = still masked)."""
    logits = table[prompt_len:prompt_len + n].clone()
    logits[:, forbidden] = float("-inf")
    tokens = logits.argmax(-1).tolist()
    times = torch.linspace(1, eps, steps + 1)
    generator = torch.Generator().manual_seed(seed)
    state, states = [None] * n, []
    for i in range(steps):
        masked = [j for j in range(n) if state[j] is None]
        draws = torch.rand(len(masked), generator=generator)
        p = 1 - times[i + 1] / times[i] if i < steps - 1 else 1
        for j, u in zip(masked, draws):
            if u < p:
                state[j] = tokens[j]
        states.append(list(state))
    return states


@pytest.mark.parametrize("steps, seed", [(4, 0), (6, 1), (1, 2)])
def test_origin_matches_the_reference_step_by_step(tok, steps, seed):
    prompt, n = [10, 11, 12], 12
    table = torch.randn(len(prompt) + n + 2, len(tok), generator=torch.Generator().manual_seed(3)) * 3
    config = SamplerConfig(max_new_tokens=n, steps=steps, unmask_rule="dream", remasking="origin",
                           stop_at_eos=False, seed=seed)
    sampler = Sampler(PositionLogits(table), tok, config)
    out = sampler.generate([prompt], return_history=True)
    mask = tok.mask_token_id
    got = [[None if t == mask else t for t in step.state[0, len(prompt):].tolist()] for step in out.history[1:]]
    got.append(out.responses[0])
    expected = origin_reference(table, len(prompt), n, steps, 1e-3, seed, sampler.forbidden)
    # the sampler skips a step once nothing is left to commit; Dream's loop runs it and changes nothing
    assert got == expected[: len(got)] and all(state == expected[-1] for state in expected[len(got) - 1:])
    if steps > 1:  # the draws decide: another seed commits other slots first
        other = Sampler(PositionLogits(table), tok, dataclasses.replace(config, seed=seed + 10))
        first = other.generate([prompt], return_history=True).history[0].committed
        assert not torch.equal(first, out.history[0].committed)


def test_origin_is_dreams_only():
    with pytest.raises(ValueError, match="origin"):
        SamplerConfig(remasking="origin", unmask_rule="fixed")
    with pytest.raises(ValueError, match="origin"):
        SamplerConfig(remasking="origin").for_model(SimpleNamespace(config=SimpleNamespace(model_type="llada")))


# -- LLaDA2's block-causal decoding --------------------------------------------------


def test_llada2_commit_rule_by_hand():
    conf = torch.tensor([[0.97, 0.10, 0.96, 0.50],    # two above .95 >= k = 2: exactly those
                         [0.97, 0.10, 0.20, 0.50],    # one above < k = 2: the 2 most confident
                         [0.99, 0.98, 0.97, 0.96]])   # all above, but slot 0 is not a candidate
    cand = torch.tensor([[True] * 4, [True] * 4, [False, True, True, True]])
    got = select_above_threshold_or_top_k(conf, cand, 2, 0.95)
    assert got.tolist() == [[True, False, True, False], [True, False, False, True], [False, True, True, True]]
    assert select_above_threshold_or_top_k(conf, cand, 0, 0.99).sum() == 0  # quota 0: only those above


def test_block_causal_mask_by_hand():
    keep = block_causal_keep(torch.tensor([[1, 1, 1, 1, 0]]), 2)[0, 0].long()
    # blocks {0, 1}, {2, 3}, {4}; column 4 is padding
    assert keep.tolist() == [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0]]
    assert [grid_end(5, 8, 32), grid_end(32, 16, 32), grid_end(40, 24, 8)] == [32, 64, 64]


def llada2_reference(model, prompt, n, size, steps, threshold, eos_id, mask_id, forbidden, context):
    """LLaDA2's generate (greedy, one sample), from its description: a canvas of masks to the
    block boundary at or after P + N, blocks counted from position 0; block by block from the one
    holding the prompt's end, the model sees the canvas up to the block's end with block-causal
    attention; each of at most ``steps`` steps commits the masked slots whose probability is above
    the threshold if there are as many as the step's quota (``size`` split evenly over the steps),
    else the quota's most confident; after a block, stop if the response holds an EOS."""
    p = len(prompt)
    x = torch.full((1, grid_end(p, n, size)), mask_id)
    x[0, :p] = torch.tensor(prompt)
    block_of = torch.arange(x.shape[1]) // size
    quota = [size // steps + (i < size % steps) for i in range(steps)]
    for g in range(p // size, x.shape[1] // size):
        lo, hi = g * size, (g + 1) * size
        for k in quota:
            masked = x[0, lo:hi] == mask_id
            if not masked.any():
                break
            see = (block_of[None, :hi] <= block_of[:hi, None])[None, None]
            with torch.no_grad(), context():
                logits = model(input_ids=x[:, :hi], attention_mask=see, position_ids=torch.arange(hi)[None]).logits
            logits = logits[0, lo:hi].float()
            logits[:, forbidden] = float("-inf")
            confidence, tokens = logits.softmax(-1).max(-1)
            confidence = confidence.masked_fill(~masked, float("-inf"))
            above = confidence > threshold
            if int(above.sum()) >= k:
                chosen = above
            else:
                chosen = torch.zeros_like(masked)
                chosen[confidence.topk(min(k, int(masked.sum()))).indices] = True
            x[0, lo:hi] = torch.where(chosen, tokens, x[0, lo:hi])
        if eos_id in x[0, p:hi].tolist():
            break
    response = x[0, p:p + n].tolist()
    return response[: response.index(eos_id)] if eos_id in response else response


LLADA2_SETTINGS = [  # prompt length, N, block, steps, threshold
    (5, 8, 32, 8, 0.95), (40, 24, 8, 8, 2e-4), (13, 24, 8, 3, 1.0), (7, 17, 16, 16, 0.0), (8, 12, 4, 2, 3e-4)]


@pytest.fixture(scope="module")
def gemma(make_tiny_model):
    return make_tiny_model(seed=1).eval()


@pytest.mark.parametrize("memory", [False, True])
@pytest.mark.parametrize("setting", LLADA2_SETTINGS)
def test_llada2_rule_matches_the_reference(gemma, tok, setting, memory):
    plen, n, size, steps, threshold = setting
    prompt = torch.randint(10, 4000, (plen,), generator=torch.Generator().manual_seed(plen)).tolist()
    context = Run(gemma, tok).memory(inner_lr=1.0).adapt([prompt], [0]).active if memory else contextlib.nullcontext
    config = SamplerConfig(max_new_tokens=n, steps=steps, block_length=size, unmask_rule="llada2",
                           threshold=threshold)
    sampler = Sampler(gemma, tok, config)
    out = sampler.generate([prompt], forward_context=context)
    assert out.responses[0] == llada2_reference(gemma, prompt, n, size, steps, threshold, tok.eos_token_id,
                                                tok.mask_token_id, sampler.forbidden, context)
    assert out.unmask_rule == "llada2"
    masks = [min(size, (g + 1) * size - plen) for g in range(plen // size, grid_end(plen, n, size) // size)]
    if threshold == 0.0:  # every masked slot is above: one call per block
        assert out.model_calls == len(masks)
    if threshold == 1.0:  # none is: each block takes the quota steps that cover its masks
        covered = torch.tensor([size // steps + (i < size % steps) for i in range(steps)]).cumsum(0)
        assert out.model_calls == sum(int((covered < m).sum()) + 1 for m in masks)


def test_llada2_memory_and_block_causal_attention_change_the_output(gemma, tok):
    prompt = torch.randint(10, 4000, (13,), generator=torch.Generator().manual_seed(13)).tolist()
    config = SamplerConfig(max_new_tokens=24, steps=8, block_length=8, unmask_rule="llada2", threshold=1.0)
    plain = Sampler(gemma, tok, config).generate([prompt]).responses[0]
    memory = Run(gemma, tok).memory(inner_lr=1.0).adapt([prompt], [0]).active
    assert Sampler(gemma, tok, config).generate([prompt], forward_context=memory).responses[0] != plain
    full = Sampler(gemma, tok, dataclasses.replace(config, unmask_rule="fixed", steps=24)).generate([prompt])
    assert full.responses[0] != plain  # full attention and a per-response block grid decode otherwise


def test_llada2_batch_equals_each_alone(gemma, tok):
    """Prompts of different lengths share the block grid; each sample decodes as it would alone,
    EOS included (the tiny model's most frequent proposal is made the EOS)."""
    prompts = [torch.randint(10, 4000, (n,), generator=torch.Generator().manual_seed(n)).tolist() for n in (3, 13, 21)]
    config = SamplerConfig(max_new_tokens=20, steps=4, block_length=8, unmask_rule="llada2", threshold=3e-4)
    plain = Sampler(gemma, tok, dataclasses.replace(config, stop_at_eos=False)).generate(prompts).responses
    frequent = max(set(sum(plain, [])), key=sum(plain, []).count)
    eos_tok = copy.deepcopy(tok)
    eos_tok.eos_token = tok.convert_ids_to_tokens(frequent)
    for tokenizer in (tok, eos_tok):
        batched = Sampler(gemma, tokenizer, config).generate(prompts).responses
        assert batched == [Sampler(gemma, tokenizer, config).generate([p]).responses[0] for p in prompts]
    assert any(len(r) < 20 for r in batched)  # the EOS cut some response short


def test_llada2_options_are_checked():
    with pytest.raises(ValueError, match="low_confidence"):
        SamplerConfig(unmask_rule="llada2", remasking="random")
    with pytest.raises(ValueError, match="cache"):
        SamplerConfig(unmask_rule="llada2", cache="dual")
    SamplerConfig(max_new_tokens=8, steps=8, unmask_rule="llada2", block_length=32)  # a block past N: LLaDA2's grid
    with pytest.raises(ValueError, match="block_length"):
        SamplerConfig(max_new_tokens=8, steps=8, unmask_rule="fixed", block_length=32)
