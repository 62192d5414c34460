"""Standard MDLM training as a ``transformers.Trainer`` subclass.

``compute_loss`` reads as the method does: (1) noise the batch, (2) take the
MDLM loss at the noised state. ``MemDLMTrainer`` overrides one hook, ``loss_on``,
to write the memory for the batch first. Masks are drawn from a generator seeded
by (seed, global step, micro-batch index), so a resumed run draws the same masks; the index
counts micro-batches across processes (``micro_batch_index``), so W processes draw what one
process with W times the accumulation draws for the same batches.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import torch
from transformers import Trainer

from memdlm.diffusion.process import NoisedBatch, mdlm_loss, noise_batch
from memdlm.diffusion.masking import seeded_generator
from memdlm.diffusion.schedules import get_schedule
from memdlm.training.nonfinite import NonFiniteGuard, NonFiniteStepError, first_nonfinite
from memdlm.backbones.checkpointing import enable_checkpointing

logger = logging.getLogger("memdlm")
# Logged metrics are means over the logging window's micro-batches, except those named with this
# suffix: their smallest value (a mean would hide one micro-batch's memory absorbing its targets).
MIN_SUFFIX = "_min"


def window_values(metrics: dict[str, list[float]]) -> dict[str, float]:
    """One logged value per metric of a logging window: the mean of the values its micro-batches
    logged, or for a metric named ``..._min`` (:data:`MIN_SUFFIX`) the smallest."""
    return {name: min(values) if name.endswith(MIN_SUFFIX) else sum(values) / len(values)
            for name, values in metrics.items() if values}


class MDLMTrainer(Trainer):
    # Our loss is a per-micro-batch mean: let Trainer divide it by the accumulation steps.
    # (Left as None, Trainer would assume the model scaled it and not divide: with gradient
    # accumulation over k micro-batches the gradient would be k times too large.)
    loss_is_scaled_for_ga = False
    takes_inner_gradients = False  # MemDLM: torch.autograd.grad inside the step (no reentrant checkpointing)

    def __init__(self, *args, diffusion_args, mask_token_id: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.checkpointing = self._enable_checkpointing()
        self.diffusion_args = diffusion_args
        self.schedule = get_schedule(diffusion_args.schedule)
        self.mask_token_id = mask_token_id
        self._metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._micro_step = 0
        self._last_step = -1
        self._eval_batches = 0
        self._step_losses: list[torch.Tensor] = []  # the micro-batches', until the step is checked
        self.nonfinite_guard = NonFiniteGuard(self)
        self.add_callback(self.nonfinite_guard)

    def _enable_checkpointing(self) -> str | None:
        """``--gradient-checkpointing``, for every family (:mod:`memdlm.backbones.checkpointing`): enabled
        here, and the flag then cleared so Trainer does not call the model's own switch again
        (4.x remote code without one would raise)."""
        args = self.args
        if not (getattr(args, "activation_checkpointing", False) or getattr(args, "gradient_checkpointing", False)):
            return None

        kwargs = getattr(args, "activation_checkpointing_kwargs", None) or getattr(args, "gradient_checkpointing_kwargs", None)
        how = enable_checkpointing(self.model, kwargs, memory=self.takes_inner_gradients)
        for name in ("activation_checkpointing", "gradient_checkpointing"):
            if hasattr(args, name):
                setattr(args, name, False)
        logger.info("gradient checkpointing: %s", how)
        return how

    # --- batching -------------------------------------------------------------------------
    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return self._length_grouped(dataset, self.args.train_batch_size * self.args.gradient_accumulation_steps) \
            or super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset):
        return self._length_grouped(eval_dataset, self.args.eval_batch_size) or super()._get_eval_sampler(eval_dataset)

    def _length_grouped(self, dataset, batch_size: int):
        """``group_by_length`` over generated tasks, with lengths from the dataset's plan.

        Trainer's own grouping measures every item's length by generating all of them
        first (200,000 training samples); a generated dataset knows them up front. Batches
        of one length pad nothing, so a mix of short and long contexts trains faster.
        """
        if self.args.train_sampling_strategy != "group_by_length" or not hasattr(dataset, "nominal_lengths"):
            return None
        from transformers.trainer_pt_utils import LengthGroupedSampler

        return LengthGroupedSampler(batch_size, lengths=dataset.nominal_lengths())

    # --- randomness -------------------------------------------------------------------
    def _generator(self, training: bool) -> torch.Generator:
        if training:
            if self.state.global_step != self._last_step:
                self._last_step, self._micro_step = self.state.global_step, 0
            seeds = (self.args.seed, 0, self.state.global_step, self.micro_batch_index(self._micro_step))
            self._micro_step += 1
        else:  # the same eval masks at every evaluation
            seeds = (self.args.seed, self.args.process_index, -1, self._eval_batches)
            self._eval_batches += 1
        return seeded_generator(*seeds, device=self.args.device)

    def micro_batch_index(self, micro_step: int) -> int:
        """This process's micro-batch ``micro_step`` counted across processes: micro-step x
        processes + process. accelerate gives process r of W the batches r, r + W, ..., so W
        processes with accumulation A run, micro-batch by micro-batch, what one process with
        accumulation W x A runs, and draw the same masks (tests/test_distributed.py compares
        the logged losses). In one process it is the micro-step, and the seed's second part
        stays 0 where it used to be the process index, so one-process masks did not change."""
        return micro_step * self.args.world_size + self.args.process_index

    # --- the objective ----------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        training = model.training
        batch = noise_batch(  # (1) x0 -> x_t
            inputs, schedule=self.schedule, weighting=self.diffusion_args.weighting,
            eps=self.diffusion_args.time_eps, mask_token_id=self.mask_token_id,
            generator=self._generator(training),
        )
        loss = self.loss_on(model, batch, training)  # (2) loss at x_t
        if training:  # checked before the optimiser step, with the gradients, in one read (NonFiniteGuard)
            self._step_losses.append(loss.detach())
        elif not torch.isfinite(loss):
            raise NonFiniteStepError(f"non-finite evaluation loss {loss.item()} at step {self.state.global_step}")
        self.log_metric("masked_fraction", batch.masked.sum() / batch.maskable.sum().clamp_min(1), training)
        return (loss, {}) if return_outputs else loss

    def take_step_losses(self) -> list[torch.Tensor]:
        """The micro-batch losses of the current step (then forgotten)."""
        losses, self._step_losses = self._step_losses, []
        return losses

    # --- checkpoints ----------------------------------------------------------------------
    def _save_checkpoint(self, model, trial):
        # Never save a non-finite state: a checkpoint is what --resume trusts.
        bad = first_nonfinite(model.named_parameters())
        if bad is not None:
            raise NonFiniteStepError(f"weight {bad} is non-finite at step {self.state.global_step}; "
                                     "checkpoint not saved")
        super()._save_checkpoint(model, trial)

    def _load_optimizer_and_scheduler(self, checkpoint):
        """Resume with the learning rate asked for now: the scheduler state Trainer restores
        carries the checkpoint's base rate, which would silently win over --learning-rate."""
        super()._load_optimizer_and_scheduler(checkpoint)
        scheduler = getattr(self.lr_scheduler, "scheduler", self.lr_scheduler)  # accelerate's wrapper
        if checkpoint is None or not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
            return
        new = self.args.learning_rate
        if all(base == new for base in scheduler.base_lrs):
            return
        scheduler.base_lrs = [new] * len(scheduler.base_lrs)
        for group, factor in zip(self.optimizer.param_groups, scheduler.lr_lambdas):
            group["initial_lr"] = new
            group["lr"] = new * factor(scheduler.last_epoch)
        scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def loss_on(self, model, batch: NoisedBatch, training: bool) -> torch.Tensor:
        """The loss for one noised batch; subclasses add the memory step here."""
        return mdlm_loss(model, batch, self.diffusion_args.normalization)

    # --- logging (TRL style: merge our metrics into Trainer's logs) ------------------
    def log_metric(self, name: str, value: float | torch.Tensor, training: bool = True,
                   divide_by: int = 1) -> None:
        """Add a value to the mean logged next. A tensor stays on its device until then
        (reading it now would stall a GPU's queue); ``divide_by`` divides it once read, as
        Python divides (a count over a total known on the host)."""
        if isinstance(value, torch.Tensor):
            value = value.detach()
        elif divide_by != 1:
            value = value / divide_by
        self._metrics["train" if training else "eval"][name].append((value, divide_by))

    def _read_metrics(self, mode: str) -> dict[str, list[float]]:
        """The metrics of ``mode`` as Python floats; every tensor among them read in one transfer."""
        metrics = self._metrics[mode]
        tensors = [v for values in metrics.values() for v, _ in values if isinstance(v, torch.Tensor)]
        # float32 holds each value exactly: metrics are float32 (or narrower) or small counts
        read = iter(torch.stack([t.float() for t in tensors]).tolist() if tensors else [])
        return {name: [next(read) / d if isinstance(v, torch.Tensor) else float(v) for v, d in values]
                for name, values in metrics.items()}

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        prefix = "eval_" if mode == "eval" else ""
        logs.update({prefix + name: value for name, value in window_values(self._read_metrics(mode)).items()})
        self._metrics[mode].clear()
        if mode == "eval":
            self._eval_batches = 0
        super().log(logs, start_time)
