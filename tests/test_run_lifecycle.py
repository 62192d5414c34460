"""A run's life without silent wrong results: a reused output directory, a resumed run,
a non-finite step, a half-deleted checkpoint, an unfinished run given to inference.

Each test runs ``memdlm.cli.main`` in process on the tiny model (1 layer, width 32) for
a few steps; a kill is simulated by ``Killed`` (a BaseException nothing catches, unlike
KeyboardInterrupt, which the CLI turns into a clean stop) raised from the loss at a chosen
step, which leaves the directory as a SIGKILL after that step's checkpoint would
(the real SIGKILL test is ``test_resume.test_killed_run_resumes_exactly``).
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from memdlm.cli import main
from memdlm.runs.directory import LOCK_FILE, missing_checkpoint_files, resume_checkpoint
from memdlm.training.mdlm_trainer import MDLMTrainer

torch.set_num_threads(1)

TINY = ["--tiny-layers", "1", "--tiny-hidden-size", "32", "--tiny-intermediate-size", "64"]
QUICK = ["--per-device-train-batch-size", "2", "--train-lengths", "96", "--heldout-items", "0",
         "--num-eval-samples", "0", "--logging-steps", "1", "--save-steps", "2", "--disable-tqdm", "true"]


def train_argv(out, *extra, steps: int = 4, seed: int = 0) -> list[str]:
    return ["train", "--method", "mdlm", "--output-dir", str(out), "--max-steps", str(steps), "--seed", str(seed),
            *TINY, *QUICK, *extra]


def error_line(capsys, rc: int, command: str = "train") -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.startswith(f"memdlm {command}: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def read(path):
    return json.loads(path.read_text())


def weights(path):
    return load_file(str(path / "model.safetensors"))


def same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Killed(BaseException):
    """A simulated kill -9: no handler of ours catches it."""


def interrupt_at(monkeypatch, step: int, also=None):
    """Raise Killed when the loss of optimiser step ``step`` (1-based) is taken."""
    original = MDLMTrainer.loss_on

    def loss_on(self, model, batch, training):
        if training and self.state.global_step + 1 == step:
            raise Killed
        if also is not None:
            also(self)
        return original(self, model, batch, training)

    monkeypatch.setattr(MDLMTrainer, "loss_on", loss_on)


@pytest.fixture()
def finished(tmp_path):
    """A finished 4-step run (seed 0) with checkpoints 2 and 4."""
    out = tmp_path / "run"
    assert main(train_argv(out)) == 0
    return out


# --- a used output directory ---------------------------------------------------------------------
def test_training_into_another_runs_directory_is_refused_and_changes_nothing(finished, capsys):
    def stamps():  # the lock file is the refused process's to take and release, not the run's
        return {p.name: p.stat().st_mtime_ns for p in finished.iterdir() if p.name != LOCK_FILE}

    before = stamps()
    old_weights = weights(finished)
    line = error_line(capsys, main(train_argv(finished, seed=1)))
    run_id = read(finished / "run_identity.json")["run_id"]
    assert f"--output-dir {finished} already holds run {run_id} (finished at step 4" in line
    assert "--resume" in line and "--overwrite-output-dir" in line
    assert stamps() == before  # nothing touched
    assert same_weights(weights(finished), old_weights)


def test_a_model_directory_is_not_trained_over(tmp_path, capsys, make_tiny_model):
    """A saved model given as --output-dir would have its weights overwritten."""
    model_dir = tmp_path / "model"
    make_tiny_model(num_hidden_layers=1).save_pretrained(model_dir)
    line = error_line(capsys, main(train_argv(model_dir)))
    assert "already holds a model or run not made by memdlm train (config.json, model.safetensors)" in line
    line = error_line(capsys, main(train_argv(model_dir, "--resume", "--overwrite-output-dir")))
    assert "give one of them" in line


def test_resume_with_other_settings_is_refused_naming_them(finished, capsys):
    line = error_line(capsys, main(train_argv(finished, "--resume", seed=1)))
    assert "made with other settings (train.seed: 0 -> 1)" in line
    assert read(finished / "run_config.json")["train"]["seed"] == 0


def test_overwrite_checks_inputs_before_deleting_the_old_run(finished, tmp_path, capsys):
    """A replacement run that stops on bad data leaves the old run whole (before: the old
    run_complete.json was deleted before the data was read)."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p"}\n')
    rc = main(train_argv(finished, "--overwrite-output-dir", "--data", str(bad), seed=1))
    assert "missing field 'response'" in error_line(capsys, rc)
    assert (finished / "run_complete.json").is_file()
    assert sorted(p.name for p in finished.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert read(finished / "run_config.json")["train"]["seed"] == 0


def test_replaced_run_killed_then_resumed_uses_only_its_own_checkpoints(finished, monkeypatch):
    """The issue's case: a new run (seed 1) in an old run's directory is killed after its own
    checkpoint-2; --resume must continue it, never the old run's checkpoint-4. The result
    equals an uninterrupted seed-1 run, and differs from the old seed-0 model."""
    old = weights(finished)
    old_id = read(finished / "run_identity.json")["run_id"]
    interrupt_at(monkeypatch, 3)
    with pytest.raises(Killed):
        main(train_argv(finished, "--overwrite-output-dir", seed=1))
    new_id = read(finished / "run_identity.json")["run_id"]
    assert new_id != old_id
    assert [p.name for p in finished.glob("checkpoint-*")] == ["checkpoint-2"]  # the old ones are gone
    assert not (finished / "run_complete.json").exists()
    monkeypatch.undo()

    assert main(train_argv(finished, "--resume", seed=1)) == 0
    summary = read(finished / "run_complete.json")
    assert summary["run_id"] == new_id and summary["segments"] == 2 and summary["global_step"] == 4
    reference = finished.parent / "reference"
    assert main(train_argv(reference, seed=1)) == 0
    assert same_weights(weights(finished), weights(reference))
    assert not same_weights(weights(finished), old)


def test_resume_skips_checkpoints_of_another_run(tmp_path):
    """Checkpoints name their run (RunRecord in trainer_state.json); another run's are skipped
    even when newer."""
    def checkpoint(step, run_id):
        ckpt = tmp_path / f"checkpoint-{step}"
        ckpt.mkdir()
        save_file({"w": torch.zeros(1)}, str(ckpt / "model.safetensors"))
        for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
            torch.save({}, ckpt / name)
        state = {"global_step": step, "stateful_callbacks": {"RunRecord": {"attributes": {"run_id": run_id}}}}
        (ckpt / "trainer_state.json").write_text(json.dumps(state))

    checkpoint(2, "mine")
    checkpoint(40, "theirs")
    assert resume_checkpoint(tmp_path, "mine") == str(tmp_path / "checkpoint-2")
    assert resume_checkpoint(tmp_path, "theirs") == str(tmp_path / "checkpoint-40")


# --- half-written checkpoints ---------------------------------------------------------------------
REQUIRED = ["model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"]


@pytest.mark.parametrize("gone", REQUIRED)
def test_checkpoint_missing_any_file_a_resume_needs_is_skipped(finished, gone, caplog):
    """Killed during rotation (rmtree deletes file by file): trainer_state.json alone does not
    make a checkpoint complete (before: accepted, and resumed with a fresh optimizer)."""
    (finished / "checkpoint-4" / gone).unlink()
    assert missing_checkpoint_files(finished / "checkpoint-4") and \
        missing_checkpoint_files(finished / "checkpoint-2") == []
    run_id = read(finished / "run_identity.json")["run_id"]
    assert resume_checkpoint(finished, run_id) == str(finished / "checkpoint-2")
    assert "checkpoint-4 is incomplete (missing" in caplog.text


def test_half_deleted_checkpoint_resumes_from_the_previous_one_exactly(finished, tmp_path, monkeypatch):
    """End to end: checkpoint-4 loses its optimizer, scheduler and RNG state; --resume with 6
    steps continues from checkpoint-2, exactly as a run cut after checkpoint-2 and resumed
    with 6 steps does (before: checkpoint-4 with a fresh optimizer and warmup)."""
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        (finished / "checkpoint-4" / name).unlink()
    assert main(train_argv(finished, "--resume", steps=6)) == 0
    reference = tmp_path / "reference"
    interrupt_at(monkeypatch, 3)
    with pytest.raises(Killed):
        main(train_argv(reference))
    monkeypatch.undo()
    assert main(train_argv(reference, "--resume", steps=6)) == 0
    a, b = weights(finished), weights(reference)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0)


