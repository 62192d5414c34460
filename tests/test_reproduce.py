"""The mini reproduction: statistics, the probe's surgery, caching, and the smoke preset end to end."""

from __future__ import annotations

import json
import random

import pytest

from memdlm.errors import ConfigError
from memdlm.reproduce.cells import check_settings, json_cell, to_argv
from memdlm.reproduce.stats import seed_item_bootstrap, verdict


def test_seed_item_bootstrap_estimate_is_mean_of_seed_means():
    diffs = [[1.0, 0.0, 1.0, 0.0], [2.0, 2.0]]
    est, (lo, hi) = seed_item_bootstrap(diffs, n_boot=500)
    assert est == pytest.approx((0.5 + 2.0) / 2)
    assert lo <= est <= hi


def test_seed_item_bootstrap_one_seed_is_item_bootstrap_and_constant_has_zero_width():
    est, (lo, hi) = seed_item_bootstrap([[0.25] * 10])
    assert (est, lo, hi) == (0.25, 0.25, 0.25)
    rng = random.Random(1)
    noisy = [[rng.gauss(1.0, 1.0) for _ in range(400)]]
    est, (lo, hi) = seed_item_bootstrap(noisy)
    assert lo < est < hi and 0.7 < lo and hi < 1.3  # about +-2 standard errors (0.05 each)


def test_verdict_follows_the_interval_and_the_papers_direction():
    assert verdict(0.1, 0.5) == "reproduced"
    assert verdict(-0.5, -0.1) == "opposite"
    assert verdict(-0.1, 0.1) == "unresolved"
    assert verdict(-0.5, -0.1, better="lower") == "reproduced"
    assert verdict(0.1, 0.5, better="lower") == "opposite"


def test_to_argv_lists_and_scalars():
    assert to_argv({"tasks": ["kv", "mv"], "max_steps": 5, "model": None, "flag": True}) == [
        "--tasks", "kv", "mv", "--max-steps", "5", "--flag", "True"]


def test_cells_refuse_reuse_under_other_settings(tmp_path):
    cell = tmp_path / "eval.json"
    calls = []
    assert json_cell(cell, {"n": 1}, lambda: calls.append(1) or {"x": 1})["x"] == 1
    assert json_cell(cell, {"n": 1}, lambda: calls.append(1) or {"x": 2})["x"] == 1  # cached
    assert calls == [1]
    with pytest.raises(ConfigError, match="eval.json.*n"):
        check_settings(cell, {"n": 2})


def test_probe_removes_exactly_the_queried_needle(tok):
    from memdlm.reproduce.probe import probe_items, remove_needle

    for s in probe_items(tok, 10, 128):
        removed = remove_needle(s)
        value = s.response.strip()
        assert value not in removed
        assert f"The value of {s.meta['key']} is" not in removed
        others = [v for v in s.meta["values"] if v != value]
        assert all(f"is {v}." in removed for v in others)  # the distractors stay
        assert len(removed) < len(s.prompt)


def test_digit_accuracy():
    from memdlm.reproduce.probe import digit_accuracy

    assert digit_accuracy(" 1234", "1234") == 1.0
    assert digit_accuracy("1299", "1234") == 0.5
    assert digit_accuracy("", "1234") == 0.0


def test_preset_hash_changes_with_any_setting():
    from dataclasses import replace

    from memdlm.reproduce.presets import QUICK

    assert QUICK.config_hash() == replace(QUICK).config_hash()
    assert QUICK.config_hash() != replace(QUICK, eval_items=QUICK.eval_items + 1).config_hash()


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    from memdlm.cli import main

    out = tmp_path_factory.mktemp("repro")
    assert main(["reproduce", "--preset", "smoke", "--output-dir", str(out), "--no-progress",
                 "--threads", "1"]) == 0
    return out


@pytest.mark.slow
def test_smoke_preset_writes_report_with_provenance(smoke_run):
    from memdlm.commands.reproduce import git_state
    from memdlm.reproduce.presets import SMOKE

    report = (smoke_run / "REPORT.md").read_text()
    data = json.loads((smoke_run / "report.json").read_text())
    prov = data["provenance"]
    assert prov["config_hash"] == SMOKE.config_hash()
    assert prov["config_hash"][:12] in report
    assert prov["commit"] == git_state()[0] and prov["commit"] in report
    assert "torch" in prov["versions"] and prov["machine"]
    for png in ("exposure_bias.png", "score_vs_length.png", "train_loss.png", "heldout_loss.png"):
        assert (smoke_run / png).stat().st_size > 0 and png in report


@pytest.mark.slow
def test_smoke_report_numbers_come_from_the_runs_outputs(smoke_run):
    from memdlm.cli import main

    ev_path = smoke_run / "seed0" / "eval.json"
    ev = json.loads(ev_path.read_text())
    data = json.loads((smoke_run / "report.json").read_text())
    cell = ev["cells"][0]
    key = f"{cell['task']}@{cell['length']}"
    assert data["summary"]["mean_scores"]["Standard"][key] == cell["results"]["Standard"]["score"]
    # overhead is the runs' own measured seconds per step
    runs = {a: json.loads((smoke_run / "seed0" / a / "run_complete.json").read_text()) for a in ("standard", "memdlm")}
    per = {a: r["train_seconds"] / r["global_step"] for a, r in runs.items()}
    assert data["summary"]["overhead"][0]["ratio"] == pytest.approx(per["memdlm"] / per["standard"])
    # the inner-lr-0 control is read from the two runs' log histories
    assert data["control_lr0"]["max_abs_difference"] == pytest.approx(0.0, abs=1e-6)

    # Edit a cached result: the regenerated report follows it, and nothing retrains.
    stamp = (smoke_run / "seed0" / "standard" / "run_complete.json").stat().st_mtime_ns
    cell["results"]["Standard"]["score"] = 42.5
    ev_path.write_text(json.dumps(ev))
    assert main(["reproduce", "--preset", "smoke", "--output-dir", str(smoke_run), "--no-progress",
                 "--threads", "1"]) == 0
    data = json.loads((smoke_run / "report.json").read_text())
    assert data["summary"]["mean_scores"]["Standard"][key] == 42.5
    assert (smoke_run / "seed0" / "standard" / "run_complete.json").stat().st_mtime_ns == stamp
