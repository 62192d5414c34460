"""Iterative-unmasking sampler for masked diffusion LMs, LLaDA-style.

Reference: Nie et al., "Large Language Diffusion Models" (2025), Sec. 2.4 and
App. B.3: reverse process with *low-confidence remasking* and semi-autoregressive
blocks. Written from the maths, not from LLaDA's ``generate.py``.

The rules, in the order a call applies them:

1. **Layout.** Each sample is ``[prompt][N response slots][pad ...]``: the
   response sits right after its own prompt and padding is on the right
   (attention mask 0 there), so a sample's positions and logits do not depend
   on its batch mates. All N slots start as the mask token.
2. **Blocks.** The response is cut into blocks of ``block_length`` slots, decoded
   left to right; when ``block_length`` does not divide N the *last block is
   shorter*. Masks in later blocks stay visible to the model but cannot be
   committed until every earlier block is complete.
3. **Steps over blocks** (:func:`steps_per_block`). The S steps are split evenly
   over the blocks, the remainder going to the earliest blocks; a block never
   gets more steps than it has slots (a short last block gives its surplus to
   the earliest blocks with room). So every step commits at least one token,
   the total is exactly S, and S must lie in ``[num_blocks, N]``.
4. **Tokens per step**, by ``unmask_rule`` (default ``"native"``: the model family's own
   rule from :mod:`memdlm.backbones.families` -- ``"dream"`` for Dream, ``"llada2"`` for LLaDA2,
   ``"fixed"`` for every other family; the rule used is reported as ``SamplerOutput.unmask_rule``):

   a. ``"fixed"`` (:func:`tokens_per_step`; LLaDA). Within a block of n slots and
      s steps, each step commits ``n // s`` tokens, the first ``n % s`` steps one
      more. Every sample makes exactly S model calls.
   b. ``"threshold"`` (:func:`select_above_threshold`; Fast-dLLM, Wu et al. 2025,
      arXiv 2505.22618, "confidence-aware parallel decoding"). Each step commits
      every still-masked slot of the current block whose confidence (rule 5) is
      >= ``threshold``; at least the most confident one, and at most
      ``max_per_step`` (the most confident ones) when set. ``steps`` is unused: a
      block takes as many steps as it needs, so the number of model calls depends
      on the data and is reported (``model_calls`` for the batch,
      ``calls_per_sample``). Guarantees: *termination* -- every step commits at
      least one slot of each sample that has one left, so a block of n slots takes
      at most n steps and a response at most N calls; *block order* -- as rule 2,
      only the current block's slots are candidates and the next block starts when
      every sample has finished this one (a finished sample rides along, uncounted);
      *determinism* -- greedy proposals with a fixed threshold are a function of the
      logits, and temperature draws follow rule 7 (a per-sample generator draws
      only on the steps its sample takes part in, so its draws do not depend on
      how many steps its batch mates needed).
   c. ``"dream"`` (:func:`dream_counts`; Dream 7B, Ye et al. 2025, its published
      sampling loop): the s steps of a block run on timesteps ``t_i`` evenly spaced
      from 1 down to ``dream_eps`` (``s + 1`` points); step i commits
      ``int(m_i * (1 - t_{i+1} / t_i))`` of the ``m_i`` slots still masked (float32
      arithmetic, as Dream's), the last step all that remain. Few tokens early, many
      late; a step may commit none (the model call is still made, as in Dream's
      loop). With one block, ``stop_at_eos=False`` and greedy proposals this is
      Dream's ``diffusion_generate`` with ``alg`` = the remasking rule below. Dream
      computes m_i as a batch mean; here it is the plan's own count, the same
      for every sample (EOS fills only lower what is left to commit). With
      ``remasking="origin"`` (Dream's default ``alg``) there is no count: each masked slot
      of the block is committed with probability ``1 - t_{i+1} / t_i`` (all at the last
      step), one uniform per masked slot drawn left to right as Dream draws them.
   d. ``"llada2"`` (:mod:`memdlm.sampling.block_causal`; LLaDA2's own ``generate``): a
      different loop -- blocks on a grid from position 0, block-causal attention, ``steps``
      per block, and :func:`select_above_threshold_or_top_k` (every slot above the threshold
      if there are at least the step's quota, else the quota's most confident); EOS stops a
      sample after its block. Rules 2, 3 and 6 do not apply; rule 5's confidence is
      ``"low_confidence"``'s.
5. **Proposal and confidence.** At every step the model predicts each slot of
   the current block; the mask token and the pad token (unless pad doubles as
   EOS) get logit -inf. The proposal is the argmax at temperature 0, otherwise a
   draw from ``softmax(logits / temperature)``. Confidence is the model's
   (untempered) probability of the proposal (``"low_confidence"``; Dream's
   ``maskgit_plus`` at temperature 0), a uniform random score (``"random"``), the
   margin between the two most probable tokens (``"topk_margin"``, Dream's) or the
   negative entropy ``sum_v p_v log(p_v + 1e-10)`` of the slot's distribution
   (``"entropy"``, Dream's); the k still-masked slots with the highest score are
   committed (ties: leftmost first). (Dream computes its confidences from the
   tempered distribution; at temperature 0 the two agree.)
6. **EOS** (``stop_at_eos=True``). As soon as a sample has an EOS in its
   response, every response slot after its first EOS becomes EOS at once (also
   a slot already committed to another token), so no step is spent there; later
   steps commit ``min(k, masked slots left in the block)``, and a sample with
   nothing left to commit only rides along in the batched forward.
   ``responses``/``texts`` stop before the first EOS. With
   ``stop_at_eos=False`` EOS is an ordinary token: nothing is filled or cut.
7. **Randomness.** Draws come from a ``torch.Generator`` seeded with
   ``config.seed``; with ``seeds=[...]`` each sample has its own generator and
   draws of a shape fixed by the config, so its result does not depend on its
   batch mates.

8. **Key/value cache** (``cache``; :mod:`memdlm.sampling.block_cache`). ``"none"`` runs the
   whole canvas at every step. ``"prefix"`` / ``"dual"`` run it at the first step of
   each block and keep every layer's keys/values; the block's later steps
   recompute only the block and what follows it (prefix) or only the block (dual)
   and reuse the rest. The first step of a block is exact, later ones approximate
   (bidirectional attention makes the reused keys/values depend on the block's
   tokens); ``cache_refresh_steps=1`` refreshes at every step and equals no cache.
   Families without a cache path fall back to ``"none"`` (``cache_used`` says).

History (``return_history=True``) holds, per step, the state before the step
and the positions that went from mask to a token during it (EOS fills
included) -- which positions were still masked at each step is what the
exposure-bias analysis needs.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch

from memdlm.errors import ConfigError
from memdlm.sampling.block_cache import BlockForward
from memdlm.sampling.block_causal import BlockCausalForward, grid_end
from memdlm.validation import literal_choices
from memdlm.backbones.families import family_of

# ---------------------------------------------------------------------------
# Pure kernels: schedules and selection
# ---------------------------------------------------------------------------


def tokens_per_step(n_tokens: int, steps: int) -> torch.Tensor:
    """Tokens to commit at each of ``steps`` steps for ``n_tokens`` slots: ``[steps]``.

    As even as possible, the remainder going to the earliest steps, so the
    counts are non-increasing and sum to ``n_tokens`` (trailing zeros when
    ``steps > n_tokens``; the sampler never asks for that).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if n_tokens < 0:
        raise ValueError(f"n_tokens must be >= 0, got {n_tokens}")
    counts = torch.full((steps,), n_tokens // steps, dtype=torch.long)
    counts[: n_tokens % steps] += 1
    return counts


def dream_counts(n_tokens: int, steps: int, eps: float) -> torch.Tensor:
    """Dream's tokens per step (rule 4c): ``[steps]``, summing to ``n_tokens``."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    times = torch.linspace(1, eps, steps + 1)  # float32, as Dream's
    counts, left = [], n_tokens
    for i in range(steps):
        k = left if i == steps - 1 else int(torch.tensor(float(left)) * (1 - times[i + 1] / times[i]))
        counts.append(k)
        left -= k
    return torch.tensor(counts, dtype=torch.long)


def dream_transfer(steps: int, eps: float) -> torch.Tensor:
    """Dream's ``origin`` probabilities per step: ``1 - t_{i+1} / t_i`` (float32), 1 at the last."""
    times = torch.linspace(1, eps, steps + 1)
    return torch.cat([1 - times[1:steps] / times[: steps - 1], torch.ones(1)])


def block_sizes(n_tokens: int, block_length: int) -> list[int]:
    """Sizes of the left-to-right blocks; the last one is shorter on a remainder."""
    if block_length < 1:
        raise ValueError(f"block_length must be >= 1, got {block_length}")
    full, rest = divmod(n_tokens, block_length)
    return [block_length] * full + ([rest] if rest else [])


def steps_per_block(sizes: Sequence[int], steps: int) -> list[int]:
    """Split ``steps`` over blocks of ``sizes`` (rule 3 of the module docstring).

    Even split, remainder to the earliest blocks; a block gets at most one step
    per slot and the surplus moves to the earliest blocks with room.
    """
    n_blocks, total = len(sizes), sum(sizes)
    if not n_blocks <= steps <= total:
        raise ValueError(
            f"steps={steps} must lie in [num_blocks, max_new_tokens] = [{n_blocks}, {total}]: "
            "each block needs a step and each step commits at least one token")
    alloc = tokens_per_step(steps, n_blocks).tolist()
    surplus = sum(max(0, a - s) for a, s in zip(alloc, sizes))
    alloc = [min(a, s) for a, s in zip(alloc, sizes)]
    for i, size in enumerate(sizes):
        extra = min(surplus, size - alloc[i])
        alloc[i] += extra
        surplus -= extra
    return alloc


def select_commits(scores: torch.Tensor, candidates: torch.Tensor, k: int | torch.Tensor) -> torch.Tensor:
    """The ``min(k, #candidates)`` highest-scoring candidates of each row: bool ``[b, B]``.

    ``scores`` must be finite on candidates; ties go to the leftmost position.
    """
    k = torch.as_tensor(k, device=scores.device)
    k_eff = torch.minimum(k.expand(scores.shape[0]), candidates.sum(1))  # [b]
    keyed = scores.float().masked_fill(~candidates, float("-inf"))  # [b, B]
    order = keyed.argsort(dim=1, descending=True, stable=True)
    rank = order.argsort(dim=1)  # [b, B] rank of each position, 0 = best
    return (rank < k_eff[:, None]) & candidates


def select_above_threshold(confidence: torch.Tensor, candidates: torch.Tensor, threshold: float,
                           max_per_step: int | None = None) -> torch.Tensor:
    """Candidates whose confidence is >= ``threshold``: bool ``[b, B]`` (rule 4b).

    At least the most confident candidate of each row with any candidate is chosen
    (so a step always makes progress) and at most ``max_per_step`` (the most
    confident ones) when given. Because the chosen set is "the top n" with n the
    count above the threshold, it is exactly the set above the threshold whenever
    1 <= n <= max_per_step.
    """
    above = (candidates & (confidence >= threshold)).sum(1)  # [b]
    n = above.clamp(min=1)
    if max_per_step is not None:
        n = n.clamp(max=max_per_step)
    return select_commits(confidence, candidates, n)


def select_above_threshold_or_top_k(confidence: torch.Tensor, candidates: torch.Tensor, k: int,
                                    threshold: float) -> torch.Tensor:
    """LLaDA2's commit rule (rule 4d): bool ``[b, B]``.

    The candidates with confidence strictly above ``threshold`` when there are at least ``k``
    of them (all of them, however many); otherwise the ``min(k, #candidates)`` most confident
    (ties: leftmost first). With ``k = 0`` only those above the threshold, possibly none.
    """
    above = candidates & (confidence > threshold)  # [b, B]
    enough = above.sum(1) >= k  # [b]
    return torch.where(enough[:, None], above, select_commits(confidence, candidates, k))


def fill_after_eos(response: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Set every slot after the first EOS of each row to EOS: ``[b, N]``."""
    is_eos = (response == eos_id).long()
    after_first = (is_eos.cumsum(1) - is_eos) > 0  # an EOS strictly before
    return response.masked_fill(after_first, eos_id)


def cut_at_eos(tokens: Sequence[int], eos_id: int) -> list[int]:
    tokens = list(tokens)
    return tokens[: tokens.index(eos_id)] if eos_id in tokens else tokens


# ---------------------------------------------------------------------------
# Randomness: one shared generator, or one per sample
# ---------------------------------------------------------------------------


class _Draws:
    """Random draws for a batch, from one generator or from one per sample.

    Per-sample generators always draw a ``[B]`` / ``[B, V]`` shape fixed by the
    config, so a sample's stream never depends on its batch mates.
    """

    def __init__(self, generators: list[torch.Generator], shared: bool):
        self.generators, self.shared = generators, shared

    @classmethod
    def create(cls, seed: int, seeds: Sequence[int] | None, batch: int, device) -> _Draws:
        if seeds is None:
            return cls([torch.Generator(device=device).manual_seed(int(seed))], shared=True)
        if len(seeds) != batch:
            raise ValueError(f"got {len(seeds)} seeds for {batch} prompts")
        return cls([torch.Generator(device=device).manual_seed(int(s)) for s in seeds], shared=False)

    def uniform(self, shape: tuple[int, int], device, active: torch.Tensor | None = None) -> torch.Tensor:
        """``[b, B]`` uniforms; per-sample generators draw only for ``active`` rows ([b] bool)."""
        if self.shared:
            return torch.rand(shape, generator=self.generators[0], device=device)
        rows = [torch.rand(shape[1:], generator=g, device=device) if on else torch.zeros(shape[1:], device=device)
                for g, on in zip(self.generators, _rows_on(active, shape[0]))]
        return torch.stack(rows)

    def categorical(self, probs: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
        """``[b, B, V] -> [b, B]`` draws; per-sample generators draw only for ``active`` rows."""
        b, blk, vocab = probs.shape
        if self.shared:
            flat = torch.multinomial(probs.reshape(-1, vocab), 1, generator=self.generators[0])
            return flat.view(b, blk)
        # A row that has nothing to commit skips its draw, so its stream advances only on the
        # steps it takes part in: with the threshold rule a sample's number of steps per block
        # is its own, and its later draws must not depend on how long its batch mates took.
        return torch.stack([
            torch.multinomial(p, 1, generator=g).squeeze(-1) if on else p.argmax(-1)
            for p, g, on in zip(probs, self.generators, _rows_on(active, b))])


def _rows_on(active: torch.Tensor | None, batch: int) -> list[bool]:
    return [True] * batch if active is None else active.tolist()


def propose_tokens(
    logits: torch.Tensor, temperature: float, draws: _Draws | None = None,
    active: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Proposed tokens and their model probability: ``[b, B]`` each, from ``[b, B, V]``.

    Forbidden tokens must already carry logit -inf.
    """
    logits = logits.float()
    probs = logits.softmax(-1)  # [b, B, V] untempered: confidence is the model's own
    if temperature == 0:
        tokens = logits.argmax(-1)
    else:
        tokens = draws.categorical((logits / temperature).softmax(-1), active)
    return tokens, probs.gather(-1, tokens[..., None]).squeeze(-1)


def _low_confidence_scores(confidence: torch.Tensor, draws: _Draws, active=None, logits=None) -> torch.Tensor:
    return confidence


def _random_scores(confidence: torch.Tensor, draws: _Draws, active=None, logits=None) -> torch.Tensor:
    return draws.uniform(tuple(confidence.shape), confidence.device, active)


def _margin_scores(confidence: torch.Tensor, draws: _Draws, active=None, logits=None) -> torch.Tensor:
    top2 = logits.float().softmax(-1).topk(2, dim=-1).values  # [b, B, 2]
    return top2[..., 0] - top2[..., 1]


def _entropy_scores(confidence: torch.Tensor, draws: _Draws, active=None, logits=None) -> torch.Tensor:
    probs = logits.float().softmax(-1)
    return (probs * (probs + 1e-10).log()).sum(-1)  # negative entropy: higher is surer


def _origin_draws(confidence: torch.Tensor, draws: _Draws, active=None, logits=None,
                  candidates: torch.Tensor | None = None) -> torch.Tensor:
    """Dream's ``origin``: a uniform per candidate slot, compared with the step's transfer
    probability by the caller. A shared generator draws one value per candidate, in row-major
    order, as Dream's loop draws over its masked positions; per-sample generators draw ``[B]``."""
    if not draws.shared:
        return draws.uniform(tuple(confidence.shape), confidence.device, active)
    flat = torch.rand(int(candidates.sum()), generator=draws.generators[0], device=confidence.device)
    return torch.ones_like(confidence).masked_scatter(candidates, flat)


REMASKING: dict[str, Callable[..., torch.Tensor]] = {
    "low_confidence": _low_confidence_scores,
    "random": _random_scores,
    "topk_margin": _margin_scores,
    "entropy": _entropy_scores,
    "origin": _origin_draws,
}


# ---------------------------------------------------------------------------
# Config and outputs
# ---------------------------------------------------------------------------


class BlockPlan(NamedTuple):
    start: int  # first response slot of the block
    end: int  # one past its last slot
    counts: torch.Tensor | None  # [steps in block] tokens per step; None under the threshold rule
    # dream rule: [steps in block] float32 probability 1 - t_{i+1} / t_i that Dream's ``origin``
    # commits a masked slot at step i (1 at the last step); None under the other rules
    transfer: torch.Tensor | None = None


@dataclass
class SamplerConfig:
    """Generation settings; see the module docstring for the rules they drive.

    Defaults: 64 new tokens in 64 steps, one block, greedy, low-confidence
    remasking, fixed tokens per step, no key/value cache, stop at EOS, seed 0.
    This class is the one place these defaults live (the CLI flags, the eval
    suite and the lm-eval model read them from here).
    """

    max_new_tokens: int = field(default=64, metadata={
        "help": "Response length N: number of mask slots placed after each prompt."})
    steps: int = field(default=64, metadata={
        "help": "Denoising steps S in total, num_blocks <= S <= N; split over blocks evenly, "
                "remainder to the earliest blocks. Used by the fixed unmasking rule only."})
    block_length: int | None = field(default=None, metadata={
        "help": "Semi-autoregressive block size, decoded left to right (None: one block of N "
                "slots). A remainder makes the last block shorter."})
    temperature: float = field(default=0.0, metadata={
        "help": "Sampling temperature of the proposals; 0 means argmax."})
    remasking: Literal["low_confidence", "random", "topk_margin", "entropy", "origin"] = field(
        default="low_confidence", metadata={
            "help": "Which masked slots to commit: the most confident proposals (probability; Dream's "
                    "maskgit_plus), uniformly random ones, the largest top-1 minus top-2 probability "
                    "margin or the lowest entropy (Dream's topk_margin / entropy); 'origin' (dream rule "
                    "only; Dream's default alg) commits each masked slot with probability 1 - s/t."})
    unmask_rule: Literal["native", "fixed", "threshold", "dream", "llada2"] = field(default="native", metadata={
        "help": "How many slots a step commits: 'native' is the model family's own rule (Dream: "
                "'dream', LLaDA2: 'llada2', every other family: 'fixed'; docs/BACKBONES.md); 'fixed' "
                "follows the S-step schedule (LLaDA's even split); 'threshold' "
                "commits every masked slot of the current block whose confidence is >= --threshold "
                "(at least one, at most --max-per-step), so the number of model calls depends on "
                "the data (Fast-dLLM); 'dream' is Dream's timestep schedule (int(m (1 - s/t)) of "
                "the m masked slots per step, timesteps from 1 to --dream-eps); 'llada2' is LLaDA2's "
                "own decoding: block-causal attention on a block grid counted from position 0 "
                "(--block-length, default 32), --steps per block, every slot above --threshold if "
                "there are enough, else the step's quota of the most confident."})
    threshold: float | None = field(default=None, metadata={
        "help": "Confidence threshold tau of the threshold and llada2 rules, in [0, 1] (None: the "
                "rule's own, 0.9 for threshold (Fast-dLLM), 0.95 for llada2 (LLaDA2's generate))."})
    dream_eps: float = field(default=1e-3, metadata={
        "help": "The dream rule's last timestep (Dream's eps)."})
    max_per_step: int | None = field(default=None, metadata={
        "help": "Threshold rule: commit at most this many slots per step (None: no cap)."})
    cache: Literal["none", "prefix", "dual"] = field(default="none", metadata={
        "help": "Key/value cache across the steps of a block: 'prefix' reuses the prompt's and "
                "finished blocks' keys/values, 'dual' also the later blocks'; refreshed when a "
                "block starts. Approximate after the first step of a block (docs/ARCHITECTURE.md)."})
    cache_refresh_steps: int | None = field(default=None, metadata={
        "help": "With a cache: also refresh it every this many steps within a block (None: only "
                "when a block starts; 1: every step, which equals no cache)."})
    stop_at_eos: bool = field(default=True, metadata={
        "help": "Once EOS is committed, fill every later response slot with EOS and cut the "
                "response there."})
    seed: int = field(default=0, metadata={
        "help": "Seed of the generator used for sampling and random remasking."})

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        # LLaDA2's blocks lie on a grid from position 0: one may be longer than the response
        longest = self.max_new_tokens if self.unmask_rule not in ("native", "llada2") else float("inf")
        if self.block_length is not None and not 1 <= self.block_length <= longest:
            raise ConfigError(
                f"block_length must lie in [1, max_new_tokens={self.max_new_tokens}] or be None, "
                f"got {self.block_length}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if self.remasking not in REMASKING:
            raise ConfigError(f"unknown remasking {self.remasking!r}; choose from {sorted(REMASKING)}")
        problem = (self._fast_option_problem() or self._rule_problem()
                   or (self._steps_problem() if self.unmask_rule != "threshold" else None))
        if problem:
            raise ConfigError(problem)

    def _steps_problem(self) -> str | None:
        if self.steps < 1 or self.steps > self.max_new_tokens:
            return (f"steps must lie in [1, max_new_tokens={self.max_new_tokens}], got {self.steps}: "
                    "every step commits at least one token")
        if self.steps < self.num_blocks and self.unmask_rule != "llada2":  # llada2: steps per block
            return (f"steps={self.steps} is fewer than the {self.num_blocks} blocks: every block "
                    "needs at least one step")
        return None

    def _fast_option_problem(self) -> str | None:
        if self.unmask_rule not in UNMASK_RULES:
            return f"unknown unmask_rule {self.unmask_rule!r}; choose from {list(UNMASK_RULES)}"
        if self.cache not in CACHE_MODES:
            return f"unknown cache {self.cache!r}; choose from {list(CACHE_MODES)}"
        if not 0.0 < self.dream_eps < 1.0:
            return f"dream_eps must lie in (0, 1), got {self.dream_eps}"
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            return f"threshold must lie in [0, 1], got {self.threshold}"
        if self.max_per_step is not None and self.max_per_step < 1:
            return f"max_per_step must be >= 1 or None, got {self.max_per_step}"
        if self.cache_refresh_steps is not None and self.cache_refresh_steps < 1:
            return f"cache_refresh_steps must be >= 1 or None, got {self.cache_refresh_steps}"
        return None

    def _rule_problem(self) -> str | None:
        """Settings a rule cannot honour: refused, never ignored."""
        if self.unmask_rule in ("threshold", "llada2") and self.remasking != "low_confidence":
            return (f"the {self.unmask_rule} rule thresholds the model's confidence: it needs "
                    "remasking='low_confidence'")
        if self.remasking == "origin" and self.unmask_rule not in ("dream", "native"):
            return "remasking='origin' is Dream's: it needs unmask_rule='dream' (or 'native' on Dream)"
        if self.unmask_rule == "llada2" and self.cache != "none":
            return "the llada2 rule has no key/value cache path here: use cache='none'"
        return None

    @property
    def num_blocks(self) -> int:
        return len(block_sizes(self.max_new_tokens, self.block_length or self.max_new_tokens))

    def for_model(self, model) -> SamplerConfig:
        """This config with ``unmask_rule="native"`` replaced by ``model``'s family's rule and
        the rule's own threshold and block length where none was given."""
        rule = self.unmask_rule
        if rule == "native":

            rule = family_of(getattr(model, "config", None)).decoding
        threshold = RULE_THRESHOLDS.get(rule) if self.threshold is None else self.threshold
        block = LLADA2_BLOCK if rule == "llada2" and self.block_length is None else self.block_length
        if (rule, threshold, block) == (self.unmask_rule, self.threshold, self.block_length):
            return self
        return dataclasses.replace(self, unmask_rule=rule, threshold=threshold, block_length=block)

    def plan(self) -> list[BlockPlan]:
        """The decoding schedule: one entry per block with its per-step counts ("native"
        unresolved -- no model at hand -- plans as "fixed"; :meth:`for_model` resolves it)."""
        sizes = block_sizes(self.max_new_tokens, self.block_length or self.max_new_tokens)
        if self.unmask_rule == "threshold":
            starts = [sum(sizes[:i]) for i in range(len(sizes))]
            return [BlockPlan(s, s + size, None) for s, size in zip(starts, sizes)]
        if self.unmask_rule == "llada2":
            raise ValueError("the llada2 rule's blocks lie on the canvas's grid: no per-response plan")
        plans, start = [], 0
        dream = self.unmask_rule == "dream"
        schedule = (lambda n, k: dream_counts(n, k, self.dream_eps)) if dream else tokens_per_step
        for size, n_steps in zip(sizes, steps_per_block(sizes, self.steps)):
            transfer = dream_transfer(n_steps, self.dream_eps) if dream else None
            plans.append(BlockPlan(start, start + size, schedule(size, n_steps), transfer))
            start += size
        return plans


# The rules' own thresholds where none is given, and LLaDA2's block (its generate's defaults).
RULE_THRESHOLDS = {"threshold": 0.9, "llada2": 0.95}
LLADA2_BLOCK = 32

# The fast-sampling choices as values (for the checks above): read from the annotations.
UNMASK_RULES = literal_choices(SamplerConfig, "unmask_rule")
CACHE_MODES = literal_choices(SamplerConfig, "cache")


class SamplerStep(NamedTuple):
    """One denoising step: the state before it and what it unmasked."""

    state: torch.Tensor  # [b, L] token ids before the step (mask token = still masked)
    committed: torch.Tensor  # [b, L] bool, mask -> token during this step


@dataclass
class SamplerOutput:
    sequences: torch.Tensor  # [b, L] prompt, response, right padding (pad id)
    prompt_lengths: torch.Tensor  # [b]
    response_positions: torch.Tensor  # [b, N] column of each response slot in ``sequences``
    responses: list[list[int]]  # cut before the first EOS when stop_at_eos
    texts: list[str] | None = None
    history: list[SamplerStep] | None = None
    model_calls: int = 0  # forward passes of the batch
    calls_per_sample: list[int] | None = None  # forwards in which each sample had a slot to commit
    cache_used: str = "none"  # the cache mode actually used ("none" where the family cannot cache)
    unmask_rule: str = "fixed"  # the rule actually used ("native" resolved to the family's)


# ---------------------------------------------------------------------------
# The sampler
# ---------------------------------------------------------------------------

ForwardContext = Callable[[], contextlib.AbstractContextManager]


class Sampler:
    """Masked-diffusion generation: ``Sampler(model, tokenizer, config).generate(prompts)``.

    ``forward_context`` is a zero-argument factory of a context manager that is
    entered around *every* model forward (e.g. to activate inference-time memory
    adapters); it can also be given per call to :meth:`generate`.
    """

    def __init__(self, model, tokenizer, config: SamplerConfig | None = None,
                 forward_context: ForwardContext | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.config = config or SamplerConfig()
        self.forward_context = forward_context
        self.mask_id, self.eos_id = tokenizer.mask_token_id, tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        if self.mask_id is None or self.eos_id is None:
            raise ConfigError("the tokenizer needs a mask token and an EOS token")
        # Never propose mask or pad; pad may double as EOS, which must stay proposable.
        self.forbidden = sorted({self.mask_id} | ({self.pad_id} - {self.eos_id}))

    def generate(
        self, prompts: Sequence[str] | Sequence[Sequence[int]] | torch.Tensor, *,
        seeds: Sequence[int] | None = None, return_history: bool = False,
        attention_mask: torch.Tensor | None = None,
        forward_context: ForwardContext | None = None, **overrides,
    ) -> SamplerOutput:
        """Generate a response for each prompt.

        ``prompts``: strings (encoded without special tokens: apply the chat
        template first), token-id lists, or a ``[b, l]`` tensor with an optional
        ``attention_mask`` (either padding side). ``overrides`` replace
        :class:`SamplerConfig` fields for this call only.
        """
        config = self._with_overrides(overrides).for_model(self.model)
        prompt_ids = self._encode(prompts, attention_mask)
        context = forward_context or self.forward_context or contextlib.nullcontext
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                x, resp_pos, history, forward = self._denoise(
                    prompt_ids, config, seeds, return_history, context)
        finally:
            self.model.train(was_training)
        out = self._package(x, prompt_ids, resp_pos, history, config)
        out.model_calls, out.calls_per_sample = forward.calls, forward.calls_per_sample.tolist()
        out.cache_used = forward.mode
        out.unmask_rule = config.unmask_rule
        return out

    # -- pieces of generate ------------------------------------------------

    def _with_overrides(self, overrides: dict) -> SamplerConfig:
        valid = {f.name for f in dataclasses.fields(SamplerConfig)}
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise TypeError(f"unknown sampler options {unknown}; valid: {sorted(valid)}")
        return dataclasses.replace(self.config, **overrides) if overrides else self.config

    def _encode(self, prompts, attention_mask) -> list[list[int]]:
        if isinstance(prompts, torch.Tensor):
            keep = torch.ones_like(prompts, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
            return [row[m].tolist() for row, m in zip(prompts, keep)]
        prompts = list(prompts)
        if prompts and isinstance(prompts[0], str):
            return self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        return [list(map(int, p)) for p in prompts]

    def _canvas(self, prompt_ids: list[list[int]], n_new: int, device):
        """Right-padded ``[prompt][N masks][pad]``: ids, attention mask ``[b, L]``, slots ``[b, N]``."""
        lengths = torch.tensor([len(p) for p in prompt_ids], device=device)  # [b]
        width = int(lengths.max()) + n_new
        x = torch.full((len(prompt_ids), width), self.pad_id, dtype=torch.long, device=device)
        for i, p in enumerate(prompt_ids):  # host-side layout, once per call
            x[i, : len(p)] = torch.tensor(p, dtype=torch.long)
        resp_pos = lengths[:, None] + torch.arange(n_new, device=device)  # [b, N]
        x.scatter_(1, resp_pos, self.mask_id)
        attn = torch.arange(width, device=device)[None, :] < (lengths + n_new)[:, None]  # [b, L]
        return x, attn.long(), resp_pos

    def _denoise(self, prompt_ids, config: SamplerConfig, seeds, return_history, context):
        if config.unmask_rule == "llada2":
            return self._denoise_block_causal(prompt_ids, config, seeds, return_history, context)
        device = _model_device(self.model)
        x, attn, resp_pos = self._canvas(prompt_ids, config.max_new_tokens, device)
        draws = _Draws.create(config.seed, seeds, len(prompt_ids), device)
        forward = BlockForward(self.model, attn, config.cache, context, config.cache_refresh_steps)
        history: list[SamplerStep] | None = [] if return_history else None
        for block in config.plan():
            block_pos = resp_pos[:, block.start: block.end]  # [b, B]
            forward.start_block(block_pos, resp_pos[:, block.start:])
            for quota in _block_schedule(block):
                active = (x.gather(1, block_pos) == self.mask_id).any(1)  # [b]
                if quota.k is None and not active.any():  # threshold rule: the block is done
                    break
                before = x
                x = self._step(x, resp_pos, block_pos, active, quota, config, draws, forward)
                if history is not None:
                    history.append(SamplerStep(before, (before == self.mask_id) & (x != self.mask_id)))
        if (x.gather(1, resp_pos) == self.mask_id).any():
            raise AssertionError("sampler finished with masked response slots")
        return x, resp_pos, history, forward

    def _denoise_block_causal(self, prompt_ids, config: SamplerConfig, seeds, return_history, context):
        """LLaDA2's loop (:mod:`memdlm.sampling.block_causal`): the batch walks the shared block
        grid; each block runs at most ``steps`` steps and ends when it has no mask."""
        device, size = _model_device(self.model), config.block_length
        x, attn, resp_pos = self._grid_canvas(prompt_ids, config.max_new_tokens, size, device)
        draws = _Draws.create(config.seed, seeds, len(prompt_ids), device)
        forward = BlockCausalForward(self.model, attn, size, context)
        history: list[SamplerStep] | None = [] if return_history else None
        quotas = [StepQuota(int(k)) for k in tokens_per_step(size, config.steps)]
        first = min(len(p) for p in prompt_ids) // size  # the earliest block holding a mask
        for block in range(first, x.shape[1] // size):
            block_pos = torch.arange(block * size, (block + 1) * size, device=device).expand(x.shape[0], -1)
            forward.start_block(block)
            for quota in quotas:
                active = (x.gather(1, block_pos) == self.mask_id).any(1)  # [b]
                if not active.any():
                    break
                before = x
                x = self._step(x, resp_pos, block_pos, active, quota, config, draws, forward)
                if history is not None:
                    history.append(SamplerStep(before, (before == self.mask_id) & (x != self.mask_id)))
            if config.stop_at_eos:  # a sample with an EOS stops after its block (rule 4)
                done = (x.gather(1, resp_pos) == self.eos_id).any(1, keepdim=True)  # [b, 1]
                x = x.masked_fill(done & (x == self.mask_id), self.eos_id)
        if (x.gather(1, resp_pos) == self.mask_id).any():
            raise AssertionError("sampler finished with masked response slots")
        return x, resp_pos, history, forward

    def _grid_canvas(self, prompt_ids: list[list[int]], n_new: int, size: int, device):
        """``[prompt][masks to the block boundary at or after P + N][pad]``: ids, attention
        mask ``[b, L]`` (L a multiple of ``size``), response slots ``[b, N]``."""
        ends = [grid_end(len(p), n_new, size) for p in prompt_ids]
        x, attn, resp_pos = self._canvas(prompt_ids, max(ends) - min(len(p) for p in prompt_ids), device)
        x = x[:, : max(ends)]
        column = torch.arange(x.shape[1], device=device)[None, :]
        attn = (column < torch.tensor(ends, device=device)[:, None]).long()  # [b, L]
        x = x.masked_fill(attn == 0, self.pad_id)
        return x, attn, resp_pos[:, :n_new]

    def _step(self, x, resp_pos, block_pos, active, quota: StepQuota, config, draws, forward: BlockForward):
        """One denoising step over the current block; returns the new state ``[b, L]``."""
        block = x.gather(1, block_pos)  # [b, B]
        candidates = block == self.mask_id  # [b, B]
        # A sample with no mask left in this block has none left anywhere (blocks
        # complete exactly on their last step; EOS fills reach the end), so skipping
        # the forward when the whole batch is done cannot desync per-sample streams.
        if not bool(active.any()):
            return x
        logits = forward.logits(x, active).float()  # [b, B, V]
        logits[..., self.forbidden] = float("-inf")
        # 1. propose, 2. score, 3. commit: the top-k (fixed) or those above tau (threshold)
        tokens, confidence = propose_tokens(logits, config.temperature, draws, active)
        commit = _choose(confidence, candidates, quota, config, draws, active, logits)  # [b, B]
        x = x.scatter(1, block_pos, torch.where(commit, tokens, block))
        if config.stop_at_eos and config.unmask_rule != "llada2":  # llada2: after the block
            x = x.scatter(1, resp_pos, fill_after_eos(x.gather(1, resp_pos), self.eos_id))
        return x

    def _package(self, x, prompt_ids, resp_pos, history, config) -> SamplerOutput:
        responses = x.gather(1, resp_pos).tolist()
        if config.stop_at_eos:
            responses = [cut_at_eos(r, self.eos_id) for r in responses]
        texts = [self.tokenizer.decode(r, skip_special_tokens=False) for r in responses]
        lengths = torch.tensor([len(p) for p in prompt_ids], device=x.device)
        return SamplerOutput(x, lengths, resp_pos, responses, texts, history)


class StepQuota(NamedTuple):
    """What one step may commit: ``k`` tokens (None: the threshold rule decides), and under the
    dream rule the probability ``transfer`` with which ``origin`` commits each masked slot."""

    k: int | None
    transfer: torch.Tensor | None = None


def _block_schedule(block: BlockPlan) -> list[StepQuota]:
    """The steps of a block. The threshold rule commits at least one slot per step, so a
    block of n slots never needs more than n steps; the loop stops once the block is done."""
    if block.counts is None:
        return [StepQuota(None)] * (block.end - block.start)
    transfer = block.transfer if block.transfer is not None else [None] * len(block.counts)
    return [StepQuota(int(k), p) for k, p in zip(block.counts, transfer)]


def _choose(confidence, candidates, quota: StepQuota, config: SamplerConfig, draws: _Draws, active,
            logits) -> torch.Tensor:
    """The slots a step commits, bool ``[b, B]``, by the unmasking and remasking rules."""
    if quota.k is None:  # threshold rule (Fast-dLLM)
        return select_above_threshold(confidence, candidates, config.threshold, config.max_per_step)
    if config.unmask_rule == "llada2":
        return select_above_threshold_or_top_k(confidence, candidates, quota.k, config.threshold)
    if config.remasking == "origin":  # Dream: each masked slot independently, with the step's probability
        return candidates & (_origin_draws(confidence, draws, active, logits, candidates) < quota.transfer)
    scores = REMASKING[config.remasking](confidence, draws, active, logits)  # [b, B]
    return select_commits(scores, candidates, quota.k)


def _model_device(model) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
