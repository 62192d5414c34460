"""Exposure-bias ratio per denoising step (MemDLM paper, Sec. 5 and Fig. 3).

    result = exposure_bias(model, tokenizer, pairs, ExposureBiasConfig(steps=16))
    result = exposure_bias_from_predictor(logits_fn, prompts, responses, steps=16, mask_id=...)

For held-out prompt / response pairs (response = its tokens followed by EOS, as in
training; N tokens, N >= S), the model decodes the N response slots from all-mask in
S steps (one block, temperature 0, no EOS stop; the commit counts of
:func:`memdlm.sampling.sampler.tokens_per_step`). Let ``x_k`` be the state *before* step k
(k = 0 .. S-1) and ``M_k`` its still-masked response slots, ``m_k = |M_k| >= 1``. The
fully decoded state after the last step has nothing masked and so no ratio; it is
not listed. For every item and step, with ``CE(M | x)`` the mean cross-entropy of the
*true* tokens at the positions M given input x:

1. ``L_seq(k)    = CE(M_k | x_k)``: the model's own trajectory (low-confidence
   remasking), scored against the truth at the positions it still has masked
   (the reference scores these positions; the paper writes "the response").
2. ``L_static(k) = CE(R_k | y with R_k masked)``: R_k is a uniformly random set of
   m_k response slots, the rest of the true response y visible.
3. ``L_static_same(k) = CE(M_k | y with M_k masked)``: the control. Low-confidence
   decoding leaves the *hardest* positions masked, so ``L_seq / L_static`` mixes
   position difficulty into "exposure bias"; scoring the same positions with the
   true context isolates the effect of the model's own context.
4. The same for a random-order trajectory (``remasking="random"``): ``L_seq_random``
   and ``L_static_same_random`` (``L_static`` is shared: it does not depend on the
   trajectory).

Per step, each loss is averaged over items (each item's mean over its masked
positions, so items weigh equally), and the ratios are ratios of those means:
``R_EB = L_seq / L_static``, ``R_ctrl = L_seq / L_static_same`` (and ``_random``);
beside them the absolute gaps ``gap = L_seq - L_static`` and ``gap_ctrl = L_seq -
L_static_same`` (nats). The ratios' intervals are the project's one bootstrap over items
(:mod:`memdlm.stats`; items are the independent unit).

All five inputs of a step go through one batched forward. The core runs on any
``logits_fn(ids [r, L], attention_mask [r, L], positions [r, L] bool) -> [n, V]``
(logits at the selected positions, row-major): the r rows are groups of the batch's
b items, row j belonging to item ``j % b``. With ``memory`` (a run's prompt memory,
:meth:`memdlm.runs.run.Run.memory`) each prompt gets a memory adapted on the prompt alone,
active for the trajectory and every loss forward ("Train & Inference" mode).

Randomness is per item: the random-order trajectory draws from
``torch.Generator().manual_seed(item_seed)`` exactly as :class:`memdlm.sampling.sampler.Sampler`
does with ``seeds=[...]``, the static masks from ``seeded_generator(item_seed, 1)``;
results do not depend on batch size or batch mates.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from memdlm.config import EVAL_BATCH_SIZE
from memdlm.errors import ConfigError
from memdlm.diffusion.masking import seeded_generator
from memdlm.sampling.sampler import propose_tokens, select_commits, tokens_per_step
from memdlm.stats import RESAMPLES
from memdlm.tasks.seeds import EXPOSURE_SEED
from memdlm.backbones.modeling import forward_logits
from memdlm.data.collate import IGNORE, encode_pair
from memdlm.backbones.context import context_limit, fit_prompts
from memdlm.runs.placement import record
from memdlm.tasks import task_names
from memdlm.tasks.dataset import SyntheticTaskDataset
from memdlm.stats import bootstrap

logger = logging.getLogger("memdlm")

LogitsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# The five inputs of a step, in the row-group order of the batched forward.
GROUPS = ("seq", "seq_random", "static", "static_same", "static_same_random")
LOSSES = tuple(f"l_{g}" for g in GROUPS)
RATIOS = {  # ratio name -> (numerator, denominator)
    "r_eb": ("l_seq", "l_static"),
    "r_ctrl": ("l_seq", "l_static_same"),
    "r_eb_random": ("l_seq_random", "l_static"),
    "r_ctrl_random": ("l_seq_random", "l_static_same_random"),
}
GAPS = {"gap": ("l_seq", "l_static"), "gap_ctrl": ("l_seq", "l_static_same")}  # name -> (minuend, subtrahend)
EXPOSURE_TASK = "longresp"  # held-out responses long enough for many denoising steps


@dataclass
class ExposureBiasConfig:
    """Settings of the exposure-bias analysis. Defaults: 16 steps, batches of 8, seed 0."""

    steps: int = field(default=16, metadata={
        "help": "Denoising steps S over the response (paper: 48); each response needs >= S tokens."})
    batch_size: int = field(default=EVAL_BATCH_SIZE, metadata={
        "help": "Items per batch; each step runs one forward of 5 x batch_size rows."})
    seed: int = field(default=0, metadata={
        "help": "Base seed: item i uses seed + i for its random masks and random-order trajectory."})
    append_eos: bool = field(default=True, metadata={
        "help": "Score the response followed by EOS, as training targets it."})
    bootstrap: int = field(default=RESAMPLES, metadata={
        "help": "Bootstrap resamples of the items for the ratios' 95 percent intervals (0 skips)."})

    def __post_init__(self):
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.bootstrap < 0:
            raise ConfigError(f"bootstrap must be >= 0, got {self.bootstrap}")


@dataclass
class ExposureBiasResult:
    """Per-step losses (means over items) and the per-item values they come from.

    ``losses[name]`` and ``per_item[name]`` use the names in ``LOSSES``
    (``l_seq``, ``l_static``, ``l_static_same``, ``l_seq_random``,
    ``l_static_same_random``); ``per_item["masked"]`` holds the masked counts m_k.
    """

    steps: int
    item_seeds: list[int]
    response_tokens: list[int]  # N per item
    losses: dict[str, list[float]]  # name -> [S]
    per_item: dict[str, list[list[float]]]  # name -> [items][S]
    memory: bool = False
    meta: dict = field(default_factory=dict)

    @property
    def items(self) -> int:
        return len(self.item_seeds)

    @property
    def masked_fraction(self) -> list[float]:
        """Mean over items of m_k / N, per step."""
        masked = torch.tensor(self.per_item["masked"], dtype=torch.float64)  # [items, S]
        n = torch.tensor(self.response_tokens, dtype=torch.float64)[:, None]
        return (masked / n).mean(0).tolist()

    def ratios(self) -> dict[str, list[float]]:
        return {name: [a / b for a, b in zip(self.losses[num], self.losses[den])]
                for name, (num, den) in RATIOS.items()}

    def gaps(self) -> dict[str, list[float]]:
        """Absolute gaps per step (nats): ``gap = L_seq - L_static`` and its same-position
        control ``gap_ctrl = L_seq - L_static_same``. A ratio flatters a model whose static
        loss is worse (the same gap over a larger denominator); the gap does not."""
        return {name: [a - b for a, b in zip(self.losses[num], self.losses[den])]
                for name, (num, den) in GAPS.items()}

    def ratio_intervals(self, resamples: int = RESAMPLES, seed: int = 0, level: float = 0.95):
        """Bootstrap intervals of each ratio per step, resampling items with the project's one
        bootstrap (:func:`memdlm.stats.bootstrap`): name -> [S][2]."""

        per_item = {k: np.asarray(v, dtype=np.float64) for k, v in self.per_item.items()}
        out = {}
        for name, (num, den) in RATIOS.items():
            _, lo, hi = bootstrap([per_item], self.items, ratio_of_means(num, den), resamples, seed, level)
            out[name] = np.stack([lo, hi], -1).tolist()  # [S, 2]
        return out

    def to_dict(self, bootstrap: int = RESAMPLES) -> dict:
        """JSON-ready: metadata, per-step losses, ratios (with intervals), gaps, per-item values."""
        d = {"steps": self.steps, "items": self.items, "memory": self.memory,
             "step": list(range(self.steps)), "masked_fraction": self.masked_fraction,
             **self.losses, **self.ratios(), **self.gaps()}
        if bootstrap and self.items > 1:
            d.update({f"{k}_ci": v for k, v in self.ratio_intervals(bootstrap).items()})
        d.update({"item_seeds": self.item_seeds, "response_tokens": self.response_tokens,
                  "meta": self.meta, "per_item": self.per_item})
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ExposureBiasResult:
        return cls(d["steps"], d["item_seeds"], d["response_tokens"], {k: d[k] for k in LOSSES},
                   d["per_item"], d.get("memory", False), d.get("meta", {}))


def ratio_of_means(num: str, den: str):
    """The bootstrap statistic of one ratio per step: ``per_item`` (name -> ``[items, S]``
    array) and item indices ``[B, n]`` -> ``[B, S]`` ratios of the selected items' means."""

    def statistic(per_item: dict, idx: np.ndarray) -> np.ndarray:
        return per_item[num][idx].mean(1) / per_item[den][idx].mean(1)

    return statistic


