"""The memory settings' one life (docs/ARCHITECTURE.md): each field written once, in the part
that reads it; the inference override flags generated from the fields for every command; old
run_config.json files load; the one builder gives training's and adaptation's loops."""

from __future__ import annotations

import argparse
from dataclasses import asdict, fields

import pytest
import torch

from memdlm.errors import ConfigError
from memdlm.memory.config import (
    ADAPTATION_FIELDS,
    TRAINING_ONLY_FIELDS,
    AdaptationArguments,
    InnerLoopArguments,
    MemoryArguments,
    adaptation_overrides,
    adaptation_part,
)

INFERENCE_COMMANDS = ("generate", "evaluate", "exposure_bias")


def names(cls) -> list[str]:
    return [f.name for f in fields(cls)]


def override_group(parser: argparse.ArgumentParser) -> list[tuple[tuple[str, ...], str, tuple | None]]:
    (group,) = [g for g in parser._action_groups if g.title.startswith("memory overrides")]
    return [(tuple(a.option_strings), a.help, tuple(a.choices) if a.choices else None) for a in group._group_actions]


def test_each_field_is_written_once_in_the_part_that_reads_it():
    shared, adapt, train = names(InnerLoopArguments), names(AdaptationArguments), names(MemoryArguments)
    assert adapt[:len(shared)] == shared and train[:len(adapt)] == adapt  # parts extend, never repeat
    assert len(set(train)) == len(train) == 21
    assert set(adapt) - set(shared) == {"adapt_mask_ratio"}
    assert set(TRAINING_ONLY_FIELDS) == {"memory_mode", "shared_memory_ranks", "inner_weighting", "absorption_warn"}
    assert tuple(adapt) == ADAPTATION_FIELDS
    args = MemoryArguments(memory_rank=4, memory_mode="per_sample", progressive_ratios=[0.5, 0.1])
    part = adaptation_part(args)
    assert type(part) is AdaptationArguments and asdict(part) == {k: asdict(args)[k] for k in ADAPTATION_FIELDS}
    part.progressive_ratios.append(0.05)  # a copy: the run's own settings are untouched
    assert args.progressive_ratios == [0.5, 0.1]


def test_train_parses_every_part_through_hfargumentparser():
    from memdlm.training.options import parse

    setup, _ = parse(["--output-dir", "/tmp/x", "--memory-rank", "4", "--adapt-mask-ratio", "0.3",
                   "--memory-mode", "per_sample", "--inner-lr", "0.2"])
    assert type(setup.memory) is MemoryArguments
    assert (setup.memory.memory_rank, setup.memory.adapt_mask_ratio, setup.memory.memory_mode,
            setup.memory.inner_lr) == (4, 0.3, "per_sample", 0.2)


def test_a_run_config_written_before_the_split_loads():
    """A saved memory part holds all 21 fields in the old order, nulls for the derived ones."""
    from memdlm.runs.run import Run

    old = {"memory_mode": "per_sample", "shared_memory_ranks": "local", "memory_rank": None, "memory_alpha": None,
           "memory_dense": False, "memory_scope": "ffn_attn", "memory_layer_fraction": 0.5,
           "memory_target_modules": None, "inner_lr": 0.3, "inner_clip": "global", "inner_clip_norm": 2.0,
           "trajectory": "progressive", "pre_anchor_steps": 2, "pre_anchor_scale": 1.5,
           "pre_anchor_target": "broad", "inner_loss": "kl", "loss_positions": "revealed",
           "inner_weighting": "uniform", "progressive_ratios": [0.7, 0.3], "adapt_mask_ratio": 0.4,
           "absorption_warn": 0.1}
    run = Run(None, None, config={"memory": old, "train": {}})
    assert asdict(run.memory_args) == old and run.resolved_memory is None


@pytest.mark.parametrize("command", INFERENCE_COMMANDS)
def test_every_inference_command_takes_the_same_override_flags(command):
    """One flag per adaptation field, with the field's own help text, on every command."""
    import importlib

    from memdlm.memory.config import add_adaptation_flags

    reference = argparse.ArgumentParser()
    add_adaptation_flags(reference)
    want = override_group(reference)
    parser = importlib.import_module(f"memdlm.commands.{command}").build_parser("x")
    assert override_group(parser) == want
    assert [o for o, _, _ in want] == [("--" + n.replace("_", "-"),) for n in ADAPTATION_FIELDS]
    for (_, help_text, _), f in zip(want, fields(AdaptationArguments)):
        assert help_text.startswith(f.metadata["help"]) and "the run's own setting" in help_text
    assert not any(o.startswith("--memory-mode") for a in parser._actions for o in a.option_strings)


