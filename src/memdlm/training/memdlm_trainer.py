"""MemDLM bi-level training: the MDLM trainer plus one step, "write the memory".

    (1) noise the batch -> anchor x_t                       (MDLMTrainer)
    (2) inner loop: phi = write_memory(x_t's trajectory)    (memdlm.memory.inner_loop)
    (3) outer loss: MDLM loss at x_t with phi active, phi a constant (first-order)

Fast weights are created per batch and dropped after the step: never in
``model.parameters()``, the optimiser or a checkpoint. Evaluation loss is taken
with memory off (adapting on an eval example's own labels would leak them); the
loss with memory adapted on the prompt alone is logged beside it as
``eval_loss_prompt_memory``.
"""

from __future__ import annotations

import contextlib
import logging

import torch

from memdlm.diffusion.process import NoisedBatch, mdlm_loss
from memdlm.diffusion.loss import absorption_ratio, reduce_loss, scatter_token_nll
from memdlm.memory.adapt import PromptMemory
from memdlm.memory.builder import LoopRole, ResolvedMemory, build_inner_loop
from memdlm.memory.config import adaptation_part
from memdlm.memory.inner_loop import InnerLoop, InnerLoopInputs, step_seed_of
from memdlm.backbones.modeling import reuse_attention_masks, strip_ddp
from memdlm.backbones.split_forward import lower, supports_split, through_wrapper, upper
from memdlm.training.mdlm_trainer import MDLMTrainer

logger = logging.getLogger("memdlm")