class BatchScores(NamedTuple):
    """One batch of b items with equal response length N, over S steps."""

    losses: torch.Tensor  # [5, b, S] mean CE per item, groups in GROUPS order
    masked: torch.Tensor  # [S] masked count m_k before each step (same for every item)
    trajectory: torch.Tensor  # [S, b, N] low-confidence response slots before each step
    trajectory_random: torch.Tensor  # [S, b, N] the random-order trajectory


# ---------------------------------------------------------------------------
# The core: one batch, any predictor
# ---------------------------------------------------------------------------


def _layout(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int, device):
    """Right-padded ``[prompt][response][pad]``: ids, attention mask ``[b, L]``, slots ``[b, N]``.

    The sampler's layout, so positions match what generation sees.
    """
    n = len(responses[0])
    lengths = torch.tensor([len(p) for p in prompts], device=device)  # [b]
    ids = torch.full((len(prompts), int(lengths.max()) + n), pad_id, dtype=torch.long, device=device)
    for i, (p, r) in enumerate(zip(prompts, responses)):  # host-side, once per batch
        ids[i, : len(p) + n] = torch.tensor(list(p) + list(r), dtype=torch.long)
    slots = lengths[:, None] + torch.arange(n, device=device)  # [b, N]
    attn = torch.arange(ids.shape[1], device=device)[None, :] < (lengths + n)[:, None]
    return ids, attn.long(), slots


