"""In-weight retrieval probe: is the needle in the fast weights?

For each held-out item the model answers the query from the context with the queried
fact *removed* -- on the recall tasks (``mqar*``) the queried key-value pair(s), on the
key-value prose tasks the sentence "The value of K is V." -- in four ways:

- ``needle_present``: the full context, no adaptation (how well it can answer at all);
- ``removed``: the needle-less context, no adaptation (the floor: nothing to copy);
- ``removed_matched``: the needle-less context, memory adapted on the *full* context;
- ``removed_mismatched``: the same, memory adapted on *another* item's full context
  (the control: any memory at all, but not one that saw this needle).

Above-control answers in ``removed_matched`` mean the value was carried by the fast
weights. Scores per item, so conditions are compared paired: exact match and the task's
partial score (``item_scores``) -- per-query accuracy on the recall tasks (the share of
the queried values named in place), digit accuracy on the key-value tasks (the share of
the value's digits right in place; chance about 10%).
"""

from __future__ import annotations

from memdlm.config import EVAL_BATCH_SIZE
from memdlm.eval.heldout import answer_sampler_config, heldout_samples
from memdlm.tasks.seeds import PROBE_SEED
from memdlm.tasks.kv import needle
from memdlm.tasks.recall import QUERY_MARK
from memdlm.tasks.recall import prediction_words
from memdlm.sampling.generation import generate
from memdlm.data.collate import token_ids
from memdlm.memory.adapt import right_pad
from memdlm.memory.builder import ADAPTATION, build_inner_loop
from memdlm.memory.config import AdaptationArguments
from memdlm.memory.inner_loop import InnerLoopInputs, InnerLoopStats
from memdlm.memory.trajectories import Stage, StageRole
from memdlm.backbones.modeling import forward_logits

CONDITIONS = ("needle_present", "removed", "removed_matched", "removed_mismatched")


def _is_recall(sample) -> bool:
    return "asked" in sample.meta


def remove_needle(sample) -> str:
    """The sample's prompt without the fact(s) stating the queried value(s)."""
    if _is_recall(sample):

        body, mark, tail = sample.prompt.rpartition(f" {QUERY_MARK} ")
        for i in sample.meta["asked"]:
            pair = f" {sample.meta['keys'][i]} {sample.meta['values'][i]}"
            if body.count(pair) != 1:
                raise ValueError(f"pair {pair!r} not found exactly once in the context")
            body = body.replace(pair, "")
        return body + mark + tail

    fact = needle(sample.meta["key"], sample.response.strip())
    if fact not in sample.prompt:
        raise ValueError(f"needle {fact!r} not found in the prompt")
    return sample.prompt.replace(fact + " ", "").replace(fact, "")


def digit_accuracy(prediction: str, answer: str) -> float:
    pred = prediction.strip()
    return sum(a == b for a, b in zip(pred, answer)) / len(answer)


def item_score(prediction: str, sample) -> float:
    """Per-query accuracy (recall tasks) or digit accuracy (key-value tasks), 0-1."""
    if _is_recall(sample):

        answers = [a.lower() for a in sample.answers]
        guesses = prediction_words(prediction, len(answers))
        return sum(g == a for g, a in zip(guesses, answers)) / len(answers)
    return digit_accuracy(prediction, sample.response.strip())


def exact(prediction: str, sample) -> float:
    if _is_recall(sample):
        return float(item_score(prediction, sample) == 1.0)
    return float(prediction.strip() == sample.response.strip())


def probe_items(tokenizer, n: int, length: int, task: str = "kv"):
    """Held-out items of ``task`` (a seed range of their own) for the probe."""
    return heldout_samples(tokenizer, [task], length, n, seed=PROBE_SEED)


def run_probe(run, samples, memory, batch_size: int = EVAL_BATCH_SIZE, progress: bool = False) -> dict:
    """Every condition's per-item predictions and scores for one run (:class:`memdlm.runs.run.Run`);
    ``memory``: its prompt memory (``run.memory(...)``). Generation-based: the earlier probe,
    kept for callers; the reproduction's probe is :func:`run_logprob_probe`."""

    model, tokenizer = run.model, run.tokenizer
    config = answer_sampler_config(tokenizer, samples)
    full = [s.prompt for s in samples]
    removed = [remove_needle(s) for s in samples]
    others = full[1:] + full[:1]  # item i adapts on item i+1's context
    seeds = list(range(len(samples)))
    runs = {
        "needle_present": dict(prompts=full),
        "removed": dict(prompts=removed),
        "removed_matched": dict(prompts=removed, memory=memory, adapt_on=full),
        "removed_mismatched": dict(prompts=removed, memory=memory, adapt_on=others),
    }
    out = {}
    for name, kwargs in runs.items():
        texts = generate(model, tokenizer, config=config, seeds=seeds, batch_size=batch_size,
                         progress=progress, **kwargs)
        exacts = [exact(t, s) for t, s in zip(texts, samples)]
        scores = [item_score(t, s) for t, s in zip(texts, samples)]
        out[name] = {"exact_match": sum(exacts) / len(exacts), "score": sum(scores) / len(scores),
                     "item_exact": exacts, "item_scores": scores, "predictions": texts}
    return out


