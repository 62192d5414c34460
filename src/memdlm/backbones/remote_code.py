"""Loading remote-code DLMs written for transformers 4.x (LLaDA, Dream, LLaDA-MoE, LLaDA2)
under transformers 5, fixed from outside their code where that is possible.

What goes wrong, and what is done here (docs/BACKBONES.md has the per-family table and
the table "construct found in real remote code -> what memdlm does"):

- **The auto class.** Dream's ``auto_map`` names ``AutoModel`` only (its ``AutoModel``
  class carries the LM head); LLaDA's names ``AutoModelForCausalLM``. The class is taken
  from ``auto_map`` in that order of preference: masked LM (if the architecture says
  so), causal LM, bare ``AutoModel`` -- the last checked to have an output embedding.
- **The tied-weights contract.** transformers 5 expects ``_tied_weights_keys`` as a dict
  ``{target: source}`` and reads ``all_tied_weights_keys``, which ``post_init`` sets.
  4.x classes declare a list of targets (Dream, LLaDA2) or never call ``post_init``
  (LLaDA). The class is patched once: the list becomes ``{target: <input embedding>.weight}``
  (only when the config ties embeddings, as 4.x did), and ``post_init`` runs if the
  class's own ``__init__`` did not call it.
- **Rotary buffers.** ``inv_freq`` is a non-persistent buffer: not in the checkpoint,
  and transformers 5's meta-device loading leaves it uninitialised for classes it does
  not know (two loads gave different logits). It is recomputed after loading.
- **Names removed in transformers 5 that 4.x code imports.** ``is_torch_fx_available``
  (LLaDA2) is provided while the model's code is imported (its 4.x value, True: ``torch.fx``
  ships with every torch transformers 5 supports), then removed again. Any other import
  that fails is one line naming the file, the line and the fix.
- **``ROPE_INIT_FUNCTIONS["default"]``** (Dream, LLaDA-MoE, LLaDA2 rotary classes): transformers
  5 computes the default rope inside each model and dropped that entry. The model's own
  modules get a copy of the dict with a ``"default"`` entry (the 4.x signature and formula);
  transformers' dict is not touched.
- **``tie_weights(self)`` overrides without ``**kwargs``** (LLaDA): transformers 5 calls
  ``tie_weights(missing_keys=..., recompute_mapping=...)``. The override is called without
  those arguments (it replaced the base method in 4.x, and still does).
- **A device the machine does not have** (dllm's LLaDA builds its layers with
  ``init_device = "cuda"``): without CUDA, tensors the class's ``__init__`` creates on
  ``cuda`` are created on the CPU instead (what the hub's copy of the file, ``"cpu"``, does).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import logging
import re
import sys
import traceback
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

from memdlm.errors import UserError

logger = logging.getLogger("memdlm")

# auto_map keys in the order they are tried (the masked-LM key only for *MaskedLM architectures)
AUTO_KEYS = ("AutoModelForMaskedLM", "AutoModelForCausalLM", "AutoModel")
# Modules / names transformers 5 removed that 4.x remote code imports and that memdlm cannot
# provide, with what the user does about it (the error names the file and line).
REMOVED_MODULES = {
    "transformers.modeling_attn_mask_utils": (
        "it was removed from this transformers. Edit the file: replace the import with the "
        "4-D mask helpers memdlm documents (docs/BACKBONES.md, 'What you do, step by step', 2)"),
}


def _torch_fx_available() -> bool:
    """transformers 4's ``is_torch_fx_available``: True for every torch transformers 5 supports."""
    return True


# Names transformers 5 removed that 4.x remote code imports, provided (module -> name -> value)
# only while that code is imported: each keeps its 4.x meaning.
LEGACY_NAMES = {
    "transformers.utils.import_utils": {"is_torch_fx_available": _torch_fx_available},
    "transformers.utils": {"is_torch_fx_available": _torch_fx_available},
}


class RemoteCodeError(UserError, ImportError):
    """The model directory's own code cannot be imported under this transformers."""


def remote_class_reference(config) -> tuple[str, str] | None:
    """(auto_map key, "module.Class") of the class to load, or None without remote code."""
    auto_map = getattr(config, "auto_map", None) or {}
    architectures = getattr(config, "architectures", None) or []
    masked = any("MaskedLM" in a for a in architectures)
    for key in AUTO_KEYS:
        if key in auto_map and (key != "AutoModelForMaskedLM" or masked):
            return key, auto_map[key]
    return None