def _random_subset(generators: list[torch.Generator], n: int, k: int, device) -> torch.Tensor:
    """k uniformly random slots of n per row, one generator per row: bool ``[b, n]``."""
    u = torch.stack([torch.rand(n, generator=g, device=device) for g in generators])  # [b, n]
    return select_commits(u, torch.ones_like(u, dtype=torch.bool), k)


def score_batch(
    logits_fn: LogitsFn, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], *,
    steps: int, mask_id: int, pad_id: int, item_seeds: Sequence[int], forbidden: Sequence[int] = (),
    device: torch.device | str = "cpu",
) -> BatchScores:
    """Per-item losses of the five inputs at each step, for responses of equal length N."""
    n = len(responses[0])
    if any(len(r) != n for r in responses):
        raise ValueError("score_batch needs responses of equal token length")
    b = len(prompts)
    y, attn, slots = _layout(prompts, responses, pad_id, device)  # [b, L], [b, L], [b, N]
    y_resp = y.gather(1, slots)  # [b, N] true response
    forbidden = sorted({mask_id, *forbidden})
    rand_gens = [torch.Generator(device=device).manual_seed(int(s)) for s in item_seeds]  # as Sampler
    static_gens = [seeded_generator(int(s), 1, device=device) for s in item_seeds]
    resp = {"seq": torch.full_like(y_resp, mask_id)}
    resp["seq_random"] = resp["seq"].clone()  # [b, N] both trajectories start all-mask
    rows_attn = attn.repeat(len(GROUPS), 1)  # [5b, L]
    counts = tokens_per_step(n, steps).tolist()  # [S] commits per step, as the sampler's plan
    losses, masked_counts, traj, traj_rand = [], [], [], []
    m = n  # still masked before the current step
    for count in counts:
        # 1. the masked slot sets of the five inputs: [b, N] each, m per row
        masked = {"seq": resp["seq"] == mask_id, "seq_random": resp["seq_random"] == mask_id,
                  "static": _random_subset(static_gens, n, m, device)}
        masked["static_same"], masked["static_same_random"] = masked["seq"], masked["seq_random"]
        per_row = torch.stack([v.sum(1) for v in masked.values()])  # [5, b]
        assert bool((per_row == m).all()), "masked counts left the sampler's plan"
        # 2. inputs: trajectories as they are, statics = the truth with their set masked
        inputs = [resp["seq"], resp["seq_random"]] + [
            y_resp.masked_fill(masked[g], mask_id) for g in GROUPS[2:]]
        rows = y.repeat(len(GROUPS), 1).scatter(1, slots.repeat(len(GROUPS), 1), torch.cat(inputs))
        query = torch.zeros_like(rows, dtype=torch.bool).scatter(
            1, slots.repeat(len(GROUPS), 1), torch.cat([masked[g] for g in GROUPS]))  # [5b, L]
        # 3. one forward; CE of the true tokens at the masked slots, mean per item
        logits = logits_fn(rows, rows_attn, query).float()  # [5b*m, V]
        targets = y.repeat(len(GROUPS), 1)[query]  # [5b*m]
        ce = F.cross_entropy(logits, targets, reduction="none").view(len(GROUPS), b, m)
        losses.append(ce.mean(-1))  # [5, b]
        masked_counts.append(m)
        traj.append(resp["seq"])
        traj_rand.append(resp["seq_random"])
        # 4. advance both trajectories by one sampler step
        logits = logits.view(len(GROUPS), b, m, -1)
        for g, i in (("seq", 0), ("seq_random", 1)):
            resp[g] = _commit(resp[g], masked[g], logits[i], count, forbidden,
                              rand_gens if g == "seq_random" else None)
        m -= count
    return BatchScores(torch.stack(losses, -1), torch.tensor(masked_counts),
                       torch.stack(traj), torch.stack(traj_rand))


