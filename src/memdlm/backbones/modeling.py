"""Backbones: the tiny default built from a shipped config, or any local HF model.

The tiny default is a stock ``Gemma3ForCausalLM`` with bidirectional attention
(``use_bidirectional_attention=True``) and full attention in every layer, so a
position sees the whole sequence -- what a masked diffusion model needs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

import torch

from memdlm.backbones.families import family_of
from memdlm.errors import ConfigError, MissingFileError
from memdlm.backbones.bidirectional import ensure_bidirectional
from memdlm.integrity import check_model_files
from memdlm.backbones.lora import is_lora_run, load_lora_run
from memdlm.backbones.remote_code import remote_class_reference
from memdlm.backbones.shipped import missing_model_message, resolve_model
from memdlm.backbones.remote_code import adapt_remote_class, import_remote_class, reset_rotary_buffers

logger = logging.getLogger("memdlm")
INIT_DIR = Path(__file__).parents[1] / "assets" / "init"  # configs of models trained from scratch
TINY_CONFIG = INIT_DIR / "tiny.json"


def init_configs() -> list[str]:
    """Names of the shipped from-scratch configs (``--init-config NAME``)."""
    return sorted(p.stem for p in INIT_DIR.glob("*.json"))


def init_config_path(name_or_path: str | None) -> Path:
    """A shipped config's path by name (default: the tiny Gemma3), or a JSON file's path."""
    if name_or_path is None:
        return TINY_CONFIG
    if (INIT_DIR / f"{name_or_path}.json").is_file():
        return INIT_DIR / f"{name_or_path}.json"
    if Path(name_or_path).is_file():
        return Path(name_or_path)
    raise MissingFileError(f"--init-config {name_or_path!r}: no such file, and not a shipped config "
                            f"(shipped: {', '.join(init_configs())})")


def tiny_config_dict(path: Path | None = None, **overrides) -> dict:
    cfg = json.loads((path or TINY_CONFIG).read_text())
    cfg.update(overrides)
    return cfg


def tiny_head_overrides(heads: int, hidden_size: int | None = None) -> dict:
    """Config fields for ``heads`` attention heads that together span the hidden size."""
    hidden = hidden_size or tiny_config_dict()["hidden_size"]
    if heads < 2 or hidden % heads:
        raise ConfigError(f"--tiny-heads {heads}: need at least 2 heads that divide the hidden size {hidden}")
    head_dim = hidden // heads
    # query_pre_attn_scalar = head_dim keeps the usual 1/sqrt(head_dim) attention scale
    return {"num_attention_heads": heads, "num_key_value_heads": heads // 2, "head_dim": head_dim,
            "query_pre_attn_scalar": head_dim}


def build_tiny_model(tokenizer, seed: int | None = None, config_path: Path | None = None, **overrides):
    """A freshly initialised model sized for ``tokenizer`` from a from-scratch config.

    The config (default: the tiny bidirectional Gemma3, ``assets/init/tiny.json``) is a
    stock transformers config whose ``architectures[0]`` names the class to build;
    ``overrides`` change its fields (e.g. ``num_hidden_layers=10``). The vocabulary and
    special tokens always come from the tokenizer.
    """
    import transformers

    architecture, config = tiny_config(tokenizer, config_path, **overrides)
    if seed is not None:
        torch.manual_seed(seed)
    model = getattr(transformers, architecture)(config)
    make_bidirectional(model)
    return model


def tiny_config(tokenizer, config_path: Path | None = None, **overrides):
    """``(architecture class name, config)`` of the from-scratch model :func:`build_tiny_model`
    builds (``memdlm plan`` builds the same on the meta device)."""
    from transformers import AutoConfig

    cfg = tiny_config_dict(config_path, **overrides)
    architecture = cfg.pop("architectures", ["Gemma3ForCausalLM"])[0]
    model_type = cfg.pop("model_type", "gemma3_text")
    if model_type == "gemma3_text":  # every layer global: a position sees the whole sequence
        cfg["layer_types"] = ["full_attention"] * cfg["num_hidden_layers"]
    config = AutoConfig.for_model(
        model_type, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=None, **cfg)
    config.mask_token_id = tokenizer.mask_token_id
    return architecture, config


def check_remote_code(path: str, trust_remote_code: bool) -> None:
    """A model directory with its own code (``auto_map`` in config.json) needs --trust-remote-code.

    Without it transformers either refuses in a message naming its own argument
    (a model_type it does not know) or, worse, silently loads its stock class for a
    model_type it knows and ignores the directory's code. Both end here, in one line.
    """
    if trust_remote_code:
        return
    from transformers import CONFIG_MAPPING

    config_file = Path(path) / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError):
        return  # no readable config: transformers' own error is the clearer one
    auto_map = config.get("auto_map") if isinstance(config, dict) else None
    if not auto_map:
        return
    model_type = config.get("model_type")
    code = ", ".join(sorted({str(v).split("--")[-1].split(".")[0] + ".py" for v in auto_map.values()
                             if isinstance(v, str)}))
    if model_type in CONFIG_MAPPING:
        raise ConfigError(f"{config_file} maps to its own code ({code}, auto_map) but its model_type "
                          f"{model_type!r} is also a stock transformers class, which would be loaded instead; "
                          "pass --trust-remote-code to run the directory's code, or delete auto_map from "
                          "config.json to use the stock class")
    raise ConfigError(f"{path} holds its own model code ({code}, model_type {model_type!r}); "
                      "pass --trust-remote-code to run it")


def load_model(path: str, trust_remote_code: bool = False, dtype: torch.dtype | None = None,
               quantization_config=None, attn_implementation: str | None = None):
    """Load a local model directory, a shipped model by name or a hub id from the local HF
    cache (no hub downloads: ``local_files_only``; :func:`memdlm.backbones.shipped.resolve_model`).

    ``*ForMaskedLM`` architectures (ModernBERT) load as masked LMs, everything else
    as a causal-LM class made bidirectional (:func:`make_bidirectional`). Remote code
    (``--trust-remote-code``) loads the class its ``auto_map`` names, with the fixes
    4.x-era code needs under transformers 5 (:mod:`memdlm.backbones.remote_code`). Every model is
    then checked to attend bidirectionally in unpadded and padded batches
    (:mod:`memdlm.backbones.bidirectional`). ``quantization_config`` (e.g. bitsandbytes 4-bit) is
    passed to ``from_pretrained``. A LoRA run directory loads as its base plus adapter
    (:mod:`memdlm.backbones.lora`).
    """
    from transformers import AutoConfig


    # 1. find the directory and refuse what cannot load, before transformers reads anything
    path = resolve_model(path)
    if not Path(path).is_dir():
        raise MissingFileError(missing_model_message(path))
    check_remote_code(path, trust_remote_code)
    check_model_files(path)  # a truncated safetensors file: one line naming it, not a loader traceback
    if is_lora_run(path):
        return load_lora_run(path, load_model, trust_remote_code=trust_remote_code, dtype=dtype,
                             quantization_config=quantization_config, attn_implementation=attn_implementation)
    # 2. load the directory's own code or the stock class its config names
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True)
    kwargs = _from_pretrained_kwargs(trust_remote_code, dtype, quantization_config, attn_implementation)
    if getattr(config, "is_encoder_decoder", False):
        raise ConfigError(f"{path}: encoder-decoder models are not supported")
    remote = remote_class_reference(config) if trust_remote_code else None
    if remote is not None:
        model = _load_remote_class(path, config, *remote, kwargs)
    else:
        model = _load_stock_class(path, config, kwargs)
    # 3. every position sees the whole sequence, padded or not
    make_bidirectional(model)
    ensure_bidirectional(model)
    return model


def _from_pretrained_kwargs(trust_remote_code: bool, dtype, quantization_config, attn_implementation) -> dict:
    """``from_pretrained``'s arguments: local files only, and each option only when it is set."""
    kwargs = dict(trust_remote_code=trust_remote_code, local_files_only=True)
    if dtype is not None:
        kwargs["dtype"] = dtype
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
        kwargs["device_map"] = quantized_device()  # bitsandbytes quantises as the weights reach it
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    return kwargs