# --------------------------------------------------------------------- log-probability probe
# Exact match with the needle removed needs a shift of ~10 nats (issue 22: log p of the value
# -12.45, median rank 100 of 4,096), so a memory that moves the answer by a few nats reads as 0.
# This probe scores the answer's log-probability and rank instead, in every condition below,
# and has a positive control that must move it.
LOGPROB_CONDITIONS = {
    # name: (context, memory written on)
    "present": ("full", None),
    "removed": ("removed", None),
    "present_matched": ("full", "own"),
    "present_mismatched": ("full", "other"),
    "removed_matched": ("removed", "own"),
    "removed_mismatched": ("removed", "other"),
    "control_matched": ("removed", "control_own"),  # the positive control (ProbeControl)
    "control_mismatched": ("removed", "control_other"),
}
# (matched, baseline) pairs the report compares, per model
LOGPROB_CONTRASTS = {
    "removed: matched - mismatched": ("removed_matched", "removed_mismatched"),
    "removed: matched - no memory": ("removed_matched", "removed"),
    "present: matched - mismatched": ("present_matched", "present_mismatched"),
    "positive control: matched - mismatched": ("control_matched", "control_mismatched"),
}


def value_positions(tokenizer, sample) -> list[int]:
    """Token positions, in the full prompt, of the queried value(s) (recall tasks only)."""

    if not _is_recall(sample):
        raise ValueError("the log-probability probe's control needs a recall task (mqar*)")
    full = token_ids(tokenizer, sample.prompt)
    body = sample.prompt.rpartition(f" {QUERY_MARK} ")[0]
    out = []
    for i in sample.meta["asked"]:
        pair = f" {sample.meta['keys'][i]} {sample.meta['values'][i]}"
        start = body.index(pair) + len(f" {sample.meta['keys'][i]}")
        before = token_ids(tokenizer, sample.prompt[:start])
        through = token_ids(tokenizer, sample.prompt[:start + len(pair) - len(f" {sample.meta['keys'][i]}")])
        if full[:len(through)] != through:
            raise ValueError(f"the prompt's tokens around {pair!r} depend on what follows it")
        out += list(range(len(before), len(through)))
    return out


def write_control_memory(model, tokenizer, control, prompts: list[list[int]], targets: list[list[int]],
                         seeds: list[int]):
    """The positive control's fast weights, slot i written on ``prompts[i]`` with only the
    tokens at ``targets[i]`` masked and scored: ``control.steps`` anchor-to-target SGD steps at
    ``control.inner_lr`` on ``control.scope`` of the last ``control.layer_fraction`` of layers."""
    import torch


    args = AdaptationArguments(memory_scope=control.scope, memory_layer_fraction=control.layer_fraction,
                               memory_rank=control.rank, inner_lr=control.inner_lr, trajectory="anchor_only")
    loop = build_inner_loop(model, args, ADAPTATION, mask_token_id=tokenizer.mask_token_id)
    device = next(model.parameters()).device
    ids, attn = right_pad(prompts, tokenizer.pad_token_id, device)
    target = torch.zeros_like(ids, dtype=torch.bool)
    for i, positions in enumerate(targets):
        target[i, positions] = True
    x = InnerLoopInputs(ids, attn, target, target, torch.tensor(seeds, device=device))
    stage = Stage("anchor", target, target, torch.zeros_like(target), StageRole.ANCHOR)
    memory, stats = loop.fresh_memory(x), InnerLoopStats()
    with torch.enable_grad():
        for _ in range(control.steps):
            memory = loop.step(memory, stage, x, stats)
    return memory.detached()