# --- totals across resumes ------------------------------------------------------------------------
def test_run_complete_totals_cover_every_segment(tmp_path, monkeypatch):
    """Segment 1 (steps 1-2, each slowed by 0.25 s) is interrupted at step 3; the resumed
    run_complete.json counts its seconds too (before: only the last segment's), and its
    train_loss is the mean over all four logged steps."""
    import time

    from memdlm.reproduce.pipeline import seconds_per_step

    out = tmp_path / "run"
    interrupt_at(monkeypatch, 3, also=lambda trainer: time.sleep(0.25))
    with pytest.raises(Killed):
        main(train_argv(out))
    first = read(out / "checkpoint-2" / "trainer_state.json")["stateful_callbacks"]["RunRecord"]["attributes"]
    assert first["train_seconds"] >= 0.5
    monkeypatch.undo()
    assert main(train_argv(out, "--resume")) == 0
    summary = read(out / "run_complete.json")
    assert summary["segments"] == 2 and summary["global_step"] == 4
    assert summary["train_seconds"] >= first["train_seconds"]
    assert seconds_per_step(summary) >= 0.5 / 4
    # optimiser-step seconds: the slowed steps are inside them, they go on across the resume, and
    # they are part of the wall time
    assert first["step_seconds"] >= 0.5 and first["step_seconds"] <= first["train_seconds"]
    assert first["step_seconds"] <= summary["step_seconds"] <= summary["train_seconds"]
    losses = [h["loss"] for h in read(out / "log_history.json") if "loss" in h]
    assert len(losses) == 4 and summary["train_loss_steps"] == 4
    assert summary["train_loss"] == pytest.approx(sum(losses) / 4, rel=1e-5)


