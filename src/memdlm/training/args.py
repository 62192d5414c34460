"""Training arguments: ``transformers.TrainingArguments`` plus our method switch.

Defaults are chosen for the tiny model trained from scratch on a CPU; the paper's
fine-tuning settings (outer LoRA r=32/alpha=64, AdamW lr 2e-5, cosine, warmup 0.1)
are one flag set away: ``--use_lora --learning_rate 2e-5 --warmup_steps 0.1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from transformers import TrainingArguments

from memdlm.config import THREADS_HELP
from memdlm.errors import ConfigError
from memdlm.validation import check_choices, check_range

SEED_MAX = 2**32 - 1


@dataclass
class TrainConfig(TrainingArguments):
    method: Literal["mdlm", "memdlm"] = field(default="mdlm", metadata={
        "help": "mdlm: Standard masked diffusion training. memdlm: bi-level training with parametric "
                "memory (the inner loop's settings are the --inner_* / memory flags)."})
    max_train_minutes: float | None = field(default=None, metadata={
        "help": "Stop training after this many minutes of training (a compute-matched budget)."})
    threads: int | None = field(default=None, metadata={"help": THREADS_HELP})
    max_nonfinite_skips: int = field(default=0, metadata={
        "help": "Optimiser steps with a non-finite loss or gradient that may be skipped (not applied, "
                "counted in nonfinite_skipped and logged) before training stops; 0 stops at the first."})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "Replace another run already in --output-dir (its checkpoints and files are removed "
                "once this run's inputs have been checked). Without it such a directory is refused."})

    # Defaults for the tiny from-scratch model (TrainingArguments' own defaults suit fine-tuning).
    output_dir: str | None = field(default=None, metadata={"help": "Run directory (model, logs, config)."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak AdamW learning rate."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Batch size per device."})
    per_device_eval_batch_size: int = field(default=16, metadata={"help": "Eval batch size per device."})
    max_steps: int = field(default=1500, metadata={"help": "Optimiser steps."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule."})
    warmup_steps: float = field(default=0.05, metadata={
        "help": "Warmup: steps, or a fraction of max_steps when below 1."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    logging_steps: float = field(default=50, metadata={"help": "Log every N steps."})
    eval_strategy: str = field(default="steps", metadata={"help": "When to compute the held-out loss."})
    eval_steps: float | None = field(default=250, metadata={"help": "Held-out loss every N steps."})
    save_strategy: str = field(default="steps", metadata={"help": "When to checkpoint."})
    save_steps: float = field(default=500, metadata={"help": "Checkpoint every N steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep our extra batch columns."})
    prediction_loss_only: bool = field(default=True, metadata={"help": "Do not gather logits in eval."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "Data loader workers."})
    seed: int = field(default=0, metadata={"help": "Seed for init, data order and masking."})

    def __post_init__(self):
        check_choices(self)
        # Ranges TrainingArguments leaves to fail later (or to fall back to epochs: max_steps <= 0).
        check_range(self, "max_steps per_device_train_batch_size per_device_eval_batch_size "
                          "gradient_accumulation_steps", 1)
        check_range(self, "learning_rate warmup_steps weight_decay max_grad_norm adam_epsilon "
                          "max_nonfinite_skips", 0)
        check_range(self, "adam_beta1 adam_beta2", 0, 1, high_open=True)
        check_range(self, "logging_steps save_steps", 0, low_open=True)
        check_range(self, "eval_steps max_train_minutes", 0, low_open=True, optional=True)
        check_range(self, "save_total_limit threads", 1, optional=True)
        check_range(self, "seed", 0, SEED_MAX)  # numpy's seeding takes [0, 2**32 - 1]
        # Without CUDA, Trainer sets up gloo DDP under torchrun and accepts --bf16 only with
        # use_cpu; a CPU-only machine has no other choice, so say it for the user.
        import torch

        if not self.use_cpu and not torch.cuda.is_available() and not torch.backends.mps.is_available():
            self.use_cpu = True
        try:
            super().__post_init__()
        except ValueError as err:  # TrainingArguments' own checks of the flags and their combinations
            raise ConfigError(str(err)) from err
