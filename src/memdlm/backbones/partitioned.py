"""Weights a sharding engine has partitioned: the full shape, and a refusal to read them.

DeepSpeed ZeRO-3 keeps each parameter as an empty placeholder outside the forward of its
module (``param.data`` holds 0 elements; the rank's slice is elsewhere) and records the
full shape as ``param.ds_shape``; it gathers the whole tensor just before the module's
forward and releases it after. memdlm reads weights in two places outside a module's own
forward: the fused MoE experts (``memory.experts``: their shapes when the memory's targets
are found, their values in a forward hook that runs after the module's forward) and the
load-time bidirectionality check (``bidirectional.ensure_bidirectional``, a forward before
any engine exists). Shapes are read with :func:`full_shape`, which is right either way;
values of a partitioned weight are refused in one line (:func:`refuse_partitioned`), never
read as an empty tensor. ``check_sharding`` (``training/train.py``) refuses a ZeRO-3 run
before anything loads; these checks hold for any other way a partitioned model arrives.
FSDP2 keeps full shapes (its parameters are DTensors of the global shape) and gathers
within the forward of the module that holds them, so it needs neither.
"""

from __future__ import annotations

import torch

from memdlm.errors import ConfigError


def full_shape(param: torch.Tensor) -> torch.Size:
    """The parameter's whole shape, also when it is a partitioned placeholder."""
    shape = getattr(param, "ds_shape", None)
    return torch.Size(shape) if shape is not None else param.shape


def is_partitioned(param: torch.Tensor) -> bool:
    """Whether ``param`` holds less than its whole tensor right now (a ZeRO-3 placeholder)."""
    return param.numel() != full_shape(param).numel()


def refuse_partitioned(params, what: str) -> None:
    """One line naming the first partitioned parameter of ``params`` (name -> tensor pairs)
    that ``what`` would have to read whole."""
    for name, param in params:
        if is_partitioned(param):
            raise ConfigError(f"{what} reads whole weights, but {name} is partitioned (DeepSpeed ZeRO-3: "
                              f"{param.numel()} of {full_shape(param).numel()} elements here); use ZeRO-2 "
                              "(configs/accelerate/deepspeed_zero2.yaml) or FSDP")

