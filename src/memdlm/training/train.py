"""Build everything a training run needs from the parsed config, train, save.

The run directory holds: the model and tokenizer (``save_pretrained``), the run's
identity (``run_identity.json``), the resolved config (``run_config.json``), the log
history (``log_history.json``), the data report, the held-out answers
(``heldout_eval.json``) and, written last, ``run_complete.json`` -- a directory without
it is not a finished run. The contract (which directories may be trained into, which
checkpoints resume) is ``memdlm.runs.directory``'s.

Under several processes (torchrun / accelerate) every rank trains, but only the
main process (global rank 0) writes the run directory's files and runs the
held-out evaluation; the other ranks return after training.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from memdlm.config import config_dict
from memdlm.data.collate import DiffusionCollator
from memdlm.data.sources import DataReport, load_file_examples
from memdlm.errors import DiskFullError, Stopped, UserError, disk_full_message
from memdlm.runs.directory import (
    COMPLETE_FILE,
    CONFIG_FILE,
    IDENTITY_FILE,
    RunLock,
    check_output_dir,
    read_json,
    remove_replaced_run,
    resume_checkpoint,
    write_json_atomic,
)
from memdlm.memory.config import RESOLVED_PART
from memdlm.tasks.dataset import SyntheticTaskDataset
from memdlm.tasks.seeds import EVAL_LOSS_SEED
from memdlm.training.callbacks import GracefulStop, RunRecord
from memdlm.training.nonfinite import NonFiniteStepError
from memdlm.backbones.modeling import build_tiny_model, init_config_path, load_model
from memdlm.backbones.tokenizer import load_tokenizer, reconcile_mask_token
from memdlm.errors import ConfigError
from memdlm.backbones.lora import save_built_base, write_base_record
from memdlm.backbones.modeling import tiny_head_overrides
from memdlm.outputs import prepare_output_dir
from memdlm.tasks.haystack import get_haystack
from memdlm.training.callbacks import TimeBudgetCallback
from memdlm.training.mdlm_trainer import MDLMTrainer
from memdlm.training.memdlm_trainer import MemDLMTrainer
from memdlm.eval.heldout import evaluate_heldout
from memdlm.runs.run import Run
from memdlm.backbones.lora import save_merged
from memdlm.backbones.modeling import strip_ddp
from memdlm.memory.builder import resolve_memory
from memdlm.training.nonfinite import first_nonfinite

logger = logging.getLogger("memdlm")


def build_model_and_tokenizer(model_args, seed: int, out: Path | None = None):
    """The model (k-bit prepared with ``--load-in-4bit/8bit``, LoRA-wrapped with
    ``--use-lora``) and tokenizer.

    ``out``: the run directory, given on the main process only; a LoRA run records
    there which base it needs (and a model built from scratch saves its base weights).
    """

    quantization = quantization_config(model_args)  # --load-in-4bit: fails fast, before any loading
    tokenizer = load_tokenizer(model_args.model, model_args.trust_remote_code)
    if model_args.model is None:
        model = build_tiny_model(tokenizer, seed=seed, config_path=init_config_path(model_args.init_config),
                                 **tiny_overrides(model_args))
        if model_args.dtype != "auto":
            model = model.to(weights_dtype(model_args))
    else:
        if model_args.init_config:

            raise ConfigError("--init-config builds a model from scratch; it cannot be combined with --model")
        model = load_model(model_args.model, model_args.trust_remote_code, dtype=weights_dtype(model_args),
                           quantization_config=quantization,
                           attn_implementation=None if model_args.attn_implementation == "auto"
                           else model_args.attn_implementation)
        reconcile_mask_token(model, tokenizer, model_args.model)
        model = prepare_kbit(model, model_args)
    if model_args.use_lora:
        if out is not None:

            if model_args.model is None:
                save_built_base(model, tokenizer, out)
            write_base_record(out, model_args)
        import torch

        # The adapter's random half (A) is drawn here, before Trainer seeds anything: seed it
        # from the run's seed, or two runs of the same seed (Standard and MemDLM with inner
        # lr 0, say) start from different adapters.
        torch.manual_seed(seed)
        model = wrap_lora(model, model_args)
    return model, tokenizer


def tiny_overrides(model_args) -> dict:
    """Config fields the ``--tiny-*`` flags set on a from-scratch model."""

    overrides = {}
    if model_args.tiny_layers:
        overrides["num_hidden_layers"] = model_args.tiny_layers
    if model_args.tiny_hidden_size:
        overrides["hidden_size"] = model_args.tiny_hidden_size
    if model_args.tiny_intermediate_size:
        overrides["intermediate_size"] = model_args.tiny_intermediate_size
    if model_args.tiny_heads:
        overrides.update(tiny_head_overrides(model_args.tiny_heads, overrides.get("hidden_size")))
    if model_args.tiny_overrides:
        overrides.update(parse_overrides(model_args.tiny_overrides))
    return overrides


def make_output_dir(out: Path) -> None:
    """Create the run directory, or fail in one line naming it (a parent that is a file,
    no permission, a read-only file system)."""

    prepare_output_dir(out)


def quantization_config(model_args):
    """bitsandbytes settings for ``--load-in-4bit`` (NF4, double quantisation, bfloat16
    compute: QLoRA) or ``--load-in-8bit`` (LLM.int8); None without either flag.

    Checked in this order, each a one-line error: ``--model`` (the tiny default is built,
    not loaded), ``--use-lora`` (quantised base weights are frozen), the bitsandbytes
    package. A CUDA device is not required: bitsandbytes >= 0.49 runs both on a CPU.
    """
    bits = 4 if getattr(model_args, "load_in_4bit", False) else 8 if getattr(model_args, "load_in_8bit", False) else 0
    if not bits:
        return None

    flag = f"--load-in-{bits}bit"
    if model_args.model is None:
        raise ConfigError(f"{flag} quantises a checkpoint given with --model; the tiny default "
                          "is built in float32")
    if not model_args.use_lora:
        raise ConfigError(f"{flag} freezes the quantised base weights: add --use-lora to train an adapter")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError(f"{flag} needs the bitsandbytes package (pip install bitsandbytes)") from None
    from transformers import BitsAndBytesConfig

    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def weights_dtype(model_args) -> torch.dtype | None:
    """The dtype ``--dtype`` loads the weights in; None keeps the checkpoint's own.

    auto: float32 master weights when every weight is trained (the optimiser updates
    float32 copies; ``--bf16`` computes in bfloat16), the checkpoint's dtype for a frozen
    LoRA base, bfloat16 for the parts of a 4/8-bit model that are not quantised.
    """
    if model_args.dtype != "auto":
        return getattr(torch, model_args.dtype)
    if model_args.load_in_4bit or model_args.load_in_8bit:
        return torch.bfloat16
    return None if model_args.use_lora else torch.float32


def prepare_kbit(model, model_args):
    """peft's k-bit preparation of a 4/8-bit model (norms and the other unquantised weights
    upcast to float32); other models unchanged."""
    if not (model_args.load_in_4bit or model_args.load_in_8bit):
        return model
    from peft import prepare_model_for_kbit_training

    # memdlm enables checkpointing itself (memdlm.backbones.checkpointing: non-reentrant, per block where the
    # model has no switch), so peft is not asked to: its call fails on remote code without a switch.
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def parse_overrides(text: str) -> dict:

    try:
        fields = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"--tiny-overrides {text!r} is not JSON: {err}") from None
    if not isinstance(fields, dict):
        raise ConfigError(f"--tiny-overrides {text!r}: expected a JSON object of config fields")
    return fields


def wrap_lora(model, model_args):
    from peft import LoraConfig, get_peft_model

    targets = model_args.lora_target_modules
    if targets != "all-linear" and "," in targets:
        targets = [t.strip() for t in targets.split(",")]
    config = LoraConfig(r=model_args.lora_r, lora_alpha=model_args.lora_alpha,
                        target_modules=targets, lora_dropout=0.0, bias="none")
    return get_peft_model(model, config)


def build_datasets(data_args, tokenizer, seed: int):
    """(train, eval, report): generated tasks by default, else the user's file."""
    if data_args.data is None:

        haystack = get_haystack(data_args.haystack)
        train = SyntheticTaskDataset(tokenizer, data_args.tasks, data_args.train_lengths, "train",
                                     data_args.num_train_samples, seed=seed + data_args.data_seed_offset,
                                     haystack=haystack, mask_prompt=data_args.mask_prompt)
        evals = None
        if data_args.num_eval_samples:
            # held out at the longest training length (short lengths may be a curriculum only)
            evals = SyntheticTaskDataset(tokenizer, data_args.tasks, [max(data_args.train_lengths)], "eval",
                                         data_args.num_eval_samples, seed=EVAL_LOSS_SEED + seed, haystack=haystack)
        report = DataReport(source=f"generated tasks {data_args.tasks} at {data_args.train_lengths} tokens",
                            rows_read=len(train), examples_kept=len(train))
        return train, evals, report
    examples, report = load_file_examples(data_args.data, tokenizer, data_args.max_length,
                                          data_args.block_size, split=data_args.data_split,
                                          streaming=data_args.data_streaming)
    return examples, None, report