def _commit(resp, masked, logits, count, forbidden, generators):
    """One sampler step at temperature 0 over the response: ``[b, N]`` -> ``[b, N]``.

    ``logits`` ``[b, m, V]`` are at the masked slots in order. Low-confidence
    remasking scores a proposal by its probability; random remasking (``generators``)
    by a uniform draw over all N slots per item, as the sampler draws them.
    """
    logits = logits.clone()
    logits[..., forbidden] = float("-inf")
    tokens, confidence = propose_tokens(logits, 0.0)  # [b, m] each
    full_tokens = torch.zeros_like(resp)
    full_tokens[masked] = tokens.flatten()
    if generators is None:
        scores = torch.zeros(resp.shape, dtype=confidence.dtype, device=resp.device)
        scores[masked] = confidence.flatten()
    else:
        scores = torch.stack([torch.rand(resp.shape[1], generator=g, device=resp.device)
                              for g in generators])
    commit = select_commits(scores, masked, count)  # [b, N]
    return torch.where(commit, full_tokens, resp)


# ---------------------------------------------------------------------------
# Many items: batches by response length, aggregation
# ---------------------------------------------------------------------------

PredictorForBatch = Callable[[list[list[int]], list[int]], LogitsFn]


def check_lengths(responses: Sequence[Sequence[int]], steps: int) -> None:
    for i, r in enumerate(responses):
        if len(r) < steps:
            raise ConfigError(
                f"item {i}: its response has {len(r)} tokens, fewer than steps={steps}; every "
                "step must unmask at least one token (use longer responses or fewer steps)")


