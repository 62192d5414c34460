"""The tiny default's tokenizer: a byte-level BPE trained offline, shipped as files.

Digits are split one per token (numbers are the values our tasks retrieve), and
the special tokens a DLM needs -- mask, pad, end of sequence -- are part of it.
``scripts/build_assets.py`` rebuilds the shipped files deterministically.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from memdlm.errors import ConfigError, MissingFileError
from memdlm.backbones.shipped import missing_model_message, resolve_model
from memdlm.backbones.modeling import check_remote_code
from memdlm.backbones.families import family_of
from memdlm.backbones.modeling import unwrap

logger = logging.getLogger("memdlm")

ASSET_DIR = Path(__file__).parents[1] / "assets" / "tokenizer"
PAD, MASK, EOS = "<|pad|>", "<|mask|>", "<|eos|>"
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}Assistant: {{ m['content'] }}"
    "{{ eos_token }}\n{% else %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 2048):
    """Train a byte-level BPE with single-digit pre-tokenisation; returns a fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[PAD, MASK, EOS], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    core.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, mask_token=MASK, eos_token=EOS,
        chat_template=CHAT_TEMPLATE, model_max_length=1 << 20,
    )


def load_default_tokenizer():
    """The shipped tokenizer (no network)."""
    from transformers import PreTrainedTokenizerFast

    if not (ASSET_DIR / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"the default tokenizer is missing from {ASSET_DIR}; run scripts/build_assets.py")
    return PreTrainedTokenizerFast.from_pretrained(str(ASSET_DIR))


def load_tokenizer(path: str | None = None, trust_remote_code: bool = False):
    """A tokenizer from a local directory, or the default one; it must have a mask token."""
    if path is None:
        tok = load_default_tokenizer()
    else:
        from transformers import AutoTokenizer


        path = resolve_model(path)
        if not Path(path).is_dir():
            raise MissingFileError(missing_model_message(path))
        if not any((Path(path) / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
            unfinished = (Path(path) / "run_config.json").is_file() and not (Path(path) / "run_complete.json").is_file()
            raise MissingFileError(
                f"{path} has no tokenizer files" + (" (an unfinished run: no run_complete.json; "
                "resume it with memdlm train --resume --output-dir ...)" if unfinished else ""))

        check_remote_code(path, trust_remote_code)
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True)
    return ensure_special_tokens(tok, source=path or str(ASSET_DIR))


def ensure_special_tokens(tokenizer, source: str):
    """Check for a mask token; fall back eos -> pad if there is no pad token."""
    if tokenizer.mask_token_id is None:
        raise ConfigError(
            f"tokenizer at {source} has no mask token: a masked diffusion model needs one. "
            "Add it (tokenizer.add_special_tokens({'mask_token': '<|mask|>'})) and resize the "
            "model's embeddings, or pick a DLM tokenizer (LLaDA, Dream) that has one.")
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ConfigError(f"tokenizer at {source} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def reconcile_mask_token(model, tokenizer, source: str) -> None:
    """Compare the model config's ``mask_token_id`` with the tokenizer's mask id (memdlm masks
    with the tokenizer's everywhere). Equal, or no id in the config: nothing to do. Different:
    the family decides (``mask_from_tokenizer`` in ``memdlm.backbones.families``) -- the tokenizer's id is
    written into the config with a warning naming both, or the pair is refused in one line.
    """

    config = getattr(unwrap(model), "config", None)
    configured, ours = getattr(config, "mask_token_id", None), tokenizer.mask_token_id
    if configured is None or configured == ours:
        return
    family = family_of(config)
    token = tokenizer.mask_token
    if not family.mask_from_tokenizer:
        raise ConfigError(
            f"{source}: config.json has mask_token_id {configured} but the tokenizer's mask token {token!r} is id "
            f"{ours}; memdlm masks with the tokenizer's: set mask_token_id to {ours} in config.json, or give the "
            f"tokenizer the model's mask token (tok.mask_token = tok.convert_ids_to_tokens({configured}); "
            "tok.save_pretrained(DIR))")
    logger.warning("%s: config.json has mask_token_id %s, the tokenizer's mask token %r is id %s; %s masks "
                   "with the tokenizer's (as its reference pipelines do), so %s is used and written into the "
                   "config (docs/BACKBONES.md, mask token)", source, configured, token, ours, family.name, ours)
    config.mask_token_id = ours


def token_ids(tokenizer, text: str) -> list[int]:
    """``tokenizer(text, add_special_tokens=False)["input_ids"]``, through the fast backend
    when there is one (same ids, about 5x less overhead: generated data is tokenised on the
    fly, once per sample, and counted several times while its length is fitted)."""
    core = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if core is not None:
        return core.encode(text, add_special_tokens=False).ids
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def count_tokens_fn(tokenizer):
    """A cheap text -> token count function for the task generators' length fitting."""
    return lambda text: len(token_ids(tokenizer, text))
