"""The training step's hot path reads nothing back from the device (issue 24, item 5).

On a GPU every read of a device tensor by the host (``.item()``, ``bool()``, ``int()``,
``.tolist()``) waits until the queue has run dry. A CPU has no queue, so these tests watch
the reads themselves: every scalar read reaches torch's dispatcher as
``aten._local_scalar_dense``, which a dispatch mode sees, and ``Tensor.tolist`` is wrapped.
Reads made by memdlm's own code are counted; those inside transformers are not ours.
The values the sync-free code computes are checked against the host reads they replace.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from batches import random_noised
from torch.utils._python_dispatch import TorchDispatchMode

import memdlm
from memdlm.backbones.modeling import build_tiny_model
from memdlm.config import DiffusionArguments
from memdlm.diffusion.masking import seeded_generator
from memdlm.diffusion.schedules import get_schedule
from memdlm.memory.config import MemoryArguments
from memdlm.memory.fast_weights import FastWeights
from memdlm.memory.inner_loop import InnerLoop, InnerLoopInputs, InnerLoopStats
from memdlm.memory.targets import find_targets
from memdlm.training.args import TrainConfig
from memdlm.training.mdlm_trainer import MDLMTrainer
from memdlm.training.memdlm_trainer import MemDLMTrainer

MEMDLM = str(Path(memdlm.__file__).parent)
# Reads that never touch a GPU: on a CPU the schedule's range check reads t (on a GPU it
# asserts on the device), and the step's seed is drawn from a CPU generator.
CPU_ONLY_READS = {"schedules.py:_check", "inner_loop.py:step_seed_of"}


def _caller() -> str | None:
    """``file:function`` of the innermost memdlm frame, or None when a library's code (not
    called through torch from memdlm) made the read."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(MEMDLM):
            return f"{Path(name).name}:{frame.f_code.co_name}"
        if "/torch/" not in name and name != __file__:
            return None
        frame = frame.f_back
    return None


class HostReads(TorchDispatchMode):
    """Collects memdlm's reads of tensor values by the host while active."""

    def __init__(self):
        super().__init__()
        self.reads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            where = _caller()
            if where is not None and where not in CPU_ONLY_READS:
                self.reads.append(where)
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def watched(monkeypatch):
    mode = HostReads()
    original = torch.Tensor.tolist

    def tolist(self):
        where = _caller()
        if where is not None:
            mode.reads.append(where + " (tolist)")
        return original(self)

    monkeypatch.setattr(torch.Tensor, "tolist", tolist)
    with mode:
        yield mode.reads
    monkeypatch.setattr(torch.Tensor, "tolist", original)


def test_the_watch_sees_each_kind_of_read(monkeypatch):
    from memdlm.diffusion.loss import absorption_ratio

    t = torch.tensor([1.5, 2.0])
    with watched(monkeypatch) as reads:
        InnerLoopStats(stage_losses={"a": t.sum()}, clip_fired=t.sum().long()).summary()  # tolist
        absorption_ratio(t[0], t[1])  # .item()
        t.tolist()  # the test's own read: not memdlm's
    assert reads == ["inner_loop.py:summary (tolist)", "loss.py:absorption_ratio"]


# --- the inner loop ----------------------------------------------------------------------
def _loop(tok, model, per_sample, **kw):
    args = MemoryArguments(memory_layer_fraction=1.0, memory_rank=4, **kw)
    targets = find_targets(model, args.memory_scope, args.memory_layer_fraction, args.memory_target_modules)
    return InnerLoop(model, targets, args, hidden_size=model.config.hidden_size, mask_token_id=tok.mask_token_id,
                     schedule=get_schedule("linear"), per_sample=per_sample, weighting="scheduler")


def _batch(tok):
    return random_noised(tok, length=16, prompt=5, pad_from=12)


@pytest.mark.parametrize("per_sample,clip", [(True, "per_param"), (True, "global"), (False, "per_param")])
def test_inner_loop_run_reads_only_the_seeds(tok, monkeypatch, per_sample, clip):
    model = build_tiny_model(tok, seed=0, num_hidden_layers=2)
    loop = _loop(tok, model, per_sample, inner_clip=clip, inner_clip_norm=0.01)
    ids, attn, maskable, masked, _ = _batch(tok)
    x = InnerLoopInputs(ids, attn, maskable, masked, torch.tensor([7, 8, 9]), 5)
    with watched(monkeypatch) as reads:
        memory, stats = loop.run(x)
    # per-sample memory seeds each slot's generator on the host: the one read
    assert reads == (["inner_loop.py:fresh_memory (tolist)"] if per_sample else [])
    summary = stats.summary()
    assert summary["clip_fired"] > 0 and summary["clip_checked"] == 2 * len(loop.targets) * 2 * memory.num_slots
    assert set(summary["stage_losses"]) == {"pre_anchor_1", "anchor"}


