"""Trainer callbacks: a wall-clock budget (for compute-matched baselines), the run's record,
and a clean stop on SIGTERM / Ctrl-C."""

from __future__ import annotations

import logging
import signal
import threading
import time

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState
from memdlm.errors import Stopped

logger = logging.getLogger("memdlm")


def any_rank(flag: bool, device) -> bool:
    """True on every rank when true on one (every rank must stop, skip or save at the same step,
    or one waits forever in an all-reduce)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        t = torch.tensor([float(flag)], device=device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())
    return flag


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
        if any_rank(time.perf_counter() - self.start >= self.seconds, args.device):
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
        # Optimiser-step seconds: from Trainer's on_step_begin (first micro-batch's forward) to its
        # on_step_end (after the update), summed over steps and segments. ``train_seconds`` is all
        # wall time from the start; this leaves out what Trainer does between steps -- held-out
        # evaluation, checkpoint saves, logging, fetching the next batches -- so two runs can be
        # matched on the compute of training alone (reproduce/pipeline.training_seconds).
        self.step_seconds = 0.0
        self._step_start: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if self.restore(state):
            self.segments += 1  # this process trains a new segment
        self.start = time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._step_start is not None:
            self.step_seconds += time.perf_counter() - self._step_start
            self._step_start = None

    def restore(self, state) -> bool:
        """Take the totals of the checkpoint behind ``state`` when it is this run's (resumed)."""
        saved = restored_attributes(state, "RunRecord")
        if saved.get("run_id") != self.run_id or state.global_step <= 0:
            return False
        self.seconds_before = float(saved.get("train_seconds", 0.0))
        self.step_seconds = float(saved.get("step_seconds", 0.0))
        self.segments = int(saved.get("segments", 1))
        return True

    def train_seconds(self) -> float:
        return self.seconds_before + (time.perf_counter() - self.start if self.start is not None else 0.0)

    def state(self) -> dict:
        return {"args": {"run_id": self.run_id, "config_hash": self.config_hash},
                "attributes": {"run_id": self.run_id, "train_seconds": round(self.train_seconds(), 3),
                               "step_seconds": round(self.step_seconds, 3), "segments": self.segments}}


class GracefulStop(TrainerCallback):
    """SIGTERM or Ctrl-C during training: finish the step under way, save a checkpoint of it,
    stop. A second signal stops at once (``errors.Stopped``, which the CLI reports in one line).

    Install with ``with stop.installed():`` around ``Trainer.train``; afterwards ``received``
    names the signal (None when training ran to its end). Under several processes every rank
    stops at the same step (one rank's signal is enough).
    """

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self):
        self.received: str | None = None

    def _handle(self, signum, frame):

        name = signal.Signals(signum).name
        if self.received is not None:
            raise Stopped(name, f"stopped by a second {name} during a step; the newest checkpoint "
                                "holds the last saved step")
        self.received = name
        logger.warning("%s: stopping after the step under way and saving a checkpoint of it "
                       "(send it again to stop at once)", name)

    def installed(self):
        import contextlib

        @contextlib.contextmanager
        def handlers():
            if threading.current_thread() is not threading.main_thread():
                yield self
                return
            previous = {name: signal.signal(getattr(signal, name), self._handle) for name in self.SIGNALS}
            try:
                yield self
            finally:
                for name, handler in previous.items():
                    signal.signal(getattr(signal, name), handler)

        return handlers()

    def on_step_end(self, args, state, control, **kwargs):
        if any_rank(self.received is not None, args.device):
            self.received = self.received or "SIGTERM"  # another rank's signal
            control.should_training_stop = True
            control.should_save = True  # a checkpoint of this finished step, whatever --save-strategy says
        return control
