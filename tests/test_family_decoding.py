"""Dream's own decoding rules (unmask_rule="dream", remasking topk_margin / entropy) against a
reference written here from Dream's published sampling loop, on fixed logits."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from memdlm.sampling.sampler import Sampler, SamplerConfig, dream_counts


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
    prompt, n, steps = [10, 11, 12], 12, 5
    table = torch.randn(len(prompt) + n + 2, len(tok), generator=torch.Generator().manual_seed(3)) * 3
    model = PositionLogits(table)  # no config: not a known family, so LLaDA's fixed rule
    out = Sampler(model, tok, SamplerConfig(max_new_tokens=n, steps=steps)).generate([prompt], return_history=True)
    assert out.unmask_rule == "fixed"
    assert [int(step.committed[0].sum()) for step in out.history] == [3, 3, 2, 2, 2]  # 12 over 5, even
