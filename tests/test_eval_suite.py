"""The long-context evaluation suite (memdlm.eval.suite) and ``memdlm eval``."""

from __future__ import annotations

import json

import pytest

from memdlm.eval.suite import (
    RunSpec,
    default_runs,
    evaluate_suite,
    get_cell,
    paired_bootstrap,
    parse_run_spec,
    save_suite,
    to_markdown,
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tok, make_tiny_model):
    path = tmp_path_factory.mktemp("tiny")
    make_tiny_model(seed=0).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def suite(model_dir):
    """Standard with and without adaptation on one tiny model: kv and niah at 128 tokens
    (3 items each), mv too short there. (Two runs, not the 2 x 2: each run costs ~2 s.)"""
    from memdlm.eval.suite import _load

    loads = []

    def loader(d):
        loads.append(d)
        return _load(d, False)

    runs = default_runs(model_dir, None)
    result = evaluate_suite(runs, ["kv", "niah", "mv"], [128], n=3, seed=7, batch_size=3,
                            progress=False, loader=loader)
    return result, loads


def test_parse_run_spec():
    assert parse_run_spec("Standard=runs/std") == RunSpec("Standard", "runs/std", False)
    assert parse_run_spec("MemDLM T&I=runs/mem:memory") == RunSpec("MemDLM T&I", "runs/mem", True)
    assert parse_run_spec(" a = /x/y:mem ") == RunSpec("a", "/x/y", True)
    assert parse_run_spec("a=C:/models/m") == RunSpec("a", "C:/models/m", False)
    for bad in ("runs/std", "=runs/std", "name=", "name=:memory"):
        with pytest.raises(ValueError):
            parse_run_spec(bad)


def test_default_runs_is_the_two_by_two():
    runs = default_runs("std", "mem")
    assert [(r.name, r.model_dir, r.memory) for r in runs] == [
        ("Standard", "std", False), ("Standard + adaptation", "std", True),
        ("MemDLM Train-Only", "mem", False), ("MemDLM Train & Inference", "mem", True)]
    assert [r.name for r in default_runs(None, "mem")] == ["MemDLM Train-Only",
                                                          "MemDLM Train & Inference"]
    with pytest.raises(ValueError):
        default_runs(None, None)


def test_paired_bootstrap_hand_cases():
    a = [0.0, 100.0, 50.0, 25.0, 0.0]
    assert paired_bootstrap(a, a) == (0.0, (0.0, 0.0))
    diff, (lo, hi) = paired_bootstrap(a, [x + 5 for x in a])
    assert diff == pytest.approx(5) and lo == pytest.approx(5) and hi == pytest.approx(5)
    diff, (lo, hi) = paired_bootstrap([True, False, False, False], [True, True, True, False])
    assert diff == pytest.approx(0.5) and 0 <= lo <= 0.5 <= hi <= 1
    # deterministic in the seed, and the interval narrows with more items
    assert paired_bootstrap(a, a[::-1], seed=3) == paired_bootstrap(a, a[::-1], seed=3)
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 2.0])


def test_evaluate_suite_cells_are_paired_and_scored(suite):
    result, loads = suite
    assert len(loads) == 1  # one model directory, loaded once for both runs
    names = [r["name"] for r in result["runs"]]
    assert [(c["task"], c["length"]) for c in result["cells"]] == [("kv", 128), ("niah", 128),
                                                                   ("mv", 128)]
    for task in ("kv", "niah"):
        cell = get_cell(result, task, 128)
        assert cell["skipped"] is None and len(cell["item_keys"]) == 3
        assert set(cell["results"]) == set(names)
        for r in cell["results"].values():
            assert r["item_keys"] == cell["item_keys"]  # every run answered the same items
            assert 0 <= r["score"] <= 100 and 0 <= r["exact_match"] <= 1
            assert r["n"] == 3 and r["seconds"] >= 0
            assert len(r["item_scores"]) == len(r["item_correct"]) == len(r["predictions"]) == 3
            assert sum(r["item_scores"]) / 3 == pytest.approx(r["score"])
    assert get_cell(result, "kv", 128)["item_keys"] != get_cell(result, "niah", 128)["item_keys"]
    mv = get_cell(result, "mv", 128)
    assert mv["skipped"] and "shorter" in mv["skipped"] and mv["results"] == {}
    json.dumps(result)  # JSON-ready


def test_to_markdown_layout(suite):
    result, _ = suite
    md = to_markdown(result, n_boot=200)
    lines = md.splitlines()
    assert lines[2] == "| Task | Length | Standard | Standard + adaptation |"
    assert lines[3] == "|---|---:|---:|---:|"
    assert lines[4].startswith("| kv | 128 | ") and lines[5].startswith("| niah | 128 | ")
    assert lines[6] == "| mv | 128 | skipped | skipped |"
    assert lines[7].startswith("| **mean** |")
    assert "Paired difference vs Standard" in md and "mv at 128 tokens" in md


