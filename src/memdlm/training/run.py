"""Build everything a training run needs from the parsed config, train, save.

The run directory holds: the model and tokenizer (``save_pretrained``), the
resolved config (``run_config.json``), the log history (``log_history.json``),
the data report, the held-out answers (``heldout_eval.json``) and, written last,
``run_complete.json`` -- a directory without it is not a finished run.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from memdlm.config import dump_config
from memdlm.data.collate import DiffusionCollator
from memdlm.data.sources import DataReport, SyntheticTaskDataset, load_file_examples

logger = logging.getLogger("memdlm")


def build_model_and_tokenizer(model_args, seed: int):
    from memdlm.modeling import build_tiny_model, load_model
    from memdlm.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(model_args.model, model_args.trust_remote_code)
    if model_args.model is None:
        overrides = {}
        if model_args.tiny_layers:
            overrides["num_hidden_layers"] = model_args.tiny_layers
        if model_args.tiny_hidden_size:
            overrides["hidden_size"] = model_args.tiny_hidden_size
        if model_args.tiny_intermediate_size:
            overrides["intermediate_size"] = model_args.tiny_intermediate_size
        model = build_tiny_model(tokenizer, seed=seed, **overrides)
    else:
        model = load_model(model_args.model, model_args.trust_remote_code)
    if model_args.use_lora:
        model = wrap_lora(model, model_args)
    return model, tokenizer


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
        train = SyntheticTaskDataset(tokenizer, data_args.tasks, data_args.train_lengths, "train",
                                     data_args.num_train_samples, seed=seed + data_args.data_seed_offset,
                                     mask_prompt=data_args.mask_prompt)
        evals = None
        if data_args.num_eval_samples:
            evals = SyntheticTaskDataset(tokenizer, data_args.tasks, data_args.train_lengths, "eval",
                                         data_args.num_eval_samples, seed=10_000 + seed)
        report = DataReport(source=f"generated tasks {data_args.tasks} at {data_args.train_lengths} tokens",
                            rows_read=len(train), examples_kept=len(train))
        return train, evals, report
    examples, report = load_file_examples(data_args.data, tokenizer, data_args.max_length,
                                          data_args.block_size)
    return examples, None, report


def make_trainer(cfg, model, tokenizer, train, evals):
    from memdlm.training.callbacks import TimeBudgetCallback
    from memdlm.training.mdlm_trainer import MDLMTrainer

    if evals is None and cfg.train.eval_strategy != "no":
        cfg.train.eval_strategy = "no"  # nothing held out (user data without an eval file)
    collator = DiffusionCollator(tokenizer.pad_token_id, tokenizer.eos_token_id,
                                 pad_with_eos=cfg.data.pad_with_eos)
    kwargs = dict(model=model, args=cfg.train, train_dataset=train, eval_dataset=evals,
                  data_collator=collator, processing_class=tokenizer,
                  diffusion_args=cfg.diffusion, mask_token_id=tokenizer.mask_token_id)
    if cfg.train.method == "memdlm":
        from memdlm.training.memdlm_trainer import MemDLMTrainer

        trainer = MemDLMTrainer(memory_args=cfg.memory, **kwargs)
    else:
        trainer = MDLMTrainer(**kwargs)
    if cfg.train.max_train_minutes:
        trainer.add_callback(TimeBudgetCallback(cfg.train.max_train_minutes))
    return trainer


def train(cfg, resume: bool = False) -> dict:
    """Train according to ``cfg`` (a TrainingSetup); returns the run summary."""
    out = Path(cfg.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "run_complete.json").unlink(missing_ok=True)
    torch.set_num_threads(cfg.threads)
    model, tokenizer = build_model_and_tokenizer(cfg.model, cfg.train.seed)
    train_set, eval_set, report = build_datasets(cfg.data, tokenizer, cfg.train.seed)
    (out / "data_report.json").write_text(json.dumps(report.to_dict(), indent=2))
    logger.info(report.summary())
    dump_config(out / "run_config.json", model=cfg.model, data=cfg.data, diffusion=cfg.diffusion,
                memory=cfg.memory, train=cfg.train)
    trainer = make_trainer(cfg, model, tokenizer, train_set, eval_set)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_checkpoint(out) if resume else None)
    train_seconds = time.perf_counter() - start
    save_final(trainer, tokenizer, out)
    summary = {"train_seconds": round(train_seconds, 1), "global_step": trainer.state.global_step,
               "parameters": sum(p.numel() for p in model.parameters()), "method": cfg.train.method,
               "threads": cfg.threads}
    if cfg.data.data is None and cfg.data.heldout_items:
        from memdlm.eval.heldout import evaluate_heldout

        summary["heldout"] = evaluate_heldout(trainer.model, tokenizer, cfg.data, out)
    (out / "run_complete.json").write_text(json.dumps(summary, indent=2))
    return summary


def resume_checkpoint(out: Path) -> str | None:
    """The newest complete checkpoint in ``out`` (Trainer writes ``trainer_state.json`` last)."""
    ckpts = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    complete = [c for c in ckpts if (c / "trainer_state.json").is_file()]
    if not complete:
        logger.warning("--resume: no complete checkpoint in %s; starting from scratch", out)
        return None
    return str(complete[-1])


def save_final(trainer, tokenizer, out: Path) -> None:
    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    history = trainer.state.log_history
    (out / "log_history.json").write_text(json.dumps(history, indent=2))