def run_exposure_bias(
    predictor_for_batch: PredictorForBatch, prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]], *, steps: int, mask_id: int, pad_id: int,
    item_seeds: Sequence[int], forbidden: Sequence[int] = (), batch_size: int = EVAL_BATCH_SIZE,
    device: torch.device | str = "cpu", progress: bool = False, memory: bool = False,
    meta: dict | None = None,
) -> ExposureBiasResult:
    """Score all items, batched by response length; ``predictor_for_batch(prompts, seeds)``
    gives the logits function for one batch (e.g. with that batch's adapted memory)."""
    from tqdm.auto import tqdm

    if len(prompts) != len(responses) or len(item_seeds) != len(prompts):
        raise ValueError(f"got {len(prompts)} prompts, {len(responses)} responses, "
                         f"{len(item_seeds)} seeds")
    if not prompts:
        raise ValueError("no items to score")
    check_lengths(responses, steps)
    order = sorted(range(len(prompts)), key=lambda i: len(responses[i]))  # equal N per batch
    batches, start = [], 0
    while start < len(order):
        n = len(responses[order[start]])
        end = start
        while end < len(order) and end - start < batch_size and len(responses[order[end]]) == n:
            end += 1
        batches.append(order[start:end])
        start = end
    per_item = torch.zeros(len(LOSSES) + 1, len(prompts), steps, dtype=torch.float64)
    for idx in tqdm(batches, desc="exposure bias", disable=not progress):
        p, r, s = ([prompts[i] for i in idx], [responses[i] for i in idx],
                   [int(item_seeds[i]) for i in idx])
        out = score_batch(predictor_for_batch([list(x) for x in p], s), p, r, steps=steps,
                          mask_id=mask_id, pad_id=pad_id, item_seeds=s, forbidden=forbidden,
                          device=device)
        per_item[: len(LOSSES), idx] = out.losses.double().cpu()
        per_item[len(LOSSES), idx] = out.masked.double()
    means = per_item[: len(LOSSES)].mean(1)  # [5, S]
    return ExposureBiasResult(
        steps=steps, item_seeds=[int(s) for s in item_seeds],
        response_tokens=[len(r) for r in responses],
        losses={name: means[i].tolist() for i, name in enumerate(LOSSES)},
        per_item={name: per_item[i].tolist() for i, name in enumerate((*LOSSES, "masked"))},
        memory=memory, meta=dict(meta or {}))


def exposure_bias_from_predictor(
    logits_fn: LogitsFn, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], *,
    steps: int, mask_id: int, pad_id: int | None = None, forbidden: Sequence[int] = (),
    item_seeds: Sequence[int] | None = None, seed: int = 0, batch_size: int = EVAL_BATCH_SIZE,
    device: torch.device | str = "cpu",
) -> ExposureBiasResult:
    """The analysis for any predictor (token ids in, responses already tokenised).

    ``forbidden`` ids are never proposed (the mask id never is); ``item_seeds``
    default to ``seed + i``.
    """
    seeds = list(item_seeds) if item_seeds is not None else [seed + i for i in range(len(prompts))]
    return run_exposure_bias(lambda _p, _s: logits_fn, prompts, responses, steps=steps,
                             mask_id=mask_id, pad_id=mask_id if pad_id is None else pad_id,
                             item_seeds=seeds, forbidden=forbidden, batch_size=batch_size,
                             device=device)


# ---------------------------------------------------------------------------
# A model (optionally with inference-time memory)
# ---------------------------------------------------------------------------


def model_logits_fn(model, memory=None, temperature: float = 1.0) -> LogitsFn:
    """``logits_fn`` of a model, with per-item ``memory`` (FastWeights of b slots) active.

    The forward's rows are groups of the b items, so row j uses memory slot ``j % b``.
    ``temperature``: the logits are divided by it (a model scaled to a matched calibration).
    """

    def logits_fn(ids, attention_mask, positions):
        context = contextlib.nullcontext()
        if memory is not None:
            slots = torch.arange(ids.shape[0], device=ids.device) % memory.num_slots
            context = dataclasses.replace(memory, slot_of_sample=slots).active()
        with torch.no_grad(), context:
            logits = forward_logits(model, ids, attention_mask, positions=positions)
        return logits if temperature == 1.0 else logits / temperature

    return logits_fn