def make_trainer(cfg, model, tokenizer, train, evals, resolved_memory=None):

    if evals is None and cfg.train.eval_strategy != "no":
        cfg.train.eval_strategy = "no"  # nothing held out (user data without an eval file)
    collator = DiffusionCollator(tokenizer.pad_token_id, tokenizer.eos_token_id,
                                 pad_with_eos=cfg.data.pad_with_eos)
    kwargs = dict(model=model, args=cfg.train, train_dataset=train, eval_dataset=evals,
                  data_collator=collator, processing_class=tokenizer,
                  diffusion_args=cfg.diffusion, mask_token_id=tokenizer.mask_token_id)
    if cfg.train.method == "memdlm":

        trainer = MemDLMTrainer(memory_args=cfg.memory, resolved_memory=resolved_memory, **kwargs)
    else:
        trainer = MDLMTrainer(**kwargs)
    if cfg.train.max_train_minutes:
        trainer.add_callback(TimeBudgetCallback(cfg.train.max_train_minutes))
    # Trainer would rebuild stateful callbacks from their saved arguments, dropping the ones
    # this run holds (RunRecord, NonFiniteGuard); they restore their own state instead.
    cfg.train.restore_callback_states_from_checkpoint = False
    return trainer


def train(cfg, resume: bool = False) -> dict:
    """Train according to ``cfg`` (a TrainingSetup); returns the run summary.

    Order matters: the output directory is created, probed and locked (one writer at a
    time), then judged (another run there is refused unless replaced or resumed), then every
    input is checked (model, tokenizer, data), and only then is anything of an earlier run
    removed or the new run's files written. A resumed run already at (or past) --max-steps
    is finished without training another step.
    """
    check_sharding(cfg.train)
    if cfg.data.data_streaming and cfg.train.dataloader_num_workers > 0:

        raise ConfigError("--data-streaming reads rows in the main process (each loader worker would read "
                          "every row again): set --dataloader-num-workers 0")
    out = Path(cfg.train.output_dir)
    make_output_dir(out)
    main = is_main_process(cfg.train)
    lock = RunLock(out).acquire() if main else None
    try:
        return _train_locked(cfg, out, main, resume)
    except Exception as err:  # torch.save on a full disk says neither "disk" nor "space"
        message = disk_full_message(err, out)
        if message is None or isinstance(err, UserError):
            raise
        raise DiskFullError(message) from None
    finally:
        if lock is not None:
            lock.release()