class MemDLMTrainer(MDLMTrainer):
    takes_inner_gradients = True

    def __init__(self, *args, memory_args, resolved_memory: ResolvedMemory | None = None, **kwargs):
        """``resolved_memory``: rank, scale and targets resolved before training (``train`` does,
        and writes them to run_config.json); None resolves them at the first step."""
        super().__init__(*args, **kwargs)
        self.memory_args = memory_args
        self.resolved_memory = resolved_memory
        self._loop: InnerLoop | None = None
        self._prompt_memory: PromptMemory | None = None

    def inner_loop(self, model) -> InnerLoop:
        """The training loop, built once; targets are found on the DDP-free (PEFT-kept) model."""
        if self._loop is None:
            self._loop = build_inner_loop(strip_ddp(model), self.memory_args,
                                          LoopRole.training(self.memory_args, self.diffusion_args),
                                          mask_token_id=self.mask_token_id, resolved=self.resolved_memory)
        return self._loop

    def prompt_memory(self, model) -> PromptMemory:
        """The run's own prompt memory (its adaptation settings and resolution), as ``Run.memory()``
        builds it after training: the held-out loss with prompt memory adapts through it."""
        if self._prompt_memory is None:
            self._prompt_memory = PromptMemory(strip_ddp(model), self.processing_class,
                                               adaptation_part(self.memory_args), resolved=self.resolved_memory)
        return self._prompt_memory

    def _step_seed(self) -> int:
        """The seed of a micro-batch's memory initialisation and trajectory masks: per
        micro-batch across processes (``micro_batch_index``, as the outer masks), except for a
        batch-shared memory averaged over the ranks, which every rank must start alike."""
        a = self.memory_args
        shared_over_ranks = a.memory_mode == "shared" and a.shared_memory_ranks == "average"
        micro = self._micro_step - 1  # _generator has counted this micro-batch already
        index = micro if shared_over_ranks else self.micro_batch_index(micro)
        return step_seed_of(self.args.seed, 0, self.state.global_step, index + 1)

    def _logging_step(self) -> bool:
        every = int(self.args.logging_steps) if self.args.logging_steps >= 1 else 1
        return self.state.global_step % every == 0

    def training_step(self, model, inputs, num_items_in_batch=None):
        # The outer memory's hooks stay registered until Trainer's backward has run:
        # gradient checkpointing recomputes the adapted layers during backward, and the
        # recomputation must see the same fast weights as the forward did.
        with contextlib.ExitStack() as stack:
            self._outer_memory = stack
            try:
                return super().training_step(model, inputs, num_items_in_batch)
            finally:
                self._outer_memory = None

    def _activate(self, memory, measure: bool):
        """Enter ``memory`` until the end of the training step (or of a plain call)."""
        ctx = memory.active(measure=measure)
        stack = getattr(self, "_outer_memory", None)
        if stack is None:  # called outside training_step (tests, evaluation helpers)
            return ctx
        stack.enter_context(ctx)
        return contextlib.nullcontext()

    def loss_on(self, model, batch: NoisedBatch, training: bool) -> torch.Tensor:
        if not training:
            return self.eval_loss(model, batch)
        # Every model call of this step reads the same padding mask: build it once.
        with reuse_attention_masks(model, batch.attention_mask):
            return self._bilevel_loss(model, batch)

    def _bilevel_loss(self, model, batch: NoisedBatch) -> torch.Tensor:
        loop = self.inner_loop(model)
        seeds = batch.sample_seed if batch.sample_seed is not None else \
            torch.arange(batch.clean_ids.shape[0], device=batch.clean_ids.device)
        x = InnerLoopInputs(batch.clean_ids, batch.attention_mask, batch.maskable, batch.masked, seeds,
                            self._step_seed())
        measure = self._logging_step()
        loss_off = None
        if measure:  # the absorption diagnostic's denominator: the same anchor, memory off
            with torch.no_grad():
                loss_off = mdlm_loss(model, batch, self.diffusion_args.normalization)
        # FSDP2 leaves no wrapper for supports_split to see; its sharded modules get whole forwards.
        if supports_split(model) and not getattr(self, "is_fsdp_enabled", False):
            # Under DDP all of it is one forward of the wrapper, so the gradients are synchronised.
            loss, (memory, stats) = through_wrapper(model, lambda: self._split_loss(model, batch, loop, x, measure))
        else:
            memory, stats = loop.run(x)  # (2) write the memory
            with self._activate(memory, measure):  # (3) outer loss with phi constant
                loss = mdlm_loss(model, batch, self.diffusion_args.normalization)
        self._record(stats, memory, loss, loss_off)
        return loss

    def _split_loss(self, model, batch: NoisedBatch, loop: InnerLoop, x: InnerLoopInputs, measure: bool):
        """(2) and (3) with the layers below the first adapted layer run once: the anchor
        stage and the outer loss share x_t (with autograd: the outer loss needs it)."""
        k = loop.first_layer_index
        hidden = lower(model, batch.noisy_ids, batch.attention_mask, k)
        memory, stats = loop.run(x, anchor_hidden=hidden)  # (2) write the memory
        with self._activate(memory, measure):  # (3) outer loss with phi constant
            logits = upper(model, hidden, batch.attention_mask, k, batch.masked)
        nll = scatter_token_nll(logits, batch.clean_ids, batch.masked)
        loss = reduce_loss(nll, batch.weight, batch.maskable, self.diffusion_args.normalization)
        return loss, (memory, stats)

    def eval_loss(self, model, batch: NoisedBatch) -> torch.Tensor:
        loss = mdlm_loss(model, batch, self.diffusion_args.normalization)  # memory off
        prompt = batch.attention_mask.bool() & ~batch.maskable
        if prompt.any(1).all():
            with torch.enable_grad():
                memory = self.prompt_memory(model).adapt_positions(batch.clean_ids, batch.attention_mask, prompt,
                                                                   seeds=torch.arange(len(prompt)))
            with memory.active():
                adapted = mdlm_loss(model, batch, self.diffusion_args.normalization)
            self.log_metric("loss_prompt_memory", adapted.item(), training=False)
        return loss

    def _record(self, stats, memory, loss, loss_off) -> None:
        """Every step's statistics stay tensors until Trainer logs them; the diagnostics of a
        logging step (``loss_off`` given) are read now, in one transfer."""
        for name, value in stats.stage_losses.items():
            self.log_metric(f"inner_loss/{name}", value)
        self.log_metric("inner/clip_fraction", stats.clip_fired, divide_by=max(1, stats.clip_checked))
        self.log_metric("inner/skipped_nonfinite", stats.skipped_nonfinite)
        if loss_off is None:
            return
        changes = memory.stats.get("relative_change", [])
        norm, *changes = torch.stack([memory.norm().float(), *(c.float() for c in changes)]).tolist()
        self.log_metric("memory/norm", norm)
        if changes:
            self.log_metric("memory/relative_change", sum(changes) / len(changes))
        ratio = absorption_ratio(loss, loss_off)
        self.log_metric("memory/absorption_ratio", ratio)
        self.log_metric("memory/absorption_ratio_min", ratio)  # logged as the weakest micro-batch's (MIN_SUFFIX)
        if ratio < self.memory_args.absorption_warn:
            logger.warning(
                "step %d: anchor loss with memory is %.3f of the loss without it -- the memory is "
                "absorbing the targets (memorisation collapse); lower --memory_rank or --inner_lr, "
                "or use --memory_mode shared (docs/MEMDLM.md)", self.state.global_step, ratio)