def import_remote_class(path: str, reference: str):
    """The class ``reference`` from the model directory's code, with a clear error if it fails."""
    import transformers
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    try:
        with legacy_names():
            return get_class_from_dynamic_module(reference, path, local_files_only=True)
    except ImportError as err:
        missing = _missing_import(err)
        where = _failing_line(err, path) or f"{path}: the model's code ({reference})"
        fix = REMOVED_MODULES.get(missing) or REMOVED_MODULES.get(missing.rpartition(".")[0])
        prefix = f"{where} does not import under transformers {transformers.__version__}"
        if fix:
            raise RemoteCodeError(f"{prefix}: it imports {missing}, but {fix}") from err
        if missing.startswith("transformers"):
            raise RemoteCodeError(
                f"{prefix}: {missing} is not in this transformers (removed or moved in 5.x); edit that line "
                "(import it from where this transformers has it, or define it in the file); "
                "docs/BACKBONES.md lists the constructs memdlm handles") from err
        raise RemoteCodeError(f"{prefix}: {err}") from err


def _missing_import(err: ImportError) -> str:
    """The dotted name an ImportError could not find: a module, or ``module.name`` for
    "cannot import name 'name' from 'module'"."""
    found = re.search(r"cannot import name '([^']+)' from '([^']+)'", str(err))
    return f"{found.group(2)}.{found.group(1)}" if found else (getattr(err, "name", None) or "")


@contextlib.contextmanager
def legacy_names():
    """Provide :data:`LEGACY_NAMES` that this transformers lacks; remove them afterwards (the
    model's module keeps its own reference)."""
    added = []
    for module_name, names in LEGACY_NAMES.items():
        module = importlib.import_module(module_name)
        for name, value in names.items():
            if not hasattr(module, name):
                setattr(module, name, value)
                added.append((module, name))
    try:
        yield
    finally:
        for module, name in added:
            delattr(module, name)


def _failing_line(err: BaseException, path: str) -> str | None:
    """"DIR/FILE line N (`code`)" for the deepest frame of ``err`` in the model's own code
    (transformers runs a copy under its modules cache; the file has the same name in ``path``)."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if "transformers_modules" in Path(f.filename).parts]
    if not frames:
        return None
    frame = frames[-1]
    return f"{Path(path) / Path(frame.filename).name} line {frame.lineno} (`{(frame.line or '').strip()}`)"


def adapt_remote_class(cls) -> list[str]:
    """Fix, once per class, every 4.x construct memdlm knows about; returns what it did, one
    line each (logged at load). Idempotent: a second call returns the first call's lines."""
    if cls.__dict__.get("_memdlm_adapted") is not None:
        return cls._memdlm_adapted
    done = [f"{name}: {what}" for name, what in default_rope_for_modules(cls)]
    if adapt_tie_weights_signature(cls):
        done.append(f"{cls.__name__}.tie_weights() takes no missing_keys/recompute_mapping: called without them")
    patch_tied_weights_contract(cls)
    cls._memdlm_adapted = done
    return done


def patch_tied_weights_contract(cls) -> None:
    """Make a 4.x class meet transformers 5's tied-weights contract (once per class); its
    ``__init__`` also runs with :func:`unavailable_devices_on_cpu`."""
    if cls.__dict__.get("_memdlm_patched"):
        return
    declared = getattr(cls, "_tied_weights_keys", None)
    listed = list(declared) if isinstance(declared, (list, tuple)) else None
    if listed is not None:
        cls._tied_weights_keys = None  # post_init would call .keys() on the list
    original = cls.__init__

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        with unavailable_devices_on_cpu(type(self).__name__):
            original(self, *args, **kwargs)
        if not hasattr(self, "all_tied_weights_keys"):  # 4.x classes that never call post_init
            self.post_init()
        if listed and getattr(self.config, "tie_word_embeddings", False):
            source = f"{_module_name(self, self.get_input_embeddings())}.weight"
            self._tied_weights_keys = {target: source for target in listed}
            self.all_tied_weights_keys = self.get_expanded_tied_weights_keys(all_submodels=False)
            # tie now, as 4.x's post_init did (a class built directly); from_pretrained builds
            # under transformers' no_tie_weights (a no-op here) and ties after loading
            self.tie_weights(recompute_mapping=False)

    cls.__init__ = __init__
    cls._memdlm_patched = True


def adapt_tie_weights_signature(cls) -> bool:
    """A ``tie_weights(self)`` override (no ``**kwargs``) is wrapped to accept and drop
    transformers 5's ``missing_keys`` / ``recompute_mapping``. True when it was wrapped."""
    from transformers import PreTrainedModel

    own = getattr(cls, "tie_weights", None)
    if own is None or own is PreTrainedModel.tie_weights or getattr(own, "_memdlm_wrapped", False):
        return False
    parameters = inspect.signature(own).parameters
    if "recompute_mapping" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return False

    @functools.wraps(own)
    def tie_weights(self, missing_keys=None, recompute_mapping=True, **_ignored):
        # the 4.x override replaced the base method entirely (which tied by config); so here
        return own(self)

    tie_weights._memdlm_wrapped = True
    cls.tie_weights = tie_weights
    return True


