"""Held-out accuracy of a trained run on its own task mix, at its training length.

Items come from the tasks' *eval* split (keys, values and names never seen in
training) at ``HELDOUT_SEED``, apart from the evaluation-loss set
(:mod:`memdlm.tasks.seeds`). The model answers by iterative denoising with one token
committed per step (steps = new tokens) and must end its answer with EOS; exact match
compares the stripped answer text.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from memdlm.config import GENERATION_BATCH_SIZE
from memdlm.tasks.seeds import HELDOUT_SEED
from memdlm.tasks.dataset import SyntheticTaskDataset
from memdlm.tasks.haystack import get_haystack
from memdlm.sampling.sampler import SamplerConfig
from memdlm.tasks import get_task
from memdlm.sampling.generation import generate
from memdlm.tasks.scoring import score_details, score_samples

logger = logging.getLogger("memdlm")


def heldout_samples(tokenizer, tasks: list[str], length: int, n: int, seed: int = HELDOUT_SEED,
                    haystack: str = "prose"):

    ds = SyntheticTaskDataset(tokenizer, tasks, [length], "eval", n, seed=seed, haystack=get_haystack(haystack))
    return [ds.sample(i) for i in range(n)]


def answer_sampler_config(tokenizer, samples, **overrides):
    """Greedy decoding for held-out answers.

    Free-form tasks: one token per step, room for the longest answer plus 2 tokens, so
    the model, not the slot count, decides where its answer stops (it must commit EOS).
    Fixed-slot tasks (associative recall: exactly Q answers of W words): the answer slots
    plus EOS, every one masked at the start and committed in W steps (one for one-word
    answers) -- the model cannot use one of its own answers to find another, only an
    answer's earlier words to find its next.

    ``overrides`` replace SamplerConfig fields (e.g. the fast-sampling ones of ``memdlm eval``).
    """

    longest = max(len(tokenizer(s.response, add_special_tokens=False)["input_ids"]) for s in samples)
    tasks = {s.task: get_task(s.task) for s in samples}
    if all(task.fixed_slots for task in tasks.values()):
        steps = max(task.decode_steps for task in tasks.values())
        return SamplerConfig(**{"max_new_tokens": longest + 1, "steps": steps, "temperature": 0.0, **overrides})
    new_tokens = longest + 2
    return SamplerConfig(**{"max_new_tokens": new_tokens, "steps": new_tokens, "temperature": 0.0, **overrides})


def evaluate_samples(model, tokenizer, samples, memory=None, batch_size: int = GENERATION_BATCH_SIZE,
                     progress: bool = True) -> dict:
    """Answer and score ``samples``, each task's group with its own decoding rule;
    ``memory``: a prompt memory for ``model`` (``run.memory()``) or None.

    Tasks whose metric gives a breakdown (:meth:`memdlm.tasks.scoring.Metric.details`:
    associative recall's per-query and all-correct accuracy beside the uniform and copy
    levels, and where the wrong answers came from) also get it, under ``recall_by_task``.
    """

    groups: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault(s.task, []).append(i)
    start = time.perf_counter()
    texts: list[str] = [""] * len(samples)
    for ix in groups.values():
        group = [samples[i] for i in ix]
        config = answer_sampler_config(tokenizer, group)
        outs = generate(model, tokenizer, [s.prompt for s in group], config, memory=memory,
                        seeds=ix, batch_size=batch_size, progress=progress)
        for i, text in zip(ix, outs):
            texts[i] = text
    exact = [t.strip() == s.response.strip() for t, s in zip(texts, samples)]
    result = {
        "items": len(samples), "exact_match": sum(exact) / len(exact),
        "exact_match_by_task": {k: sum(exact[i] for i in ix) / len(ix) for k, ix in groups.items()},
        "score_by_task": {k: score_samples(k, [texts[i] for i in ix], [samples[i] for i in ix])
                          for k, ix in groups.items()},
        "seconds": round(time.perf_counter() - start, 1),
        "examples": [{"prompt_tail": s.prompt[-80:], "answer": s.response.strip(), "prediction": t}
                     for s, t in list(zip(samples, texts))[:8]],
    }
    recall = {k: score_details(k, [texts[i] for i in ix], [samples[i] for i in ix]) for k, ix in groups.items()}
    if any(recall.values()):
        result["recall_by_task"] = {k: v for k, v in recall.items() if v}
    return result


def describe_recall(report: dict) -> str:
    """One line: the score beside its reference levels."""
    ref = report["reference"]
    return (f"{report['per_query']:.1f}% of queries right ({report['all_correct']:.1f}% of items all "
            f"right; uniform guessing {ref['uniform']:.1f}%, copying a random context value "
            f"{ref['copy']:.1f}%; wrong answers: {report['chose']['other_context']:.1f}% another "
            f"context value, {report['chose']['outside']:.1f}% outside the context)")


def evaluate_heldout(run, memory=None) -> dict:
    """A trained run (:class:`memdlm.runs.run.Run`) on held-out items of its own task mix at its
    longest training length; writes ``heldout_eval.json`` into the run directory.
    ``memory``: the run's prompt memory (``run.memory()``) to answer with, or None."""
    data_args, model, tokenizer = run.data_args, run.model, run.tokenizer
    length = max(data_args.train_lengths)
    samples = heldout_samples(tokenizer, data_args.tasks, length, data_args.heldout_items,
                              haystack=data_args.haystack)
    model.eval()
    result = evaluate_samples(model, tokenizer, samples, memory)
    result["length"] = length
    if memory is not None:
        result.update(memory.record())
    (Path(run.path) / "heldout_eval.json").write_text(json.dumps(result, indent=2))
    logger.info("held-out exact match at %d tokens: %.1f%% of %d items (%.0fs)", length,
                100 * result["exact_match"], result["items"], result["seconds"])
    for task, report in result.get("recall_by_task", {}).items():
        logger.info("held-out %s at %d tokens: %s", task, length, describe_recall(report))
    return {k: v for k, v in result.items() if k != "examples"}