def test_save_suite_writes_reports(suite, tmp_path):
    result, _ = suite
    paths = save_suite(result, tmp_path / "out")
    assert json.loads(paths["json"].read_text())["cells"][0]["task"] == "kv"
    assert paths["md"].read_text().startswith("## Score")
    pytest.importorskip("matplotlib")
    assert paths["png"].stat().st_size > 1000


@pytest.mark.slow
def test_cli_eval_writes_suite(model_dir, tmp_path, capsys):
    from memdlm.cli import main

    out = tmp_path / "eval"
    code = main(["eval", "--run", f"plain={model_dir}", "--run", f"adapted={model_dir}:memory",
                 "--tasks", "kv", "--lengths", "128", "--items", "2", "--batch-size", "2",
                 "--threads", "1", "--no-progress", "--output-dir", str(out)])
    assert code == 0
    assert {p.name for p in out.iterdir()} >= {"suite.json", "suite.md"}
    data = json.loads((out / "suite.json").read_text())
    assert [r["name"] for r in data["runs"]] == ["plain", "adapted"] and data["runs"][1]["memory"]
    assert "| kv | 128 |" in capsys.readouterr().out


def test_cli_eval_help_and_errors(capsys):
    from memdlm.commands.evaluate import run
    from memdlm.errors import ConfigError

    with pytest.raises(SystemExit):
        run(["--help"])
    text = capsys.readouterr().out
    assert "--standard" in text and "--run" in text and "memdlm eval --standard" in text
    with pytest.raises(ConfigError):
        run(["--output-dir", "x"])  # no runs
    with pytest.raises(ConfigError):
        run(["--run", "a=x", "--run", "a=y", "--output-dir", "x"])  # duplicate names


def test_adapted_runs_use_their_own_memory_settings(tmp_path, tok, make_tiny_model):
    """`memdlm eval ... NAME=DIR:memory` adapts with the run's rank, scope and trajectory
    (it used the defaults); an explicit override changes only what it names."""
    import json

    from memdlm.eval.suite import _load

    make_tiny_model(seed=0).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    saved = {"memory_rank": 4, "memory_scope": "ffn_attn", "trajectory": "progressive", "adapt_mask_ratio": 0.3}
    (tmp_path / "run_config.json").write_text(json.dumps({"memory": saved}))
    run = _load(str(tmp_path), False)
    own = run.memory(adapt_mask_ratio=None).settings
    assert (own.memory_rank, own.memory_scope, own.trajectory, own.adapt_mask_ratio) == (4, "ffn_attn", "progressive", 0.3)
    assert run.memory(adapt_mask_ratio=0.5).settings.adapt_mask_ratio == 0.5
    assert run.memory(adapt_mask_ratio=0.5).settings.memory_rank == 4


def test_suite_fast_sampling_settings(model_dir):
    """The eval's sampler overrides reach the decoding; calls are reported per cell."""
    runs = [RunSpec("plain", model_dir, False)]
    fast = {"unmask_rule": "threshold", "threshold": 0.0, "max_per_step": None, "cache": "dual"}
    result = evaluate_suite(runs, ["kv"], [128], n=2, seed=7, batch_size=2, progress=False, sampler=fast)
    assert result["sampler"] == fast
    cell = get_cell(result, "kv", 128)["results"]["plain"]
    # tau = 0 commits the whole (single) block in one call
    assert cell["model_calls"] == 1 and cell["mean_calls_per_item"] == 1.0


def test_cli_eval_fast_sampling_flags(capsys):
    from memdlm.commands.evaluate import build_parser, run
    from memdlm.errors import ConfigError
    from memdlm.sampling.sampler import SamplerConfig

    args = build_parser("memdlm eval").parse_args(["--run", "a=x", "--output-dir", "o"])
    defaults = SamplerConfig()
    assert (args.unmask_rule, args.threshold, args.max_per_step, args.cache) == (
        defaults.unmask_rule, defaults.threshold, defaults.max_per_step, defaults.cache)
    args = build_parser("memdlm eval").parse_args(["--run", "a=x", "--output-dir", "o", "--unmask-rule",
                                                   "threshold", "--max-per-step", "3", "--cache", "prefix"])
    assert (args.unmask_rule, args.max_per_step, args.cache) == ("threshold", 3, "prefix")
    with pytest.raises(SystemExit):
        build_parser("memdlm eval").parse_args(["--run", "a=x", "--output-dir", "o", "--cache", "full"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="threshold must lie"):
        run(["--run", "a=x", "--output-dir", "o", "--threshold", "2"])