def test_override_flags_read_back_typed_and_only_when_given():
    from memdlm.memory.config import add_adaptation_flags

    p = argparse.ArgumentParser()
    add_adaptation_flags(p)
    args = p.parse_args(["--adapt-mask-ratio", "0.3", "--memory-rank", "8", "--memory-dense", "yes",
                         "--trajectory", "anchor_only", "--progressive-ratios", "0.6", "0.2"])
    got = adaptation_overrides(args)
    assert got == {"adapt_mask_ratio": 0.3, "memory_rank": 8, "memory_dense": True, "trajectory": "anchor_only",
                   "progressive_ratios": [0.6, 0.2]}
    AdaptationArguments(**got)  # valid settings
    assert adaptation_overrides(p.parse_args([])) == {}
    with pytest.raises(SystemExit):  # a choice field lists its Literal
        p.parse_args(["--inner-loss", "nope"])
    with pytest.raises(ConfigError, match="--inner-lr: memory overrides, but nothing adapts"):
        adaptation_overrides(p.parse_args(["--inner-lr", "1"]), adapting=False)


def test_generate_refuses_an_override_without_memory(capsys):
    from memdlm.cli import main

    assert main(["generate", "--model", "nowhere", "--prompt", "x", "--inner-lr", "0.5"]) == 2
    assert "--inner-lr" in capsys.readouterr().err


def test_lm_eval_model_arguments_are_typed_from_the_fields():
    pytest.importorskip("lm_eval")
    from memdlm.eval.lm_eval_model import MODEL_ARG_TYPES
    from memdlm.validation import coerce_values

    typed = coerce_values({"inner_lr": "0.5", "memory_rank": "4", "memory_dense": "no", "trajectory": "anchor_only"},
                          MODEL_ARG_TYPES)
    assert typed == {"inner_lr": 0.5, "memory_rank": 4, "memory_dense": False, "trajectory": "anchor_only"}
    assert {"adapt_mask_ratio", "inner_lr", "memory_rank", "memory_alpha", "pre_anchor_steps"} <= set(MODEL_ARG_TYPES)


def test_lm_eval_model_refuses_an_override_without_memory(tok):
    pytest.importorskip("lm_eval")
    from memdlm.backbones.modeling import build_tiny_model
    from memdlm.eval.lm_eval_model import MemdlmLM

    with pytest.raises(ConfigError, match="inner_lr"):
        MemdlmLM(build_tiny_model(tok, seed=0), tokenizer=tok, inner_lr=0.5, device="cpu")


def test_the_builder_gives_the_training_and_adaptation_roles(tok):
    """Per-sample training with uniform weights is the adaptation loop: the same memory, bit for bit."""
    from memdlm.backbones.modeling import build_tiny_model
    from memdlm.config import DiffusionArguments
    from memdlm.memory.builder import ADAPTATION, LoopRole, build_inner_loop, resolve_memory
    from memdlm.memory.inner_loop import prompt_anchor

    model = build_tiny_model(tok, seed=0, num_hidden_layers=2)
    args = MemoryArguments(memory_mode="per_sample", inner_weighting="uniform", memory_layer_fraction=1.0)
    training = build_inner_loop(model, args, LoopRole.training(args, DiffusionArguments()),
                                mask_token_id=tok.mask_token_id)
    adapting = build_inner_loop(model, adaptation_part(args), ADAPTATION, mask_token_id=tok.mask_token_id,
                                resolved=resolve_memory(model, args))
    assert LoopRole.training(args, DiffusionArguments()) == ADAPTATION  # linear schedule, token normalisation
    ids = torch.randint(10, len(tok), (2, 16), generator=torch.Generator().manual_seed(0))
    attn = torch.ones_like(ids)
    x = prompt_anchor(ids, attn, attn.bool(), 0.3, torch.tensor([1, 2]))
    a, b = training.run(x)[0], adapting.run(x)[0]
    assert [t.name for t in a.targets] == [t.name for t in b.targets] and len(a.targets) == 2 * 3  # 2 layers x gate, up, down
    assert all(torch.equal(p, q) for p, q in zip(a.params(), b.params()))
    assert (training.rank, training.scale) == (adapting.rank, adapting.scale)
