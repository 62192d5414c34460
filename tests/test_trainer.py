"""MDLMTrainer: a few real training steps, the run directory, GA scaling, resumable masks."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from memdlm.cli import main
from memdlm.config import DiffusionArguments
from memdlm.data.collate import DiffusionCollator
from memdlm.tasks.dataset import SyntheticTaskDataset
from memdlm.training.args import TrainConfig
from memdlm.training.mdlm_trainer import MDLMTrainer

RUN_FILES = ("model.safetensors", "tokenizer.json", "run_config.json", "log_history.json",
             "run_complete.json", "data_report.json")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Three optimiser steps of Standard MDLM on the tiny default (2 layers), via the CLI."""
    out = tmp_path_factory.mktemp("run")
    rc = main(["train", "--method", "mdlm", "--output-dir", str(out), "--max-steps", "3",
               "--heldout-items", "0", "--num-eval-samples", "0", "--save-steps", "1000",
               "--tiny-layers", "2", "--per-device-train-batch-size", "4",
               "--train-lengths", "128", "--logging-steps", "1", "--seed", "0"])
    assert rc == 0
    return out


@pytest.mark.slow
def test_run_directory_is_complete(tiny_run):
    for name in RUN_FILES:
        assert (tiny_run / name).is_file(), name
    summary = json.loads((tiny_run / "run_complete.json").read_text())
    assert summary["global_step"] == 3 and summary["method"] == "mdlm"
    config = json.loads((tiny_run / "run_config.json").read_text())
    assert config["train"]["max_steps"] == 3 and config["model"]["tiny_layers"] == 2


@pytest.mark.slow
def test_logged_losses_are_finite(tiny_run):
    history = json.loads((tiny_run / "log_history.json").read_text())
    steps = [h for h in history if "loss" in h]
    assert [h["step"] for h in steps] == [1, 2, 3]
    assert all(math.isfinite(h["loss"]) and h["loss"] > 0 for h in steps)
    assert all(0 < h["masked_fraction"] <= 1 for h in steps)
    assert math.isfinite(next(h["train_loss"] for h in history if "train_loss" in h))


@pytest.mark.slow
def test_every_trainable_parameter_changed(tiny_run, make_tiny_model):
    init = make_tiny_model(seed=0, num_hidden_layers=2)
    again = make_tiny_model(seed=0, num_hidden_layers=2)
    trained = load_file(str(tiny_run / "model.safetensors"))
    for name, p0 in init.named_parameters():
        assert p0.requires_grad
        assert torch.equal(p0, dict(again.named_parameters())[name])  # the init is reproducible
        assert name in trained, name
        delta = (trained[name] - p0.detach()).abs()
        assert delta.max() > 0, f"{name} did not change"
        # Two AdamW steps with lr <= 1e-3 move each weight by about lr at most: the saved model
        # is this init after a few steps, not some other init.
        assert delta.max() < 1e-2, f"{name} moved by {delta.max():.3g}"


# --- the trainer in process -------------------------------------------------------------


@pytest.fixture(scope="module")
def trainer_parts(tok, make_tiny_model, tmp_path_factory):
    train = SyntheticTaskDataset(tok, ["kv"], [128], "train", 16, seed=0)
    collator = DiffusionCollator(tok.pad_token_id, tok.eos_token_id)
    inputs = collator([train[i] for i in range(4)])
    out = tmp_path_factory.mktemp("trainer")

    def make(seed: int = 0, ga: int = 1) -> MDLMTrainer:
        args = TrainConfig(output_dir=str(out), seed=seed, gradient_accumulation_steps=ga,
                           report_to="none", use_cpu=True, disable_tqdm=True, eval_strategy="no")
        return MDLMTrainer(model=make_tiny_model(seed=0), args=args, train_dataset=train,
                           data_collator=collator, diffusion_args=DiffusionArguments(),
                           mask_token_id=tok.mask_token_id)

    return make, inputs


def test_loss_is_not_treated_as_ga_scaled():
    # The loss is a per-micro-batch mean, so Trainer must divide it by the accumulation steps.
    assert MDLMTrainer.loss_is_scaled_for_ga is False


def draws(trainer, n: int = 3) -> list[torch.Tensor]:
    return [torch.rand(16, generator=trainer._generator(True)) for _ in range(n)]


def test_masks_depend_only_on_seed_step_and_micro_step(trainer_parts):
    make, _ = trainer_parts
    first, resumed, other_seed = make(seed=0), make(seed=0), make(seed=1)
    for t in (first, resumed, other_seed):
        t.state.global_step = 5
    a, b, c = draws(first), draws(resumed), draws(other_seed)
    for x, y in zip(a, b):
        assert torch.equal(x, y)  # a fresh (resumed) trainer draws the same masks
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[1], a[2])  # micro-steps differ
    assert all(not torch.equal(x, z) for x, z in zip(a, c))  # the seed matters
    # A new global step restarts the micro-step count: (6, 0) is the same on both trainers.
    first.state.global_step = resumed.state.global_step = 6
    d, e = draws(first, 1)[0], draws(resumed, 1)[0]
    assert torch.equal(d, e) and not torch.equal(d, a[0])


def test_eval_masks_repeat_at_every_evaluation(trainer_parts):
    make, _ = trainer_parts
    trainer = make()
    first = [torch.rand(8, generator=trainer._generator(False)) for _ in range(2)]
    assert not torch.equal(first[0], first[1])
    trainer.log({"eval_loss": 1.0})  # end of an evaluation
    second = [torch.rand(8, generator=trainer._generator(False)) for _ in range(2)]
    assert all(torch.equal(x, y) for x, y in zip(first, second))


