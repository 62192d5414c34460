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
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import memdlm.training.train as training_run
from memdlm.cli import main
from memdlm.runs.directory import LOCK_FILE, RunLock, resume_checkpoint
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


@pytest.fixture()
def small_disk(tmp_path):
    """A 2 MiB tmpfs (root and a mount-capable container only; skipped elsewhere)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)  # lazy: a failed test may hold files open


def test_a_real_full_disk_says_disk_full_and_resume_finishes_after_space_is_freed(small_disk, capsys):
    """Before: a traceback ending in torch's 'unexpected pos 1177856 vs 1177744', no word of the disk."""
    out = small_disk / "run"
    argv = train_argv(out, "--save-total-limit", "1", steps=8)
    line = one_line(capsys, main(argv))
    assert "error: disk full (" in line and f"left where {out} is" in line and "--resume" in line
    subprocess.run(["mount", "-o", "remount,size=32m", str(small_disk)], check=True)
    assert main(train_argv(out, "--resume", "--save-total-limit", "1", steps=8)) == 0
    assert read(out / "run_complete.json")["global_step"] == 8


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
    # far more steps than can finish while the second process starts (400 steps took 9 s, less than
    # a loaded machine's cold start of the second): SIGTERM must always arrive during training
    argv = train_argv(out, "--save-strategy", "no", steps=100_000)
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


# --- 8. the bad-input table: one line naming the item and the fix ---------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A finished tiny run (2 steps) shared by the inference rows."""
    out = tmp_path_factory.mktemp("edges") / "run"
    assert main(train_argv(out, "--save-strategy", "no", steps=2)) == 0
    return out


@pytest.mark.parametrize("args, env, needle", [
    (["--batch-size", "0"], {}, "--batch-size must be >= 1, got 0"),
    (["--threads", "-1"], {}, "--threads must be a whole number >= 1, got -1"),
    (["--threads", "0"], {}, "--threads must be a whole number >= 1, got 0"),
    ([], {"OMP_NUM_THREADS": "abc"}, "OMP_NUM_THREADS='abc' is not a whole number >= 1; set it to one"),
], ids=["batch-size-0", "threads-negative", "threads-0", "omp-abc"])
def test_generate_bad_numbers(model_dir, capsys, monkeypatch, args, env, needle):
    """Before: tracebacks (batch size 0: range() arg 3; threads -1 / OMP_NUM_THREADS=abc)."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    rc = main(["generate", "--model", str(model_dir), "--prompt", "hi", "--max-new-tokens", "2", *args])
    assert needle in one_line(capsys, rc, "generate")


def test_prompt_file_empty_or_missing(model_dir, tmp_path, capsys):
    """Before: an empty file was told to 'give a --prompt-file'; a missing one was a traceback."""
    empty = tmp_path / "prompts.txt"
    empty.write_text("\n  \n")
    rc = main(["generate", "--model", str(model_dir), "--prompt-file", str(empty)])
    assert f"--prompt-file {empty} holds no prompt (every line is blank)" in one_line(capsys, rc, "generate")
    rc = main(["generate", "--model", str(model_dir), "--prompt-file", str(tmp_path / "nope.txt")])
    assert f"--prompt-file {tmp_path / 'nope.txt'} does not exist" in one_line(capsys, rc, "generate")


def test_eval_threads_0_is_refused(model_dir, tmp_path, capsys):
    """Before: silently every core (0 read as 'not given')."""
    rc = main(["eval", "--standard", str(model_dir), "--output-dir", str(tmp_path / "e"), "--threads", "0"])
    assert "--threads must be a whole number >= 1, got 0" in one_line(capsys, rc, "eval")


@pytest.mark.parametrize("edit, needle", [
    (lambda c: c["memory"].update(memory_mode="per-sample"),
     "run_config.json: a 'memory' setting cannot be used (--memory-mode 'per-sample' is not one of"),
    (lambda c: c.update(memory=[1, 2]), "run_config.json: its 'memory' part is not a JSON object"),
    (None, "run_config.json is not valid JSON"),
], ids=["edited-value", "edited-part", "malformed"])
def test_edited_or_malformed_run_config_is_blamed_on_the_file(model_dir, tmp_path, capsys, edit, needle):
    """Before: an edited value was blamed on --memory-mode, a flag never passed; a malformed
    file was called missing."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(model_dir, run)
    config_file = run / "run_config.json"
    if edit is None:
        config_file.write_text(config_file.read_text()[:40])
    else:
        config = read(config_file)
        edit(config)
        config_file.write_text(json.dumps(config))
    rc = main(["generate", "--model", str(run), "--prompt", "hi", "--max-new-tokens", "2"])
    line = one_line(capsys, rc, "generate")
    assert f"{config_file}" in line and needle in line
    if edit is None:
        line = one_line(capsys, main(train_argv(run, "--resume", "--save-strategy", "no", steps=2)))
        assert f"--resume: {config_file} is not a valid JSON object (edited or cut short)" in line


