"""The run-directory contract on hand-made directories (no training): which directory may be
trained into, which settings identify a run, which checkpoint is complete, which run may be
used for inference. The trained end-to-end versions are in test_run_lifecycle.py."""

from __future__ import annotations

import json

import pytest

from memdlm.errors import ConfigError
from memdlm.runs.directory import (
    check_finished,
    check_output_dir,
    identity_hash,
    missing_checkpoint_files,
    new_identity,
)

CONFIG = {"model": {"tiny_layers": 1}, "train": {"seed": 0, "learning_rate": 1e-3, "max_steps": 4,
                                                   "output_dir": "a", "threads": 1}}


def with_train(**changes) -> dict:
    return {**CONFIG, "train": {**CONFIG["train"], **changes}}


def written_run(out, config=CONFIG, complete=True) -> dict:
    out.mkdir()
    identity = new_identity(config)
    (out / "run_identity.json").write_text(json.dumps(identity))
    (out / "run_config.json").write_text(json.dumps(config))
    if complete:
        (out / "run_complete.json").write_text(json.dumps({"global_step": 4}))
    return identity


def test_identity_ignores_runtime_and_schedule_settings_only():
    base = identity_hash(CONFIG)
    assert identity_hash(with_train(output_dir="b", threads=2)) == base  # runtime
    assert identity_hash(with_train(learning_rate=1e-4, max_steps=8)) == base  # schedule
    assert identity_hash(with_train(seed=1)) != base


def test_a_directory_holding_a_run_is_refused_without_a_flag(tmp_path):
    assert check_output_dir(tmp_path / "new", CONFIG, False, False)["action"] == "new"
    identity = written_run(tmp_path / "run")
    with pytest.raises(ConfigError, match=f"already holds run {identity['run_id']} .finished at step 4"):
        check_output_dir(tmp_path / "run", CONFIG, False, False)
    assert check_output_dir(tmp_path / "run", CONFIG, False, True)["action"] == "replace"


def test_resume_keeps_the_identity_and_allows_only_schedule_changes(tmp_path):
    identity = written_run(tmp_path / "run")
    plan = check_output_dir(tmp_path / "run", with_train(learning_rate=1e-4, max_steps=8), True, False)
    assert plan == {"identity": identity, "action": "resume"}
    with pytest.raises(ConfigError, match=r"made with other settings \(train.seed: 0 -> 1\)"):
        check_output_dir(tmp_path / "run", with_train(seed=1), True, False)


@pytest.mark.parametrize("gone", ["model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth",
                                  "trainer_state.json"])
def test_a_checkpoint_missing_any_file_a_resume_reads_is_incomplete(tmp_path, gone):
    names = ["model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"]
    for name in names:
        if name != gone:
            (tmp_path / name).write_bytes(b"")
    expected = {"rng_state.pth": "rng_state.pth", "model.safetensors": "model weights"}.get(gone, gone)
    assert missing_checkpoint_files(tmp_path) == [expected]


def test_an_unfinished_run_is_refused_for_inference(tmp_path, caplog):
    written_run(tmp_path / "done")
    written_run(tmp_path / "half", complete=False)
    (tmp_path / "model").mkdir()  # a plain model directory: no run_config.json
    check_finished(tmp_path / "done")
    check_finished(tmp_path / "model")
    with pytest.raises(ConfigError, match="is an unfinished run .no run_complete.json"):
        check_finished(tmp_path / "half")
    check_finished(tmp_path / "half", allow_incomplete=True)
    assert "using them anyway" in caplog.text
