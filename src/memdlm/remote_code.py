"""Loading remote-code DLMs written for transformers 4.x (LLaDA, Dream, LLaDA-MoE, LLaDA2)
under transformers 5, fixed from outside their code where that is possible.

What goes wrong, and what is done here (docs/BACKBONES.md has the per-family table):

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
- **Imports removed in transformers 5** (``transformers.modeling_attn_mask_utils``): that
  cannot be fixed from outside; the error names the module and the fix.
"""

from __future__ import annotations

import functools
import logging
import re

import torch

from memdlm.errors import UserError

logger = logging.getLogger("memdlm")

# auto_map keys in the order they are tried (the masked-LM key only for *MaskedLM architectures)
AUTO_KEYS = ("AutoModelForMaskedLM", "AutoModelForCausalLM", "AutoModel")
# Modules transformers 5 removed that 4.x remote code imports, with what the user does about it.
REMOVED_MODULES = {
    "transformers.modeling_attn_mask_utils": (
        "it was removed in transformers 5. Edit the model's modeling_*.py: replace the import with the "
        "4-D mask helpers memdlm documents (docs/BACKBONES.md, 'Remote code written for transformers 4')"),
    "transformers.utils.is_torch_fx_available": (
        "it was removed in transformers 5. Edit the model's modeling_*.py: delete the import and treat "
        "its value as True (torch.fx ships with every torch transformers 5 supports; docs/BACKBONES.md)"),
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
        return get_class_from_dynamic_module(reference, path, local_files_only=True)
    except ImportError as err:
        missing = _missing_import(err)
        fix = REMOVED_MODULES.get(missing)
        where = f"{path}: the model's code ({reference}) does not import under transformers {transformers.__version__}"
        if fix:
            raise RemoteCodeError(f"{where}: it imports {missing}, but {fix}") from err
        raise RemoteCodeError(f"{where}: {err}") from err


def _missing_import(err: ImportError) -> str:
    """The dotted name an ImportError could not find: a module, or ``module.name`` for
    "cannot import name 'name' from 'module'"."""
    found = re.search(r"cannot import name '([^']+)' from '([^']+)'", str(err))
    return f"{found.group(2)}.{found.group(1)}" if found else (getattr(err, "name", None) or "")


def patch_tied_weights_contract(cls) -> None:
    """Make a 4.x class meet transformers 5's tied-weights contract (once per class)."""
    if cls.__dict__.get("_memdlm_patched"):
        return
    declared = getattr(cls, "_tied_weights_keys", None)
    listed = list(declared) if isinstance(declared, (list, tuple)) else None
    if listed is not None:
        cls._tied_weights_keys = None  # post_init would call .keys() on the list
    original = cls.__init__

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if not hasattr(self, "all_tied_weights_keys"):  # 4.x classes that never call post_init
            self.post_init()
        if listed and getattr(self.config, "tie_word_embeddings", False):
            source = f"{_module_name(self, self.get_input_embeddings())}.weight"
            self._tied_weights_keys = {target: source for target in listed}
            self.all_tied_weights_keys = self.get_expanded_tied_weights_keys(all_submodels=False)

    cls.__init__ = __init__
    cls._memdlm_patched = True


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
