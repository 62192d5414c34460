"""Noise schedules alpha(t) for masked diffusion (Sahoo et al. 2024, "MDLM").

A schedule gives the probability ``alpha(t)`` that a token is still clean at time
``t`` in [0, 1], so each maskable token is masked with probability ``1 - alpha(t)``.
The MDLM ELBO weights the cross-entropy of a masked token by
``w(t) = -alpha'(t) / (1 - alpha(t))`` (``1/t`` for the linear schedule).

One small class per schedule; ``get_schedule(name)`` looks one up by name.
"""

from __future__ import annotations

import math

import torch

from memdlm.errors import ConfigError


class Schedule:
    """Base class: validates ``t`` and derives the masking probability and ELBO weight."""

    name = "base"

    def alpha(self, t: torch.Tensor) -> torch.Tensor:  # [b] -> [b]
        raise NotImplementedError

    def alpha_derivative(self, t: torch.Tensor) -> torch.Tensor:  # d alpha / dt, [b]
        raise NotImplementedError

    @staticmethod
    def _check(t: torch.Tensor) -> torch.Tensor:
        if not torch.is_floating_point(t):
            raise TypeError(f"t must be a float tensor, got {t.dtype}")
        outside = ((t < 0) | (t > 1)).any()
        if t.device.type == "cuda":  # asserted on the device: reading it here would stall the GPU's queue
            torch._assert_async(~outside, "t must lie in [0, 1]")
        elif outside:
            raise ValueError("t must lie in [0, 1]")
        return t

    def mask_probability(self, t: torch.Tensor) -> torch.Tensor:
        return 1.0 - self.alpha(self._check(t))

    def elbo_weight(self, t: torch.Tensor) -> torch.Tensor:
        t = self._check(t)
        return -self.alpha_derivative(t) / (1.0 - self.alpha(t)).clamp_min(1e-12)


class LinearSchedule(Schedule):
    """alpha(t) = 1 - t: the masked fraction equals t; w(t) = 1/t."""

    name = "linear"

    def alpha(self, t):
        return 1.0 - t

    def alpha_derivative(self, t):
        return -torch.ones_like(t)


class CosineSchedule(Schedule):
    """alpha(t) = cos(pi t / 2): fewer masks early, more late."""

    name = "cosine"

    def alpha(self, t):
        return torch.cos(0.5 * math.pi * t)

    def alpha_derivative(self, t):
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)

    def mask_probability(self, t):
        # 1 - cos(x) = 2 sin^2(x / 2), without float32 cancellation near t = 0
        return 2.0 * torch.sin(0.25 * math.pi * self._check(t)) ** 2

    def elbo_weight(self, t):
        t = self._check(t)
        return -self.alpha_derivative(t) / self.mask_probability(t).clamp_min(1e-12)


SCHEDULES: dict[str, type[Schedule]] = {cls.name: cls for cls in (LinearSchedule, CosineSchedule)}


def get_schedule(name: str) -> Schedule:
    try:
        return SCHEDULES[name]()
    except KeyError:
        raise ConfigError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}") from None
