"""The mini reproduction: statistics, the probe's surgery, caching, and the smoke preset end to end."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from memdlm.errors import ConfigError
from memdlm.reproduce.cells import check_settings, json_cell
from memdlm.reproduce.rules import capability_gate, eb_measurable, score_verdict, usability_note

STD, TO, TI = "Standard", "MemDLM Train-Only", "MemDLM Train & Inference"
RUNS = [("Standard", "standard", False), ("Standard + adaptation", "standard", True), (TO, "memdlm", False),
        (TI, "memdlm", True)]


def _suite(scores: dict[str, list[float]], task: str = "kv_d1", length: int = 128) -> dict:
    """A suite result of one cell: run name -> per-item scores."""
    n = len(next(iter(scores.values())))
    return {"runs": [{"name": name, "model_dir": f"/x/seed0/{arm}", "memory": mem} for name, arm, mem in RUNS
                     if name in scores],
            "cells": [{"task": task, "length": length, "skipped": None, "item_keys": [f"k{i}" for i in range(n)],
                       "results": {name: {"score": sum(v) / n, "item_scores": v} for name, v in scores.items()}}]}


def _eb(per_run: dict[str, tuple[float, float, float]], items: int = 6, steps: int = 4) -> dict:
    """Exposure-bias results: run -> (l_seq, l_static, l_static_same) levels, a little noise per item."""
    rng = random.Random(0)
    out = {}
    for run, (seq, static, same) in per_run.items():
        per_item = {k: [[v + rng.uniform(-0.01, 0.01) for _ in range(steps)] for _ in range(items)]
                    for k, v in (("l_seq", seq), ("l_static", static), ("l_static_same", same))}
        means = {k: [sum(r[j] for r in v) / items for j in range(steps)] for k, v in per_item.items()}
        out[run] = {**means, "per_item": per_item,
                    "r_eb": [a / b for a, b in zip(means["l_seq"], means["l_static"])],
                    "r_ctrl": [a / b for a, b in zip(means["l_seq"], means["l_static_same"])]}
    return {"results": out}


def _fake_reproduction(tmp_path, dev_standard: float, absorption_late: float = 0.95,
                       control_climbs: bool = True, memdlm_off=(0.9, 1.1, 0.7, 0.9)) -> dict:
    """A one-seed reproduction's result dict and the run files its report reads: the arms'
    log histories and summaries, no models."""
    from memdlm.reproduce.presets import SMOKE

    dirs = {}
    for arm in ("standard", "memdlm", "eb_standard", "eb_memdlm"):
        d = tmp_path / "seed0" / arm
        d.mkdir(parents=True)
        logs = [{"step": s, "loss": 1.0, "eval_loss": 0.9} for s in (5, 10)]
        if arm.endswith("memdlm"):
            logs = [{**r, "memory/absorption_ratio": a, "memory/relative_change": 0.1,
                     "eval_loss_prompt_memory": 0.7} for r, a in zip(logs, (0.97, absorption_late))]
        (d / "log_history.json").write_text(json.dumps(logs))
        (d / "run_complete.json").write_text(json.dumps({"train_seconds": 10.0, "global_step": 10}))
        dirs[arm] = str(d)
    chance, strong = [50.0, 0.0] * 10, [100.0] * 20  # kv_d1: copy level 50
    ev = _suite({STD: chance, "Standard + adaptation": chance, TO: strong, TI: strong})
    same = 1.0 if control_climbs else 1.3
    probe = {m: {c: {"item_scores": [0.5] * 4, "exact_match": 0.0, "score": 0.5}
                 for c in ("needle_present", "removed", "removed_matched", "removed_mismatched")}
             for m in ("Standard", "MemDLM")}
    return {"preset": {**SMOKE.to_dict(), "eval_lengths": [128], "finetune": {**SMOKE.to_dict()["finetune"],
                                                                                  "lengths": [128]}},
            "calibration": {"floor": 0.8, "steps": 6, "modes": {"per_sample": {
                "candidates": [{"rank": 2, "inner_lr": 0.1, "absorption_ratio": 0.9, "relative_change": 0.01}],
                "chosen": {"rank": 2, "inner_lr": 0.1, "absorption_ratio": 0.9, "relative_change": 0.01},
                "qualified": True}}},
            "control_lr0": {"steps": 3, "max_abs_difference": 0.0},
            "dev": _suite({STD: [dev_standard] * 10, TO: [dev_standard] * 10}),
            "cost": None,
            "seeds": {0: {"dirs": dirs, "eval": ev, "probe": {"results": probe},
                          "heldout_loss": {"results": {  # per-item losses: MemDLM 0.1 nats lower on every item
                              "standard": {"off": [1.0, 1.2, 0.8, 1.0], "prompt_memory": [0.9, 1.1, 0.7, 0.9]},
                              "memdlm": {"off": list(memdlm_off), "prompt_memory": [0.6, 0.8, 0.4, 0.6]}}},
                          "exposure_bias": {
                              **_eb({STD: (1.3, 1.0, same), TO: (1.2, 1.0, same), TI: (1.1, 1.0, same)}),
                              # at matched calibration MemDLM's lead halves; flattened Standard looks flatter
                              "calibrated": _eb({STD: (1.3, 1.0, same), TO: (1.25, 1.0, same),
                                                 TI: (1.2, 1.0, same)})["results"],
                              "flattened": _eb({STD: (1.15, 1.0, same)})["results"],
                              "temperatures": {STD: 1.0, TO: 1.1, TI: 1.1}}}}}


def test_capability_gate_refuses_a_verdict_on_a_chance_level_pair(tmp_path):
    from memdlm.reproduce.report import claims, summarize

    # Standard at the copy level of kv_d1 (50) on the dev items: MemDLM's large lead on the
    # test items is not a retrieval result.
    summary = summarize(tmp_path, _fake_reproduction(tmp_path, dev_standard=50.0))
    gate = summary["capability"]["tasks"]["kv_d1"]
    assert gate["copy"] == 50.0 and not gate["testable"] and "below the copy level" in gate["reason"]
    rows = {r[0]: r for r in claims(summary)}
    within = rows[f"{TO} retrieves better than Standard (trained lengths)"]
    assert within[3].startswith("not testable here: Standard scores 50.0 on kv_d1's dev items")
    assert within[2] == "n/a"


def test_capability_gate_lets_a_capable_standard_through(tmp_path):
    from memdlm.reproduce.report import claims, summarize

    summary = summarize(tmp_path, _fake_reproduction(tmp_path, dev_standard=75.0))
    assert summary["capability"]["testable"] == ["kv_d1"]
    rows = {r[0]: r for r in claims(summary)}
    verdict = rows[f"{TO} retrieves better than Standard (trained lengths)"][3]
    assert verdict == "unresolved: one seed, no seed-level interval (items alone: reproduced)"


def test_capability_gate_rule_and_tasks_without_levels():
    dev = {"cells": [{"task": "kv", "skipped": None, "results": {STD: {"score": 34.9}}},
                     {"task": "kv_d1", "skipped": None, "results": {STD: {"score": 60.0}}},
                     {"task": "niah", "skipped": None, "results": {STD: {"score": 90.0}}}]}
    gate = capability_gate(dev, margin=10.0)
    assert not gate["kv"]["testable"] and gate["kv"]["copy"] == 25.0  # 34.9 < 25 + 10
    assert gate["kv_d1"]["testable"]  # 60 >= 50 + 10
    assert not gate["niah"]["testable"] and "no copy level" in gate["niah"]["reason"]
    assert score_verdict({"not_testable": "why"}) == "not testable here: why"


def test_exposure_bias_not_measurable_without_a_control_climb(tmp_path):
    from memdlm.reproduce.report import claims, summarize

    flat = summarize(tmp_path / "a", _fake_reproduction(tmp_path / "a", 75.0, control_climbs=False))
    assert not flat["eb_measurable"]["measurable"]
    assert "the control shows no climb" in flat["eb_measurable"]["reason"]
    rows = {r[0]: r for r in claims(flat)}
    for run in (TO, TI):
        for where in ("at matched calibration", "as trained"):
            assert "not measurable: " in rows[f"{run}: flatter R_EB than Standard ({where})"][3]
            assert "not measurable: " in rows[f"{run}: smaller exposure-bias gap than Standard ({where})"][3]
    # the gap sits beside R_EB: MemDLM's gap 0.2 vs Standard's 0.3 nats
    assert flat["eb_means"][TO]["gap"] == pytest.approx(0.2, abs=0.02)
    assert flat["eb"][TO]["gap"]["estimate"] == pytest.approx(-0.1, abs=0.02)

    climbs = summarize(tmp_path / "b", _fake_reproduction(tmp_path / "b", 75.0, control_climbs=True))
    assert climbs["eb_measurable"]["measurable"]
    rows = {r[0]: r for r in claims(climbs)}
    assert rows[f"{TO}: flatter R_EB than Standard (at matched calibration)"][3].startswith("unresolved: one seed")
    assert rows[f"{TO}: flatter R_EB than Standard (as trained)"][3].startswith("not the verdict")
    # the calibrated comparison reads the calibrated runs: gap 0.25 - 0.3 = -0.05 (as trained -0.1)
    assert climbs["eb_calibrated"][TO]["gap"]["estimate"] == pytest.approx(-0.05, abs=0.02)
    # the flattening control: Standard / T minus Standard as trained, gap 0.15 - 0.3
    assert climbs["eb_flattened"]["gap"]["estimate"] == pytest.approx(-0.15, abs=0.02)
    control = rows["Control: Standard with flattened logits looks flatter (mean gap (nats))"]
    assert control[3].startswith("control (a calibration artifact, not exposure bias)")
    assert any(k.startswith(f"{TO}, calibrated (T=1.10)") for k in climbs["eb_means"])
    assert eb_measurable(None)[0] is False


def test_low_absorption_alone_is_not_collapse_a_worse_base_model_is(tmp_path):
    """Usability reads the model: a late absorption of 0.3 with a base model better than
    Standard is usable (the band is reported beside it); a base model worse than Standard on
    every held-out item is unusable, and every verdict on that arm says so."""
    from memdlm.reproduce.markdown import render
    from memdlm.reproduce.report import claims, summarize

    low = summarize(tmp_path / "a", _fake_reproduction(tmp_path / "a", 75.0, absorption_late=0.3))
    rows_by_arm = {r["arm"]: r for r in low["memory_trajectory"]}
    assert set(rows_by_arm) == {"memdlm", "eb_memdlm"}
    r = rows_by_arm["memdlm"]
    assert r["absorption_late"] == 0.3 and not r["in_band"] and not r["diverged"]
    assert (r["absorption_min"], r["absorption_max"], r["steps_logged"]) == (0.3, 0.97, 2)
    assert r["absorption_median"] == pytest.approx((0.3 + 0.97) / 2)
    assert low["unusable"] == {}

    result = _fake_reproduction(tmp_path / "b", 75.0, memdlm_off=(1.1, 1.3, 0.9, 1.2))  # +0.1, +0.1, +0.1, +0.2
    worse = summarize(tmp_path / "b", result)
    assert worse["base_loss"]["memdlm"]["estimate"] == pytest.approx(0.125)
    note = worse["unusable"]["memdlm"]
    assert note.startswith("memdlm unusable: its base model (memory off) is worse than Standard") and "+0.125" in note
    rows = claims(worse)
    for claim, _, _, verdict in rows:
        if claim.startswith("MemDLM") and "R_EB" not in claim and "exposure-bias" not in claim:
            assert "memdlm unusable" in verdict, claim
    text = render(result, worse, _provenance(), {"score_vs_length": "s.png", "exposure_bias": "e.png"}, rows)
    assert "| memdlm | 1 | 1.1250 | 0.6000 |" in text  # held-out loss table: item means per arm
    assert any(line.startswith(f"| {TO} |") and "memdlm unusable" in line for line in text.splitlines())
    assert "### Usability (the model, not the memory)" in text and "### Capability gate" in text


def test_usability_note_rule():
    rows = [{"seed": 0, "arm": "memdlm", "absorption_late": 2.3, "diverged": True, "nonfinite": 0},
            {"seed": 1, "arm": "memdlm", "absorption_late": 0.95, "diverged": False, "nonfinite": 0}]
    assert usability_note("memdlm", None, rows, 0.01) == (
        "memdlm unusable: memory diverged (late absorption 2.30; non-finite inner losses 0; seed 0)")
    better = {"estimate": -0.02, "low": -0.05, "high": 0.01}
    assert usability_note("memdlm", better, rows[1:], 0.01) is None
    # no minimum (reports made before it): an interval touching 0 is not "worse", one entirely above 0 is
    assert usability_note("memdlm", {"estimate": 0.02, "low": 0.0, "high": 0.04}, rows[1:], 0.0) is None
    assert "worse than Standard" in usability_note("memdlm", {"estimate": 0.02, "low": 0.001, "high": 0.04}, [], 0.0)
    # a minimum effect: the pilot's +0.001 [+0.000, +0.002] is practically null; the old full
    # report's headline +0.056 [+0.020, +0.094] is worse by more than 0.01
    pilot = {"estimate": 0.001, "low": 0.0004, "high": 0.002}
    assert "worse" in usability_note("eb_memdlm", pilot, [], 0.0)
    assert usability_note("eb_memdlm", pilot, [], 0.01) is None
    assert usability_note("memdlm", {"estimate": 0.02, "low": 0.009, "high": 0.04}, [], 0.01) is None
    assert usability_note("memdlm", {"estimate": 0.056, "low": 0.020, "high": 0.094}, [], 0.01) == (
        "memdlm unusable: its base model (memory off) is worse than Standard on held-out items by more than "
        "0.01 nats/token (+0.056 nats, items [+0.020, +0.094])")
    with pytest.raises(ValueError, match="min_effect"):
        usability_note("memdlm", pilot, [], -0.01)


def test_usability_minimum_is_the_presets_declared_value(tmp_path):
    """The report reads the minimum from the preset it ran (0.01 nats/token for every preset);
    a report made before the field has none. MemDLM +0.006 [+0.005, +0.008] per item: unusable
    with no minimum, usable with 0.01."""
    from memdlm.reproduce.presets import PRESETS
    from memdlm.reproduce.report import summarize

    assert {p.usability_min_effect for p in PRESETS.values()} == {0.01}
    result = _fake_reproduction(tmp_path / "a", 75.0, memdlm_off=(1.005, 1.205, 0.805, 1.008))
    assert summarize(tmp_path / "a", result)["unusable"] == {}
    result["preset"].pop("usability_min_effect")
    old = summarize(tmp_path / "a", result)
    assert old["usability_min_effect"] == 0.0 and "memdlm" in old["unusable"]


def test_interaction_rows_are_differences_of_differences(tmp_path):
    """Loss: (MemDLM adapted - off) - (Standard adapted - off) per item: (-0.3) - (-0.1) = -0.2."""
    from memdlm.reproduce.report import claims, summarize

    summary = summarize(tmp_path, _fake_reproduction(tmp_path, 75.0))
    assert summary["interaction"]["loss"]["estimate"] == pytest.approx(-0.2)
    # scores: TI = TO and SA = S in the fake suite, so the interaction is 0 on every item
    assert summary["interaction"]["scores"]["estimate"] == 0.0
    rows = {r[0]: r for r in claims(summary)}
    assert rows["2 x 2 interaction: adaptation helps a MemDLM-trained model more than a Standard one (loss)"][2] \
        .startswith("-0.200; items [-0.200, -0.200]")


def test_outer_weighting_deviation_is_measured_against_the_headline(tmp_path):
    """The full preset's 1/t arm is compared with the headline MemDLM (uniform), not read as a
    trajectory ablation: retrieval 50 - 100 on every item, held-out loss +0.1 on every item."""
    from memdlm.reproduce.presets import FULL, PAPER_WEIGHTING_ARM
    from memdlm.reproduce.report import claims, summarize

    assert FULL.ablations[PAPER_WEIGHTING_ARM] == {"weighting": "scheduler"}
    arm, run = f"ablation_{PAPER_WEIGHTING_ARM}", f"MemDLM {PAPER_WEIGHTING_ARM}, Train-Only"
    result = _fake_reproduction(tmp_path, 75.0)
    seed = result["seeds"][0]
    d = tmp_path / "seed0" / arm
    d.mkdir(parents=True)
    (d / "log_history.json").write_text(json.dumps([{"step": 5, "memory/absorption_ratio": 0.9}]))
    (d / "run_complete.json").write_text(json.dumps({"train_seconds": 10.0, "global_step": 10}))
    seed["dirs"][arm] = str(d)
    seed["eval"]["runs"].append({"name": run, "model_dir": str(d), "memory": False})
    seed["eval"]["cells"][0]["results"][run] = {"score": 50.0, "item_scores": [50.0] * 20}
    seed["heldout_loss"]["results"][arm] = {"off": [1.0, 1.2, 0.8, 1.0], "prompt_memory": [0.6, 0.8, 0.4, 0.6]}
    summary = summarize(tmp_path, result)
    assert summary["ablations"] == {}
    dev = summary["weighting_deviation"]
    assert dev["scores"]["estimate"] == pytest.approx(-50.0) and dev["loss"]["estimate"] == pytest.approx(0.1)
    rows = {r[0]: r for r in claims(summary)}
    score_row = rows["Deviation measured: MemDLM at the paper's 1/t outer weighting vs ours (uniform), retrieval"]
    loss_row = rows["Deviation measured: MemDLM at the paper's 1/t outer weighting vs ours (uniform), held-out loss"]
    assert score_row[3] == "unresolved: one seed, no seed-level interval (items alone: 1/t scores lower)"
    assert loss_row[2].startswith("+0.100") and loss_row[3].endswith("(items alone: 1/t loss higher)")
    assert not any("scores below anchor-consistent" in r for r in rows)
    assert summarize(tmp_path / "none", _fake_reproduction(tmp_path / "none", 75.0))["weighting_deviation"] is None


def test_loss_claims_pair_the_fine_tuning_tasks_items(tmp_path):
    """The loss rows are MemDLM minus Standard per item on the heldout_loss cell (the
    fine-tuning task's test items): -0.1 on every item off, -0.4 adapted vs Standard off."""
    from memdlm.reproduce.report import claims, summarize

    summary = summarize(tmp_path, _fake_reproduction(tmp_path, 75.0))
    assert summary["heldout_loss"]["estimate"] == pytest.approx(-0.1)
    assert summary["heldout_loss"]["high"] == pytest.approx(-0.1)  # no spread: every item -0.1
    assert summary["heldout_loss_adapted"]["estimate"] == pytest.approx(-0.4)
    rows = {r[0]: r for r in claims(summary)}
    off = rows["MemDLM reaches a lower loss (held-out, memory off)"]
    assert "(mqar16 test items)" in off[1] and off[2].startswith("-0.100; items [-0.100, -0.100]")
    assert off[3].startswith("unresolved: one seed")


def _provenance() -> dict:
    return {"command": "memdlm reproduce", "commit": "abc", "dirty": False, "preset": "smoke",
            "config_hash": "0" * 64, "versions": {"torch": "x"}, "machine": "test", "wall_seconds": 60,
            "cell_seconds": 60}


def test_preset_hashes_are_unchanged():
    """A preset's hash names the settings its cached cells were made with (and its report);
    a change makes every cached reproduction of it stale. Changed on purpose by issue 16
    (the shipped base, an outer LoRA adapter, mqar64 at 256 tokens, the batch-shared headline) and
    again (the exposure-bias pair on prose_cont with 48 steps, the absorption ceiling), and by issue
    22 (the memory on both layers at inner lr 0.1 over micro-batches of 4, one adaptation for every
    arm, the log-probability probe and its positive control, matched calibration; the pilot preset; then
    the usability rule's minimum effect and the full preset's 1/t outer-weighting arm), and by issue 24
    (the adaptation's placement is the preset's memory_scope / memory_layer_fraction, no longer a
    second copy in Adaptation: the same values, so no number changes); `long` (quick's headline
    pair trained 3x longer) `quick3` (quick at seeds 0-2) and `long3` (long at seeds 0-2) added by issue 22;
    then smoke and full by the side-by-side pace and the exposure-bias pair's own operating point.
    If a preset is changed on purpose, update the hash here and say so in the commit."""
    from memdlm.reproduce.presets import PRESETS

    assert {name: p.config_hash() for name, p in PRESETS.items()} == {
        "smoke": "f5418d48b02501f63b44bfd637a3c7589fb3c35a498d5b689325a064de10113a",
        "pilot": "319e3f7a90df0f5b658ae78420634eb5712cdc7a591351c4b964db521f809d15",
        "quick": "5678584a9e0b6cb3587e43c713d9af6abff565fc29a55e1d8f21ea3e77f28468",
        "quick3": "f637eca4594f59b810f8d795d421f717666bb8b2ec637670238c6bb7109595a7",
        "long": "a4c3d48d143efde11fbec9e632d1ae340eb7294b03b5e67f4fd74494f7108970",
        "long3": "867f9a61f49ba22a1005b89b7ddb1a78d429f70ce6c20ecc13679d778ae11dbc",
        "full": "2cce35e2e0e873fc79463b912982e9b716b542126b91c56c3677008ad80ec5e7",
    }


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


def test_probe_removes_exactly_the_queried_pair_on_recall_tasks(tok):
    from memdlm.reproduce.probe import exact, item_score, probe_items, remove_needle
    from memdlm.tasks.recall import QUERY_MARK

    for s in probe_items(tok, 10, 128, "mqar16"):
        removed = remove_needle(s)
        (i,) = s.meta["asked"]
        key, value = s.meta["keys"][i], s.meta["values"][i]
        body, _, tail = removed.partition(f" {QUERY_MARK} ")
        assert value not in removed.split() and key not in body.split()  # the pair is gone ...
        assert tail == key  # ... the query stays
        others = [f"{k} {v}" for j, (k, v) in enumerate(zip(s.meta["keys"], s.meta["values"])) if j != i]
        assert all(pair in body for pair in others)  # every other pair stays
        assert item_score(f" {value.upper()}", s) == 1.0 and exact(f" {value} x", s) == 1.0
        assert item_score(" " + s.meta["values"][(i + 1) % 16], s) == 0.0


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
def test_smoke_exposure_bias_runs_its_own_pair_on_the_long_response_task(smoke_run):
    """The exposure-bias cell decodes prose continuations in 48 steps with the eb_* arms, which
    fine-tune the prose base with the arms' adapter; the loss cell covers the main arms."""
    from memdlm.reproduce.presets import SMOKE

    eb = json.loads((smoke_run / "seed0" / "exposure_bias.json").read_text())
    settings = json.loads((smoke_run / "seed0" / "exposure_bias.json.settings.json").read_text())
    assert settings["task"] == "prose_cont" and settings["steps"] == 48
    eb_memdlm = smoke_run / "calibrate" / Path(settings["runs"]["eb_memdlm"]).name  # seed 0's: the chosen candidate
    assert eb_memdlm.name.startswith("eb_r") and eb_memdlm.is_dir()
    assert len(eb["results"]["Standard"]["l_seq"]) == 48
    lora = json.loads((eb_memdlm / "lora_base.json").read_text())
    assert lora["base"].endswith(SMOKE.eb_base)
    loss = json.loads((smoke_run / "seed0" / "heldout_loss.json").read_text())
    assert set(loss["results"]) >= {"standard", "memdlm", "memdlm_per_sample"}
    assert all(len(v["off"]) == SMOKE.eval_items for v in loss["results"].values())


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
    # seed 0's headline MemDLM arm is the chosen batch-shared calibration run, not trained twice
    point = data["calibration"]["modes"]["shared"]["chosen"]
    arm_dirs = {"standard": smoke_run / "seed0" / "standard",
                "memdlm": smoke_run / "calibrate" / f"r{point['rank']}_lr{point['inner_lr']:g}_shared"}
    assert not (smoke_run / "seed0" / "memdlm").exists()
    runs = {a: json.loads((d / "run_complete.json").read_text()) for a, d in arm_dirs.items()}
    assert json.loads((arm_dirs["memdlm"] / "lora_base.json").read_text())["base"].endswith("mqar-base")
    from memdlm.reproduce.pipeline import training_seconds

    per = {a: training_seconds(arm_dirs[a], r) / r["global_step"] for a, r in runs.items()}  # evaluations left out
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


def test_calibration_judges_the_whole_fine_tune_per_memory_mode(tmp_path):
    """Each candidate runs as long as the real fine-tune (with its warmup), once per memory
    mode; a memory that looks fine early and collapses late is rejected."""
    from dataclasses import replace

    from memdlm.reproduce.pipeline import Reproduction
    from memdlm.reproduce.presets import QUICK

    steps = QUICK.finetune.steps
    calls = []

    def fake_train(self, cell, options):
        calls.append(options)
        collapses = options["memory_mode"] == "per_sample" and options["inner_lr"] == 1.0
        logs = []
        for step in range(20, steps + 1, 20):
            late = step > steps * 0.6
            logs.append({"step": step, "memory/relative_change": options["inner_lr"] * options["memory_rank"],
                         "memory/absorption_ratio": 0.2 if (collapses and late) else 0.95})
        cell.mkdir(parents=True)
        (cell / "log_history.json").write_text(json.dumps(logs))

    # the rule with several candidates (the shipped presets fix one: the paper's lr 0.1)
    preset = replace(QUICK, inner_candidates=((2, 0.3), (2, 1.0)))
    repro = Reproduction(preset, tmp_path, progress=False)
    repro._train = fake_train.__get__(repro)
    cal = repro.calibrate()
    assert set(cal["modes"]) == {"per_sample", "shared"} and cal["steps"] == steps
    assert len(calls) == 2 * len(preset.inner_candidates)
    assert all("max_steps" in c and c["max_steps"] == steps and c["warmup_steps"] == QUICK.finetune.warmup
               for c in calls)
    # every candidate fine-tunes the shipped base with the arms' outer adapter
    assert all(c["model"] == QUICK.base_model and c["use_lora"] and c["lora_r"] == QUICK.lora.r for c in calls)
    # per-sample: the lr-1.0 memory collapses in the last fifth -> lr 0.3 (largest change left)
    per_sample = cal["modes"]["per_sample"]
    assert (per_sample["chosen"]["rank"], per_sample["chosen"]["inner_lr"]) == (2, 0.3)
    assert per_sample["qualified"]
    # shared: nothing collapses -> the largest change, lr 1.0
    assert (cal["modes"]["shared"]["chosen"]["rank"], cal["modes"]["shared"]["chosen"]["inner_lr"]) == (2, 1.0)


def test_arms_share_base_adapter_and_data_and_reuse_the_chosen_calibration_runs(tmp_path):
    """Every arm fine-tunes the shipped base with the same adapter, steps, data and lr; seed 0's
    MemDLM arms are the chosen calibration cells (the same run), later seeds train their own."""
    from memdlm.reproduce.pipeline import Reproduction
    from memdlm.reproduce.presets import FULL

    trained = {}

    def fake_train(self, cell, options):
        trained[cell] = options
        steps = options["max_steps"]
        return {"train_seconds": steps * (2.0 if options["method"] == "memdlm" else 1.0), "global_step": steps}

    repro = Reproduction(FULL, tmp_path, progress=False)
    repro._train = fake_train.__get__(repro)
    chosen = {"shared": {"rank": 2, "inner_lr": 0.1}, "per_sample": {"rank": 2, "inner_lr": 0.3}}
    dirs0 = repro.arms(0, chosen)
    assert dirs0["memdlm"] == tmp_path / "calibrate" / "r2_lr0.1_shared"
    assert dirs0["memdlm_per_sample"] == tmp_path / "calibrate" / "r2_lr0.3"
    dirs1 = repro.arms(1, chosen)
    assert dirs1["memdlm"] == tmp_path / "seed1" / "memdlm"
    assert set(dirs1) == {"standard", "memdlm", "memdlm_per_sample", "standard_matched",
                          "ablation_anchor_only", "ablation_pre_anchor_only", "ablation_progressive",
                          "ablation_paper_weighting"}
    shared_keys = ("model", "use_lora", "lora_r", "lora_alpha", "lora_target_modules", "tasks",
                   "train_lengths", "learning_rate", "per_device_train_batch_size", "warmup_steps")
    runs = [trained[d] for d in dirs1.values()]
    for key in shared_keys:
        assert len({json.dumps(r[key]) for r in runs}) == 1, key
    assert {r["max_steps"] for r in runs if r is not trained[dirs1["standard_matched"]]} == {FULL.finetune.steps}
    assert trained[dirs1["standard_matched"]]["max_steps"] == 2 * FULL.finetune.steps  # twice the s/step
    assert trained[dirs1["memdlm"]]["memory_mode"] == "shared"
    assert trained[dirs1["ablation_progressive"]]["memory_mode"] == "shared"  # ablations of the headline
    assert trained[dirs1["memdlm_per_sample"]]["memory_mode"] == "per_sample"
    # the operating point (issue 22): memory on both layers (an attention layer follows layer 0's
    # FFN), paper inner lr 0.1, micro-batches of 4 for the batch-shared memory
    mem = trained[dirs1["memdlm"]]
    assert (mem["memory_layer_fraction"], mem["memory_scope"], mem["inner_lr"]) == (1.0, "ffn", 0.1)
    assert all((r["per_device_train_batch_size"], r["gradient_accumulation_steps"]) == (4, 8) for r in runs)
    # the outer weighting: uniform for every arm but the deviation's, the headline at the paper's 1/t
    weighting = {name: trained[d]["weighting"] for name, d in dirs1.items()}
    assert weighting.pop("ablation_paper_weighting") == "scheduler" and set(weighting.values()) == {"uniform"}
    assert {k: v for k, v in trained[dirs1["ablation_paper_weighting"]].items() if k != "weighting"} == \
        {k: v for k, v in mem.items() if k != "weighting"}


def test_every_arm_adapts_alike_at_the_papers_inner_lr(tmp_path):
    from dataclasses import asdict

    from memdlm.memory.config import ADAPTATION_FIELDS, TRAINING_ONLY_FIELDS, AdaptationArguments
    from memdlm.reproduce.pipeline import Reproduction
    from memdlm.reproduce.presets import FULL

    repro = Reproduction(FULL, tmp_path, progress=False)
    a = repro.memory_overrides()
    assert a["inner_lr"] == 0.1 and a["trajectory"] == "anchor_consistent"
    # complete: an ablation arm's own training trajectory cannot leak into its adaptation
    AdaptationArguments(**a)
    assert {"trajectory", "pre_anchor_steps", "inner_loss", "memory_layer_fraction", "memory_rank"} <= set(a)
    # each setting passed once: only adaptation settings (no memory_mode, which inference never
    # reads), the placement the MemDLM arms train with, and every other field at its default
    assert set(a) <= set(ADAPTATION_FIELDS) and not set(a) & set(TRAINING_ONLY_FIELDS)
    trained = repro.memory_options(2, 0.1)
    assert (a["memory_scope"], a["memory_layer_fraction"]) == (trained["memory_scope"], trained["memory_layer_fraction"])
    assert {k: v for k, v in asdict(AdaptationArguments()).items() if k not in a} == \
        {"memory_alpha": None, "memory_target_modules": None}


def test_micro_batches_split_the_optimiser_batch():
    from memdlm.reproduce.presets import TrainSpec

    spec = TrainSpec(("mqar64",), (256,), steps=10, learning_rate=1e-3, batch_size=32, micro_batch=4)
    o = spec.options()
    assert (o["per_device_train_batch_size"], o["gradient_accumulation_steps"]) == (4, 8)
    o = TrainSpec(("mqar64",), (256,), steps=10, learning_rate=1e-3, batch_size=32).options()
    assert (o["per_device_train_batch_size"], o["gradient_accumulation_steps"]) == (32, 1)
    with pytest.raises(ConfigError, match="micro_batch 5 must divide batch_size 32"):
        TrainSpec(("mqar64",), (256,), steps=10, learning_rate=1e-3, batch_size=32, micro_batch=5)


def test_compute_matched_steps_count_training_time_alone(tmp_path):
    """Held-out evaluations during training are not paid for: MemDLM 260 s with 60 s of
    evaluation, Standard 110 s with 10 s, 100 steps each -> 200 / (100 / 100) = 200 steps."""
    from memdlm.reproduce.pipeline import matched_steps, training_seconds

    for name, total, evals in (("standard", 110.0, (4.0, 6.0)), ("memdlm", 260.0, (30.0, 30.0))):
        d = tmp_path / name
        d.mkdir()
        (d / "log_history.json").write_text(json.dumps([{"step": 50, "eval_runtime": evals[0]}, {"loss": 1.0},
                                                         {"step": 100, "eval_runtime": evals[1]}]))
        (d / "run_complete.json").write_text(json.dumps({"train_seconds": total, "global_step": 100}))
    std, mem = training_seconds(tmp_path / "standard"), training_seconds(tmp_path / "memdlm")
    assert (std, mem) == (100.0, 200.0)
    assert matched_steps(std, mem, 100) == 200
    # runs that record their optimiser steps' seconds are read from those alone (no evaluation,
    # checkpoint or logging between steps): 90 s and 240 s -> 100 * 240 / 90 = 267 steps
    for name, steps in (("standard", 90.0), ("memdlm", 240.0)):
        done = tmp_path / name / "run_complete.json"
        done.write_text(json.dumps({**json.loads(done.read_text()), "step_seconds": steps}))
    std, mem = training_seconds(tmp_path / "standard"), training_seconds(tmp_path / "memdlm")
    assert (std, mem) == (90.0, 240.0) and matched_steps(std, mem, 100) == 267


def test_calibration_rule_takes_the_strongest_memory_inside_the_band():
    """Inside [0.8, 1.0] the largest relative change wins (not the lowest absorption); with none
    inside, the candidate nearest the band, flagged as not qualified."""
    from memdlm.reproduce.pipeline import choose_point

    rows = [{"inner_lr": 0.1, "absorption_ratio": 0.999, "relative_change": 1e-3},
            {"inner_lr": 1.0, "absorption_ratio": 0.93, "relative_change": 9e-3},
            {"inner_lr": 3.0, "absorption_ratio": 0.85, "relative_change": 8e-3},
            {"inner_lr": 10.0, "absorption_ratio": 0.5, "relative_change": 5e-2}]
    chosen, qualified = choose_point(rows, 0.8, 1.0)
    assert (chosen["inner_lr"], qualified) == (1.0, True)
    chosen, qualified = choose_point([rows[3], {**rows[0], "absorption_ratio": 1.4}], 0.8, 1.0)
    assert (chosen["inner_lr"], qualified) == (10.0, False)  # 0.3 below the floor is nearer than 0.4 above
    chosen, _ = choose_point([rows[3], {**rows[0], "absorption_ratio": 1.2}], 0.8, 1.0)
    assert chosen["inner_lr"] == 0.1  # 0.2 above the ceiling is nearer than 0.3 below the floor


def test_exposure_bias_cell_drops_only_the_unread_per_item_losses():
    """The random-order trajectory's per-item losses leave the cell; its per-step means, the
    ratios and every per-item loss the report reads stay, unchanged."""
    from memdlm.eval.exposure_bias import LOSSES
    from memdlm.reproduce.pipeline import UNREAD_EXPOSURE_LOSSES, compact_exposure
    from memdlm.reproduce.report import EB_TERMS

    full = {"l_seq_random": [1.0], "r_eb": [2.0], "per_item": {k: [[float(i)]] for i, k in
                                                                enumerate((*LOSSES, "masked"))}}
    small = compact_exposure(full)
    assert set(small["per_item"]) == set(full["per_item"]) - set(UNREAD_EXPOSURE_LOSSES)
    assert all(small["per_item"][k] == full["per_item"][k] for k in small["per_item"])
    assert (small["l_seq_random"], small["r_eb"]) == ([1.0], [2.0])
    read = {term for pair in EB_TERMS.values() for term in pair} | {"l_static"}
    assert read <= set(small["per_item"]) and not read & set(UNREAD_EXPOSURE_LOSSES)
    assert len(full["per_item"]) == len(LOSSES) + 1  # compact_exposure did not touch its input


def test_presets_added_fields_leave_older_presets_hashes_alone():
    """A field added after reports were committed is left out of the hash at its neutral value,
    and counts as soon as it differs."""
    from dataclasses import replace

    from memdlm.reproduce.presets import ADDED_LATER, FULL, QUICK

    assert not set(ADDED_LATER) & set(QUICK.to_dict())
    assert {k: getattr(QUICK, k) for k in ADDED_LATER} == ADDED_LATER
    assert replace(QUICK, pace_rounds=3).config_hash() != QUICK.config_hash()
    assert FULL.to_dict()["pace_rounds"] == 5 and FULL.to_dict()["eb_inner_candidates"]


@pytest.mark.slow
def test_smoke_compute_matched_steps_come_from_the_side_by_side_ratio(smoke_run):
    """pace.json times both arms' real settings in alternating rounds; the matched arm trains
    MemDLM's steps x the ratio of the medians, whatever each arm's own run measured."""
    import statistics

    from memdlm.reproduce.presets import SMOKE

    pace = json.loads((smoke_run / "pace.json").read_text())
    settings = json.loads((smoke_run / "pace.json.settings.json").read_text())
    per = pace["seconds_per_step"]
    assert len(per["standard"]) == len(per["memdlm"]) == SMOKE.pace_rounds
    assert pace["ratio"] == pytest.approx(statistics.median(per["memdlm"]) / statistics.median(per["standard"]))
    arms = settings["arms"]
    assert (arms["standard"]["method"], arms["memdlm"]["method"]) == ("mdlm", "memdlm")
    assert arms["memdlm"]["max_steps"] == SMOKE.pace_steps and arms["memdlm"]["eval_strategy"] == "no"
    chosen = json.loads((smoke_run / "calibration.json").read_text())["modes"]["shared"]["chosen"]
    assert (arms["memdlm"]["inner_lr"], arms["memdlm"]["memory_mode"]) == (chosen["inner_lr"], "shared")
    matched = json.loads((smoke_run / "seed0" / "standard_matched" / "run_complete.json").read_text())
    assert matched["global_step"] == max(1, round(SMOKE.finetune.steps * pace["ratio"]))


@pytest.mark.slow
def test_smoke_exposure_bias_pair_gets_its_own_operating_point(smoke_run):
    """With eb_inner_candidates the exposure-bias MemDLM is calibrated by the headline's rule on its
    own fine-tune; seed 0's eb_memdlm is the chosen candidate's run, and the pair's Train &
    Inference mode adapts at that point."""
    from memdlm.reproduce.pipeline import choose_point
    from memdlm.reproduce.presets import SMOKE

    cal = json.loads((smoke_run / "eb_calibration.json").read_text())
    assert [(r["rank"], r["inner_lr"]) for r in cal["candidates"]] == [tuple(c) for c in SMOKE.eb_inner_candidates]
    chosen, qualified = choose_point(cal["candidates"], SMOKE.absorption_floor, SMOKE.absorption_ceiling)
    assert (cal["chosen"], cal["qualified"]) == (chosen, qualified)
    cell = smoke_run / "calibrate" / f"eb_r{chosen['rank']}_lr{chosen['inner_lr']:g}"
    config = json.loads((cell / "run_config.json").read_text())
    assert json.dumps(config).count(SMOKE.eb_base) and not (smoke_run / "seed0" / "eb_memdlm").exists()
    settings = json.loads((smoke_run / "seed0" / "exposure_bias.json.settings.json").read_text())
    assert settings["runs"]["eb_memdlm"].endswith(cell.name)
    assert (settings["adaptation"]["inner_lr"], settings["adaptation"]["memory_rank"]) == \
        (chosen["inner_lr"], chosen["rank"])
    eb = json.loads((smoke_run / "seed0" / "exposure_bias.json").read_text())
    assert "l_seq_random" not in eb["results"]["Standard"]["per_item"]


def test_probe_memories_are_written_once(tok, make_tiny_model):
    """Each batch writes its items' memories (and the positive control's) once, on the batch plus
    the next item, and reads item i's mismatched memory from item i+1's slot: every condition's
    log p and rank equal those of memories written for each item alone (per-sample memory is
    batch-invariant), across a ragged last batch and the wrap-around (item 2's other is item 0)."""
    import dataclasses
    from types import SimpleNamespace

    from memdlm.data.collate import token_ids
    from memdlm.memory.adapt import PromptMemory
    from memdlm.memory.config import MemoryArguments
    from memdlm.reproduce.pipeline import Reproduction
    from memdlm.reproduce.presets import SMOKE, ProbeControl
    from memdlm.reproduce.probe import (
        LOGPROB_CONDITIONS,
        answer_logprobs,
        probe_items,
        remove_needle,
        run_logprob_probe,
        value_positions,
        write_control_memory,
    )

    model = make_tiny_model(seed=3).eval()
    adaptation = Reproduction(SMOKE, None).memory_overrides()
    memory = PromptMemory(model, tok, dataclasses.replace(MemoryArguments(), **adaptation))
    samples = probe_items(tok, 3, 64, "mqar16")
    control = ProbeControl(steps=2)
    out = run_logprob_probe(SimpleNamespace(model=model, tokenizer=tok), samples, memory, control, batch_size=2)
    full = [token_ids(tok, s.prompt) for s in samples]
    contexts = {"full": full, "removed": [token_ids(tok, remove_needle(s)) for s in samples]}
    for i, s in enumerate(samples):
        answer = [token_ids(tok, s.response)]
        for name, (ctx, source) in LOGPROB_CONDITIONS.items():
            j = i if source in (None, "own", "control_own") else (i + 1) % 3
            fast = None if source is None else memory.adapt([full[j]], [j]).detached() if "control" not in source \
                else write_control_memory(model, tok, control, [full[j]], [value_positions(tok, samples[j])], [j])
            logp, rank = answer_logprobs(model, tok, [contexts[ctx][i]], answer, fast)
            assert out[name]["logp"][i] == pytest.approx(logp[0], abs=1e-4), (name, i)
            assert out[name]["rank"][i] == rank[0], (name, i)
    assert out["control_matched"]["mean_logp"] != out["control_mismatched"]["mean_logp"]


def test_threads_on_a_crowded_machine_are_warned_about():
    from memdlm.commands.reproduce import crowded_threads

    assert "use --threads 1" in crowded_threads(2, 7.5, 2)
    assert crowded_threads(1, 7.5, 2) is None  # one thread waits for no other
    assert crowded_threads(2, 0.4, 2) is None  # an idle machine runs both


def test_probe_finds_the_queried_values_tokens(tok):
    from memdlm.data.collate import token_ids
    from memdlm.reproduce.probe import probe_items, value_positions

    for s in probe_items(tok, 5, 128, "mqar16"):
        (i,) = s.meta["asked"]
        positions = value_positions(tok, s)
        full = token_ids(tok, s.prompt)
        assert [full[p] for p in positions] == token_ids(tok, " " + s.meta["values"][i])
        key = token_ids(tok, " " + s.meta["keys"][i])
        assert full[positions[0] - len(key):positions[0]] == key  # right after the queried key


def test_answer_logprob_and_rank_by_hand(tok, make_tiny_model):
    """log p is the log-softmax of the answer token at the answer slot with the response masked
    (answer + EOS); rank counts the vocabulary entries scored above it."""
    import torch

    from memdlm.backbones.modeling import forward_logits
    from memdlm.reproduce.probe import answer_logprobs

    model = make_tiny_model(seed=3).eval()
    prompts, answers = [[5, 6, 7, 8], [9, 10]], [[11], [12, 13]]
    logps, ranks = answer_logprobs(model, tok, prompts, answers)
    for p, a, lp, rank in zip(prompts, answers, logps, ranks):
        ids = torch.tensor([p + [tok.mask_token_id] * (len(a) + 1)])
        with torch.no_grad():
            logits = torch.log_softmax(forward_logits(model, ids).float()[0], -1)
        slots = logits[len(p):len(p) + len(a)]
        assert lp == pytest.approx(float(sum(slots[j, t] for j, t in enumerate(a))), abs=1e-4)
        assert rank == int((slots[0] > slots[0, a[0]]).sum())


def test_positive_control_memory_moves_the_answer(tok, make_tiny_model):
    """The control writes the target token into the fast weights: at lr 10 x 5 steps on the
    tiny model, log p of the target at the answer slot of a context without it rises."""
    from memdlm.reproduce.presets import ProbeControl
    from memdlm.reproduce.probe import answer_logprobs, write_control_memory

    model = make_tiny_model(seed=3).eval()
    full, removed, target = [5, 6, 7, 42, 8], [5, 6, 8], 42
    before, _ = answer_logprobs(model, tok, [removed], [[target]])
    fast = write_control_memory(model, tok, ProbeControl(), [full], [[3]], [0])
    after, _ = answer_logprobs(model, tok, [removed], [[target]], fast)
    assert after[0] > before[0] + 1.0


def test_temperature_scaling_divides_the_logits(tok, make_tiny_model):
    import torch
    import torch.nn.functional as F

    from memdlm.eval.exposure_bias import model_logits_fn
    from memdlm.eval.item_loss import temperature_nll
    from memdlm.backbones.modeling import forward_logits

    model = make_tiny_model(seed=3).eval()
    ids = torch.tensor([[5, 6, tok.mask_token_id, 7]])
    attn = torch.ones_like(ids)
    with torch.no_grad():
        plain = forward_logits(model, ids, attn)
    assert torch.allclose(model_logits_fn(model, temperature=2.0)(ids, attn, None), plain / 2)
    # the NLL over temperatures: T = 1 is the plain cross-entropy of the masked response tokens
    pairs = [("a b c d", "e f g"), ("h i", "j k")]
    nll = temperature_nll(model, tok, pairs, temperatures=(1.0, 2.0), levels=2)
    from memdlm.eval.exposure_bias import encode_pairs
    from memdlm.eval.item_loss import _batch, level_masks

    prompts, responses = encode_pairs(tok, pairs)
    noisy, attn, scored, clean = _batch(prompts, responses, [level_masks(len(r), i, 2) for i, r in enumerate(responses)],
                                        tok.pad_token_id, tok.mask_token_id, "cpu")
    with torch.no_grad():
        logits = forward_logits(model, noisy, attn)[scored]
    assert nll[1.0] == pytest.approx(float(F.cross_entropy(logits, clean[scored])), abs=1e-5)
    assert nll[2.0] == pytest.approx(float(F.cross_entropy(logits / 2, clean[scored])), abs=1e-5)


def test_pilot_trains_only_the_headline_pair(tmp_path):
    from memdlm.reproduce.pipeline import Reproduction
    from memdlm.reproduce.presets import PILOT

    trained = {}

    def fake_train(self, cell, options):
        trained[cell] = options
        return {"train_seconds": 1.0, "global_step": options["max_steps"]}

    repro = Reproduction(PILOT, tmp_path, progress=False)
    repro._train = fake_train.__get__(repro)
    assert repro.calibration_modes() == ("shared",)
    dirs = repro.arms(0, {"shared": {"rank": 2, "inner_lr": 0.1}})
    assert set(dirs) == {"standard", "memdlm"} and len(trained) == 2
    assert trained[dirs["memdlm"]]["gradient_accumulation_steps"] == 4


@pytest.mark.slow
def test_smoke_claims_recompute_from_the_exported_cells(smoke_run, tmp_path):
    """What a committed report holds (export_cells: no weights) is enough to recompute every
    claim row exactly."""
    from memdlm.reproduce.report import export_cells, recompute_claims

    written = export_cells(smoke_run, tmp_path / "copy")
    assert not [f for f in written if f.suffix in (".safetensors", ".bin", ".pt")]
    assert (tmp_path / "copy" / "memory_strength.png").is_file()
    assert (tmp_path / "copy" / "result.json.gz").is_file() and not (tmp_path / "copy" / "result.json").exists()
    recorded = json.loads((smoke_run / "report.json").read_text())["claims"]
    assert recompute_claims(tmp_path / "copy") == recorded


def test_committed_pilot_report_recomputes_from_its_cells():
    """docs/results/pilot_active holds only JSON cells, run logs and plots; every claim row
    recomputes from them exactly."""
    from pathlib import Path

    from memdlm.reproduce.report import recompute_claims

    root = Path(__file__).resolve().parents[1] / "docs" / "results" / "pilot_active"
    recorded = json.loads((root / "report.json").read_text())["claims"]
    assert recompute_claims(root) == recorded


@pytest.mark.parametrize("report", ["quick_active", "long_active", "quick3_active", "long3_active", "full_active"])
def test_committed_active_reports_recompute_from_their_cells(report):
    """Every report on the active design recomputes its claim rows exactly from what is
    committed: gzipped cells (result.json.gz, read_cells) or an older plain result.json."""
    from memdlm.reproduce.report import recompute_claims

    root = Path(__file__).resolve().parents[1] / "docs" / "results" / report
    recorded = json.loads((root / "report.json").read_text())["claims"]
    assert recorded and recompute_claims(root) == recorded


def test_exported_cells_are_gzip_of_the_result_byte_for_byte_stable(tmp_path):
    """The same result text gives the same bytes (no timestamp), and reads back equal."""
    from memdlm.reproduce.report import read_cells, write_cells

    text = json.dumps({"seeds": {"0": {"x": [0.1, 1 / 3]}}})
    first = write_cells(tmp_path, text).read_bytes()
    assert write_cells(tmp_path, text).read_bytes() == first
    assert read_cells(tmp_path) == json.loads(text)


def test_cost_estimate_counts_every_cell_of_a_preset():
    """benchmarks/reproduce_cost.estimate with every rate 1 s counts the cells by hand. quick:
    training 100 steps x (headline, compute-matched at MemDLM's time, per-sample, Standard) + the
    exposure-bias pair's 2 x 100 + the lr-0 control's 2 x 6 = 612; evaluation: answering 100 items
    x 2 lengths x (4 runs + 2 adapted) = 1200, dev 2 x 100, held-out loss 4 arms x 2 x 100 = 800,
    exposure bias 7 analyses x 16 + 2 fits x 32 = 176, probe 2 x 64 = 128: 2504."""
    from file_modules import load_file
    from memdlm.reproduce.presets import FULL, QUICK

    bench = load_file("benchmarks/reproduce_cost.py", "bench_reproduce_cost")
    ones = {**dict.fromkeys(bench.TRAIN_KINDS, 1.0),
            **dict.fromkeys(("loss", "loss_adapted", "probe", "eb", "eb_adapted", "temperature_fit"), 1.0),
            "answer": dict.fromkeys((256, 512, 1024), 1.0), "answer_adapted": dict.fromkeys((256, 512, 1024), 1.0)}
    quick = bench.estimate(QUICK, ones)
    assert (quick["training"], quick["evaluation"], quick["dev"]) == (612, 2504, 200)
    assert quick["per_seed"] == {"answer": 1200, "heldout_loss": 800, "exposure_bias": 176, "probe": 128}
    # full: 3 seeds x 100 x (headline + 4 ablations + matched, per-sample, Standard) + 3 x 200 + 12
    full = bench.estimate(FULL, ones)
    assert full["training"] == 3 * 100 * 8 + 3 * 200 + 12
    assert full["per_seed"]["answer"] == 200 * 3 * (8 + 2)  # Standard, Train-Only, per-sample, matched, 4 ablations


def test_only_seed_waits_for_the_shared_cells_then_computes_its_own(monkeypatch):
    """A seed other than the first polls until the first seed's process has written the shared
    cells, then computes only its own; an unknown seed is refused by name."""
    from types import SimpleNamespace

    import memdlm.commands.reproduce as command
    from memdlm.reproduce.presets import FULL

    polls, done = [], []
    repro = SimpleNamespace(preset=FULL, out="DIR", head=lambda: "HEAD",
                            head_done=lambda: len(polls) >= 2,
                            seed_cells=lambda seed, head: done.append((seed, head)))
    monkeypatch.setattr(command.time, "sleep", lambda s: polls.append(s))
    command.run_one_seed(repro, 2)
    assert polls == [command.HEAD_POLL_SECONDS] * 2 and done == [(2, "HEAD")]
    command.run_one_seed(repro, 0)  # the first seed never waits
    assert len(polls) == 2 and done[-1] == (0, "HEAD")
    with pytest.raises(ConfigError, match="--only-seed 7: preset 'full' has seeds \\[0, 1, 2\\]"):
        command.run_one_seed(repro, 7)


@pytest.mark.slow
def test_only_seed_cells_are_the_plain_commands_cells(tmp_path):
    """`--only-seed` writes the cells and no report; the plain command then trains nothing and
    evaluates nothing again, and its report reads those cells."""
    from memdlm.cli import main

    out = tmp_path / "repro"
    common = ["reproduce", "--preset", "smoke", "--output-dir", str(out), "--no-progress", "--threads", "1"]
    assert main(common + ["--only-seed", "0"]) == 0
    assert not (out / "REPORT.md").exists()
    cells = sorted(p for p in out.rglob("*") if p.name in ("run_complete.json", "eval.json", "probe.json"))
    stamps = [p.stat().st_mtime_ns for p in cells]
    assert main(common) == 0
    assert [p.stat().st_mtime_ns for p in cells] == stamps and (out / "REPORT.md").is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["mean_scores"]  # read from the seed's evaluation cell


def test_memory_plot_gives_each_arm_one_colour_and_each_seed_one_style(tmp_path):
    """Lines "arm (seed S)": one colour per arm, one line style per seed, and a legend with each
    arm and each seed once (not one entry per line)."""
    from memdlm.eval.plots import _group_handles, _group_looks, plot_panels
    from memdlm.reproduce.report import memory_line_groups

    assert memory_line_groups("ablation_anchor_only (seed 2)") == ("ablation_anchor_only", "seed 2")
    names = [f"{arm} (seed {s})" for s in (0, 1, 2) for arm in ("memdlm", "eb_memdlm")]
    looks = _group_looks(names, memory_line_groups)
    colour = {n: looks[n]["color"] for n in names}
    style = {n: looks[n]["linestyle"] for n in names}
    assert colour["memdlm (seed 0)"] == colour["memdlm (seed 2)"] != colour["eb_memdlm (seed 0)"]
    assert style["memdlm (seed 1)"] == style["eb_memdlm (seed 1)"] != style["memdlm (seed 0)"]
    labels = [h.get_label() for h in _group_handles(names, memory_line_groups, looks)]
    assert labels == ["memdlm", "eb_memdlm", "seed 0", "seed 1", "seed 2"]
    path = plot_panels({"absorption": {n: ([5, 10], [0.9, 0.8]) for n in names}}, tmp_path / "m.png",
                       "step", groups=memory_line_groups)
    assert path.stat().st_size > 0


def test_exposure_bias_at_a_fitted_temperature_of_one_is_not_decoded_again(tmp_path, monkeypatch):
    """A model whose best temperature is 1 is its own calibrated model: the analysis runs once
    per mode (plus the flattening control) and the calibrated rows are the as-trained ones."""
    from types import SimpleNamespace

    import memdlm.reproduce.pipeline as pipeline
    from memdlm.reproduce.presets import SMOKE

    temperatures = []

    def fake_analysis(model, tokenizer, pairs, config, memory=None, progress=False, temperature=1.0):
        temperatures.append(temperature)
        return SimpleNamespace(to_dict=lambda: {"temperature": temperature, "per_item": {}})

    monkeypatch.setattr(pipeline, "exposure_bias", fake_analysis)
    monkeypatch.setattr(pipeline, "temperature_nll", lambda *a, **k: {0.5: 3.0, 1.0: 2.0, 1.5: 2.5})
    monkeypatch.setattr(pipeline, "heldout_pairs", lambda *a, **k: [])
    repro = pipeline.Reproduction(SMOKE, tmp_path, progress=False)
    monkeypatch.setattr(repro, "load", lambda path: SimpleNamespace(model=None, tokenizer=None,
                                                                     memory=lambda **kw: "memory"))
    out = repro.exposure_bias(0, {"eb_standard": tmp_path / "a", "eb_memdlm": tmp_path / "b"},
                              {"rank": 2, "inner_lr": 0.1})
    assert temperatures == [1.0, SMOKE.eb_flatten_temperature, 1.0, 1.0]
    assert out["calibrated"] == out["results"] and set(out["results"]) == set(out["temperatures"])
    assert out["flattened"]["Standard"]["temperature"] == SMOKE.eb_flatten_temperature
