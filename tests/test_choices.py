"""Choice names are written once, in the config field's ``Literal``; the registry that maps
each name to its class or function must hold exactly those names. Unknown names are
ConfigErrors listing the valid ones."""

from __future__ import annotations

import typing
from dataclasses import fields

import pytest

from memdlm.config import DiffusionArguments
from memdlm.errors import ConfigError
from memdlm.diffusion.loss import NORMALIZATIONS, WEIGHTINGS
from memdlm.memory.config import MemoryArguments
from memdlm.memory.fast_weights import CLIPPERS
from memdlm.memory.inner_losses import INNER_LOSS_CLASSES, get_inner_loss
from memdlm.memory.trajectories import TRAJECTORY_CLASSES, get_trajectory
from memdlm.sampling.sampler import REMASKING, SamplerConfig
from memdlm.diffusion.schedules import SCHEDULES, get_schedule


def literal(cls, name: str) -> set:
    hints = typing.get_type_hints(cls)
    assert name in {f.name for f in fields(cls)}
    return set(typing.get_args(hints[name]))


@pytest.mark.parametrize("cls, field_name, registry", [
    (MemoryArguments, "trajectory", TRAJECTORY_CLASSES),
    (MemoryArguments, "inner_loss", INNER_LOSS_CLASSES),
    (MemoryArguments, "inner_clip", CLIPPERS),
    (MemoryArguments, "inner_weighting", WEIGHTINGS),
    (DiffusionArguments, "schedule", SCHEDULES),
    (DiffusionArguments, "weighting", WEIGHTINGS),
    (DiffusionArguments, "normalization", NORMALIZATIONS),
    (SamplerConfig, "remasking", REMASKING),
])
def test_literal_equals_registry(cls, field_name, registry):
    assert literal(cls, field_name) == set(registry)


def test_registry_entries_carry_their_own_name():
    assert all(c.name == name for name, c in {**TRAJECTORY_CLASSES, **INNER_LOSS_CLASSES}.items())


def test_only_losses_that_need_just_the_students_logits_take_the_split_forward():
    """InnerLoop.run reads this property instead of comparing the loss's name."""
    assert {name for name, c in INNER_LOSS_CLASSES.items() if c.accepts_split_forward} == {"ce"}


def test_inner_losses_share_one_teacher_and_one_student_signature():
    """The inner loop calls every loss the same way (``forward=`` included)."""
    import inspect

    from memdlm.memory.inner_losses import InnerLoss

    for cls in INNER_LOSS_CLASSES.values():
        for method in ("teacher", "student"):
            assert inspect.signature(getattr(cls, method)) == inspect.signature(getattr(InnerLoss, method)), \
                (cls.name, method)


@pytest.mark.parametrize("name", ["kl", "reverse_kl", "hidden_mse", "hidden_cosine"])
def test_a_loss_that_runs_its_own_forward_refuses_a_split_forward(name):
    import torch

    from memdlm.memory.trajectories import Stage, StageRole

    positions = torch.tensor([[True, False]])
    stage = Stage("anchor", positions, positions, torch.zeros_like(positions), StageRole.ANCHOR)
    with pytest.raises(ValueError, match=f"inner loss '{name}'.*takes no split forward"):
        get_inner_loss(name).student(None, torch.tensor([[0, 1]]), None, stage, 2, None,
                                     forward=lambda _positions: torch.zeros(1, 3))


def test_unknown_names_are_config_errors_listing_the_choices():
    with pytest.raises(ConfigError, match="unknown inner loss 'x'.*'ce'"):
        get_inner_loss("x")
    args = MemoryArguments()
    object.__setattr__(args, "trajectory", "x")  # past the dataclass's own check
    with pytest.raises(ConfigError, match="unknown trajectory 'x'.*'progressive'"):
        get_trajectory(args)
    with pytest.raises(ConfigError, match="unknown schedule 'x'.*'cosine'"):
        get_schedule("x")
