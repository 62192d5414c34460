"""Trainer callbacks: a wall-clock budget (for compute-matched baselines) and the run's record."""

from __future__ import annotations

import time

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState


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


def restored_attributes(state, name: str) -> dict:
    """The attributes a stateful callback saved in the checkpoint being resumed
    (``state.stateful_callbacks``; on a fresh run, its own initial values)."""
    saved = (state.stateful_callbacks or {}).get(name)
    return dict(saved.get("attributes", {})) if isinstance(saved, dict) else {}


class RunRecord(TrainerCallback, ExportableState):
    """The run's identity and running totals, saved in every checkpoint's ``trainer_state.json``.

    Written with the file that marks a checkpoint complete, so a checkpoint always names
    the run it belongs to, and a resumed run continues the totals of the checkpoint it
    resumes (``run_complete.json`` then covers the whole run, not the last segment).
    """

    def __init__(self, run_id: str, config_hash: str):
        self.run_id, self.config_hash = run_id, config_hash
        self.seconds_before = 0.0  # training seconds of the segments before this one
        self.segments = 1
        self.start: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        saved = restored_attributes(state, "RunRecord")
        if saved.get("run_id") == self.run_id and state.global_step > 0:  # a resumed checkpoint of this run
            self.seconds_before = float(saved.get("train_seconds", 0.0))
            self.segments = int(saved.get("segments", 1)) + 1
        self.start = time.perf_counter()

    def train_seconds(self) -> float:
        return self.seconds_before + (time.perf_counter() - self.start if self.start is not None else 0.0)

    def state(self) -> dict:
        return {"args": {"run_id": self.run_id, "config_hash": self.config_hash},
                "attributes": {"run_id": self.run_id, "train_seconds": round(self.train_seconds(), 3),
                               "segments": self.segments}}
