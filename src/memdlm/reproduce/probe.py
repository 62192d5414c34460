"""In-weight retrieval probe: is the needle in the fast weights?

For each held-out key-value item the model answers the question from the context
with the queried fact's sentence ("The value of K is V.") *removed*, in four ways:

- ``needle_present``: the full context, no adaptation (how well it can answer at all);
- ``removed``: the needle-less context, no adaptation (the floor: nothing to copy);
- ``removed_matched``: the needle-less context, memory adapted on the *full* context;
- ``removed_mismatched``: the same, memory adapted on *another* item's full context
  (the control: any memory at all, but not one that saw this needle).

Above-control answers in ``removed_matched`` mean the value was carried by the fast
weights. Scores: exact match and digit accuracy (the share of the value's digits right
in place; chance is about 10%), per item, so conditions are compared paired.
"""

from __future__ import annotations

from memdlm.eval.heldout import answer_sampler_config, heldout_samples

PROBE_SEED = 70_000
CONDITIONS = ("needle_present", "removed", "removed_matched", "removed_mismatched")


def remove_needle(sample) -> str:
    """The sample's prompt without the sentence stating the queried value."""
    from memdlm.tasks.kv import needle

    fact = needle(sample.meta["key"], sample.response.strip())
    if fact not in sample.prompt:
        raise ValueError(f"needle {fact!r} not found in the prompt")
    return sample.prompt.replace(fact + " ", "").replace(fact, "")


def digit_accuracy(prediction: str, answer: str) -> float:
    pred = prediction.strip()
    return sum(a == b for a, b in zip(pred, answer)) / len(answer)


def probe_items(tokenizer, n: int, length: int, task: str = "kv"):
    """Held-out key-value items (a seed range of their own) for the probe."""
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
        answers = [s.response.strip() for s in samples]
        exact = [float(t.strip() == a) for t, a in zip(texts, answers)]
        digits = [digit_accuracy(t, a) for t, a in zip(texts, answers)]
        out[name] = {"exact_match": sum(exact) / len(exact), "digit_accuracy": sum(digits) / len(digits),
                     "item_exact": exact, "item_digits": digits, "predictions": texts}
    return out