def encode_pairs(tokenizer, pairs, append_eos: bool = True) -> tuple[list[list[int]], list[list[int]]]:
    """Prompt and response ids of (prompt, response) pairs or objects with those attributes.

    The split is training's (:func:`memdlm.data.collate.encode_pair`): response + EOS.
    """

    prompts, responses = [], []
    for pair in pairs:
        prompt, response = (pair.prompt, pair.response) if hasattr(pair, "prompt") else pair
        ex = encode_pair(tokenizer, prompt, response)
        cut = sum(1 for t in ex["labels"] if t == IGNORE)
        prompts.append(ex["input_ids"][:cut])
        responses.append(ex["input_ids"][cut:] if append_eos else ex["input_ids"][cut:-1])
    return prompts, responses


def exposure_bias(model, tokenizer, pairs, config: ExposureBiasConfig | None = None,
                  memory=None, progress: bool = False, meta: dict | None = None, temperature: float = 1.0,
                  context_overflow: str = "refuse") -> ExposureBiasResult:
    """The analysis for a model on (prompt, response) pairs; ``memory`` (a
    :class:`~memdlm.memory.adapt.PromptMemory` for ``model``): Train & Inference, its
    settings recorded in ``meta``. ``temperature``: every logit divided by it, for decoding
    and scoring alike (recorded in ``meta``). A prompt whose tokens and response pass the
    model's context limit is handled by ``context_overflow`` (:mod:`memdlm.backbones.context`); the
    limit, the rule and the counts go into ``meta["context"]``, the device and dtype into ``meta``."""

    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    config = config or ExposureBiasConfig()
    prompts, responses = encode_pairs(tokenizer, pairs, config.append_eos)
    limit = context_limit(model, tokenizer)
    counts = {"limit": limit.tokens, "limit_source": limit.source, "overflow": context_overflow}
    prompts = fit_prompts(prompts, [len(r) for r in responses], limit, context_overflow, counts, what="item")
    meta = {**(meta or {}), **record(model), "context": counts}
    if any(not p for p in prompts) and memory is not None:
        raise ValueError(f"item {next(i for i, p in enumerate(prompts) if not p)}: empty prompt; "
                         "memory mode adapts on the prompt")
    device = next(model.parameters()).device
    mask_id, eos_id = tokenizer.mask_token_id, tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    forbidden = sorted({mask_id} | ({pad_id} - {eos_id}))  # what the sampler never proposes
    if memory is not None:
        memory.check_model(model)
        meta = {**(meta or {}), **memory.record()}

    def predictor_for_batch(batch_prompts, seeds):
        if memory is None:
            return model_logits_fn(model, temperature=temperature)
        return model_logits_fn(model, memory.adapt(batch_prompts, seeds).detached(), temperature)

    was_training = model.training
    model.eval()
    try:
        return run_exposure_bias(
            predictor_for_batch, prompts, responses, steps=config.steps, mask_id=mask_id,
            pad_id=pad_id, item_seeds=[config.seed + i for i in range(len(prompts))],
            forbidden=forbidden, batch_size=config.batch_size, device=device, progress=progress,
            memory=memory is not None,
            meta={**dataclasses.asdict(config), **(meta or {}), **({"temperature": temperature} if temperature != 1.0 else {})})
    finally:
        model.train(was_training)


def heldout_pairs(tokenizer, items: int, length: int, task: str = EXPOSURE_TASK, seed: int = EXPOSURE_SEED):
    """Held-out samples (eval split) of a generated task; falls back to ``kv`` without ``longresp``."""

    if task not in task_names():
        if task != "longresp":
            raise ConfigError(f"unknown task {task!r}; choose one of {task_names()}")
        logger.warning("task 'longresp' is not available; using 'kv' (short responses)")
        task = "kv"
    ds = SyntheticTaskDataset(tokenizer, [task], [length], "eval", items, seed=seed)
    return [ds.sample(i) for i in range(items)]