def _train_locked(cfg, out: Path, main: bool, resume: bool) -> dict:
    # 1. judge the directory: a resumed run may have nothing left to train
    config = resolved_config(cfg)
    plan = check_output_dir(out, config, resume, cfg.train.overwrite_output_dir)
    identity = plan["identity"]
    checkpoint = None
    if plan["action"] == "resume":
        done = finished_summary(out, identity["run_id"], cfg.train.max_steps)
        if done is not None:
            return done
        checkpoint = resume_checkpoint(out, identity["run_id"])
        if checkpoint:
            logger.info("--resume: continuing run %s from %s", identity["run_id"], checkpoint)
    # 2. check every input (model, tokenizer, data) before anything in the directory changes
    if cfg.threads is not None:  # an explicit choice; otherwise the caller's setting stands
        torch.set_num_threads(cfg.threads)
    model, tokenizer = build_model_and_tokenizer(cfg.model, cfg.train.seed, out if main else None)
    train_set, eval_set, report = build_datasets(cfg.data, tokenizer, cfg.train.seed)
    config, resolved = memory_resolution(cfg, model, config)
    identity = start_run_files(out, plan, config, report, main)  # every rank: the identity rank 0 wrote
    # 3. train (or finish from a checkpoint already at --max-steps), save, and on rank 0 evaluate
    trainer = make_trainer(cfg, model, tokenizer, train_set, eval_set, resolved)
    record = train_or_restore(trainer, model, cfg, out, identity, checkpoint)
    save_final(trainer, tokenizer, out)
    if main and report.streaming:  # the counts grew while training read the rows
        write_json_atomic(out / "data_report.json", report.to_dict())
        logger.info(report.summary())
    summary = run_summary(cfg, trainer, model, identity, record)
    if not trainer.is_world_process_zero():
        return summary  # rank 0 evaluates and writes the run directory
    return finish_run(summary, cfg, trainer, tokenizer, out, config)


