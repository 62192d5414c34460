"""Trainer callbacks: a wall-clock budget (for compute-matched baselines)."""

from __future__ import annotations

import time

import torch
from transformers import TrainerCallback


class TimeBudgetCallback(TrainerCallback):
    """Stops training once ``minutes`` of training wall time have passed."""

    def __init__(self, minutes: float):
        self.seconds = minutes * 60.0
        self.start: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.start is None:
            return control
        stop = time.perf_counter() - self.start >= self.seconds
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Every rank must stop at the same step, or one waits forever in an all-reduce.
            flag = torch.tensor([float(stop)], device=args.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            stop = bool(flag.item())
        if stop:
            control.should_training_stop = True
            control.should_save = True
        return control
