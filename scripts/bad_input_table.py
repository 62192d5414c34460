"""Rows 21-45 of docs/RESULTS.md's bad-input table (issue 23): run each case through the CLI
in process and print its exit code, wall time and the lines it printed (paths under the
scratch directory shortened to D).

    OMP_NUM_THREADS=1 python scripts/bad_input_table.py [SCRATCH_DIR]

Tiny model (1 layer, width 32), 2-10 steps; a full disk, a kill during the final save and
the signals are simulated inside this process, the second writer by holding the lock here.
The tests (tests/test_run_edges.py) check the same rows; this script refreshes the table's
wording.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import torch

import memdlm.training.train as training_run
from memdlm.cli import main
from memdlm.runs.directory import RunLock
from memdlm.training.mdlm_trainer import MDLMTrainer

torch.set_num_threads(1)
D = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/memdlm_bad_inputs") / "D"
TINY = ["--tiny-layers", "1", "--tiny-hidden-size", "32", "--tiny-intermediate-size", "64",
        "--per-device-train-batch-size", "2", "--train-lengths", "96", "--heldout-items", "0",
        "--num-eval-samples", "0", "--logging-steps", "1", "--save-steps", "4", "--disable-tqdm", "true"]


class Killed(BaseException):
    """A simulated kill: nothing catches it."""


def train(out, *extra, steps=8) -> list[str]:
    return ["train", "--output-dir", str(out), "--max-steps", str(steps), *TINY, *extra]


def row(label: str, argv: list[str], env: dict | None = None) -> int:
    err = io.StringIO()
    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    handler = logging.StreamHandler(err)
    logging.getLogger("memdlm").addHandler(handler)
    start = time.perf_counter()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(argv)
    finally:
        logging.getLogger("memdlm").removeHandler(handler)
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    lines = [line for line in err.getvalue().splitlines()
             if line.startswith("memdlm ") or "--resume:" in line or "lock" in line]
    print(f"### {label} (exit {rc}, {time.perf_counter() - start:.1f} s)\n"
          + " | ".join(lines).replace(str(D), "D") + "\n", flush=True)
    return rc


@contextlib.contextmanager
def patched(owner, name, replacement):
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        yield original
    finally:
        setattr(owner, name, original)


def signal_at(step: int, signum: int):
    original = MDLMTrainer.loss_on

    def loss_on(self, model, batch, training):
        if training and self.state.global_step + 1 == step:
            os.kill(os.getpid(), signum)
        return original(self, model, batch, training)

    return loss_on


def truncated_copy(src: Path, dst: Path, name: str, keep: int | None = None) -> Path:
    shutil.copytree(src, dst)
    data = (dst / name).read_bytes()
    (dst / name).write_bytes(data[: keep if keep is not None else len(data) // 2])
    return dst


def lifecycle(done: Path) -> None:
    row("21 resume finished run", train(done, "--resume"))

    def killed(*args, **kwargs):
        raise Killed

    with patched(training_run, "save_final", killed), contextlib.suppress(Killed):
        main(train(D / "cut"))
    row("22 resume of a run killed in its final save", train(D / "cut", "--resume"))

    def full_disk(self, output_dir=None, _internal_call=False):
        if output_dir == str(D / "full"):
            raise OSError(errno.ENOSPC, "No space left on device", str(D / "full" / "model.safetensors"))
        return original(self, output_dir, _internal_call)

    with patched(MDLMTrainer, "save_model", full_disk) as original:
        row("23 full disk at the final save", train(D / "full"))
    row("23b then --resume", train(D / "full", "--resume"))
    (D / "busy").mkdir()
    with RunLock(D / "busy"):
        row("24 second writer", train(D / "busy"))
    (D / "stale").mkdir()
    (D / "stale" / ".memdlm.lock").write_text(json.dumps({"pid": 4242, "host": "node7", "since": "then"}))
    row("25 stale lock", train(D / "stale", steps=2))
    for label, extra in [("26 seed -1", ["--seed", "-1"]), ("27 lr nan", ["--learning-rate", "nan"]),
                         ("28 inner-lr nan", ["--method", "memdlm", "--inner-lr", "nan"]),
                         ("28b inner-lr inf", ["--method", "memdlm", "--inner-lr", "inf"]),
                         ("29 haystack", ["--haystack", "nope.txt"])]:
        row(label + " with --overwrite-output-dir", train(done, "--overwrite-output-dir", *extra))
    print("old run whole:", (done / "run_complete.json").is_file(), sorted(p.name for p in done.glob("checkpoint-*")))
    for signum, label in ((signal.SIGTERM, "43 SIGTERM"), (signal.SIGINT, "43b SIGINT")):
        with patched(MDLMTrainer, "loss_on", signal_at(3, signum)):
            row(f"{label} at step 3", train(D / label.split()[1].lower(), "--save-strategy", "no"))


def files_and_flags(done: Path) -> None:
    bad = truncated_copy(done, D / "trunc", "model.safetensors")
    row("30 generate, truncated model", ["generate", "--model", str(bad), "--prompt", "hi"])
    row("30b eval, truncated model", ["eval", "--standard", str(bad), "--output-dir", str(D / "e0"), "--items", "1"])
    row("30c train --model, truncated model", train(D / "ft", "--model", str(bad)))
    half = truncated_copy(done, D / "half", "checkpoint-8/optimizer.pt", keep=100)
    (half / "run_complete.json").unlink()
    row("31 resume, truncated optimizer.pt", train(half, "--resume", steps=10))
    generate = ["generate", "--model", str(done), "--prompt", "hi"]
    row("32 generate --batch-size 0", [*generate, "--batch-size", "0"])
    row("33 generate --threads -1", [*generate, "--threads", "-1"])
    row("34 OMP_NUM_THREADS=abc", generate, env={"OMP_NUM_THREADS": "abc"})
    row("35 eval --threads 0", ["eval", "--standard", str(done), "--output-dir", str(D / "e1"), "--threads", "0"])
    (D / "empty.txt").write_text("\n\n")
    row("36 empty prompt file", ["generate", "--model", str(done), "--prompt-file", str(D / "empty.txt")])
    edited = D / "edited"
    shutil.copytree(done, edited)
    config = json.loads((edited / "run_config.json").read_text())
    config["memory"]["memory_mode"] = "per-sample"
    (edited / "run_config.json").write_text(json.dumps(config))
    row("37 edited run_config.json", ["generate", "--model", str(edited), "--prompt", "hi"])
    malformed = truncated_copy(done, D / "malformed", "run_config.json", keep=50)
    row("38 malformed run_config.json", ["generate", "--model", str(malformed), "--prompt", "hi"])
    row("38b malformed run_config.json, --resume", train(malformed, "--resume"))
    blocker = D / "blocker"
    blocker.write_text("x")
    row("41 eval, output is a file", ["eval", "--standard", str(done), "--items", "1", "--output-dir", str(blocker)])
    row("41b exposure-bias, output below a file",
        ["exposure-bias", "--run", f"a={done}", "--items", "1", "--output-dir", str(blocker / "x")])
    row("41c reproduce, output is a file", ["reproduce", "--preset", "smoke", "--output-dir", str(blocker)])
    (D / "dup.yaml").write_text("max_steps: 3\nseed: 1\nmax_steps: 5\n")
    row("44 duplicate YAML keys", ["train", "--config", str(D / "dup.yaml"), "--output-dir", str(D / "dup")])


def lm_eval(done: Path) -> None:
    lm = ["lm-eval", "--tasks", "memdlm_kv_128", "--model-args"]
    row("39 lm-eval bare memory", [*lm, f"pretrained={done},memory"])
    row("39b lm-eval steps=abc", [*lm, f"pretrained={done},steps=abc"])
    row("40 lm-eval unknown task", ["lm-eval", "--model-args", f"pretrained={done}", "--tasks", "nope_task"])
    row("40b lm-eval task without its data", ["lm-eval", "--model-args", f"pretrained={done}", "--tasks", "piqa",
                                              "--limit", "2"])


if __name__ == "__main__":
    shutil.rmtree(D, ignore_errors=True)
    D.mkdir(parents=True)
    finished = D / "done"
    assert main(train(finished)) == 0
    lifecycle(finished)
    files_and_flags(finished)
    lm_eval(finished)