def test_run_record_counts_optimiser_steps_apart_from_what_runs_between_them(monkeypatch):
    """On a fake clock: steps at [1, 3] and [10, 12], an evaluation in between, the record read at
    15: step seconds 4, wall seconds 15; a resumed record continues both totals."""
    from types import SimpleNamespace

    from memdlm.training import callbacks

    clock = iter([0.0, 1.0, 3.0, 10.0, 12.0, 15.0, 15.0, 20.0, 21.0, 24.0, 26.0])
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: next(clock))
    record = callbacks.RunRecord("r1", "h")
    fresh = SimpleNamespace(stateful_callbacks=None, global_step=0)
    record.on_train_begin(None, fresh, None)  # 0
    for _ in range(2):
        record.on_step_begin(None, fresh, None)  # 1, 10
        record.on_step_end(None, fresh, None)  # 3, 12
    saved = record.state()["attributes"]  # wall time read at 15
    assert (saved["step_seconds"], saved["train_seconds"]) == (4.0, 15.0)
    resumed = callbacks.RunRecord("r1", "h")
    state = SimpleNamespace(stateful_callbacks={"RunRecord": {"attributes": saved}}, global_step=2)
    resumed.on_train_begin(None, state, None)  # 15 (after 15.0 read by the saved state)
    resumed.on_step_begin(None, state, None)  # 20
    resumed.on_step_end(None, state, None)  # 21
    assert resumed.step_seconds == 5.0 and resumed.segments == 2
    assert resumed.train_seconds() == 15.0 + (24.0 - 15.0)


def test_reproduce_cell_resumes_a_cell_killed_before_its_first_checkpoint(tmp_path, monkeypatch):
    """A cell directory with run files but no checkpoint is continued, not refused."""
    from memdlm.reproduce.cells import train_cell

    options = {"method": "mdlm", "max_steps": 2, "seed": 0, "tiny_layers": 1, "tiny_hidden_size": 32,
               "tiny_intermediate_size": 64, "per_device_train_batch_size": 2, "train_lengths": [96],
               "heldout_items": 0, "num_eval_samples": 0, "save_strategy": "no"}
    cell = tmp_path / "cell"
    interrupt_at(monkeypatch, 1)
    with pytest.raises(Killed):
        train_cell(cell, options, progress=False)
    monkeypatch.undo()
    summary = train_cell(cell, options, progress=False)
    assert summary["global_step"] == 2 and (cell / "run_complete.json").is_file()


