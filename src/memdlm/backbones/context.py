"""A model's context limit and the one rule for prompts past it (no silent truncation).

    limit = context_limit(model, tokenizer)            # read from the config, else the tokenizer
    ids = fit_prompts(prompt_ids, new_tokens, limit, "refuse", counts)   # or "truncate" / "extend"

The limit is the first of the model config's position fields (``CONFIG_FIELDS``:
``max_position_embeddings``, LLaDA's ``max_sequence_length``, GPT-2's ``n_positions``,
...) that holds a positive integer, else the tokenizer's ``model_max_length`` when it
is a real number (transformers stores 1e30 for "unknown"), else unknown. An unknown
limit is never replaced by a made-up one: prompts are then not checked, and callers
that need a number (lm-eval's rolling windows) ask for it.

Past the limit a request is handled by ``overflow`` (``OVERFLOW_CHOICES``; every
inference command's ``--context-overflow``, the lm-eval model's ``context_overflow``):

- ``refuse`` (the default): :class:`ContextOverflowError`, one line with the numbers;
- ``truncate``: keep the prompt's last ``limit - new_tokens`` tokens, counted;
- ``extend``: run past the limit (rotary positions only: an absolute position table has
  no row there), counted -- the paper's lengths beyond a model's trained context.

``counts`` (a dict the caller keeps) receives ``requests``, ``over_limit``,
``truncated``, ``tokens_dropped`` and ``extended``, for the outputs to record.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from memdlm.errors import ConfigError

logger = logging.getLogger("memdlm")

CONFIG_FIELDS = ("max_position_embeddings", "max_sequence_length", "n_positions", "max_seq_len",
                 "max_seq_length", "seq_length", "n_ctx")
OVERFLOW_CHOICES = ("refuse", "truncate", "extend")
OVERFLOW_HELP = ("What to do with a prompt whose tokens plus the new ones pass the model's context "
                 "limit (read from its config or tokenizer): refuse (default: an error with the "
                 "numbers), truncate (keep its last tokens; counted in the outputs) or extend (run "
                 "past the limit; rotary-position models only; counted).")
_UNKNOWN_TOKENIZER_LIMIT = 10**9  # transformers' "no limit" is int(1e30)


class ContextOverflowError(ConfigError):
    """A prompt past the model's context limit, with ``overflow="refuse"``."""


@dataclass(frozen=True)
class ContextLimit:
    """``tokens`` (None: unknown), where it was read (``source``), and whether positions
    come from an absolute table (past which a model cannot run at all)."""

    tokens: int | None
    source: str
    absolute_positions: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def _text_config(config):
    getter = getattr(config, "get_text_config", None)
    return getter() if callable(getter) else config


def context_limit(model, tokenizer=None, override: int | None = None) -> ContextLimit:
    """The context limit of ``model`` (see the module docstring); ``override`` (a
    user's explicit number) wins."""
    config = _text_config(getattr(model, "config", None))
    absolute = (config is not None and getattr(config, "rope_parameters", None) is None
                and getattr(config, "rope_theta", None) is None
                and getattr(config, "position_embedding_type", "absolute") == "absolute")
    if override is not None:
        if int(override) < 1:
            raise ConfigError(f"max_length must be >= 1, got {override}")
        return ContextLimit(int(override), "max_length argument", absolute)
    for name in CONFIG_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return ContextLimit(value, f"config.{name}", absolute)
    value = getattr(tokenizer, "model_max_length", None)
    if isinstance(value, int) and 0 < value < _UNKNOWN_TOKENIZER_LIMIT:
        return ContextLimit(value, "tokenizer.model_max_length", absolute)
    return ContextLimit(None, "unknown", absolute)


def check_overflow_choice(overflow: str) -> str:
    if overflow not in OVERFLOW_CHOICES:
        raise ConfigError(f"unknown context overflow rule {overflow!r}; choose one of {OVERFLOW_CHOICES}")
    return overflow


def new_counts() -> dict:
    return {"requests": 0, "over_limit": 0, "truncated": 0, "tokens_dropped": 0, "extended": 0}


def fit_prompts(prompt_ids: list[list[int]], new_tokens: int | list[int], limit: ContextLimit,
                overflow: str = "refuse", counts: dict | None = None, what: str = "prompt") -> list[list[int]]:
    """``prompt_ids`` with each prompt fitted to ``limit`` with room for ``new_tokens``
    (one number, or one per prompt; module docstring); unchanged prompts are the same lists."""
    check_overflow_choice(overflow)
    counts = counts if counts is not None else new_counts()
    for key, value in new_counts().items():
        counts.setdefault(key, value)
    counts["requests"] += len(prompt_ids)
    if limit.tokens is None:
        return list(prompt_ids)
    per_prompt = [new_tokens] * len(prompt_ids) if isinstance(new_tokens, int) else list(new_tokens)
    out = []
    for i, (ids, new_tokens) in enumerate(zip(prompt_ids, per_prompt)):
        need = len(ids) + new_tokens
        if need <= limit.tokens:
            out.append(ids)
            continue
        counts["over_limit"] += 1
        text = (f"{what} {i} is {len(ids)} tokens + {new_tokens} new = {need} positions, past the model's "
                f"context limit {limit.tokens} ({limit.source})")
        keep = limit.tokens - new_tokens
        if overflow == "truncate" and keep >= 1:
            counts["truncated"] += 1
            counts["tokens_dropped"] += len(ids) - keep
            out.append(ids[len(ids) - keep:])
        elif overflow == "extend" and not limit.absolute_positions:
            counts["extended"] += 1
            out.append(ids)
        elif overflow == "truncate":
            raise ContextOverflowError(f"{text}: {new_tokens} new tokens alone leave no room for the prompt; "
                                       "lower the number of new tokens")
        elif overflow == "extend":
            raise ContextOverflowError(f"{text}: the model's positions are an absolute table with no row "
                                       "past it; shorten the prompt or use --context-overflow truncate")
        else:
            raise ContextOverflowError(f"{text}; shorten it, or pass --context-overflow truncate (keep its last "
                                       f"{max(keep, 0)} tokens) or extend (run past the limit, rotary models)")
    if counts["truncated"] or counts["extended"]:
        logger.warning("context limit %s (%s): %d of %d prompts truncated (%d tokens dropped), %d run past it",
                       limit.tokens, limit.source, counts["truncated"], counts["requests"],
                       counts["tokens_dropped"], counts["extended"])
    return out
