"""The edges of a run's life (issue 23): --resume at the last step, one writer per run
directory, inputs checked before an old run is touched, damaged files, signals, a full disk.

Each test runs ``memdlm.cli.main`` in process on the tiny model (1 layer, width 32) for a
few steps, except the two concurrent trainings (subprocesses, marked slow). A kill is
simulated by ``Killed``, a BaseException nothing of ours catches (as nothing can catch
kill -9); a signal is a real ``os.kill`` of this process from inside a training step.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import memdlm.training.run as training_run
from memdlm.cli import main
from memdlm.run_dir import LOCK_FILE, RunLock, resume_checkpoint
from memdlm.training.mdlm_trainer import MDLMTrainer

torch.set_num_threads(1)

TINY = ["--tiny-layers", "1", "--tiny-hidden-size", "32", "--tiny-intermediate-size", "64"]
# A constant learning rate: any extra step would change the weights.
QUICK = ["--per-device-train-batch-size", "2", "--train-lengths", "96", "--heldout-items", "0",
         "--num-eval-samples", "0", "--logging-steps", "1", "--save-steps", "2", "--disable-tqdm", "true",
         "--lr-scheduler-type", "constant", "--warmup-steps", "0"]


class Killed(BaseException):
    """A simulated kill -9."""


def train_argv(out, *extra, steps: int = 4, seed: int = 0) -> list[str]:
    return ["train", "--method", "mdlm", "--output-dir", str(out), "--max-steps", str(steps), "--seed", str(seed),
            *TINY, *QUICK, *extra]


def one_line(capsys, rc: int, command: str = "train", want_rc: int = 2, prefix: str = "error: ") -> str:
    err = capsys.readouterr().err
    assert rc == want_rc, err
    lines = [line for line in err.splitlines() if line.startswith(f"memdlm {command}: {prefix}")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def read(path):
    return json.loads(path.read_text())


def same_weights(a, b) -> bool:
    a, b = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def logged_steps(out) -> list[int]:
    return [h["step"] for h in read(out / "log_history.json") if "loss" in h]


def stamps(out) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.name != LOCK_FILE}


@pytest.fixture()
def finished(tmp_path):
    out = tmp_path / "run"
    assert main(train_argv(out)) == 0
    return out


def kill_final_save(monkeypatch):
    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(training_run, "save_final", killed)


# --- 1. --resume at (or past) the last step ------------------------------------------------------
@pytest.mark.parametrize("steps", [4, 3], ids=["at", "past"])
def test_resume_of_a_finished_run_trains_nothing_and_touches_nothing(finished, caplog, steps):
    """Before: trained step 5 and recorded global_step 5 (the weights moved)."""
    before = stamps(finished)
    assert main(train_argv(finished, "--resume", steps=steps)) == 0
    assert stamps(finished) == before
    assert read(finished / "run_complete.json")["global_step"] == 4
    assert "already finished at step 4" in caplog.text


@pytest.mark.parametrize("steps", [4, 3], ids=["at", "past"])
def test_run_killed_in_its_final_save_is_finished_from_its_last_checkpoint(tmp_path, monkeypatch, caplog, steps):
    out = tmp_path / "run"
    kill_final_save(monkeypatch)
    with pytest.raises(Killed):
        main(train_argv(out))
    monkeypatch.undo()
    assert not (out / "run_complete.json").exists() and (out / "checkpoint-4" / "trainer_state.json").is_file()
    assert main(train_argv(out, "--resume", steps=steps)) == 0
    summary = read(out / "run_complete.json")
    assert summary["global_step"] == 4 and summary["segments"] == 1
    assert logged_steps(out) == [1, 2, 3, 4]
    assert same_weights(out, out / "checkpoint-4")
    assert "finishing the run from it without training" in caplog.text


def test_full_disk_at_the_final_save_says_disk_full_and_resume_finishes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    original = MDLMTrainer.save_model

    def save_model(self, output_dir=None, _internal_call=False):
        if output_dir == str(out):  # the final save; checkpoints go through
            raise OSError(errno.ENOSPC, "No space left on device", str(out / "model.safetensors"))
        return original(self, output_dir, _internal_call)

    monkeypatch.setattr(MDLMTrainer, "save_model", save_model)
    line = one_line(capsys, main(train_argv(out)))
    assert f"error: disk full (No space left on device) writing {out / 'model.safetensors'}: free space" in line
    assert "--resume" in line
    monkeypatch.undo()
    assert main(train_argv(out, "--resume")) == 0
    assert read(out / "run_complete.json")["global_step"] == 4 and logged_steps(out) == [1, 2, 3, 4]


def test_resume_with_more_steps_still_trains_them(finished):
    assert main(train_argv(finished, "--resume", steps=6)) == 0
    summary = read(finished / "run_complete.json")
    assert summary["global_step"] == 6 and summary["segments"] == 2 and logged_steps(finished) == list(range(1, 7))


# --- 2. one writer per run directory ---------------------------------------------------------------
def test_second_writer_is_refused_naming_the_owner(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with RunLock(out):
        line = one_line(capsys, main(train_argv(out)))
        assert f"--output-dir {out} is in use by pid {os.getpid()} on host" in line
        assert "one process trains a run directory at a time" in line
        assert list(out.iterdir()) == [out / LOCK_FILE]  # nothing written
    assert main(train_argv(out, steps=2)) == 0  # released: the directory can be used
    assert (out / LOCK_FILE).read_text() == ""  # released locks name no owner


def test_stale_lock_is_taken_over_and_named(tmp_path, caplog):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_FILE).write_text(json.dumps({"pid": 999999, "host": "gone-host", "since": "then"}))
    assert main(train_argv(out, steps=2)) == 0
    assert "taking over a stale lock of pid 999999 on host gone-host (since then)" in caplog.text


def start(args, log):
    handle = log.open("w")
    try:
        return subprocess.Popen([sys.executable, "-m", "memdlm.cli", *args], stdout=handle, stderr=subprocess.STDOUT,
                                env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    finally:
        handle.close()


def wait_for(condition, proc, log, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"rc {proc.returncode}:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


@pytest.mark.slow
def test_two_concurrent_trainings_one_refused_then_sigterm_stops_the_other_cleanly(tmp_path):
    """Two `memdlm train` processes, same settings, one directory (before: both exited 0 and the
    directory mixed their files). The second is refused in one line naming the first; SIGTERM
    then stops the first after a step, with a checkpoint of it, exit 143 and no traceback; and
    --resume finishes the run."""
    out = tmp_path / "run"
    argv = train_argv(out, "--save-strategy", "no", steps=400)
    first = start(argv, tmp_path / "first.log")
    try:
        wait_for(lambda: "'loss':" in (tmp_path / "first.log").read_text(), first, tmp_path / "first.log")
        second = subprocess.run([sys.executable, "-m", "memdlm.cli", *argv], capture_output=True, text=True,
                                timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert second.returncode == 2, second.stderr
        errors = [line for line in second.stderr.splitlines() if line.startswith("memdlm train: error:")]
        assert len(errors) == 1 and "Traceback" not in second.stderr
        assert f"is in use by pid {first.pid} on host" in errors[0]
        assert first.poll() is None  # the first one trains on
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=120) == 143
    finally:
        if first.poll() is None:
            first.kill()
    log = (tmp_path / "first.log").read_text()
    assert "Traceback" not in log
    stop = [line for line in log.splitlines() if line.startswith("memdlm train: stopped by SIGTERM after step")]
    assert len(stop) == 1, log[-3000:]
    step = int(stop[0].split("after step ")[1].split(";")[0])
    assert f"{out / f'checkpoint-{step}'} holds it" in stop[0]
    assert resume_checkpoint(out) == str(out / f"checkpoint-{step}")
    assert not (out / "run_complete.json").exists()


# --- 3. inputs checked before anything of an old run is touched ------------------------------------
@pytest.mark.parametrize("flags, needle", [
    (["--seed", "-1"], "--seed must be in [0, 4294967295], got -1"),
    (["--seed", str(2**32)], "--seed must be in [0, 4294967295], got 4294967296"),
    (["--learning-rate", "nan"], "--learning-rate must be a finite number, got nan"),
    (["--learning-rate", "inf"], "--learning-rate must be a finite number, got inf"),
    (["--method", "memdlm", "--inner-lr", "nan"], "--inner-lr must be a finite number, got nan"),
    (["--method", "memdlm", "--inner-lr", "inf"], "--inner-lr must be a finite number, got inf"),
    (["--haystack", "nope.txt"], "--haystack 'nope.txt' is neither 'prose', 'noise' nor an existing file"),
    (["--model", "no/such/model"], "model directory no/such/model does not exist"),
    (["--init-config", "no_such_config.json"], "no_such_config.json"),
], ids=["seed-negative", "seed-too-large", "lr-nan", "lr-inf", "inner-lr-nan", "inner-lr-inf", "haystack",
        "model", "init-config"])
def test_overwrite_with_a_bad_input_leaves_the_old_run_whole(finished, capsys, flags, needle):
    """Before: --seed -1, --learning-rate nan and --inner-lr nan deleted the finished run's
    checkpoints, run_complete.json and log, then crashed (a traceback)."""
    before = stamps(finished)
    line = one_line(capsys, main(train_argv(finished, "--overwrite-output-dir", *flags)))
    assert needle in line
    assert stamps(finished) == before


def test_a_bad_seed_leaves_no_directory_that_blocks_the_retry(tmp_path, capsys):
    out = tmp_path / "run"
    one_line(capsys, main(train_argv(out, seed=-1)))
    assert main(train_argv(out, steps=2)) == 0


# --- 6. damaged files ------------------------------------------------------------------------------
def truncate(path, keep: float = 0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"])
def test_resume_skips_a_checkpoint_with_a_truncated_file_naming_it(finished, caplog, name):
    truncate(finished / "checkpoint-4" / name)
    run_id = read(finished / "run_identity.json")["run_id"]
    assert resume_checkpoint(finished, run_id) == str(finished / "checkpoint-2")
    assert f"checkpoint-4 is damaged ({name}: truncated" in caplog.text


def test_resume_falls_back_past_a_truncated_optimizer_and_trains_on(finished, caplog):
    """Before: a traceback from torch.load (PytorchStreamReader failed reading zip archive)."""
    (finished / "run_complete.json").unlink()
    truncate(finished / "checkpoint-4" / "optimizer.pt")
    assert main(train_argv(finished, "--resume", steps=6)) == 0
    assert "checkpoint-4 is damaged (optimizer.pt: truncated" in caplog.text
    assert f"falling back to {finished / 'checkpoint-2'}, the newest checkpoint that loads (skipped: " \
           "checkpoint-4)" in caplog.text
    assert read(finished / "run_complete.json")["global_step"] == 6


def test_truncated_model_is_one_line_in_generate_eval_and_train(finished, tmp_path, capsys):
    """Before: a safetensors traceback in each command."""
    truncate(finished / "model.safetensors")
    name = finished / "model.safetensors"
    rc = main(["generate", "--model", str(finished), "--prompt", "hi", "--max-new-tokens", "2"])
    assert f"{name} is damaged (truncated" in one_line(capsys, rc, "generate")
    rc = main(["eval", "--standard", str(finished), "--output-dir", str(tmp_path / "e"), "--items", "1"])
    assert f"{name} is damaged (truncated" in one_line(capsys, rc, "eval")
    rc = main(train_argv(tmp_path / "ft", "--model", str(finished)))
    assert f"{name} is damaged (truncated" in one_line(capsys, rc)


# --- 7. signals ------------------------------------------------------------------------------------
def signal_at(monkeypatch, step: int, signum: int, times: int = 1):
    original = MDLMTrainer.loss_on

    def loss_on(self, model, batch, training):
        if training and self.state.global_step + 1 == step:
            for _ in range(times):
                os.kill(os.getpid(), signum)
        return original(self, model, batch, training)

    monkeypatch.setattr(MDLMTrainer, "loss_on", loss_on)


@pytest.mark.parametrize("name, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_signal_during_training_saves_the_step_and_names_it(tmp_path, monkeypatch, capsys, name, code):
    """Before: SIGTERM ended training at once, without a message or a save; Ctrl-C was a
    KeyboardInterrupt traceback with exit code 1."""
    out = tmp_path / "run"
    signal_at(monkeypatch, 3, getattr(signal, name))
    line = one_line(capsys, main(train_argv(out, "--save-strategy", "no", steps=6)), want_rc=code, prefix="")
    assert line == (f"memdlm train: stopped by {name} after step 3; {out / 'checkpoint-3'} holds it: continue "
                    f"with memdlm train --resume --output-dir {out} and the same flags")
    assert not (out / "run_complete.json").exists()
    monkeypatch.undo()
    assert main(train_argv(out, "--resume", "--save-strategy", "no", steps=6)) == 0
    summary = read(out / "run_complete.json")
    assert summary["global_step"] == 6 and summary["segments"] == 2


def test_second_signal_stops_at_once(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    signal_at(monkeypatch, 3, signal.SIGTERM, times=2)
    line = one_line(capsys, main(train_argv(out, steps=6)), want_rc=143, prefix="")
    assert "stopped by a second SIGTERM during a step" in line
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]


def test_ctrl_c_before_training_is_one_line_exit_130(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training_run, "build_datasets", interrupted)
    line = one_line(capsys, main(train_argv(tmp_path / "run")), want_rc=130, prefix="")
    assert line == "memdlm train: stopped by SIGINT (Ctrl-C)"
