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

from memdlm.eval.heldout import answer_sampler_config, heldout_samples

PROBE_SEED = 70_000
CONDITIONS = ("needle_present", "removed", "removed_matched", "removed_mismatched")


def _is_recall(sample) -> bool:
    return "asked" in sample.meta


def remove_needle(sample) -> str:
    """The sample's prompt without the fact(s) stating the queried value(s)."""
    if _is_recall(sample):
        from memdlm.tasks.recall import QUERY_MARK

        body, mark, tail = sample.prompt.rpartition(f" {QUERY_MARK} ")
        for i in sample.meta["asked"]:
            pair = f" {sample.meta['keys'][i]} {sample.meta['values'][i]}"
            if body.count(pair) != 1:
                raise ValueError(f"pair {pair!r} not found exactly once in the context")
            body = body.replace(pair, "")
        return body + mark + tail
    from memdlm.tasks.kv import needle

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
        from memdlm.tasks.recall import prediction_words

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


def run_probe(run, samples, memory, batch_size: int = 8, progress: bool = False) -> dict:
    """Every condition's per-item predictions and scores for one run (:class:`memdlm.run.Run`);
    ``memory``: its prompt memory (``run.memory(...)``)."""
    from memdlm.generation import generate

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