def default_rope(config=None, device=None, seq_len=None, **rope_kwargs) -> tuple[torch.Tensor, float]:
    """transformers 4's ``ROPE_INIT_FUNCTIONS["default"]``: ``inv_freq = 1 / base ** (2i / dim)``
    for i < dim / 2, and an attention scaling of 1.

    ``base`` and ``dim`` come from ``rope_kwargs`` when given, else from the config:
    ``rope_theta``, and the head dimension (``head_dim``, else hidden size / heads) times
    ``partial_rotary_factor`` (default 1).
    """
    if "base" in rope_kwargs and "dim" in rope_kwargs:
        base, dim = rope_kwargs["base"], rope_kwargs["dim"]
    else:
        base = _rope_theta(config)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        dim = int(head_dim * getattr(config, "partial_rotary_factor", 1.0))
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float) / dim
    return 1.0 / (float(base) ** exponents), 1.0


def default_rope_for_modules(cls) -> list[tuple[str, str]]:
    """Every module of the model's own code (the package ``cls`` was imported from) whose
    ``ROPE_INIT_FUNCTIONS`` lacks "default" gets its own copy with :func:`default_rope` added.
    Returns (file, what was done) per module changed."""
    package = cls.__module__.rpartition(".")[0]
    changed = []
    for name, module in list(sys.modules.items()):
        if not name.startswith(package + ".") or module is None:
            continue
        table = getattr(module, "ROPE_INIT_FUNCTIONS", None)
        if isinstance(table, dict) and "default" not in table:
            module.ROPE_INIT_FUNCTIONS = {**table, "default": default_rope}
            changed.append((f"{name.rpartition('.')[2]}.py",
                            'ROPE_INIT_FUNCTIONS has no "default" in transformers 5: given the 4.x default rope'))
    return changed


class _DevicesOnCpu(TorchFunctionMode):
    """Tensors asked for on an unavailable CUDA device are created on the CPU instead."""

    def __init__(self):
        super().__init__()
        self.redirected = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = torch.device("cpu")
            self.redirected += 1
        if func is torch.Tensor.to and any(_is_cuda(a) for a in args[1:]):
            args = tuple(torch.device("cpu") if _is_cuda(a) else a for a in args)
            self.redirected += 1
        return func(*args, **kwargs)


def _is_cuda(device) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    return isinstance(device, str) and device.split(":")[0] == "cuda"


@contextlib.contextmanager
def unavailable_devices_on_cpu(owner: str):
    """Without CUDA, tensors created on ``cuda`` inside the block are created on the CPU (a
    model class that builds its layers on ``config.init_device = "cuda"``, as dllm's LLaDA
    does); with CUDA, nothing changes. Logged when it happened."""
    if torch.cuda.is_available():
        yield
        return
    mode = _DevicesOnCpu()
    with mode:
        yield
    if mode.redirected:
        logger.info("%s: built %d tensors on the CPU that its code asked for on CUDA (no CUDA here; "
                    "the hub's copy of LLaDA's file builds on the CPU too)", owner, mode.redirected)


def _module_name(model, module) -> str:
    return next(name for name, m in model.named_modules() if m is module)


def reset_rotary_buffers(model) -> list[str]:
    """Recompute every non-persistent ``inv_freq`` buffer from the config; returns their names.

    The module's own ``rope_init_fn(config, device)`` is used when it has one (4.x
    transformers-style rotary classes, which also handles scaled rope types); otherwise
    the default rope: ``1 / base ** (arange(0, dim, 2) / dim)`` with ``dim`` twice the
    buffer's length and ``base`` the module's ``base`` or the config's ``rope_theta``.
    """
    reset = []
    for name, module in model.named_modules():
        buffer = module._buffers.get("inv_freq")
        if buffer is None or "inv_freq" not in module._non_persistent_buffers_set:
            continue
        fresh = _fresh_inv_freq(module, model.config, buffer)
        with torch.no_grad():
            buffer.copy_(fresh.to(buffer.device, buffer.dtype))
            original = getattr(module, "original_inv_freq", None)
            if isinstance(original, torch.Tensor) and original is not buffer and original.shape == buffer.shape:
                original.copy_(fresh.to(original.device, original.dtype))
        reset.append(f"{name}.inv_freq")
    return reset


def _fresh_inv_freq(module, config, buffer: torch.Tensor) -> torch.Tensor:
    init_fn, own_config = getattr(module, "rope_init_fn", None), getattr(module, "config", None)
    if callable(init_fn) and own_config is not None:
        out = init_fn(own_config, torch.device("cpu"), **getattr(module, "rope_kwargs", {}))
        return out[0] if isinstance(out, tuple) else out
    dim = 2 * buffer.numel()
    base = getattr(module, "base", None) or _rope_theta(config)
    if base is None:
        raise ValueError(f"{type(module).__name__}: cannot recompute inv_freq (no base, no rope_theta in the config)")
    return 1.0 / (float(base) ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


def _rope_theta(config):
    theta = getattr(config, "rope_theta", None)
    if theta is None:
        theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta")
    return theta