def answer_logprobs(model, tokenizer, prompts: list[list[int]], answers: list[list[int]], fast=None
                    ) -> tuple[list[float], list[int]]:
    """Per item: the log-probability (nats, summed over its tokens) of ``answers[i]`` at the
    answer slot after ``prompts[i]`` with the whole response (answer + EOS) masked, and the
    rank of its first token there (0: the model's top choice). ``fast``: fast weights with
    slot i for item i, active during the forward."""
    import contextlib

    import torch


    device = next(model.parameters()).device
    rows = [p + [tokenizer.mask_token_id] * (len(a) + 1) for p, a in zip(prompts, answers)]
    ids, attn = right_pad(rows, tokenizer.pad_token_id, device)
    scored = torch.zeros_like(ids, dtype=torch.bool)
    for i, (p, a) in enumerate(zip(prompts, answers)):
        scored[i, len(p):len(p) + len(a)] = True
    context = fast.active() if fast is not None else contextlib.nullcontext()
    with torch.no_grad(), context:
        logp = torch.log_softmax(forward_logits(model, ids, attn, positions=scored).float(), -1)  # [n, V]
    logps, ranks, k = [], [], 0
    for a in answers:
        rows_a = logp[k:k + len(a)]
        target = torch.tensor(a, device=device)
        picked = rows_a.gather(1, target[:, None])[:, 0]
        logps.append(float(picked.sum()))
        ranks.append(int((rows_a[0] > picked[0]).sum()))
        k += len(a)
    return logps, ranks


def batch_memories(model, tokenizer, memory, control, full, targets, ix: list[int], after: int) -> dict:
    """The four memories one batch of the probe reads, keyed by :data:`LOGPROB_CONDITIONS`'
    sources: ``own`` (slot j written on item ``ix[j]``'s full context), ``other`` (on the next
    item's, ``after`` following ``ix[-1]``), and the positive control's ``control_own`` /
    ``control_other``. A per-sample memory is a function of its own prompt and seed alone, so
    item i+1's memory is the same written as "own" or as item i's "other": each kind is written
    once on ``ix + [after]`` and read through two slot maps (before: four adaptations and two
    control writes per batch, each item's memory written twice;
    ``tests/test_reproduce.py::test_probe_memories_are_written_once`` checks the values agree)."""
    import dataclasses

    import torch

    src = ix + [after]
    device = next(model.parameters()).device
    own, nxt = torch.arange(len(ix), device=device), torch.arange(1, len(src), device=device)
    written = {"": memory.adapt([full[j] for j in src], src).detached(),
               "control_": write_control_memory(model, tokenizer, control, [full[j] for j in src],
                                                [targets[j] for j in src], src)}
    return {f"{kind}{name}": dataclasses.replace(fast, slot_of_sample=slots)
            for kind, fast in written.items() for name, slots in (("own", own), ("other", nxt))}


def run_logprob_probe(run, samples, memory, control, batch_size: int = EVAL_BATCH_SIZE, progress: bool = False) -> dict:
    """Every :data:`LOGPROB_CONDITIONS` condition's per-item log p and rank of the answer for
    one run. ``memory``: the inference-time adaptation (``PromptMemory``, the same for every
    arm); ``control``: the positive control's settings (:class:`~memdlm.reproduce.presets.ProbeControl`).
    Item i's mismatched memory is written on item i+1's context."""
    from tqdm.auto import tqdm


    model, tokenizer = run.model, run.tokenizer
    memory.check_model(model)
    full = [token_ids(tokenizer, s.prompt) for s in samples]
    removed = [token_ids(tokenizer, remove_needle(s)) for s in samples]
    answers = [token_ids(tokenizer, s.response) for s in samples]
    targets = [value_positions(tokenizer, s) for s in samples]
    n = len(samples)
    other = [(i + 1) % n for i in range(n)]
    contexts = {"full": full, "removed": removed}
    out = {name: {"logp": [], "rank": []} for name in LOGPROB_CONDITIONS}
    was_training = model.training
    model.eval()
    try:
        for start in tqdm(range(0, n, batch_size), desc="probe", disable=not progress):
            ix = list(range(start, min(start + batch_size, n)))
            memories = batch_memories(model, tokenizer, memory, control, full, targets, ix, other[ix[-1]])
            for name, (ctx, source) in LOGPROB_CONDITIONS.items():
                logps, ranks = answer_logprobs(model, tokenizer, [contexts[ctx][i] for i in ix],
                                               [answers[i] for i in ix], memories.get(source))
                out[name]["logp"] += logps
                out[name]["rank"] += ranks
    finally:
        model.train(was_training)
    for cell in out.values():
        cell["top1"] = sum(r == 0 for r in cell["rank"]) / n
        cell["mean_logp"] = sum(cell["logp"]) / n
        cell["median_rank"] = sorted(cell["rank"])[n // 2]
    return out