def test_compute_loss_reproducible_at_same_step(trainer_parts):
    make, inputs = trainer_parts
    a, b = make(), make()
    a.state.global_step = b.state.global_step = 2
    with torch.no_grad():
        la = a.compute_loss(a.model.eval(), inputs)
        lb = b.compute_loss(a.model.eval(), inputs)  # same weights, other trainer
        lc = a.compute_loss(a.model.eval(), inputs)  # next micro-step: new masks
    assert torch.isfinite(la) and la.item() == lb.item()
    assert lc.item() != la.item()


def test_training_step_divides_by_accumulation_steps(trainer_parts):
    make, inputs = trainer_parts
    trainer = make(ga=2)
    model = trainer.model.train()
    trainer.current_gradient_accumulation_steps = 2
    trainer.state.global_step, trainer._last_step = 0, -1
    model.zero_grad()
    direct = trainer.compute_loss(model, inputs)
    direct.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    trainer._last_step = -1  # replay the same (step, micro-step) masks
    # Trainer passes a token count when the model takes loss kwargs (Gemma3 does); with the
    # attribute left as None it would then assume the loss was already scaled.
    stepped = trainer.training_step(model, inputs, num_items_in_batch=torch.tensor(123))
    assert stepped.item() == pytest.approx(direct.item() / 2, rel=1e-6)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n] / 2, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_too_short_train_length_is_a_user_error(tmp_path, capsys):
    rc = main(["train", "--output-dir", str(tmp_path), "--max-steps", "1", "--heldout-items", "0",
               "--num-eval-samples", "0", "--tiny-layers", "1", "--per-device-train-batch-size",
               "2", "--train-lengths", "32"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "target length 32" in err


# ---------------------------------------------------------------- length-grouped batches


def test_group_by_length_batches_share_a_length_without_generating(tok, make_tiny_model, tmp_path):
    data = SyntheticTaskDataset(tok, ["kv_curriculum"], [32, 64, 128], "train", 1200)
    data.sample = None  # the sampler must read the plan, not generate 1,200 samples
    args = TrainConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, report_to=[],
                       train_sampling_strategy="group_by_length", use_cpu=True, eval_strategy="no")
    trainer = MDLMTrainer(model=make_tiny_model(), args=args, train_dataset=data,
                          data_collator=DiffusionCollator(tok.pad_token_id, tok.eos_token_id),
                          diffusion_args=DiffusionArguments(), mask_token_id=tok.mask_token_id)
    order = list(trainer._get_train_sampler())
    assert sorted(order) == list(range(1200))
    batches = [{data.length_of(i) for i in order[k:k + 4]} for k in range(0, 1200, 4)]
    # one length per batch, except where a mega-batch of 50 batches crosses from one
    # length to the next (at most 2 crossings in each of its 6 mega-batches)
    mixed = sum(len(b) > 1 for b in batches)
    assert mixed <= 2 * 6 and mixed < len(batches) // 20
    args.train_sampling_strategy = "random"
    shuffled = list(trainer._get_train_sampler())
    assert sum(len({data.length_of(i) for i in shuffled[k:k + 4]}) > 1 for k in range(0, 1200, 4)) > 150


def test_nominal_lengths_are_the_generated_lengths(tok):
    data = SyntheticTaskDataset(tok, ["kv_curriculum", "prose"], [32, 64, 128], "train", 12)
    # generated samples fill their length up to the trailing EOS token
    assert [len(data[i]["input_ids"]) - 1 for i in range(12)] == data.nominal_lengths()


@pytest.mark.slow
def test_kv_diagnostics_are_consistent_fractions(tiny_run):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "scripts" / "diagnose_kv.py"
    done = subprocess.run([sys.executable, str(script), str(tiny_run), "--task", "kv_d1", "--items", "6"],
                          capture_output=True, text=True, check=True)
    out = json.loads(done.stdout)
    shot = out["one_shot"]
    assert out["items"] == 6 and len(out["digit_accuracy_by_position"]) == 4
    assert shot["exact"] <= shot["some_value"]
    assert shot["distractor_value"] == pytest.approx(shot["some_value"] - shot["exact"], abs=1e-3)
    assert all(0 <= v <= 1 for v in [*out["digit_accuracy_by_position"], *out["first_digit_revealed"].values()])


def test_in_process_train_keeps_the_callers_threads(tmp_path, monkeypatch):
    """``train`` without an explicit ``threads`` leaves torch's setting alone (the command's
    default, which the environment says is 2 here, is not applied behind the caller's back)."""
    from memdlm.training.options import setup_from_options
    from memdlm.training.train import train

    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    torch.set_num_threads(1)
    setup = setup_from_options({"output_dir": str(tmp_path / "run"), "method": "mdlm", "max_steps": 1,
                                "heldout_items": 0, "num_eval_samples": 0, "save_strategy": "no",
                                "tiny_layers": 1, "per_device_train_batch_size": 2, "train_lengths": [128],
                                "disable_tqdm": True})
    assert setup.threads is None
    try:
        summary = train(setup)
    finally:
        torch.set_num_threads(1)
    assert summary["threads"] == 1
    explicit = setup_from_options({"output_dir": str(tmp_path / "other"), "threads": 2})
    assert explicit.threads == 2  # an explicit choice is kept and applied by train
