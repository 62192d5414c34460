"""Where and in which precision inference runs: ``--device`` and ``--dtype`` of every
inference command (generate, eval, exposure-bias, lm-eval, reproduce).

    device = resolve_device(None)        # "cuda" when a GPU is visible, else "cpu"
    dtype = resolve_dtype("bfloat16")    # torch.bfloat16; "auto" or None: the checkpoint's own
    record(model)                        # {"device": "cpu", "dtype": "torch.bfloat16"} for the outputs
"""

from __future__ import annotations

from memdlm.errors import ConfigError
from memdlm.backbones.context import OVERFLOW_CHOICES, OVERFLOW_HELP

DTYPE_CHOICES = ("float32", "bfloat16", "float16", "auto")
DEVICE_HELP = "Where the model runs: cpu, cuda, cuda:1, mps (default: cuda when a GPU is visible, else cpu)."
DTYPE_HELP = ("Weights' precision: float32, bfloat16, float16, or auto (default: the checkpoint's own "
              "dtype, as transformers loads it).")


def resolve_device(name: str | None) -> str:
    import torch

    if name is None or name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"--device {name!r} is not a device ({err}); use cpu, cuda, cuda:1 or mps") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA GPU is visible here; use --device cpu")
    return str(device)


def resolve_dtype(name):
    """A ``torch.dtype``, or "auto" / None (``from_pretrained``'s default: the checkpoint's dtype)."""
    import torch

    if name is None or isinstance(name, torch.dtype):
        return name
    if name not in DTYPE_CHOICES:
        raise ConfigError(f"--dtype {name!r} is not one of {DTYPE_CHOICES}")
    return "auto" if name == "auto" else getattr(torch, name)


def record(model) -> dict:
    """The device and dtype ``model``'s weights are on, for the outputs."""
    param = next(model.parameters())
    return {"device": str(param.device), "dtype": str(param.dtype).replace("torch.", "")}


def add_inference_flags(parser) -> None:
    """``--device``, ``--dtype`` and ``--context-overflow``: one definition for every
    inference command."""

    parser.add_argument("--device", default=None, help=DEVICE_HELP)
    parser.add_argument("--dtype", default=None, choices=DTYPE_CHOICES, help=DTYPE_HELP)
    parser.add_argument("--context-overflow", default=OVERFLOW_CHOICES[0], choices=OVERFLOW_CHOICES,
                        help=OVERFLOW_HELP)

