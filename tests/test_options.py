"""Training options (memdlm.training.options): flags, config files and Python values give
one setup, so the reproduction's cells, built from Python values, train exactly what the
same values in a ``memdlm train --config`` file would."""

from __future__ import annotations

import json

import pytest

from memdlm.errors import ConfigError
from memdlm.training.options import parse, setup_from_options
from memdlm.training.train import resolved_config


def reproduction_options(tmp_path) -> dict[str, dict]:
    """Cell -> training options of the smoke reproduction's calibration, arms (seed 0, whose
    MemDLM arms are calibration cells, and a second seed) and lr-0 control (recorded, not
    trained)."""
    from memdlm.reproduce.pipeline import Reproduction
    from memdlm.reproduce.presets import SMOKE

    recorded = {}

    def record(self, cell, options):
        recorded[cell.name if cell.parent == tmp_path else f"{cell.parent.name}/{cell.name}"] = options
        cell.mkdir(parents=True, exist_ok=True)
        logs = [{"step": 1, "loss": 1.0, "memory/absorption_ratio": 0.9, "memory/relative_change": 0.1}]
        (cell / "log_history.json").write_text(json.dumps(logs))
        return {"train_seconds": 1.0, "global_step": 1}

    repro = Reproduction(SMOKE, tmp_path, progress=False)
    repro._train = record.__get__(repro)
    chosen = {mode: row["chosen"] for mode, row in repro.calibrate()["modes"].items()}
    repro.arms(0, chosen)
    repro.arms(1, chosen)
    repro.lr0_control()
    return recorded


def as_json(setup) -> str:
    """``run_config.json``'s text: type-sensitive (1 and 1.0 differ)."""
    return json.dumps(resolved_config(setup), sort_keys=True)


def test_python_values_give_what_a_config_file_with_them_gives(tmp_path):
    cells = reproduction_options(tmp_path / "repro")
    assert {"calibrate/r2_lr0.1_shared", "seed0/standard", "seed1/memdlm", "seed1/memdlm_per_sample",
            "control_lr0/memdlm_lr0"} <= set(cells)
    for name, options in cells.items():
        options = {**options, "output_dir": str(tmp_path / "run"), "threads": 1, "disable_tqdm": True}
        config = tmp_path / "config.json"
        config.write_text(json.dumps(options))
        from_file, resume = parse(["--config", str(config)])
        direct = setup_from_options(options)
        assert as_json(direct) == as_json(from_file), name
        assert direct.threads == from_file.threads == 1 and not resume


def test_ints_become_floats_where_the_flag_parser_makes_them_floats(tmp_path):
    setup = setup_from_options({"output_dir": str(tmp_path), "logging_steps": 1, "save_strategy": "no",
                                "save_steps": 4, "inner_lr": 0, "progressive_ratios": [1, 0.5]})
    assert isinstance(setup.train.logging_steps, float) and isinstance(setup.train.save_steps, float)
    assert isinstance(setup.memory.inner_lr, float) and setup.memory.progressive_ratios == [1.0, 0.5]
    assert isinstance(setup.train.max_steps, int)


def test_python_values_are_checked_like_flags(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['max_stepz'\]"):
        setup_from_options({"output_dir": str(tmp_path), "max_stepz": 3})
    with pytest.raises(ConfigError, match="--output-dir is required"):
        setup_from_options({"max_steps": 3})
    with pytest.raises(ConfigError, match="--inner-lr must be >= 0"):
        setup_from_options({"output_dir": str(tmp_path), "inner_lr": -1})
    with pytest.raises(ConfigError, match="--trajectory 'x' is not one of"):
        setup_from_options({"output_dir": str(tmp_path), "trajectory": "x"})