def test_memdlm_training_step_and_guard_read_once(tok, tmp_path, monkeypatch):
    """A non-logging MemDLM step: the seeds' read in the inner loop, none elsewhere; the
    non-finite guard: its one read; logging: one read for every metric held since the last log."""
    model = build_tiny_model(tok, seed=0, num_hidden_layers=3)
    args = TrainConfig(output_dir=str(tmp_path), use_cpu=True, eval_strategy="no", disable_tqdm=True,
                       logging_steps=10**9, report_to="none")
    trainer = MemDLMTrainer(model=model, args=args, diffusion_args=DiffusionArguments(),
                            mask_token_id=tok.mask_token_id, processing_class=tok,
                            memory_args=MemoryArguments(memory_mode="per_sample"))
    trainer.current_gradient_accumulation_steps = 1
    trainer.state.global_step = 1  # not a logging step
    ids, attn, maskable, _, _ = _batch(tok)
    labels = torch.where(maskable, ids, torch.full_like(ids, -100))
    inputs = {"input_ids": ids, "attention_mask": attn, "labels": labels, "sample_seed": torch.tensor([7, 8, 9])}
    model.train()
    with watched(monkeypatch) as reads:
        trainer.training_step(model, dict(inputs))
    assert reads == ["inner_loop.py:fresh_memory (tolist)"]
    with watched(monkeypatch) as reads:
        trainer.nonfinite_guard.on_pre_optimizer_step(args, trainer.state, None, model=model)
    assert reads == ["nonfinite.py:nonfinite_flags (tolist)"]
    logs = {}
    trainer.callback_handler.on_log = lambda *a, **k: None
    with watched(monkeypatch) as reads:
        MemDLMTrainer.log(trainer, logs)
    assert reads == ["mdlm_trainer.py:_read_metrics (tolist)"]
    assert {"inner_loss/anchor", "inner/clip_fraction", "inner/skipped_nonfinite", "masked_fraction"} <= set(logs)
    assert logs["inner/skipped_nonfinite"] == 0 and 0 < logs["masked_fraction"] <= 1


# --- the values equal the host reads they replace ---------------------------------------------
def test_fresh_a_is_each_slot_and_target_own_draw(tok):
    """The batched draw gives exactly the numbers of one generator per (slot seed, target)."""
    model = build_tiny_model(tok, seed=0, num_hidden_layers=2)
    targets = find_targets(model, "ffn", 1.0, None)
    assert len({t.in_features for t in targets}) > 1  # targets of different widths share the buffer
    seeds = [11, 5, 11 * 7919 + 3]
    fresh = FastWeights.fresh(targets, rank=3, scale=2.0, dense=False, slot_seeds=seeds, device="cpu")
    for ti, (t, (a, b)) in enumerate(zip(targets, fresh.tensors)):
        bound = 1.0 / math.sqrt(t.in_features)
        expected = torch.stack([(torch.rand(3, t.in_features, generator=seeded_generator(s, ti)) * 2 - 1) * bound
                                for s in seeds])
        assert torch.equal(a, expected)
        assert torch.equal(b, torch.zeros(3, t.out_features, 3))
    alone = FastWeights.fresh(targets, rank=3, scale=2.0, dense=False, slot_seeds=seeds[1:2], device="cpu")
    assert all(torch.equal(x[0], y[1]) for x, y in zip(alone.params(), fresh.params()))  # batch-invariant


@pytest.mark.parametrize("bad", [[], [1], [0, 2], [0, 1, 2, 3]])
def test_stage_mean_and_count_equal_the_host_reads(bad):
    """All finite: bit-equal to ``losses[finite].mean().item()`` (the same sum over the same
    order, divided by the same count). Some bad: their zeros join the sum, which may round
    differently in the last place (1e-6). None finite: NaN, as before."""
    losses = torch.rand(4, generator=torch.Generator().manual_seed(3)) * 3
    losses[bad] = torch.tensor([math.nan, math.inf, -math.inf, math.nan][:len(bad)])
    finite = torch.isfinite(losses)
    stats = InnerLoopStats()
    stats.add_stage("anchor", losses, finite)
    stats.add_stage("anchor", losses, finite)  # a second micro-step: counts add up
    summary = stats.summary()
    old = losses[finite].mean().item() if finite.any() else float("nan")
    if not bad:
        assert summary["stage_losses"]["anchor"] == old
    elif len(bad) == 4:
        assert math.isnan(summary["stage_losses"]["anchor"])
    else:
        assert summary["stage_losses"]["anchor"] == pytest.approx(old, rel=1e-6)
    assert summary["skipped_nonfinite"] == 2 * len(bad)


def test_logged_means_equal_the_per_value_reads():
    """Tensors held until the log give the floats ``.item()`` gave, so the logged means are
    the same numbers; a count divided at the log is Python's division, as before."""
    trainer = MDLMTrainer.__new__(MDLMTrainer)  # the metric store alone, no Trainer
    trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    values = torch.rand(5, generator=torch.Generator().manual_seed(1), dtype=torch.float32) / 3
    for v in values:
        trainer.log_metric("x", v)
        trainer.log_metric("clip", (v * 100).long(), divide_by=7)
    trainer.log_metric("x", 0.25)  # a float still works
    read = trainer._read_metrics("train")
    assert read["x"] == [v.item() for v in values] + [0.25]
    assert read["clip"] == [int((v * 100).long()) / 7 for v in values]
