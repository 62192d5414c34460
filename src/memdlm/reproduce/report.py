"""REPORT.md, report.json and the plots, computed from the run's own cached outputs.

Every number in the report is read from the cells' JSON files (training summaries
and log histories, eval/probe/exposure-bias results); nothing is typed in. Each claim
of the paper gets an estimate, two 95% intervals -- the paired-item bootstrap (the same
item indices resampled for every seed) and the t-interval over the seed means
(:mod:`memdlm.stats`) -- and a verdict: ``reproduced`` / ``opposite`` only when both
intervals lie on that side of zero, else ``unresolved``. The reading rules of
:mod:`memdlm.reproduce.rules` come first: a retrieval claim is "not testable here" when
Standard does not clear the copy level on the dev items, an exposure-bias claim "not
measurable" when the same-position control shows no climb, and a verdict on a collapsed
memory says so.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from memdlm.reproduce.markdown import ci
from memdlm.reproduce.pipeline import log_history, training_seconds, window_mean
from memdlm.reproduce.presets import PAPER_WEIGHTING_ARM
from memdlm.reproduce.rules import (
    NEAR_ZERO,
    arm_notes,
    capability_gate,
    deviation_verdict,
    eb_measurable,
    gate_reason,
    nanmean,
    score_verdict,
    seed_item_comparison,
    usability_note,
    with_note,
)
from memdlm.stats import compare, verdict
from memdlm.eval.plots import plot_curves, plot_exposure_bias, plot_panels, plot_score_vs_length
from memdlm.reproduce.probe import LOGPROB_CONTRASTS
from memdlm.reproduce.markdown import render

STANDARD = "Standard"


# --------------------------------------------------------------------------- data
def _runs_of(eval_result: dict) -> list[str]:
    return [r["name"] for r in eval_result["runs"]]


def arm_of(eval_result: dict, run: str, dirs: dict[str, str] | None = None) -> str | None:
    """The training arm (``memdlm``, ``ablation_...``) a run evaluates: the key of ``dirs``
    (arm -> run directory) holding its model, else the directory's name (seed 0's MemDLM
    arms live in their calibration cells, so the name alone is not the arm)."""
    by_dir = {str(v): k for k, v in (dirs or {}).items()}
    for r in eval_result["runs"]:
        if r["name"] == run:
            return by_dir.get(str(r["model_dir"]), Path(r["model_dir"]).name)
    return None


def _cells(eval_result: dict, lengths, tasks=None):
    return [c for c in eval_result["cells"] if c["skipped"] is None and c["length"] in lengths
            and (tasks is None or c["task"] in tasks)]


def score_difference(seeds: dict, run: str, lengths, base: str = STANDARD, tasks=None) -> dict | None:
    """``run`` minus ``base`` on the same items (score points), over seeds and items, on the
    (task, length) cells with a length in ``lengths`` (and a task in ``tasks``, if given).

    Every seed must hold the same items (checked by the cells' item keys): the bootstrap
    resamples the same item indices for every seed.
    """
    diffs, a_all, b_all, keys = [], [], [], None
    for s in seeds.values():
        ev = s["eval"]
        if run not in _runs_of(ev):
            continue
        cells = _cells(ev, lengths, tasks)
        a = [x for c in cells for x in c["results"][base]["item_scores"]]
        b = [x for c in cells for x in c["results"][run]["item_scores"]]
        seed_keys = [k for c in cells for k in c["item_keys"]]
        if not a or len(a) != len(b):
            continue
        if keys is not None and seed_keys != keys:
            raise ValueError(f"seeds disagree on the test items of {run!r}: the bootstrap pairs items "
                             "across seeds, so every seed must answer the same items")
        keys, tasks_seen = seed_keys, sorted({c["task"] for c in cells})
        diffs.append([y - x for x, y in zip(a, b)])
        a_all += a
        b_all += b
    if not diffs:
        return None
    d = seed_item_comparison(diffs)
    base_mean, run_mean = sum(a_all) / len(a_all), sum(b_all) / len(b_all)
    d.update(base_mean=base_mean, run_mean=run_mean, both_near_zero=max(base_mean, run_mean) < NEAR_ZERO,
             tasks=tasks_seen)
    return d


def gated_difference(seeds: dict, run: str, lengths, gate: dict, base: str = STANDARD) -> dict | None:
    """:func:`score_difference` on the tasks that pass the capability gate; when none does,
    a stub whose verdict is "not testable here" with the gate's reason."""
    testable = [t for t, row in gate.items() if row["testable"]]
    if not testable:
        return {"not_testable": gate_reason(gate), "estimate": math.nan, "low": math.nan,
                "high": math.nan, "seed_low": math.nan, "seed_high": math.nan, "seeds": 0, "items": 0}
    return score_difference(seeds, run, lengths, base, tasks=testable)


def mean_scores(seeds: dict) -> dict[str, dict[tuple[str, int], float]]:
    """run -> (task, length) -> score averaged over the seeds that have it."""
    acc: dict[str, dict[tuple[str, int], list[float]]] = {}
    for s in seeds.values():
        for cell in s["eval"]["cells"]:
            if cell["skipped"] is not None:
                continue
            for run, r in cell["results"].items():
                acc.setdefault(run, {}).setdefault((cell["task"], cell["length"]), []).append(r["score"])
    return {run: {k: sum(v) / len(v) for k, v in cells.items()} for run, cells in acc.items()}


def heldout_loss_difference(seeds: dict, arm: str = "memdlm", mode: str = "off",
                            base: str = "standard", base_mode: str = "off") -> dict | None:
    """``arm`` minus ``base`` held-out loss per item (nats/token) from the ``heldout_loss``
    cells: the fine-tuning task's test items, the same masks for every arm
    (:mod:`memdlm.eval.item_loss`), items paired across seeds. ``mode``: ``"off"`` or
    ``"prompt_memory"`` (adapted on each item's prompt)."""
    diffs = []
    for s in seeds.values():
        res = (s.get("heldout_loss") or {}).get("results", {})
        if arm not in res or base not in res:
            continue
        diffs.append([y - x for x, y in zip(res[base][base_mode], res[arm][mode])])
    if not diffs:
        return None
    return seed_item_comparison(diffs)


def heldout_losses(seeds: dict) -> dict[str, dict]:
    """Each arm's mean per-item held-out loss per seed, memory off and adapted on the prompt:
    ``{arm: {"off": {seed: loss}, "prompt_memory": {seed: loss}}}``."""
    out: dict[str, dict] = {}
    for seed, s in seeds.items():
        for arm, modes in (s.get("heldout_loss") or {}).get("results", {}).items():
            row = out.setdefault(arm, {"off": {}, "prompt_memory": {}})
            for mode, values in modes.items():
                row[mode][seed] = sum(values) / len(values)
    return out


def mean_ratio(result: dict, key: str = "r_eb") -> float:
    return nanmean(result[key])


EB_TERMS = {"r_eb": ("l_seq", "l_static"), "r_ctrl": ("l_seq", "l_static_same"),
            "gap": ("l_seq", "l_static"), "gap_ctrl": ("l_seq", "l_static_same")}


def _eb_over_steps(key: str):
    """Bootstrap statistic: one run's per-item losses (name -> ``[items, S]``) and item
    indices ``[B, n]`` -> ``[B]``: the mean over steps of the ratio of the selected items'
    mean losses (``r_*``) or of their difference (``gap*``, nats)."""
    num, den = EB_TERMS[key]

    def statistic(per_item: dict, idx: np.ndarray) -> np.ndarray:
        a, b = per_item[num][idx].mean(1), per_item[den][idx].mean(1)  # [B, S]
        if key.startswith("gap"):
            return np.nanmean(a - b, axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(b != 0, a / b, np.nan)
        finite = ~np.isnan(ratio)
        return np.where(finite, ratio, 0).sum(-1) / np.maximum(finite.sum(-1), 1)

    return statistic


def _eb_arrays(s: dict, run: str, source: str = "results") -> dict:
    return {k: np.asarray(v, dtype=np.float64)
            for k, v in s["exposure_bias"][source][run]["per_item"].items()}


def eb_difference(seeds: dict, run: str, key: str = "r_eb", source: str = "results",
                  base_source: str | None = None) -> dict | None:
    """Mean over steps of ``run``'s ratio (or gap) minus Standard's, items paired across seeds
    and runs. A ratio per step is a ratio of item means, so each resample recomputes it.
    ``source``: ``"results"`` (as trained), ``"calibrated"`` (each model at its fitted
    temperature) or ``"flattened"`` (Standard's logits / the flattening temperature); Standard's
    side reads ``base_source`` (default: ``source``, or ``"results"`` for the flattened control)."""
    base_source = base_source or ("results" if source == "flattened" else source)
    groups = [(_eb_arrays(s, STANDARD, base_source), _eb_arrays(s, run, source)) for s in seeds.values()
              if run in s["exposure_bias"].get(source, {}) and STANDARD in s["exposure_bias"].get(base_source, {})]
    if not groups:
        return None
    stat = _eb_over_steps(key)
    n = groups[0][0]["l_seq"].shape[0]
    return compare(groups, lambda g, idx: stat(g[1], idx) - stat(g[0], idx), n_items=n)


def eb_level(seeds: dict, run: str, key: str) -> dict | None:
    """One run's mean over steps of a ratio or gap (e.g. Standard's ``gap_ctrl``), both intervals."""
    groups = [_eb_arrays(s, run) for s in seeds.values() if run in s["exposure_bias"]["results"]]
    if not groups:
        return None
    return compare(groups, _eb_over_steps(key), n_items=groups[0]["l_seq"].shape[0])


def probe_difference(seeds: dict, model: str, a: str, b: str, metric: str = "logp") -> dict | None:
    """``a`` minus ``b`` per item of one model's probe (log p of the answer, nats), items paired
    across seeds."""
    diffs = []
    for s in seeds.values():
        res = s["probe"]["results"].get(model, {})
        if a in res and b in res and metric in res[a]:
            diffs.append([x - y for x, y in zip(res[a][metric], res[b][metric])])
    return seed_item_comparison(diffs) if diffs else None


def interaction_scores(seeds: dict, lengths, tasks=None) -> dict | None:
    """The 2 x 2's interaction on retrieval scores, per item: (MemDLM Train & Inference -
    Train-Only) - (Standard + adaptation - Standard): what adaptation adds to a MemDLM-trained
    model beyond what it adds to a Standard one (score points)."""
    diffs = []
    for s in seeds.values():
        ev = s["eval"]
        if not {"MemDLM Train & Inference", "Standard + adaptation"} <= set(_runs_of(ev)):
            continue
        cells = _cells(ev, lengths, tasks)
        col = {run: [x for c in cells for x in c["results"][run]["item_scores"]]
               for run in (STANDARD, "Standard + adaptation", "MemDLM Train-Only", "MemDLM Train & Inference")}
        diffs.append([(ti - to) - (sa - st) for st, sa, to, ti in zip(*col.values())])
    if not diffs or not diffs[0]:
        return None
    return seed_item_comparison(diffs)


def interaction_loss(seeds: dict) -> dict | None:
    """The 2 x 2's interaction on held-out loss, per item: (MemDLM adapted - MemDLM off) -
    (Standard adapted - Standard off), nats/token."""
    diffs = []
    for s in seeds.values():
        res = (s.get("heldout_loss") or {}).get("results", {})
        if "memdlm" in res and "standard" in res:
            m, st = res["memdlm"], res["standard"]
            diffs.append([(ma - mo) - (sa - so) for mo, ma, so, sa in
                          zip(m["off"], m["prompt_memory"], st["off"], st["prompt_memory"])])
    return seed_item_comparison(diffs) if diffs else None


def overhead(out: Path, seeds: dict) -> list[dict]:
    rows = []
    for seed, s in seeds.items():
        summ = {}
        for arm in ("standard", "memdlm"):
            done = json.loads((Path(s["dirs"][arm]) / "run_complete.json").read_text())
            summ[arm] = training_seconds(s["dirs"][arm], done) / max(done["global_step"], 1)
        rows.append({"seed": seed, "standard_s_per_step": summ["standard"], "memdlm_s_per_step": summ["memdlm"],
                     "ratio": summ["memdlm"] / summ["standard"]})
    return rows


def memory_line_groups(name: str) -> tuple[str, str]:
    """A memory-strength line "arm (seed S)" -> (arm, "seed S"): its colour and line style."""
    arm, _, seed = name.rpartition(" (")
    return arm, seed.rstrip(")")


MEMORY_KEYS = {"absorption": "memory/absorption_ratio", "absorption_min": "memory/absorption_ratio_min",
               "change": "memory/relative_change", "clip": "inner/clip_fraction",
               "nonfinite": "inner/skipped_nonfinite"}


def memory_series(logs: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """Every logged step's memory strength: absorption ratio (anchor loss with the final fast
    weights / without; the mean over the step's micro-batches, and the weakest micro-batch's,
    ``absorption_min``: empty for runs logged before it), relative output change of the adapted
    layers, clip fraction (share of fast-weight tensors the inner clip rescaled), skipped
    non-finite inner losses."""
    return {name: _curve(logs, key) for name, key in MEMORY_KEYS.items()}


def _median(xs: list[float]) -> float:
    xs = sorted(x for x in xs if not math.isnan(x))
    if not xs:
        return math.nan
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def memory_trajectory(seeds: dict, floor: float, ceiling: float = math.inf) -> list[dict]:
    """Each MemDLM arm's memory strength over the whole run (every logging step, not a
    window): absorption band (min / median / max), early and late means (first and last
    fifth), median relative change, mean clip fraction. ``diverged``: the late absorption
    lies above ``ceiling`` (the memory raises the loss it was written from) or an inner loss
    was non-finite; ``in_band``: the late absorption lies in [floor, ceiling] (reported, not
    a verdict: collapse is read from the model, :func:`usability`)."""
    rows = []
    for seed, s in seeds.items():
        for arm, path in s["dirs"].items():
            logs = log_history(path)
            series = memory_series(logs)
            absorption = series["absorption"][1]
            if not absorption:
                continue
            row = {"seed": seed, "arm": arm, "steps_logged": len(absorption),
                   "absorption_min": min(absorption), "absorption_median": _median(absorption),
                   "absorption_max": max(absorption),
                   # the weakest single micro-batch of the run (a mean hides one that absorbed its targets)
                   "absorption_micro_min": min(series["absorption_min"][1], default=math.nan),
                   "change_median": _median(series["change"][1]),
                   "clip_mean": nanmean(series["clip"][1]),
                   "nonfinite": sum(series["nonfinite"][1])}
            for part in ("early", "late"):
                row[f"absorption_{part}"] = window_mean(logs, MEMORY_KEYS["absorption"], part)
                row[f"change_{part}"] = window_mean(logs, MEMORY_KEYS["change"], part)
            row["in_band"] = bool(floor <= row["absorption_late"] <= ceiling)
            row["diverged"] = bool(row["absorption_late"] > ceiling or row["nonfinite"] > 0)
            rows.append(row)
    return rows


def base_loss_differences(seeds: dict) -> dict[str, dict]:
    """Each MemDLM arm's base model (memory off) minus Standard on held-out items, per item,
    paired across seeds: the main arms on the ``heldout_loss`` cells (the fine-tuning task's
    test items), the exposure-bias pair's MemDLM on that analysis's static losses (mean over
    its steps of each item's loss at random positions, memory off)."""
    out = {}
    arms = {a for s in seeds.values() for a in (s.get("heldout_loss") or {}).get("results", {})}
    for arm in sorted(arms - {"standard", "standard_matched"}):
        d = heldout_loss_difference(seeds, arm=arm)
        if d is not None:
            out[arm] = d
    groups = []
    for s in seeds.values():
        res = (s.get("exposure_bias") or {}).get("results", {})
        if STANDARD in res and "MemDLM Train-Only" in res:
            base = np.nanmean(np.asarray(res[STANDARD]["per_item"]["l_static"], dtype=float), axis=1)
            mem = np.nanmean(np.asarray(res["MemDLM Train-Only"]["per_item"]["l_static"], dtype=float), axis=1)
            groups.append((mem - base).tolist())
    if groups:
        out["eb_memdlm"] = seed_item_comparison(groups)
    return out


def weighting_deviation(seeds: dict, runs: list[str], arms: dict, lengths, gate: dict) -> dict | None:
    """The outer-weighting deviation (:data:`memdlm.reproduce.presets.PAPER_WEIGHTING_ARM`): the
    MemDLM arm trained at the paper's 1/t minus the headline (uniform), on retrieval scores
    (Train-Only, the gated tasks, trained lengths) and on per-item held-out loss with memory
    off; None when the preset has no such arm."""
    arm = f"ablation_{PAPER_WEIGHTING_ARM}"
    run = next((r for r in runs if arms[r] == arm), None)
    if run is None:
        return None
    return {"run": run, "arm": arm,
            "scores": gated_difference(seeds, run, lengths, gate, base="MemDLM Train-Only"),
            "loss": heldout_loss_difference(seeds, arm=arm, base="memdlm")}


def usability(summary: dict) -> dict[str, str]:
    """arm -> why it is unusable, for every MemDLM arm that is (:func:`memdlm.reproduce.rules.usability_note`)."""
    by_arm: dict[str, list[dict]] = {}
    for r in summary["memory_trajectory"]:
        by_arm.setdefault(r["arm"], []).append(r)
    notes = {arm: usability_note(arm, summary["base_loss"].get(arm), rows, summary["usability_min_effect"])
             for arm, rows in by_arm.items()}
    return {arm: note for arm, note in notes.items() if note}


def final_losses(seeds: dict) -> list[dict]:
    rows = []
    for seed, s in seeds.items():
        row = {"seed": seed}
        for arm, path in s["dirs"].items():
            logs = log_history(path)
            train = [r["loss"] for r in logs if "loss" in r]
            ev = [r["eval_loss"] for r in logs if "eval_loss" in r]
            row[arm] = {"train_loss_last": train[-1] if train else None,
                        "eval_loss_last": ev[-1] if ev else None}
        rows.append(row)
    return rows


# -------------------------------------------------------------------------- plots
def _curve(logs: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in logs if key in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def make_plots(out: Path, result: dict, summary: dict) -> dict[str, str]:

    files = {}
    first = next(iter(result["seeds"].values()))
    logs = {arm: log_history(first["dirs"][arm]) for arm in ("standard", "memdlm")}
    for key, fname, ylabel, title in (
            ("loss", "train_loss.png", "training loss",
             "Training loss (MemDLM's: after its inner loop, as in the paper's Fig. 4)"),
            ("eval_loss", "heldout_loss.png", "held-out loss",
             "Held-out loss, memory off (MemDLM dashed: memory adapted on the prompt)")):
        xs_std, ys_std = _curve(logs["standard"], key)
        xs_mem, ys_mem = _curve(logs["memdlm"], key)
        if xs_std and xs_std == xs_mem:
            series = {"Standard MDLM": ys_std, "MemDLM": ys_mem}
            xs_on, ys_on = _curve(logs["memdlm"], "eval_loss_prompt_memory")
            if key == "eval_loss" and xs_on == xs_std:
                series["MemDLM, memory adapted on the prompt"] = ys_on
            plot_curves(xs_std, series, out / fname, "step", ylabel, title,
                        styles={"MemDLM, memory adapted on the prompt": {"linestyle": "--"}})
            files[key] = fname
    keys = {"absorption ratio": "absorption", "absorption, weakest micro-batch": "absorption_min",
            "relative output change": "change", "clip fraction": "clip"}
    panels = {panel: {} for panel in keys}
    for seed, s in result["seeds"].items():
        for arm, path in s["dirs"].items():
            series = memory_series(log_history(path))
            if not series["absorption"][0]:
                continue
            name = f"{arm} (seed {seed})"
            for panel, key in keys.items():
                if series[key][0]:
                    panels[panel][name] = series[key]
    panels = {panel: lines for panel, lines in panels.items() if lines}
    if panels.get("absorption ratio"):
        plot_panels(panels, out / "memory_strength.png", "training step",
                    title="Memory strength at every logged step (every MemDLM run)",
                    bands={p: (summary["floor"], summary["ceiling"]) for p in panels if p.startswith("absorption")},
                    groups=memory_line_groups)
        files["memory_strength"] = "memory_strength.png"
    plot_exposure_bias(first["exposure_bias"]["results"], out / "exposure_bias.png",
                       title="Exposure-bias ratio (first seed; bands: 95% item bootstrap)")
    files["exposure_bias"] = "exposure_bias.png"
    table = {run: {length: nanmean([v for (t, n), v in cells.items() if n == length])
                   for length in sorted({n for _, n in cells})}
             for run, cells in summary["mean_scores"].items()}
    plot_score_vs_length(table, out / "score_vs_length.png", ylabel="score (mean over tasks and seeds)",
                         title="Score against context length", trained_length=summary["trained_length"])
    files["score_vs_length"] = "score_vs_length.png"
    return files


# ------------------------------------------------------------------------- report
def gate_tasks(gate: dict) -> list[str] | None:
    """The tasks that pass the capability gate (None: no gate, every task)."""
    return [t for t, row in gate.items() if row["testable"]] if gate else None


def _eb_table(cell: dict) -> dict[str, dict]:
    """Means over steps of every exposure-bias run of one seed: as trained, at matched
    calibration (``... (T=x)``) and the flattening control."""
    out = {run: _eb_means(r) for run, r in cell["results"].items()}
    temps = cell.get("temperatures", {})
    for run, r in cell.get("calibrated", {}).items():
        out[f"{run}, calibrated (T={temps.get(run, float('nan')):.2f})"] = _eb_means(r)
    for run, r in cell.get("flattened", {}).items():
        t = r.get("meta", {}).get("temperature")
        out[f"{run}, logits / {t:g} (flattening control)" if t else f"{run}, flattened"] = _eb_means(r)
    return out


def probe_summary(seeds: dict) -> dict:
    """Per model: each contrast of :data:`memdlm.reproduce.probe.LOGPROB_CONTRASTS` (log p of
    the answer, per item) and each condition's mean log p, median rank and top-1 share, mean
    over seeds."""

    out = {}
    first = next(iter(seeds.values()))["probe"]["results"]
    for model in first:
        conditions = {}
        for cond in first[model]:
            cells = [s["probe"]["results"][model][cond] for s in seeds.values()]
            if "logp" not in cells[0]:
                continue
            conditions[cond] = {k: sum(c[k] for c in cells) / len(cells) for k in ("mean_logp", "median_rank", "top1")}
        out[model] = {"conditions": conditions,
                      "contrasts": {name: probe_difference(seeds, model, a, b)
                                    for name, (a, b) in LOGPROB_CONTRASTS.items()}}
    return out


def _eb_means(result: dict) -> dict[str, float]:
    """One run's means over steps: R_EB, R_ctrl and the two absolute gaps (nats)."""
    out = {k: mean_ratio(result, k) for k in ("r_eb", "r_ctrl")}
    for key in ("gap", "gap_ctrl"):
        num, den = EB_TERMS[key]
        out[key] = nanmean([a - b for a, b in zip(result[num], result[den])])
    return out


def summarize(out: Path, result: dict) -> dict:
    preset = result["preset"]
    seeds = result["seeds"]
    floor = result["calibration"]["floor"]
    ceiling = result["calibration"].get("ceiling", math.inf)  # reports before the ceiling had none
    trained = max(preset["finetune"]["lengths"])
    within = [n for n in preset["eval_lengths"] if n <= trained]
    beyond = [n for n in preset["eval_lengths"] if n > trained]
    first = next(iter(seeds.values()))
    first_eval = first["eval"]
    runs = _runs_of(first_eval)
    gate = capability_gate(result["dev"], preset["capability_margin"])
    arms = {run: arm_of(first_eval, run, first["dirs"]) for run in runs}
    comparisons = {}
    for run in runs:
        if run == STANDARD:
            continue
        comparisons[run] = {"within": gated_difference(seeds, run, within, gate),
                            "beyond": gated_difference(seeds, run, beyond, gate) if beyond else None}
    control = eb_level(seeds, STANDARD, "gap_ctrl")
    measurable, why = eb_measurable(control)
    summary = {
        "trained_length": trained,
        "capability": {"margin": preset["capability_margin"], "tasks": gate,
                       "testable": [t for t, row in gate.items() if row["testable"]]},
        "arms": arms,
        "mean_scores": mean_scores(seeds),
        "comparisons": comparisons,
        "ablations": {run: gated_difference(seeds, run, within, gate, base="MemDLM Train-Only")
                      for run in runs if (arms[run] or "").startswith("ablation_")
                      and arms[run] != f"ablation_{PAPER_WEIGHTING_ARM}"},
        "weighting_deviation": weighting_deviation(seeds, runs, arms, within, gate),
        "heldout_loss": heldout_loss_difference(seeds),
        "heldout_loss_adapted": heldout_loss_difference(seeds, mode="prompt_memory"),
        "finetune_tasks": list(preset["finetune"].get("tasks", [])),
        "heldout_losses": heldout_losses(seeds),
        "interaction": {"scores": interaction_scores(seeds, within, gate_tasks(gate)),
                        "loss": interaction_loss(seeds)},
        "eb": {run: {k: eb_difference(seeds, run, k) for k in ("r_eb", "r_ctrl", "gap", "gap_ctrl")}
               for run in ("MemDLM Train-Only", "MemDLM Train & Inference")},
        "eb_calibrated": {run: {k: eb_difference(seeds, run, k, source="calibrated") for k in ("r_eb", "gap")}
                          for run in ("MemDLM Train-Only", "MemDLM Train & Inference")},
        "eb_flattened": {k: eb_difference(seeds, STANDARD, k, source="flattened") for k in ("r_eb", "gap")},
        "eb_control": control,
        "eb_measurable": {"measurable": measurable, "reason": why},
        "eb_means": _eb_table(next(iter(seeds.values()))["exposure_bias"]),
        "eb_temperatures": {seed: s["exposure_bias"].get("temperatures", {}) for seed, s in seeds.items()},
        "probe": probe_summary(seeds),
        "overhead": overhead(out, seeds),
        "final_losses": final_losses(seeds),
        "memory_trajectory": memory_trajectory(seeds, floor, ceiling),
        "base_loss": base_loss_differences(seeds),
        "floor": floor,
        "ceiling": ceiling,
        # declared in the preset before the run; a report made before the field had no minimum
        "usability_min_effect": preset.get("usability_min_effect", 0.0),
    }
    summary["unusable"] = usability(summary)
    return summary


def claims(summary: dict) -> list[tuple[str, str, str, str]]:
    """(claim, our measurement, estimate with both intervals, verdict) rows, in the report's
    order: held-out loss, exposure bias, retrieval, the probe, the ablations."""
    return (_loss_claims(summary) + _exposure_bias_claims(summary) + _retrieval_claims(summary)
            + _probe_claims(summary) + _ablation_claims(summary))


def _loss_claims(summary: dict) -> list[tuple[str, str, str, str]]:
    """The held-out loss rows, memory off and adapted, and the 2 x 2 interaction on loss."""
    rows = []
    tasks = ", ".join(summary["finetune_tasks"])
    for key, claim, what in (
            ("heldout_loss", "MemDLM reaches a lower loss (held-out, memory off)",
             f"MemDLM - Standard per-item held-out loss, memory off ({tasks} test items), nats/token"),
            ("heldout_loss_adapted", "MemDLM with memory adapted on the prompt reaches a lower held-out loss",
             f"MemDLM (memory adapted on the prompt) - Standard (no memory), per item ({tasks}), nats/token")):
        d = summary.get(key)  # both read the headline arm's heldout_loss cells
        rows.append((claim, what, ci(d, digits=3),
                     with_note(verdict(d, "lower"), arm_notes(summary, "memdlm")) if d else "not measured"))
    d = summary["interaction"]["loss"]
    rows.append(("2 x 2 interaction: adaptation helps a MemDLM-trained model more than a Standard one (loss)",
                 "(MemDLM adapted - off) - (Standard adapted - off), per item, nats/token", ci(d, digits=3),
                 with_note(verdict(d, "lower"), arm_notes(summary, "memdlm")) if d else "not measured"))
    return rows


def _exposure_bias_claims(summary: dict) -> list[tuple[str, str, str, str]]:
    """Flatter R_EB / smaller gap per MemDLM arm (matched calibration, then as
    trained), and the flattening control."""
    rows = []
    eb_ok = summary["eb_measurable"]
    for run in ("MemDLM Train-Only", "MemDLM Train & Inference"):
        for key, what in (("r_eb", "mean R_EB over steps, difference"),
                          ("gap", "mean gap L_seq - L_static over steps, difference (nats)")):
            label = "flatter R_EB" if key == "r_eb" else "smaller exposure-bias gap"
            for source, where in (("eb_calibrated", "at matched calibration"), ("eb", "as trained")):
                d = (summary.get(source) or {}).get(run, {}).get(key)
                if source == "eb_calibrated" and d is None:
                    continue  # a report made before the calibrated analysis existed
                v = verdict(d, "lower") if eb_ok["measurable"] else f"not measurable: {eb_ok['reason']}"
                if source == "eb":
                    v = "not the verdict (calibration not matched; the control row below shows why): " + v
                rows.append((f"{run}: {label} than Standard ({where})",
                             what + (", each model temperature-scaled to its held-out NLL" if source == "eb_calibrated"
                                     else ""), ci(d, digits=3), with_note(v, arm_notes(summary, "eb_memdlm"))))
    for key, what in (("r_eb", "mean R_EB"), ("gap", "mean gap (nats)")):
        d = (summary.get("eb_flattened") or {}).get(key)
        if d is not None:
            rows.append((f"Control: Standard with flattened logits looks flatter ({what})",
                         f"Standard with logits / T - Standard, {what}, difference", ci(d, digits=3),
                         "control (a calibration artifact, not exposure bias): " + verdict(d, "lower")))
    return rows


def _retrieval_claims(summary: dict) -> list[tuple[str, str, str, str]]:
    """Retrieval within and past the trained length per MemDLM arm, and the 2 x 2
    interaction on scores."""
    rows = []
    for run in ("MemDLM Train-Only", "MemDLM Train & Inference"):
        c = summary["comparisons"].get(run, {})
        for where, label in (("within", "retrieves better than Standard (trained lengths)"),
                             ("beyond", "gains persist past the trained length")):
            d = c.get(where)
            rows.append((f"{run} {label}" if where == "within" else f"{run}: {label}",
                         _score_measure(d), ci(d), with_note(score_verdict(d), arm_notes(summary, run))))
    d = summary["interaction"]["scores"]
    rows.append(("2 x 2 interaction: adaptation helps a MemDLM-trained model more than a Standard one (retrieval)",
                 "(Train & Inference - Train-Only) - (Standard + adaptation - Standard), per item, " + _score_measure(d),
                 ci(d), with_note(score_verdict(_near(d)), arm_notes(summary, "MemDLM Train-Only"))))
    return rows


def _probe_claims(summary: dict) -> list[tuple[str, str, str, str]]:
    """The in-weight retrieval probe's contrasts; the positive control's row says whether the
    probe can see a memory at all."""
    rows = []
    for model, p in summary["probe"].items():
        for name, d in p["contrasts"].items():
            if d is None:
                continue
            if name.startswith("positive control"):
                v = ("the probe can detect a memory: " if d["low"] > 0 else
                     "**the probe's positive control did not move the answer: the probe rows say nothing**; ") + verdict(d)
            else:
                v = with_note(verdict(d), arm_notes(summary, "memdlm") if model == "MemDLM" else None)
            rows.append((f"In-weight retrieval probe, {model}: {name}",
                         "log p of the answer at the answer slot, per item, nats", ci(d, digits=2), v))
    return rows


def _ablation_claims(summary: dict) -> list[tuple[str, str, str, str]]:
    """Each ablation against anchor-consistent MemDLM."""
    rows = []
    for run, d in summary["ablations"].items():
        rows.append((f"{run} scores below anchor-consistent MemDLM (paper: every ablation lower)",
                     "ablation - MemDLM Train-Only, " + _score_measure(d), ci(d),
                     with_note(score_verdict(d, "lower"), arm_notes(summary, run, "MemDLM Train-Only"))))
    return rows + _deviation_rows(summary)


def _deviation_rows(summary: dict) -> list[tuple[str, str, str, str]]:
    """The outer-weighting deviation's rows (:func:`weighting_deviation`): measured, no paper side."""
    dev = summary.get("weighting_deviation")
    if not dev:
        return []
    note = arm_notes(summary, dev["arm"], "memdlm")
    d, loss = dev["scores"], dev["loss"]
    score = score_verdict(d) if d is None or d.get("not_testable") or d.get("both_near_zero") else \
        deviation_verdict(d, "1/t scores higher", "1/t scores lower")
    return [("Deviation measured: MemDLM at the paper's 1/t outer weighting vs ours (uniform), retrieval",
             f"{dev['run']} - MemDLM Train-Only, " + _score_measure(d), ci(d), with_note(score, note)),
            ("Deviation measured: MemDLM at the paper's 1/t outer weighting vs ours (uniform), held-out loss",
             "1/t - uniform MemDLM per-item held-out loss, memory off, nats/token", ci(loss, digits=3),
             with_note(deviation_verdict(loss, "1/t loss higher", "1/t loss lower"), note) if loss
             else "not measured")]


def _near(d: dict | None) -> dict | None:
    """A score difference without arm means (the interaction): never "both near 0"."""
    return None if d is None else {"both_near_zero": False, **d}


def _score_measure(d: dict | None) -> str:
    if d and d.get("tasks"):
        return f"score points ({', '.join(d['tasks'])})"
    return "score points"


def write_report(out: Path, result: dict, provenance: dict) -> Path:
    summary = summarize(out, result)
    plots = make_plots(out, result, summary)
    rows = [list(r) for r in claims(summary)]
    (out / "report.json").write_text(json.dumps({"summary": _jsonable(summary), "provenance": provenance,
                                                 "calibration": result["calibration"],
                                                 "control_lr0": result["control_lr0"], "claims": rows}, indent=2))
    # every cell the rows are computed from (per-item scores, losses, log p), in one file: with the
    # runs' log histories (export_cells) the claims recompute from a committed copy (recompute_claims)
    (out / "result.json").write_text(json.dumps({"output_dir": str(out), **result}))
    (out / "REPORT.md").write_text(render_markdown(result, summary, provenance, plots))
    return out / "REPORT.md"


RUN_FILES = ("log_history.json", "run_complete.json")  # what the report reads from a training run


def export_cells(out: Path, dest: Path) -> list[Path]:
    """Copy what a report is computed from, and nothing heavy, to ``dest``: REPORT.md,
    report.json, result.json gzipped (``CELLS_FILE``: every evaluation cell), the plots, and each
    training run's log history and summary under ``dest/runs/`` (no weights). Returns the files
    written."""
    import shutil

    out, dest = Path(out), Path(dest)
    text = (out / "result.json").read_text()
    result = json.loads(text)
    dest.mkdir(parents=True, exist_ok=True)
    written = [write_cells(dest, text)]
    for f in [out / n for n in ("REPORT.md", "report.json")] + sorted(out.glob("*.png")):
        written.append(Path(shutil.copy2(f, dest / f.name)))
    for s in result["seeds"].values():
        for run_dir in s["dirs"].values():
            rel = Path(run_dir).resolve().relative_to(Path(result["output_dir"]).resolve())
            for name in RUN_FILES:
                target = dest / "runs" / rel / name
                target.parent.mkdir(parents=True, exist_ok=True)
                written.append(Path(shutil.copy2(Path(run_dir) / name, target)))
    return written


# The exported cells: result.json, gzipped. Per-item cells of three seeds reach several MB of
# JSON (full_active: 3.7 MB, 2.4 MB of it exposure-bias losses); gzip keeps every digit (the rows
# recompute exactly) at a third of the size. Exports made before it hold a plain result.json.
CELLS_FILE = "result.json.gz"


def write_cells(dest: Path, text: str) -> Path:
    """``text`` (a result.json) gzipped to ``dest / CELLS_FILE``, byte-identical for the same
    text (no timestamp in the header)."""
    import gzip

    path = Path(dest) / CELLS_FILE
    path.write_bytes(gzip.compress(text.encode(), compresslevel=9, mtime=0))
    return path


def read_cells(exported: Path) -> dict:
    """An export's result: ``CELLS_FILE``, or the plain result.json of an older export."""
    import gzip

    exported = Path(exported)
    if (exported / CELLS_FILE).is_file():
        return json.loads(gzip.decompress((exported / CELLS_FILE).read_bytes()))
    return json.loads((exported / "result.json").read_text())


def recompute_claims(exported: Path) -> list[list[str]]:
    """The claim rows recomputed from an :func:`export_cells` copy (its cells, :func:`read_cells`,
    and the runs' log histories), with nothing else: what a committed report's rows can be checked by."""
    exported = Path(exported)
    result = read_cells(exported)
    origin = Path(result.pop("output_dir")).resolve()
    for s in result["seeds"].values():
        s["dirs"] = {arm: str(exported / "runs" / Path(d).resolve().relative_to(origin))
                     for arm, d in s["dirs"].items()}
        for cell in (s["eval"],):  # the runs name their model directories: rebase them alike
            for r in cell["runs"]:
                r["model_dir"] = str(exported / "runs" / Path(r["model_dir"]).resolve().relative_to(origin))
    return [list(r) for r in claims(summarize(exported, result))]


def _jsonable(summary: dict) -> dict:
    out = dict(summary)
    out["mean_scores"] = {run: {f"{t}@{n}": v for (t, n), v in cells.items()}
                          for run, cells in summary["mean_scores"].items()}
    return out


def render_markdown(result: dict, summary: dict, prov: dict, plots: dict) -> str:

    return render(result, summary, prov, plots, claims(summary))