@pytest.mark.parametrize("suffix, text", [(".yaml", "max_steps: 3\nseed: 1\nmax_steps: 5\n"),
                                          (".json", '{"max_steps": 3, "max-steps": 5}'),
                                          (".yaml", "tiny_overrides:\n  a: 1\nseed: 0\nseed: 2\n")])
def test_duplicate_config_keys_are_refused(tmp_path, capsys, suffix, text):
    """Before: the last value silently won."""
    config = tmp_path / f"c{suffix}"
    config.write_text(text)
    line = one_line(capsys, main(["train", "--config", str(config), "--output-dir", str(tmp_path / "r"), *TINY]))
    assert f"config file {config} sets" in line and "twice" in line and "keep one of them" in line


def test_reproduction_cell_reached_by_another_path_spelling_is_the_same(tmp_path, monkeypatch):
    """Before: a finished reproduction reached through an absolute path or a copy was refused as
    'made with different settings (runs)'."""
    import shutil

    from memdlm.errors import ConfigError
    from memdlm.reproduce.cells import check_settings

    monkeypatch.chdir(tmp_path)
    settings = lambda out: {"runs": [{"name": "a", "model_dir": str(out / "seed0" / "std")}], "n": 4}  # noqa: E731
    relative = Path("repro")
    check_settings(relative / "seed0" / "eval.json", settings(relative))
    absolute = tmp_path / "repro"
    check_settings(absolute / "seed0" / "eval.json", settings(absolute))  # same cell, absolute spelling
    shutil.copytree(absolute, tmp_path / "copy")
    copy = tmp_path / "copy"
    check_settings(copy / "seed0" / "eval.json", settings(copy))  # a copy of the reproduction
    with pytest.raises(ConfigError, match=r"made with different settings \(runs\)"):
        check_settings(copy / "seed0" / "eval.json", settings(Path("elsewhere")))
    with pytest.raises(ConfigError, match=r"made with different settings \(n\)"):
        check_settings(copy / "seed0" / "eval.json", {**settings(copy), "n": 5})


# --- 4. outputs: checked before the work, written as it is produced ---------------------------------
@pytest.mark.parametrize("command", ["eval", "exposure-bias", "reproduce"])
def test_unwritable_output_is_one_line_before_any_work(model_dir, tmp_path, capsys, command):
    """A file where the output directory should be (tests run as root: chmod cannot make one
    unwritable). Before: eval and exposure-bias computed everything, then lost it in a traceback."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    argv = {"eval": ["eval", "--standard", str(model_dir), "--items", "1"],
            "exposure-bias": ["exposure-bias", "--run", f"a={model_dir}", "--items", "1"],
            "reproduce": ["reproduce", "--preset", "smoke"]}[command]
    line = one_line(capsys, main([*argv, "--output-dir", str(blocker)]), command)
    assert f"--output-dir {blocker} is a file, not a directory" in line
    line = one_line(capsys, main([*argv, "--output-dir", str(blocker / "sub")]), command)
    assert f"cannot write the output directory {blocker / 'sub'}" in line


def failing_on_the_second_call(original):
    """``original``, except that its second call fails as a full disk does."""
    calls = []

    def second_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(*args, **kwargs)

    return second_fails


def test_eval_keeps_every_finished_cell_when_a_later_one_fails(model_dir, tmp_path, capsys, monkeypatch):
    """Before: eval wrote only at the end, so a failure there (a full disk) lost everything.
    Now the first run's cell is in suite.partial.json when the second run's fails; and when
    only the report fails, suite.json (written first, atomically) holds every cell."""
    import memdlm.eval.suite as suite

    second_fails = failing_on_the_second_call(suite._answer_cell)

    argv = ["eval", "--standard", str(model_dir), "--output-dir", str(tmp_path / "e"), "--items", "1",
            "--tasks", "kv", "--lengths", "128", "--no-progress"]
    monkeypatch.setattr(suite, "_answer_cell", second_fails)
    assert "error: disk full (No space left on device)" in one_line(capsys, main(argv), "eval")
    (cell,) = read(tmp_path / "e" / "suite.partial.json")["finished"]
    assert (cell["run"], cell["task"], cell["length"], cell["result"]["n"]) == ("Standard", "kv", 128, 1)
    assert not (tmp_path / "e" / "suite.json").exists()
    monkeypatch.undo()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "e" / "suite.md"))

    monkeypatch.setattr(suite, "to_markdown", full_disk)
    assert "error: disk full (No space left on device)" in one_line(capsys, main(argv), "eval")
    assert read(tmp_path / "e" / "suite.json")["cells"][0]["results"].keys() == {"Standard", "Standard + adaptation"}
    assert not (tmp_path / "e" / "suite.partial.json").exists()


# --- 9. kill -9 at a step, during a checkpoint's save, during the final save -----------------------
# The child process patches one write to SIGKILL itself at a chosen point (a real kill -9:
# nothing runs after it), then the run is resumed here and compared with an uninterrupted one.
KILLER = """
import os, random, signal, sys, torch
import memdlm.training.train as training_run
from memdlm.cli import main
from memdlm.training.mdlm_trainer import MDLMTrainer

