"""Resuming after a hard kill: the resumed run continues exactly as an uninterrupted one.

``memdlm train`` runs as a subprocess, is killed with SIGKILL strictly between two
checkpoints, restarted with ``--resume`` and compared, step by step, with an
uninterrupted run of the same seed: the logged losses and the final weights must be
equal. Masks are drawn from (seed, process, step, micro-step) and Trainer skips the
consumed batches, so nothing depends on where the run was cut.

How checkpoints stay safe (transformers 5.24, ``Trainer._save_checkpoint``): the model
(safetensors), optimizer, scheduler and RNG state are written first and
``trainer_state.json`` last; ``memdlm.runs.directory.resume_checkpoint`` accepts only a
checkpoint holding every file a resume reads, whose ``trainer_state.json`` parses and
names the checkpoint's own step, so a checkpoint cut mid-save (or mid-rotation) is never
picked up (tests/test_run_lifecycle.py covers the other files and the run identity).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from memdlm.cli import main
from memdlm.runs.directory import resume_checkpoint

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
SAVE_STEPS, MAX_STEPS = 4, 12


def train_args(method: str, out: Path) -> list[str]:
    return ["train", "--method", method, "--output-dir", str(out),
            "--max-steps", str(MAX_STEPS), "--save-steps", str(SAVE_STEPS), "--logging-steps", "1",
            "--tiny-layers", "2", "--per-device-train-batch-size", "4", "--train-lengths", "96",
            "--heldout-items", "0", "--num-eval-samples", "0", "--seed", "3", "--disable-tqdm", "true"]


def start(args: list[str], log: Path) -> subprocess.Popen:
    handle = log.open("w")
    try:
        return subprocess.Popen([sys.executable, "-m", "memdlm.cli", *args], stdout=handle,
                                stderr=subprocess.STDOUT, env=ENV)
    finally:
        handle.close()  # the child holds its own descriptor


def logged_steps(log: Path) -> int:
    """Training log lines printed so far (one per step with --logging-steps 1)."""
    return sum(1 for line in log.read_text().splitlines() if "'loss':" in line)


def wait(proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert rc == 0, log.read_text()[-3000:]


def kill_between_checkpoints(proc: subprocess.Popen, out: Path, log: Path, timeout: float = 120):
    """SIGKILL once checkpoint-4 is complete and step 5 has been logged, before checkpoint-8 is.

    The process is frozen (SIGSTOP) while the state is read, so what is read is what
    the kill leaves behind.
    """
    first, second = out / f"checkpoint-{SAVE_STEPS}", out / f"checkpoint-{2 * SAVE_STEPS}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before it could be killed:\n"
                        + log.read_text()[-3000:])
        if (first / "trainer_state.json").is_file() and logged_steps(log) > SAVE_STEPS:
            os.kill(proc.pid, signal.SIGSTOP)
            steps, second_complete = logged_steps(log), (second / "trainer_state.json").is_file()
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return steps, second_complete
        time.sleep(0.01)
    proc.kill()
    pytest.fail("timed out waiting for the first checkpoint")


def losses(run: Path) -> dict[int, float]:
    history = json.loads((run / "log_history.json").read_text())
    return {h["step"]: h["loss"] for h in history if "loss" in h}


# --- resume_checkpoint: only complete checkpoints count -----------------------------------


def _checkpoint(out: Path, step: int, state: str | None) -> Path:
    ckpt = out / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    save_file({"w": torch.zeros(1)}, str(ckpt / "model.safetensors"))  # what a resume reads, each whole
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        torch.save({}, ckpt / name)
    if state is not None:
        (ckpt / "trainer_state.json").write_text(state)
    return ckpt


def test_resume_checkpoint_picks_newest_complete(tmp_path):
    assert resume_checkpoint(tmp_path) is None  # nothing there: start from scratch
    _checkpoint(tmp_path, 4, json.dumps({"global_step": 4}))
    _checkpoint(tmp_path, 12, json.dumps({"global_step": 12}))
    _checkpoint(tmp_path, 8, json.dumps({"global_step": 8}))
    assert resume_checkpoint(tmp_path) == str(tmp_path / "checkpoint-12")  # numeric, not lexical


@pytest.mark.parametrize("state", [None, '{"global_step": 1', "", "[]", json.dumps({"global_step": 7})],
                         ids=["missing", "truncated", "empty", "not-a-mapping", "wrong-step"])
def test_resume_checkpoint_skips_checkpoint_cut_mid_save(tmp_path, state):
    _checkpoint(tmp_path, 4, json.dumps({"global_step": 4}))
    _checkpoint(tmp_path, 8, state)  # killed while saving: trainer_state.json absent or partial
    (tmp_path / "checkpoint-tmp").mkdir()  # not a step: ignored
    assert resume_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")


# --- kill -9 between checkpoints, resume, compare with an uninterrupted run ----------------


@pytest.mark.slow
@pytest.mark.parametrize("method", ["mdlm", "memdlm"])
def test_killed_run_resumes_exactly(tmp_path, method):
    full, cut = tmp_path / "full", tmp_path / "cut"
    victim = start(train_args(method, cut), tmp_path / "cut.log")  # the run that will be killed
    try:
        steps, second_complete = kill_between_checkpoints(victim, cut, tmp_path / "cut.log")
    finally:
        if victim.poll() is None:
            victim.kill()
    assert steps > SAVE_STEPS and not second_complete, (steps, second_complete)
    assert not (cut / "run_complete.json").exists()  # a killed run is not a finished run
    assert resume_checkpoint(cut) == str(cut / f"checkpoint-{SAVE_STEPS}")

    resumed = start(train_args(method, cut) + ["--resume"], tmp_path / "resume.log")
    assert main(train_args(method, full)) == 0  # meanwhile, the uninterrupted reference in this process
    wait(resumed, tmp_path / "resume.log")
    # The restart trained only the remaining steps (it did resume, not start over).
    assert logged_steps(tmp_path / "resume.log") == MAX_STEPS - SAVE_STEPS
    for run in (full, cut):
        summary = json.loads((run / "run_complete.json").read_text())
        assert summary["global_step"] == MAX_STEPS

    want, got = losses(full), losses(cut)
    assert sorted(want) == sorted(got) == list(range(1, MAX_STEPS + 1))
    assert all(math.isfinite(v) for v in want.values())
    for step in want:
        assert abs(got[step] - want[step]) <= 1e-6, (step, got[step], want[step])
    a, b = load_file(str(full / "model.safetensors")), load_file(str(cut / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=0, msg=name)
