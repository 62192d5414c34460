"""The run directory's contract: what marks a run, whose it is, and which checkpoints may resume it.

A run directory holds one run. ``run_identity.json`` names it (a random run id) and
the hash of the settings that decide what is trained (``identity_hash``); every
checkpoint carries the same two values in its ``trainer_state.json``; and
``run_complete.json``, written last, marks it finished. Training refuses a directory
that holds another run's files unless asked to overwrite or to resume it, and
``--resume`` takes only complete checkpoints of the same run. Light imports only:
the inference commands check run directories before loading anything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from pathlib import Path

from memdlm.errors import ConfigError
from memdlm.integrity import damaged_files
from memdlm.memory.config import RESOLVED_PART
from memdlm.outputs import write_json_atomic  # noqa: F401 -- re-exported: run files are written with it

logger = logging.getLogger("memdlm")

IDENTITY_FILE = "run_identity.json"
LOCK_FILE = ".memdlm.lock"
COMPLETE_FILE = "run_complete.json"
CONFIG_FILE = "run_config.json"
# Files a run writes besides its weights and tokenizer; any of them (or a checkpoint) means
# the directory holds a run.
RUN_FILES = (IDENTITY_FILE, CONFIG_FILE, COMPLETE_FILE, "log_history.json", "data_report.json",
             "heldout_eval.json")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors",
                "pytorch_model.bin", "pytorch_model.bin.index.json", "adapter_model.bin")
MODEL_FILES = ("config.json", "adapter_config.json") + WEIGHT_FILES
# Removed when a run is replaced (--overwrite-output-dir); weights and tokenizer are overwritten
# by the new run's final save, and without run_complete.json nothing reads them meanwhile.
REPLACED_FILES = (COMPLETE_FILE, "log_history.json", "heldout_eval.json")

# Settings that change how a run is watched or how fast it goes, not what it computes.
RUNTIME_SETTINGS = frozenset({
    "output_dir", "overwrite_output_dir", "threads", "disable_tqdm", "report_to", "run_name", "project",
    "logging_strategy", "logging_steps", "logging_first_step", "logging_nan_inf_filter", "log_level",
    "log_level_replica", "log_on_each_node", "save_strategy", "save_steps", "save_total_limit",
    "save_on_each_node", "eval_strategy", "eval_steps", "eval_delay", "eval_on_start",
    "per_device_eval_batch_size", "dataloader_num_workers", "dataloader_pin_memory",
    "dataloader_persistent_workers", "dataloader_prefetch_factor", "skip_memory_metrics",
    "resume_from_checkpoint", "local_rank", "max_train_minutes", "max_nonfinite_skips", "use_cpu",
    "ddp_timeout", "do_train", "do_eval", "do_predict", "heldout_items", "num_eval_samples", "hub_token",
    "push_to_hub", "hub_model_id", "hub_strategy", "hub_private_repo", "hub_always_push", "hub_revision",
})
# The optimisation schedule: may change on --resume (continue from the last finite checkpoint
# with a lower learning rate, or train for longer); the changes are logged.
SCHEDULE_SETTINGS = frozenset({"learning_rate", "max_steps", "lr_scheduler_type", "lr_scheduler_kwargs",
                               "warmup_steps", "max_grad_norm"})


# Parts of run_config.json derived from the settings and the model, not settings themselves:
# they take no part in a run's identity.
DERIVED_PARTS = frozenset({RESOLVED_PART})


def flat_settings(config: dict) -> dict:
    """``{"part.name": value}`` of a resolved config (``run_config.json``'s layout), derived parts left out."""
    return {f"{part}.{name}": value for part, values in config.items()
            if isinstance(values, dict) and part not in DERIVED_PARTS for name, value in values.items()}


def _identity_settings(config: dict) -> dict:
    return {k: v for k, v in flat_settings(config).items()
            if k.split(".", 1)[1] not in RUNTIME_SETTINGS | SCHEDULE_SETTINGS}


def identity_hash(config: dict) -> str:
    """Hash of the settings that decide what a run computes (runtime and schedule settings excluded)."""
    text = json.dumps(_identity_settings(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def new_identity(config: dict) -> dict:
    return {"run_id": uuid.uuid4().hex[:12], "config_hash": identity_hash(config)}


def changed_settings(old: dict, new: dict, names=None, exclude=frozenset()) -> list[str]:
    """``part.name: old -> new`` for each setting that differs (all, or those in ``names``,
    less those in ``exclude``)."""
    a, b = flat_settings(old), flat_settings(new)
    keys = sorted(k for k in set(a) | set(b)
                  if (names is None or k.split(".", 1)[1] in names) and k.split(".", 1)[1] not in exclude)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_identity(out: Path) -> dict | None:
    """The run's identity; a run made before identities existed gets one derived from its
    ``run_config.json`` (run id ``legacy``)."""
    identity = read_json(out / IDENTITY_FILE)
    if isinstance(identity, dict) and "run_id" in identity:
        return identity
    config = read_json(out / CONFIG_FILE)
    if isinstance(config, dict):
        return {"run_id": "legacy", "config_hash": identity_hash(config)}
    return None


def checkpoints(out: Path) -> list[Path]:
    """``checkpoint-<step>`` directories, oldest step first (numeric order)."""
    found = [p for p in out.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def holds_run(out: Path) -> bool:
    """Run files, checkpoints or a saved model (a model directory given as --output-dir would
    have its weights overwritten)."""
    return out.is_dir() and (any((out / name).exists() for name in RUN_FILES + MODEL_FILES)
                             or bool(checkpoints(out)))


def describe(out: Path) -> str:
    identity = read_identity(out)
    if identity is None:
        present = sorted(p.name for p in out.iterdir() if p.name in RUN_FILES + MODEL_FILES)
        return f"a model or run not made by memdlm train ({', '.join(present)})"
    done = read_json(out / COMPLETE_FILE)
    ckpts = checkpoints(out)
    state = f"finished at step {done.get('global_step')}" if isinstance(done, dict) else "unfinished"
    saved = f", checkpoints up to {ckpts[-1].name}" if ckpts else ""
    return f"run {identity['run_id']} ({state}{saved})"


def check_output_dir(out: Path, config: dict, resume: bool, overwrite: bool) -> dict:
    """Decide what training into ``out`` means, before anything is loaded or deleted.

    Returns ``{"identity", "action"}``, action one of ``new`` (an empty directory),
    ``replace`` (another run, --overwrite-output-dir), ``resume``. Raises ConfigError for
    a directory holding another run without either flag, or a --resume whose settings
    differ from the run's in anything but the schedule.
    """
    if resume and overwrite:
        raise ConfigError("--resume continues the run in --output-dir and --overwrite-output-dir replaces "
                          "it: give one of them")
    if not holds_run(out):
        if resume:
            logger.warning("--resume: %s holds no run; starting from scratch", out)
        return {"identity": new_identity(config), "action": "new"}
    if overwrite:
        logger.warning("--overwrite-output-dir: replacing %s in %s", describe(out), out)
        return {"identity": new_identity(config), "action": "replace"}
    if not resume:
        raise ConfigError(f"--output-dir {out} already holds {describe(out)}; pass --resume to continue it, "
                          "--overwrite-output-dir to replace it, or choose another directory")
    identity = read_identity(out)
    old_config = read_json(out / CONFIG_FILE)
    if (out / CONFIG_FILE).is_file() and not isinstance(old_config, dict):
        raise ConfigError(f"--resume: {out / CONFIG_FILE} is not a valid JSON object (edited or cut short), so "
                          "the run it describes cannot be checked; restore it, or pass --overwrite-output-dir "
                          "to start again there")
    if identity is None or not isinstance(old_config, dict):
        raise ConfigError(f"--resume: {out} holds {describe(out)} but no {CONFIG_FILE} to say which run made it; "
                          "pass --overwrite-output-dir to start again there")
    if identity["config_hash"] != identity_hash(config):
        changes = changed_settings(old_config, config, exclude=RUNTIME_SETTINGS | SCHEDULE_SETTINGS)
        raise ConfigError(f"--resume: {out} holds {describe(out)} made with other settings "
                          f"({'; '.join(changes) or 'unknown differences'}); resume with the same settings, "
                          "or pass --overwrite-output-dir to replace it")
    schedule = changed_settings(old_config, config, SCHEDULE_SETTINGS)
    if schedule:
        logger.warning("--resume: continuing run %s with a changed schedule (%s)", identity["run_id"],
                       "; ".join(schedule))
    return {"identity": identity, "action": "resume"}


def remove_replaced_run(out: Path) -> None:
    """Delete what a replaced run leaves that the new run would not overwrite."""
    import shutil

    for ckpt in checkpoints(out):
        shutil.rmtree(ckpt)
    for name in REPLACED_FILES:
        (out / name).unlink(missing_ok=True)


# --- one writer at a time ----------------------------------------------------------------------
class RunLock:
    """An advisory lock on a run directory (``fcntl.flock`` on ``.memdlm.lock``), held while training.

    The file holds the owner's pid, host and start time, so a refused second writer can name
    it. The kernel releases a flock when its process dies (kill -9 included), so a lock can
    never block after its owner is gone; a file still naming an owner when the lock is taken
    was left by a process that died without releasing it, and the new owner says so. The file
    is emptied on release but never deleted: deleting it would let a waiting process lock an
    unlinked file while a third locks a new one.
    """

    def __init__(self, out: Path):
        self.path = Path(out) / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        import fcntl
        import socket
        import time

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _owner(os.read(fd, 4096))
            os.close(fd)
            raise ConfigError(f"--output-dir {self.path.parent} is in use by {owner} (lock file {self.path}): "
                              "one process trains a run directory at a time; wait for it to end, or "
                              "choose another --output-dir") from None
        except OSError as err:  # a file system without flock (some network mounts): warn, go on
            logger.warning("cannot lock %s (%s): nothing stops a second process from writing there",
                           self.path, err.strerror or err)
            os.close(fd)
            return self
        previous = os.read(fd, 4096)
        if previous.strip():
            logger.warning("%s: taking over a stale lock of %s (it ended without releasing it)",
                           self.path, _owner(previous))
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        import fcntl

        os.ftruncate(self.fd, 0)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _owner(raw: bytes) -> str:
    try:
        record = json.loads(raw)
        return f"pid {record['pid']} on host {record['host']} (since {record.get('since', '?')})"
    except (ValueError, TypeError, KeyError):
        return "another process (its lock file names no owner)"


# --- checkpoints --------------------------------------------------------------------------------


def missing_checkpoint_files(ckpt: Path) -> list[str]:
    """What a resume needs from ``ckpt`` that is not there (Trainer, transformers 5.24,
    ``_save_checkpoint``: weights, optimizer, scheduler, RNG state, then ``trainer_state.json``).

    A checkpoint killed during saving or during rotation (``shutil.rmtree`` of an old
    checkpoint deletes file by file) lacks some of them; resuming it would silently start
    a fresh optimizer and warmup. Sharded (FSDP) and DeepSpeed layouts count by their folders.
    """
    names = {p.name for p in ckpt.iterdir()} if ckpt.is_dir() else set()
    sharded = any(n.startswith(("pytorch_model_fsdp", "global_step")) for n in names)
    missing = []
    if not sharded and not names & set(WEIGHT_FILES):
        missing.append("model weights")
    if not sharded and not names & {"optimizer.pt", "optimizer.bin"} and \
            not any(n.startswith("optimizer_") for n in names):
        missing.append("optimizer.pt")
    if "scheduler.pt" not in names:
        missing.append("scheduler.pt")
    if not any(n.startswith("rng_state") for n in names):
        missing.append("rng_state.pth")
    if "trainer_state.json" not in names:
        missing.append("trainer_state.json")
    return missing


def checkpoint_run_id(state: dict) -> str | None:
    record = (state.get("stateful_callbacks") or {}).get("RunRecord")
    return (record or {}).get("attributes", {}).get("run_id") if isinstance(record, dict) else None


def resume_checkpoint(out: Path, run_id: str | None = None, quiet: bool = False) -> str | None:
    """The newest complete checkpoint of run ``run_id`` in ``out`` (any run's when None or legacy).

    Complete: every file a resume reads is there and whole (:mod:`memdlm.integrity`: not cut
    short), and ``trainer_state.json`` parses and names the directory's own step. Others are
    skipped with a warning naming what is missing or damaged, or whose run they are.
    """
    out = Path(out)
    warn = (lambda *a: None) if quiet else logger.warning
    skipped = []
    for ckpt in reversed(checkpoints(out)):
        reason = unusable_checkpoint(ckpt, run_id)
        if reason is None:
            if skipped:
                warn("--resume: falling back to %s, the newest checkpoint that loads (skipped: %s)", ckpt,
                     ", ".join(skipped))
            return str(ckpt)
        warn("--resume: %s %s; skipping it", ckpt, reason)
        skipped.append(ckpt.name)
    warn("--resume: no complete checkpoint in %s; starting from scratch", out)
    return None


def unusable_checkpoint(ckpt: Path, run_id: str | None) -> str | None:
    """Why ``ckpt`` cannot resume run ``run_id`` (None: it can)."""
    missing = missing_checkpoint_files(ckpt)
    if missing:
        return f"is incomplete (missing {', '.join(missing)})"
    damaged = damaged_files(ckpt)
    if damaged:
        return f"is damaged ({'; '.join(damaged)})"
    state = read_json(ckpt / "trainer_state.json")
    step = state.get("global_step") if isinstance(state, dict) else None
    if step != int(ckpt.name.split("-")[-1]):
        return "is incomplete (no valid trainer_state.json)"
    owner = checkpoint_run_id(state)
    if run_id not in (None, "legacy") and owner != run_id:
        return f"belongs to run {owner}, not to run {run_id}"
    return None


# --- inference on a run directory ---------------------------------------------------------------
def check_finished(path: str | Path, allow_incomplete: bool = False, flag: str = "--allow-incomplete") -> None:
    """Refuse a run directory without ``run_complete.json`` (an unfinished or failed run);
    ``allow_incomplete`` turns the refusal into a warning. Plain model directories pass."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file() or (path / COMPLETE_FILE).is_file():
        return
    message = (f"{path} is an unfinished run (no {COMPLETE_FILE}): its weights may be missing, stale "
               f"or from another run; finish it with memdlm train --resume --output-dir {path}")
    if not allow_incomplete:
        raise ConfigError(f"{message}, or pass {flag} to use them anyway")
    logger.warning("%s; using them anyway (%s)", message, flag)