def start_run_files(out: Path, plan: dict, config: dict, report: DataReport, main: bool) -> dict:
    """Inputs checked: rank 0 removes a replaced run and writes the new run's identity, data
    report and config. Returns the run's identity, the one rank 0 drew, on every rank."""
    identity = plan["identity"]
    wait_for_all_ranks()  # every rank has judged the directory before rank 0 changes it
    if main:  # inputs checked: now the directory may change
        if plan["action"] == "replace":
            remove_replaced_run(out)
        (out / COMPLETE_FILE).unlink(missing_ok=True)  # a resumed run is unfinished until it ends
        write_json_atomic(out / IDENTITY_FILE, identity)
        write_json_atomic(out / "data_report.json", report.to_dict())
        logger.info(report.summary())
        write_json_atomic(out / CONFIG_FILE, config)
    wait_for_all_ranks()
    if not main:  # one identity for all ranks: the one rank 0 drew and wrote
        identity = json.loads((out / IDENTITY_FILE).read_text())
    return identity


def train_or_restore(trainer, model, cfg, out: Path, identity: dict, checkpoint: str | None) -> RunRecord:
    """Train to --max-steps from ``checkpoint`` (or the start), or only load a checkpoint that is
    already there. A non-finite step or a stopping signal ends in an error that says how to go on.
    Returns the run's record (its segments and training seconds)."""
    record = RunRecord(identity["run_id"], identity["config_hash"])
    trainer.add_callback(record)
    stop = GracefulStop()
    trainer.add_callback(stop)
    if checkpoint and checkpoint_step(checkpoint) >= cfg.train.max_steps:
        logger.warning("--resume: %s is at step %d, --max-steps is %d: finishing the run from it without "
                       "training", checkpoint, checkpoint_step(checkpoint), cfg.train.max_steps)
        restore_without_training(trainer, checkpoint, record)
    else:
        try:
            with stop.installed():
                trainer.train(resume_from_checkpoint=checkpoint)
        except NonFiniteStepError as err:
            raise NonFiniteStepError(recovery_advice(err, out, identity["run_id"], checkpoint, model),
                                     err.step) from None
    if stop.received and trainer.state.global_step < cfg.train.max_steps:
        raise Stopped(stop.received, stopped_message(stop.received, trainer.state.global_step, out,
                                                     identity["run_id"]))
    return record


