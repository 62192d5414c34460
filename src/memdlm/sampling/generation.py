"""Generation with optional inference-time memory, in batches.

    outputs = generate(model, tokenizer, prompts, SamplerConfig(...), memory=None)

With ``memory`` (a :class:`memdlm.memory.adapt.PromptMemory`, e.g. ``run.memory()``)
each prompt gets its own memory, adapted on the prompt alone with the request's seed,
and kept active while its response is sampled; the next batch starts from fresh memory.
"""

from __future__ import annotations

from tqdm.auto import tqdm

from memdlm.config import GENERATION_BATCH_SIZE
from memdlm.sampling.sampler import Sampler, SamplerConfig
from memdlm.errors import DataError
from memdlm.backbones.context import context_limit, fit_prompts


def _encode_prompts(tokenizer, prompts, what: str = "prompt") -> list[list[int]]:
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] if isinstance(p, str) else list(p)
           for p in prompts]
    if any(len(p) == 0 for p in ids):

        raise DataError(f"{what} {next(i for i, p in enumerate(ids) if not p)} is empty")
    return ids


def generate(model, tokenizer, prompts: list[str] | list[list[int]], config: SamplerConfig,
             memory=None, seeds: list[int] | None = None, batch_size: int = GENERATION_BATCH_SIZE,
             progress: bool = False, adapt_on: list[str] | list[list[int]] | None = None,
             stats: dict | None = None, context_overflow: str = "refuse") -> list[str]:
    """Texts of the responses, in prompt order.

    ``memory``: a :class:`~memdlm.memory.adapt.PromptMemory` built for ``model``, or None.
    ``adapt_on`` (with ``memory``): the texts each prompt's memory is adapted on,
    one per prompt, instead of the prompt itself -- the in-weight retrieval probe
    adapts on a full context and answers from a context with the needle removed.
    ``stats``: a dict that receives the sampler's counts: ``model_calls`` (forward
    passes of all batches), ``calls_per_sample`` (in prompt order) and ``cache_used``.
    Adaptation's own forward passes are not counted.
    A prompt past the model's context limit is handled by ``context_overflow``
    (:mod:`memdlm.backbones.context`: refused unless ``truncate`` or ``extend``); ``stats["context"]``
    gets the limit and the counts. A truncated prompt's memory adapts on what is kept.
    """

    prompt_ids = _encode_prompts(tokenizer, prompts)
    limit = context_limit(model, tokenizer)
    counts = (stats.setdefault("context", {}) if stats is not None else {})
    counts.update(limit=limit.tokens, limit_source=limit.source, overflow=context_overflow)
    fitted = fit_prompts(prompt_ids, config.max_new_tokens, limit, context_overflow, counts)
    if adapt_on is None:
        prompt_ids = fitted
    elif fitted != prompt_ids:
        raise ValueError("adapt_on with prompts past the context limit: fit the prompts first")
    adapt_ids = prompt_ids if adapt_on is None else _encode_prompts(tokenizer, adapt_on, "adaptation text")
    if len(adapt_ids) != len(prompt_ids):
        raise ValueError(f"adapt_on has {len(adapt_ids)} texts for {len(prompt_ids)} prompts")
    seeds = list(seeds) if seeds is not None else list(range(len(prompt_ids)))
    sampler = Sampler(model, tokenizer, config)
    if memory is not None:
        memory.check_model(model)
    texts: list[str] = []
    starts = range(0, len(prompt_ids), batch_size)
    for start in tqdm(starts, desc="generate", disable=not progress):
        chunk = prompt_ids[start:start + batch_size]
        chunk_seeds = seeds[start:start + batch_size]
        context = None
        if memory is not None:
            context = memory.adapt(adapt_ids[start:start + batch_size], chunk_seeds).active
        out = sampler.generate(chunk, seeds=chunk_seeds, forward_context=context)
        texts += out.texts
        if stats is not None:
            _add_counts(stats, out)
    return texts


def _add_counts(stats: dict, out) -> None:
    stats["model_calls"] = stats.get("model_calls", 0) + out.model_calls
    stats.setdefault("calls_per_sample", []).extend(out.calls_per_sample)
    stats["cache_used"] = out.cache_used
    stats["unmask_rule"] = out.unmask_rule