def _load_remote_class(path: str, config, key: str, reference: str, kwargs: dict):
    """The model class the directory's ``auto_map`` names under ``key``, adapted to transformers 5
    (:mod:`memdlm.backbones.remote_code`), loaded; a bare ``AutoModel`` without an LM head is refused."""

    cls = import_remote_class(path, reference)
    for fix in adapt_remote_class(cls):
        logger.info("%s: %s", path, fix)
    cls.register_for_auto_class(key)  # so save_pretrained copies the code into run directories
    model = cls.from_pretrained(path, config=config, **kwargs)
    if key == "AutoModel" and model.get_output_embeddings() is None:
        raise ConfigError(f"{path}: auto_map names only AutoModel ({reference}), and that class has no LM "
                         "head (get_output_embeddings() is None)")
    reset = reset_rotary_buffers(model)
    if reset:
        logger.info("%s: recomputed %d rotary inv_freq buffers from the config", path, len(reset))
    return model


def _load_stock_class(path: str, config, kwargs: dict):
    """A stock transformers model: ``*ForMaskedLM`` architectures as masked LMs, all others as
    causal LMs (made bidirectional by the caller)."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    architectures = getattr(config, "architectures", None) or []
    loader = AutoModelForMaskedLM if any("MaskedLM" in a for a in architectures) else AutoModelForCausalLM
    return loader.from_pretrained(path, **kwargs)


def quantized_device() -> dict:
    """Where a quantised model is loaded: this process's GPU (LOCAL_RANK under torchrun), else
    the CPU. Trainer cannot move a 4/8-bit model after loading."""
    if torch.cuda.is_available():
        return {"": f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"}
    return {"": "cpu"}


def make_bidirectional(model) -> None:
    """Turn off causal masking where the architecture exposes a switch.

    The switch is the family's (``memdlm.backbones.families``): Gemma3 reads
    ``use_bidirectional_attention`` (set at build time, refused here when False);
    Llama/Qwen-style decoders read ``config.is_causal``, set to False here (as for any
    config that has the attribute); encoders and remote-code DLMs (LLaDA, Dream) are
    bidirectional by design.
    """
    config = model.config
    if getattr(config, "use_bidirectional_attention", None) is False:
        raise ConfigError(
            "this Gemma3 checkpoint was built with causal attention; rebuild it with "
            "use_bidirectional_attention=True (it cannot be switched after loading)")
    if family_of(config).bidirectional == "is_causal" or hasattr(config, "is_causal"):
        config.is_causal = False
    local = [i for i, kind in enumerate(getattr(config, "layer_types", None) or []) if kind == "sliding_attention"]
    if local:  # Gemma3 / ModernBERT: a position sees only a window of the sequence in these layers
        logger.warning("%s: layers %s use local (sliding-window) attention; for long contexts build the "
                       "model with layer_types=['full_attention'] * num_layers (docs/BACKBONES.md)",
                       type(model).__name__, local)


def logits_shift(model) -> bool:
    """Whether position i's logits predict token i+1 (Dream's convention, from its AR init).

    ``config.logits_shift`` decides when set (any checkpoint can opt in or out);
    otherwise the family's entry in ``memdlm.backbones.families`` (on for Dream). With it on,
    everything that reads logits through :func:`logits_only_at` (loss, inner loop,
    sampler, evaluation) gets, for position i, the logits the model computed at i - 1
    (position 0 keeps its own, as Dream's sampler does; it is never masked there).
    """
    config = getattr(unwrap(model), "config", None)  # test doubles may have none
    flag = getattr(config, "logits_shift", None)
    if flag is not None:
        return bool(flag)
    return family_of(config).logits_shift


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def logits_only_at(model, positions: torch.Tensor | None):
    """Make ``model(...).logits`` hold logits only at ``positions`` ([b, l] bool).

    A pre-hook on the output embedding gathers the hidden states at the selected
    positions before the vocabulary projection, so logits are ``[n, V]`` for the n
    selected positions in row-major order. The forward still goes through the
    model's own ``forward`` (and so through DDP/FSDP wrappers). With a large
    vocabulary this is the difference between ``b*l*V`` and ``n*V`` floats.
    """
    shift = logits_shift(model)
    if positions is None and not shift:
        yield
        return
    base = unwrap(model)
    head = logits_input_module(base)
    fired = []

    def gather(_module, args):
        fired.append(True)
        hidden = args[0]
        if shift:  # right-shifted logits (Dream): token i is read from position i - 1
            hidden = torch.cat([hidden[:, :1], hidden[:, :-1]], dim=1)
        if positions is not None:
            hidden = hidden[positions]
        return (hidden,) + tuple(args[1:])

    def check(_module, _args, _output):
        # A head that bypasses the hooked module would return full, unshifted logits:
        # wrong shapes at best, silently misaligned logits at worst.
        if not fired:
            raise RuntimeError(f"{type(base).__name__}: the LM head never called {type(head).__name__}, so "
                               "logits could not be gathered/shifted; set head_input in the family's entry "
                               "in memdlm.backbones.families")
        fired.clear()

    handles = [head.register_forward_pre_hook(gather), base.register_forward_hook(check)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def logits_input_module(model):
    """The module whose first input is the final hidden state [b, l, d]: the output
    embedding, or the family's ``head_input`` (``memdlm.backbones.families``) for heads that do not
    call their output embedding as a module."""
    path = family_of(getattr(model, "config", None)).head_input
    head = model.get_submodule(path) if path else model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embedding to hook")
    return head


def unwrap(model):
    """The underlying transformers model below DDP/accelerate and PEFT wrappers."""
    while hasattr(model, "module"):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


@contextlib.contextmanager
def capture_final_hidden(model, store: list):
    """Append the output embedding's input (the last hidden states) to ``store``.

    Combined with ``logits_only_at`` (entered first), the captured tensor is the
    gathered ``[n, H]`` hidden states at the selected positions.
    """
    head = unwrap(model).get_output_embeddings()
    handle = head.register_forward_pre_hook(lambda _m, args: store.append(args[0]))
    try:
        yield store
    finally:
        handle.remove()


def strip_ddp(model):
    """Remove DDP-style wrappers only (keeps PEFT, whose adapters are part of the model)."""
    while hasattr(model, "module") and not hasattr(model, "get_base_model"):
        model = model.module
    return model


def forward_logits(model, input_ids, attention_mask=None, positions=None) -> torch.Tensor:
    """Logits ``[b, l, V]``, or ``[n, V]`` at ``positions`` when given."""
    with logits_only_at(model, positions):
        out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return out.logits


@contextlib.contextmanager
def reuse_attention_masks(model, attention_mask: torch.Tensor):
    """Build the decoder's attention masks once for several forwards over the same
    ``attention_mask`` (``[b, l]``), e.g. the four model calls of a MemDLM step.

    The first forward inside the block records, per layer type, the mask its layers
    receive; later forwards with the same 2-D mask get that dict instead of rebuilding
    it (the decoder accepts a prepared dict). Families without that entry point
    (``prepared_masks`` in ``memdlm.backbones.families``), and calls with another mask, run unchanged.
    """
    base = unwrap(model)
    decoder = getattr(base, "model", None)
    layers = getattr(decoder, "layers", None)
    if not family_of(base.config).prepared_masks or layers is None:
        yield
        return
    prepared: dict = {}
    layer_types = list(base.config.layer_types)

    def record(index):
        def hook(_module, _args, kwargs):
            prepared.setdefault(layer_types[index], kwargs.get("attention_mask"))
        return hook

    def substitute(_module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if prepared and isinstance(mask, torch.Tensor) and mask is attention_mask:
            kwargs["attention_mask"] = dict(prepared)
            return args, kwargs
        return None

    handles = [layer.register_forward_pre_hook(record(i), with_kwargs=True) for i, layer in enumerate(layers)]
    handles.append(decoder.register_forward_pre_hook(substitute, with_kwargs=True))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