# --- non-finite steps -----------------------------------------------------------------------------
class NaNGradient(torch.autograd.Function):
    """Identity forward, NaN backward: a finite loss with non-finite gradients."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def poison(monkeypatch, step: int, kind: str):
    original = MDLMTrainer.loss_on

    def loss_on(self, model, batch, training):
        loss = original(self, model, batch, training)
        if training and self.state.global_step + 1 == step:
            return loss * float("nan") if kind == "loss" else NaNGradient.apply(loss)
        return loss

    monkeypatch.setattr(MDLMTrainer, "loss_on", loss_on)


@pytest.mark.parametrize("kind", ["loss", "gradient"])
def test_non_finite_step_is_not_applied_nor_saved_and_names_the_last_finite_checkpoint(
        tmp_path, monkeypatch, capsys, kind):
    out = tmp_path / "run"
    poison(monkeypatch, 3, kind)
    line = error_line(capsys, main(train_argv(out)))
    assert f"non-finite {kind}" in line and "at step 3; the step was not applied" in line
    assert f"the last finite checkpoint is {out / 'checkpoint-2'}" in line
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-2"]
    assert not (out / "run_complete.json").exists() and not (out / "model.safetensors").exists()
    assert all(torch.isfinite(t).all() for t in weights(out / "checkpoint-2").values())


def test_resume_from_the_last_finite_checkpoint_with_a_lower_learning_rate(tmp_path, monkeypatch, capsys):
    """The recovery the error message names works, and the new learning rate is the one used
    (Trainer restores the checkpoint's base rate with the scheduler; before, it won)."""
    out = tmp_path / "run"
    poison(monkeypatch, 3, "gradient")
    assert main(train_argv(out, "--learning-rate", "1e-2")) == 2
    monkeypatch.undo()
    capsys.readouterr()
    assert main(train_argv(out, "--resume", "--learning-rate", "1e-3")) == 0
    logged = {h["step"]: h for h in read(out / "log_history.json") if "loss" in h}
    assert sorted(logged) == [1, 2, 3, 4]
    # cosine with warmup 0.05 * 4 -> 1 step: lr(step s, 0-based) = base * 0.5 * (1 + cos(pi * (s - 1) / 3))
    for step in (3, 4):
        factor = 0.5 * (1 + math.cos(math.pi * (step - 2) / 3))
        assert logged[step]["learning_rate"] == pytest.approx(1e-3 * factor, rel=1e-6)
    assert logged[2]["learning_rate"] == pytest.approx(1e-2, rel=1e-6)  # segment 1 kept its own
    assert all(torch.isfinite(t).all() for t in weights(out).values())


def test_huge_learning_rate_never_saves_nan_weights(tmp_path, capsys):
    """lr 1e6 (the issue's trial): before, checkpoint-3 held every weight NaN and was called
    intact. Now step 3's non-finite gradient is caught before it is applied, every saved
    state is finite, and the advice names checkpoint-2."""
    out = tmp_path / "run"
    line = error_line(capsys, main(train_argv(out, "--learning-rate", "1e6", "--save-steps", "1", steps=6)))
    assert "at step 3; the step was not applied" in line
    assert f"the last finite checkpoint is {out / 'checkpoint-2'}" in line
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    for ckpt in out.glob("checkpoint-*"):
        assert all(torch.isfinite(t).all() for t in weights(ckpt).values()), ckpt
    # checkpoint-2 is finite but already diverged (step 2 moved the weights by ~1e6): the
    # advice says so, and resuming from checkpoint-1 at a sane rate finishes.
    line = error_line(capsys, main(train_argv(out, "--resume", "--learning-rate", "1e-3", "--save-steps", "1",
                                              steps=6)))
    assert f"it is the first step after {out / 'checkpoint-2'}, whose weights are finite but already diverged" in line
    shutil.move(out / "checkpoint-2", tmp_path / "aside")
    assert main(train_argv(out, "--resume", "--learning-rate", "1e-3", "--save-steps", "1", steps=6)) == 0
    summary = read(out / "run_complete.json")
    assert summary["global_step"] == 6 and summary["segments"] == 2
    assert all(torch.isfinite(t).all() for t in weights(out).values())


def test_bounded_skips_drop_the_step_and_count_it(tmp_path, monkeypatch):
    """--max-nonfinite-skips 1: the NaN step is skipped (AdamW saw 3 updates of 4 steps) and
    counted in the log and run_complete.json; a second NaN step would stop the run."""
    out = tmp_path / "run"
    poison(monkeypatch, 2, "loss")
    assert main(train_argv(out, "--max-nonfinite-skips", "1")) == 0
    assert read(out / "run_complete.json")["nonfinite_skipped"] == 1
    optimizer = torch.load(out / "checkpoint-4" / "optimizer.pt", weights_only=True)
    assert {int(s["step"]) for s in optimizer["state"].values()} == {3}
    guard = read(out / "checkpoint-4" / "trainer_state.json")["stateful_callbacks"]["NonFiniteGuard"]
    assert guard["attributes"]["skipped"] == 1


# --- inference on an unfinished run ---------------------------------------------------------------
def test_inference_commands_refuse_an_unfinished_run(finished, capsys, tmp_path):
    (finished / "run_complete.json").unlink()
    line = error_line(capsys, main(["generate", "--model", str(finished), "--prompt", "hi"]), "generate")
    assert f"{finished} is an unfinished run (no run_complete.json)" in line and "--allow-incomplete" in line
    rc = main(["eval", "--standard", str(finished), "--output-dir", str(tmp_path / "e"), "--items", "1"])
    assert "is an unfinished run" in error_line(capsys, rc, "eval")
    rc = main(["exposure-bias", "--run", f"a={finished}", "--output-dir", str(tmp_path / "x")])
    assert "is an unfinished run" in error_line(capsys, rc, "exposure-bias")
    pytest.importorskip("lm_eval")
    rc = main(["lm-eval", "--model-args", f"pretrained={finished}", "--tasks", "memdlm_kv_128"])
    assert "is an unfinished run" in error_line(capsys, rc, "lm-eval")
    assert main(["generate", "--model", str(finished), "--prompt", "hi", "--max-new-tokens", "2",
                 "--allow-incomplete"]) == 0
    shutil.rmtree(tmp_path / "e", ignore_errors=True)