def run_summary(cfg, trainer, model, identity: dict, record: RunRecord) -> dict:
    """What ``train`` returns (and ``run_complete.json`` holds, with the held-out answers)."""
    return {"run_id": identity["run_id"], "config_hash": identity["config_hash"],
            "train_seconds": round(record.train_seconds(), 1), "step_seconds": round(record.step_seconds, 3),
            "global_step": trainer.state.global_step,
            **whole_run_loss(trainer.state.log_history), "segments": record.segments,
            "nonfinite_skipped": trainer.nonfinite_guard.skipped,
            "parameters": sum(p.numel() for p in model.parameters()), "method": cfg.train.method,
            "threads": torch.get_num_threads()}


def finish_run(summary: dict, cfg, trainer, tokenizer, out: Path, config: dict) -> dict:
    """Rank 0's end of a run: the held-out evaluation into ``summary``, the merged LoRA model,
    and, last, ``run_complete.json``. Returns ``summary``."""
    if cfg.data.data is None and cfg.data.heldout_items:

        summary["heldout"] = evaluate_heldout(Run(trainer.model, tokenizer, out, config))
    if cfg.model.use_lora and cfg.model.save_merged_lora:

        save_merged(strip_ddp(trainer.model), tokenizer, out)  # merges in place: after everything else
    write_json_atomic(out / COMPLETE_FILE, summary)  # last: marks the run finished
    return summary


def finished_summary(out: Path, run_id: str, max_steps: int) -> dict | None:
    """``run_complete.json`` of a finished run that --resume has nothing to add to (it reached
    --max-steps), or None. Such a run is left exactly as it is."""
    done = read_json(out / COMPLETE_FILE)
    if not isinstance(done, dict) or done.get("run_id") not in (run_id, None) or \
            not isinstance(done.get("global_step"), int) or done["global_step"] < max_steps:
        return None
    logger.warning("--resume: run %s already finished at step %d (--max-steps %d): nothing to train; "
                   "raise --max-steps to train it further", run_id, done["global_step"], max_steps)
    return done


def checkpoint_step(checkpoint: str | Path) -> int:
    return int(Path(checkpoint).name.split("-")[-1])


def restore_without_training(trainer, checkpoint: str, record: RunRecord) -> None:
    """Load ``checkpoint``'s weights and state into ``trainer`` as ``Trainer.train`` would, and
    take no step: the run killed in (or after) its final checkpoint's save is finished from it."""
    from transformers.trainer_callback import TrainerState

    trainer._load_from_checkpoint(checkpoint)
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
    record.restore(trainer.state)  # totals go on; no new segment was trained
    trainer.nonfinite_guard.on_train_begin(trainer.args, trainer.state, trainer.control)


def stopped_message(signal_name: str, step: int, out: Path, run_id: str) -> str:
    """Where a run stopped by a signal can go on from (the checkpoint GracefulStop saved)."""
    last = resume_checkpoint(out, run_id, quiet=True)
    saved = f"{last} holds it" if last and checkpoint_step(last) == step else \
        f"the newest checkpoint is {last}" if last else "no checkpoint was saved"
    return (f"stopped by {signal_name} after step {step}; {saved}: continue with memdlm train --resume "
            f"--output-dir {out} and the same flags")


def check_sharding(train_args) -> None:
    """Sharding memdlm cannot honour is refused in one line, before anything loads:

    - ``--fsdp`` without CUDA devices: accelerate runs the job as DDP, every rank holding
      every weight, so the flag would be silently ignored;
    - DeepSpeed ZeRO-3 (a ``--deepspeed`` config or accelerate's ``deepspeed_config`` with
      stage 3): it partitions every weight outside the forward, where memdlm reads full
      ones -- fused MoE experts when the memory's targets are found, the load-time
      bidirectionality check.
    """
    import torch


    if getattr(train_args, "fsdp", None) and not torch.cuda.is_available():
        raise ConfigError("--fsdp shards over CUDA devices (FSDP through accelerate); on a CPU it would "
                          "run as plain DDP with nothing sharded: drop --fsdp here")
    if zero_stage(train_args) == 3:
        raise ConfigError("DeepSpeed ZeRO-3 partitions the weights that memdlm reads outside the forward "
                          "(MoE experts for the memory's targets, the load-time bidirectionality check): use "
                          "ZeRO-2 (configs/accelerate/deepspeed_zero2.yaml) or FSDP")