where = os.environ["MEMDLM_KILL"]
def kill():
    os.kill(os.getpid(), signal.SIGKILL)
if where.startswith("step-"):  # in the loss of that optimiser step
    step, loss_on = int(where[5:]), MDLMTrainer.loss_on
    def at_step(self, model, batch, training):
        if training and self.state.global_step + 1 == step:
            kill()
        return loss_on(self, model, batch, training)
    MDLMTrainer.loss_on = at_step
elif where.endswith(".pt"):  # half-way through writing that file
    save = torch.save
    def cut(obj, f, *args, **kwargs):
        save(obj, f, *args, **kwargs)
        if str(f).endswith(where):
            os.truncate(f, os.path.getsize(f) // 2)
            kill()
    torch.save = cut
else:  # the final save: after the model, before run_complete.json
    write = training_run.write_json_atomic
    def final(path, obj):
        if path.name == where:
            kill()
        write(path, obj)
    training_run.write_json_atomic = final
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(train_argv(out, steps=6)) == 0
    return out


def killed_child(out, where: str):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MEMDLM_KILL": where}
    proc = subprocess.run([sys.executable, "-c", KILLER, *train_argv(out, steps=6)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("where, resumes_from", [
    (f"step-{__import__('random').Random(23).randint(2, 6)}", None),
    ("checkpoint-4/optimizer.pt", "checkpoint-2"),
    ("log_history.json", "checkpoint-6"),
], ids=["random-step", "during-a-checkpoint-save", "during-the-final-save"])
def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path, reference, caplog, where, resumes_from):
    out = tmp_path / "run"
    killed_child(out, where)
    assert not (out / "run_complete.json").exists()
    if where.endswith(".pt"):
        assert (out / "checkpoint-4" / "optimizer.pt").is_file()  # cut short, not missing
    assert main(train_argv(out, "--resume", steps=6)) == 0
    if resumes_from:
        assert resume_checkpoint(out) is not None and str(out / resumes_from) in caplog.text
    summary = read(out / "run_complete.json")
    assert summary["global_step"] == 6
    want = {h["step"]: h["loss"] for h in read(reference / "log_history.json") if "loss" in h}
    got = {h["step"]: h["loss"] for h in read(out / "log_history.json") if "loss" in h}
    assert sorted(got) == sorted(want) == list(range(1, 7))
    assert all(abs(got[k] - want[k]) <= 1e-6 for k in want), (got, want)
    a, b = load_file(str(reference / "model.safetensors")), load_file(str(out / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=0, msg=name)


def test_exposure_bias_keeps_each_finished_run_when_a_later_one_fails(model_dir, tmp_path, capsys, monkeypatch):
    """Before: exposure_bias.json was written once, at the end."""
    import memdlm.eval.exposure_bias as eb

    second_fails = failing_on_the_second_call(eb.exposure_bias)

    monkeypatch.setattr(eb, "exposure_bias", second_fails)
    out = tmp_path / "x"
    rc = main(["exposure-bias", "--run", f"a={model_dir}", "--run", f"b={model_dir}", "--items", "2",
               "--output-dir", str(out)])
    assert "error: disk full (No space left on device)" in one_line(capsys, rc, "exposure-bias")
    saved = read(out / "exposure_bias.json")
    assert list(saved["runs"]) == ["a"] and saved["complete"] is False


def test_sigterm_in_a_reproduction_cell_says_to_rerun_reproduce(tmp_path, monkeypatch):
    from memdlm.errors import Stopped
    from memdlm.reproduce.cells import train_cell

    options = {"method": "mdlm", "max_steps": 4, "seed": 0, "tiny_layers": 1, "tiny_hidden_size": 32,
               "tiny_intermediate_size": 64, "per_device_train_batch_size": 2, "train_lengths": [96],
               "heldout_items": 0, "num_eval_samples": 0, "save_strategy": "no"}
    cell = tmp_path / "cell"
    signal_at(monkeypatch, 2, signal.SIGTERM)
    with pytest.raises(Stopped) as stopped:
        train_cell(cell, options, progress=False)
    assert stopped.value.exit_code == 143
    assert stopped.value.message == (f"stopped by SIGTERM while training {cell}; run the same memdlm reproduce "
                                     "command again to continue (the cell resumes from its newest checkpoint)")
    monkeypatch.undo()
    assert train_cell(cell, options, progress=False)["global_step"] == 4
