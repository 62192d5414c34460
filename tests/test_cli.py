"""The ``memdlm`` command line: help, config files, and one-line user errors (exit code 2)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from memdlm.cli import main
from memdlm.commands.train import parse

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def memdlm_executable() -> list[str]:
    script = Path(sys.executable).with_name("memdlm")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "memdlm.cli"]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("memdlm train: error:")]


def assert_one_line_error(capsys, rc: int, *needles: str) -> str:
    """Exit code 2, exactly one ``memdlm train: error:`` line holding every needle, no traceback."""
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = error_lines(err)
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --- help -------------------------------------------------------------------------------


def test_console_script_help_lists_train():
    out = subprocess.run([*memdlm_executable(), "--help"], capture_output=True, text=True,
                         env=ENV, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "train" in out.stdout and "Train a masked diffusion LM" in out.stdout


def test_main_help_and_no_arguments(capsys):
    assert main(["--help"]) == 0
    assert "train" in capsys.readouterr().out
    assert main([]) == 0
    assert "COMMAND" in capsys.readouterr().out


def test_unknown_command_exits_2_listing_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["trian"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "'trian'" in err and "train" in err


def test_train_help_in_process(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--method {mdlm,memdlm}", "--memory_rank", "--memory-rank", "--schedule",
                 "--normalization", "--output-dir", "--config"):
        assert flag in out, flag


@pytest.mark.parametrize("command", ["train", "eval"])
def test_help_lists_every_registered_task(monkeypatch, capsys, command):
    """From the registry, not a hand list: a task registered now is listed too."""
    from memdlm.tasks import base, task_names

    names = task_names()
    monkeypatch.setitem(base._REGISTRY, "zz_just_registered", base._REGISTRY[names[0]])
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    words = set(re.findall(r"[\w-]+", capsys.readouterr().out))
    assert not [name for name in [*names, "zz_just_registered"] if name not in words]


def test_help_lists_presets_and_shipped_init_configs_from_their_registries(capsys):
    from memdlm.backbones.modeling import init_configs
    from memdlm.reproduce.presets import PRESETS

    for command, names in (("reproduce", list(PRESETS)), ("train", init_configs())):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        words = set(re.findall(r"[\w-]+", capsys.readouterr().out))
        assert names and set(names) <= words, command


@pytest.mark.slow
def test_train_help_subprocess():
    out = subprocess.run([sys.executable, "-m", "memdlm.cli", "train", "--help"],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "--method" in out.stdout and "--memory_rank" in out.stdout


# --- config files -----------------------------------------------------------------------


def test_config_file_sets_defaults_and_flags_override(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("learning-rate: 5e-3\nmax_steps: 5\ntrain_lengths: [64, 96]\n"
                   "schedule: cosine\nmemory_rank: 4\n")
    setup, resume = parse(["--config", str(cfg), "--output-dir", str(tmp_path / "run"),
                           "--max-steps", "7"])
    assert setup.train.max_steps == 7  # the flag wins over the file
    assert setup.train.learning_rate == 5e-3 and isinstance(setup.train.learning_rate, float)
    assert setup.data.train_lengths == [64, 96]
    assert setup.diffusion.schedule == "cosine"
    assert setup.memory.memory_rank == 4
    assert setup.train.output_dir == str(tmp_path / "run")
    assert resume is False


def test_json_config_file(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"normalization": "sequence", "method": "memdlm"}))
    setup, resume = parse(["--config", str(cfg), "--output-dir", str(tmp_path), "--resume"])
    assert setup.diffusion.normalization == "sequence" and setup.train.method == "memdlm"
    assert resume is True


@pytest.mark.parametrize("suffix, text", [
    (".yaml", "learning_rate: 0.001\nnot_a_key: 3\n"),
    (".json", '{"max_steps": 3, "not_a_key": 3}'),
])
def test_unknown_config_key_exits_2_naming_it(tmp_path, capsys, suffix, text):
    cfg = tmp_path / f"cfg{suffix}"
    cfg.write_text(text)
    rc = main(["train", "--config", str(cfg), "--output-dir", str(tmp_path / "run")])
    assert_one_line_error(capsys, rc, "not_a_key", str(cfg))
    assert not (tmp_path / "run").exists()  # nothing started


def test_missing_config_file_exits_2(tmp_path, capsys):
    rc = main(["train", "--config", str(tmp_path / "nope.yaml"), "--output-dir", str(tmp_path)])
    assert_one_line_error(capsys, rc, "nope.yaml", "does not exist")


def test_missing_output_dir_exits_2(capsys):
    rc = main(["train", "--max-steps", "3"])
    assert_one_line_error(capsys, rc, "--output-dir is required")


def test_invalid_choice_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--output-dir", str(tmp_path), "--schedule", "bogus"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err


def test_unknown_flag_exits_2_naming_it(tmp_path, capsys):
    try:
        rc = main(["train", "--output-dir", str(tmp_path), "--bogus-flag", "3"])
    except SystemExit as exit_info:  # argparse's own error path is fine too
        rc = exit_info.code
    assert rc == 2
    assert "--bogus-flag" in capsys.readouterr().err


# --- user errors found while setting up a run -------------------------------------------


def test_malformed_data_row_exits_2_naming_the_row(tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "a", "response": "b"}\n\n{"prompt": "c", "response": \n')
    out = tmp_path / "run"
    rc = main(["train", "--data", str(data), "--output-dir", str(out), "--tiny-layers", "1"])
    line = assert_one_line_error(capsys, rc, str(data), "row 1 (line 3)", "not valid JSON")
    assert line.count("\n") == 0
    assert not (out / "run_complete.json").exists()


def test_model_dir_without_mask_token_exits_2(tmp_path, capsys, make_tiny_model,
                                              maskless_tokenizer):
    model_dir = tmp_path / "model"
    make_tiny_model(num_hidden_layers=1).save_pretrained(model_dir)
    maskless_tokenizer.save_pretrained(model_dir)
    rc = main(["train", "--model", str(model_dir), "--output-dir", str(tmp_path / "run")])
    assert_one_line_error(capsys, rc, "mask token", str(model_dir))


def test_missing_model_dir_exits_2(tmp_path, capsys):
    missing = tmp_path / "no_such_model"
    rc = main(["train", "--model", str(missing), "--output-dir", str(tmp_path / "run")])
    assert_one_line_error(capsys, rc, str(missing), "does not exist")


# --- what counts as a user error: its type, not its message ------------------------------


def test_user_errors_are_recognised_by_type_alone():
    from memdlm.backbones.bidirectional import CausalAttentionError
    from memdlm.errors import ConfigError, DataError, MissingFileError, UserError, is_user_error
    from memdlm.backbones.remote_code import RemoteCodeError
    from memdlm.training.nonfinite import NonFiniteStepError

    for cls in (ConfigError, DataError, MissingFileError, CausalAttentionError, RemoteCodeError,
                NonFiniteStepError):
        assert issubclass(cls, UserError) and is_user_error(cls("x")), cls
    assert issubclass(ConfigError, ValueError) and issubclass(DataError, ValueError)
    assert issubclass(MissingFileError, FileNotFoundError) and issubclass(RemoteCodeError, ImportError)
    assert is_user_error(FileNotFoundError("a path the user gave"))
    # what the old message / traceback heuristics took for the user's: now bugs, with tracebacks
    for text in ("unknown thing", "the mask token is gone", "no module matches", "list is empty"):
        assert not is_user_error(ValueError(text))

    class Options:
        def __post_init__(self):
            raise ValueError("raised in a __post_init__")

    with pytest.raises(ValueError) as info:
        Options().__post_init__()
    assert not is_user_error(info.value)


@pytest.mark.parametrize("error, user", [
    ("ConfigError", True), ("DataError", True), ("MissingFileError", True), ("NonFiniteStepError", True),
    ("ValueError", False), ("KeyError", False), ("RuntimeError", False),
])
def test_cli_reports_user_errors_in_one_line_and_lets_bugs_through(monkeypatch, capsys, error, user):
    import memdlm.commands.train as train_command
    from memdlm import errors
    from memdlm.training.nonfinite import NonFiniteStepError

    cls = {"NonFiniteStepError": NonFiniteStepError, "ValueError": ValueError, "KeyError": KeyError,
           "RuntimeError": RuntimeError}.get(error) or getattr(errors, error)

    def run(argv, prog):
        raise cls("unknown option: the mask token is empty")  # every old heuristic's keyword

    monkeypatch.setattr(train_command, "run", run)
    if not user:
        with pytest.raises(cls):
            main(["train"])
        return
    assert_one_line_error(capsys, main(["train"]), "unknown option: the mask token is empty")


@pytest.mark.parametrize("flags, needle", [
    (["--inner-lr", "-1"], "--inner-lr must be >= 0"),  # MemoryArguments
    (["--time-eps", "2"], "time_eps must be in (0, 1), got 2.0"),  # DiffusionArguments
    (["--load-best-model-at-end", "true", "--save-strategy", "no"],  # TrainingArguments' own check
     "--load_best_model_at_end requires the save and eval strategy to match"),
])
def test_option_checks_in_dataclasses_exit_2(tmp_path, capsys, flags, needle):
    """Once recognised by the name of the frame that raised them (``__post_init__``)."""
    rc = main(["train", "--output-dir", str(tmp_path / "run"), *flags])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and f"memdlm train: error: {needle}" in err, err