def zero_stage(train_args) -> int | None:
    """The DeepSpeed ZeRO stage of the run (``--deepspeed`` file or dict, or accelerate's
    launcher setting), None without DeepSpeed."""
    config = getattr(train_args, "deepspeed", None)
    if isinstance(config, str) and Path(config).is_file():
        config = json.loads(Path(config).read_text())
    if isinstance(config, dict) and isinstance(config.get("zero_optimization"), dict):
        stage = config["zero_optimization"].get("stage")
        if stage is not None:
            return int(stage)
    env = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
    return int(env) if env and env.isdigit() else None


def recovery_advice(err, out: Path, run_id: str, resumed_from: str | None, model) -> str:
    """The error, plus where to go on from: the last finite checkpoint, or -- when the
    very first step after resuming fails -- the news that that checkpoint's weights,
    finite as they are, already diverged (a lower learning rate cannot save them)."""
    last = resume_checkpoint(out, run_id, quiet=True)
    if resumed_from and err.step == int(Path(resumed_from).name.split("-")[-1]) + 1:
        largest = max(p.detach().abs().max().item() for p in model.parameters())
        return (f"{err}; it is the first step after {resumed_from}, whose weights are finite but already "
                f"diverged (largest |weight| {largest:.3g}): resume from an earlier checkpoint (move "
                f"{Path(resumed_from).name} out of {out}) or start again with --overwrite-output-dir")
    if last is None:
        return f"{err}; no checkpoint was saved: start again with a lower --learning-rate"
    return (f"{err}; the last finite checkpoint is {last}: resume from it with --resume and a lower "
            "--learning-rate (or allow a few skipped steps with --max-nonfinite-skips)")


def memory_resolution(cfg, model, config: dict):
    """A MemDLM run's memory resolved once, on the model it trains (rank, alpha, scale, target
    names), and ``config`` with it: the inner loops are built from it, and run_config.json keeps
    it for inference, beside the settings and outside the identity hash (taken before)."""
    if cfg.train.method != "memdlm":
        return config, None

    resolved = resolve_memory(model, cfg.memory)
    return {**config, RESOLVED_PART: resolved.to_dict()}, resolved


def resolved_config(cfg) -> dict:
    """The run's settings as ``run_config.json`` holds them (JSON types)."""
    return config_dict(model=cfg.model, data=cfg.data, diffusion=cfg.diffusion, memory=cfg.memory, train=cfg.train)


def whole_run_loss(log_history: list[dict]) -> dict:
    """Mean training loss over every logged step of the run, resumed segments included.

    Each logged ``loss`` is the mean over the steps since the previous log, so the
    entries are weighted by the steps they cover. The log history is part of every
    checkpoint, so it spans all segments; steps after the last log are not covered
    (``train_loss_steps`` says how many are).
    """
    total, covered, previous = 0.0, 0, 0
    for entry in log_history:
        if "loss" in entry and "step" in entry:
            span = entry["step"] - previous
            total += entry["loss"] * span
            covered += span
            previous = entry["step"]
    return {"train_loss": round(total / covered, 6) if covered else None, "train_loss_steps": covered}


def wait_for_all_ranks() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def is_main_process(args) -> bool:
    """Global rank 0 (also True without distributed training)."""
    _ = args.device  # sets up the distributed state, so process_index is the real rank
    return args.process_index == 0


def save_final(trainer, tokenizer, out: Path) -> None:

    bad = first_nonfinite(trainer.model.named_parameters())
    if bad is not None:  # never save a non-finite state
        raise NonFiniteStepError(f"weight {bad} is non-finite after training; the model was not saved")
    trainer.save_model(str(out))  # writes on the main process only
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(out))
        write_json_atomic(out / "log_history.json", trainer.state.log_history)
