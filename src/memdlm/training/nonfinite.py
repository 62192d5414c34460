"""Non-finite steps: found before the optimiser applies them, never saved.

A step is non-finite when any micro-batch's loss or any gradient is NaN/inf. It is
checked after the gradients are complete (accumulated, all-reduced, clipped) and
before ``optimizer.step()``, so a bad gradient never reaches the weights, and
therefore never a checkpoint. Weights are checked again before every save (an update
from finite gradients can still overflow in low precision).

Policy (``--max-nonfinite-skips``, default 0): by default the first non-finite step
stops training, naming the step and the last finite checkpoint to resume from (with
a lower learning rate). A bounded number of such steps may instead be skipped: the
gradients are dropped (AdamW leaves parameters without gradients untouched, moments
included), the scheduler still advances, and each skip is logged and counted in
``nonfinite_skipped`` (log history, checkpoints and ``run_complete.json``). Unbounded
skipping is not offered: a run whose steps keep failing is diverging, and would finish
looking fine.
"""

from __future__ import annotations

import logging

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from memdlm.errors import UserError
from memdlm.training.callbacks import any_rank, restored_attributes

logger = logging.getLogger("memdlm")


class NonFiniteStepError(UserError, RuntimeError):
    """Training stopped at a non-finite loss, gradient or weight (reported in one line: the
    user resumes from the named checkpoint with a lower learning rate)."""

    def __init__(self, message: str, step: int | None = None):
        super().__init__(message)
        self.step = step


def nonfinite_flags(tensors) -> list[bool]:
    """For each tensor (None: fine), whether it holds a NaN or inf: one device read for all."""
    present = [t for t in tensors if t is not None]
    flags = iter((~torch.stack([torch.isfinite(t).all() for t in present])).cpu().tolist() if present else [])
    return [False if t is None else next(flags) for t in tensors]


def first_nonfinite(named_tensors) -> str | None:
    """The name of the first tensor holding a NaN or inf (one device sync for all of them)."""
    named = list(named_tensors)
    bad = [name for (name, _), flag in zip(named, nonfinite_flags([t for _, t in named])) if flag]
    return bad[0] if bad else None


class NonFiniteGuard(TrainerCallback, ExportableState):
    """Checks each optimiser step before it is applied; skips or stops (see the module's policy)."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.skipped = 0

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step > 0:  # resumed: the count goes on
            self.skipped = int(restored_attributes(state, "NonFiniteGuard").get("skipped", 0))

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        losses = self.trainer.take_step_losses()
        named = list(model.named_parameters())
        flags = nonfinite_flags(losses + [p.grad for _, p in named])  # the step's one read of the device
        bad_losses = [t for t, flag in zip(losses, flags) if flag]
        loss = bad_losses[0].item() if bad_losses else None
        grad = next((n for (n, _), flag in zip(named, flags[len(losses):]) if flag), None)
        if not any_rank(loss is not None or grad is not None, args.device):
            return
        step = state.global_step + 1  # the step being taken, numbered as logs and checkpoints number them
        parts = ([f"loss {loss}"] if loss is not None else []) + ([f"gradient of {grad}"] if grad else [])
        what = "non-finite " + " and ".join(parts) if parts else "non-finite gradient on another rank"
        if self.skipped < args.max_nonfinite_skips:
            for p in model.parameters():
                p.grad = None  # AdamW skips parameters without a gradient: nothing is applied
            self.skipped += 1
            logger.warning("step %d: %s; skipped, not applied (%d of at most %d, --max-nonfinite-skips)",
                           step, what, self.skipped, args.max_nonfinite_skips)
            return
        allowance = f" after {self.skipped} skipped" if self.skipped else ""
        raise NonFiniteStepError(f"{what} at step {step}{allowance}; the step was not applied", step)

    def state(self) -> dict:
        return {"args": {}, "attributes": {"skipped": self.skipped}}
