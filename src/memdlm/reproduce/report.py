"""REPORT.md, report.json and the plots, computed from the run's own cached outputs.

Every number in the report is read from the cells' JSON files (training summaries
and log histories, eval/probe/exposure-bias results); nothing is typed in. Each claim
of the paper gets an estimate, a 95% interval (seeds, then items, resampled) and a
verdict: ``reproduced`` (interval on the paper's side of zero), ``opposite`` (on the
other side) or ``unresolved`` (it contains zero).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from memdlm.reproduce.markdown import ci as _ci
from memdlm.reproduce.pipeline import log_history, seconds_per_step
from memdlm.reproduce.stats import (
    NEAR_ZERO,
    nanmean,
    score_verdict,
    seed_item_bootstrap,
    seed_then_item_bootstrap,
    verdict,
)

STANDARD = "Standard"


# --------------------------------------------------------------------------- data
def _runs_of(eval_result: dict) -> list[str]:
    return [r["name"] for r in eval_result["runs"]]


def _item_scores(eval_result: dict, run: str, lengths) -> list[float]:
    """One run's per-item scores over every (task, length) cell with a length in ``lengths``."""
    out: list[float] = []
    for cell in eval_result["cells"]:
        if cell["skipped"] is None and cell["length"] in lengths and run in cell["results"]:
            out += cell["results"][run]["item_scores"]
    return out


def score_difference(seeds: dict, run: str, lengths, base: str = STANDARD) -> dict | None:
    """``run`` minus ``base`` on the same items (score points), over seeds and items."""
    diffs, a_all, b_all = [], [], []
    for s in seeds.values():
        ev = s["eval"]
        if run not in _runs_of(ev):
            continue
        a, b = _item_scores(ev, base, lengths), _item_scores(ev, run, lengths)
        if a and len(a) == len(b):
            diffs.append([y - x for x, y in zip(a, b)])
            a_all += a
            b_all += b
    if not diffs:
        return None
    est, (lo, hi) = seed_item_bootstrap(diffs)
    base_mean, run_mean = sum(a_all) / len(a_all), sum(b_all) / len(b_all)
    return {"estimate": est, "low": lo, "high": hi, "seeds": len(diffs), "items": sum(map(len, diffs)),
            "base_mean": base_mean, "run_mean": run_mean,
            "both_near_zero": max(base_mean, run_mean) < NEAR_ZERO}


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


def heldout_loss_difference(seeds: dict) -> dict | None:
    """MemDLM minus Standard held-out loss with memory off, per item: the exposure-bias
    run's static loss (random masks at every step's ratio) averaged over steps."""
    diffs = []
    for s in seeds.values():
        res = s["exposure_bias"]["results"]
        a = [nanmean(x) for x in res["Standard"]["per_item"]["l_static"]]
        b = [nanmean(x) for x in res["MemDLM Train-Only"]["per_item"]["l_static"]]
        diffs.append([y - x for x, y in zip(a, b)])
    if not diffs:
        return None
    est, (lo, hi) = seed_item_bootstrap(diffs)
    return {"estimate": est, "low": lo, "high": hi, "seeds": len(diffs), "items": sum(map(len, diffs))}


def mean_ratio(result: dict, key: str = "r_eb") -> float:
    return nanmean(result[key])


def eb_flatness_difference(seeds: dict, run: str, key: str = "r_eb", n_boot: int = 1000) -> dict | None:
    """Mean over steps of ``run``'s ratio minus Standard's, resampling seeds then items.

    The ratio per step is a ratio of item means, so each resample recomputes it from
    the resampled items' losses (both runs share the items).
    """
    num, den = {"r_eb": ("l_seq", "l_static"), "r_ctrl": ("l_seq", "l_static_same")}[key]
    groups = [(s["exposure_bias"]["results"][STANDARD]["per_item"], s["exposure_bias"]["results"][run]["per_item"])
              for s in seeds.values() if run in s["exposure_bias"]["results"]]
    if not groups:
        return None

    def mean_ratio_over_steps(per_item, idx) -> float:
        ratios = []
        for k in range(len(per_item[num][0])):
            n = [per_item[num][i][k] for i in idx]
            d = [per_item[den][i][k] for i in idx]
            if any(x is None or math.isnan(x) for x in n + d) or sum(d) == 0:
                continue
            ratios.append(sum(n) / sum(d))
        return nanmean(ratios)

    est, (lo, hi) = seed_then_item_bootstrap(
        groups, lambda g: len(g[0][num]),
        lambda g, idx: mean_ratio_over_steps(g[1], idx) - mean_ratio_over_steps(g[0], idx), n_boot)
    return {"estimate": est, "low": lo, "high": hi, "seeds": len(groups)}


def probe_difference(seeds: dict, model: str, a: str, b: str, metric: str = "item_digits") -> dict:
    diffs = [[y - x for x, y in zip(s["probe"]["results"][model][a][metric], s["probe"]["results"][model][b][metric])]
             for s in seeds.values()]
    est, (lo, hi) = seed_item_bootstrap(diffs)
    return {"estimate": est, "low": lo, "high": hi, "seeds": len(diffs)}


def overhead(out: Path, seeds: dict) -> list[dict]:
    rows = []
    for seed, s in seeds.items():
        summ = {arm: seconds_per_step(json.loads((Path(s["dirs"][arm]) / "run_complete.json").read_text()))
                for arm in ("standard", "memdlm")}
        rows.append({"seed": seed, "standard_s_per_step": summ["standard"], "memdlm_s_per_step": summ["memdlm"],
                     "ratio": summ["memdlm"] / summ["standard"]})
    return rows


def memory_trajectory(seeds: dict) -> list[dict]:
    """Absorption ratio and relative change of each MemDLM arm early and late in fine-tuning
    (means over the first and the last fifth of the logged steps): collapse shows here."""
    rows = []
    for seed, s in seeds.items():
        for arm, path in s["dirs"].items():
            logs = [r for r in log_history(path) if "memory/absorption_ratio" in r]
            if not logs:
                continue
            k = max(1, len(logs) // 5)
            row = {"seed": seed, "arm": arm}
            for part, chunk in (("early", logs[:k]), ("late", logs[-k:])):
                row[f"absorption_{part}"] = nanmean([r["memory/absorption_ratio"] for r in chunk])
                row[f"change_{part}"] = nanmean([r.get("memory/relative_change", math.nan) for r in chunk])
            rows.append(row)
    return rows


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
    from memdlm.eval.plots import plot_curves, plot_exposure_bias, plot_score_vs_length

    files = {}
    first = next(iter(result["seeds"].values()))
    logs = {arm: log_history(first["dirs"][arm]) for arm in ("standard", "memdlm")}
    for key, fname, ylabel, title in (
            ("loss", "train_loss.png", "training loss",
             "Training loss (MemDLM's: after its inner loop, as in the paper's Fig. 4)"),
            ("eval_loss", "heldout_loss.png", "held-out loss, memory off", "Held-out loss with memory off")):
        xs_std, ys_std = _curve(logs["standard"], key)
        xs_mem, ys_mem = _curve(logs["memdlm"], key)
        if xs_std and xs_std == xs_mem:
            plot_curves(xs_std, {"Standard MDLM": ys_std, "MemDLM": ys_mem}, out / fname, "step", ylabel, title)
            files[key] = fname
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
def summarize(out: Path, result: dict) -> dict:
    preset = result["preset"]
    seeds = result["seeds"]
    trained = max(preset["finetune"]["lengths"])
    within = [n for n in preset["eval_lengths"] if n <= trained]
    beyond = [n for n in preset["eval_lengths"] if n > trained]
    runs = _runs_of(next(iter(seeds.values()))["eval"])
    comparisons = {}
    for run in runs:
        if run == STANDARD:
            continue
        comparisons[run] = {"within": score_difference(seeds, run, within),
                            "beyond": score_difference(seeds, run, beyond) if beyond else None}
    return {
        "trained_length": trained,
        "mean_scores": mean_scores(seeds),
        "comparisons": comparisons,
        "ablations": {run: score_difference(seeds, run, within, base="MemDLM Train-Only")
                      for run in runs if run.startswith("MemDLM ") and run.endswith(", Train-Only")
                      and "shared" not in run},
        "heldout_loss": heldout_loss_difference(seeds),
        "eb": {run: {k: eb_flatness_difference(seeds, run, k) for k in ("r_eb", "r_ctrl")}
               for run in ("MemDLM Train-Only", "MemDLM Train & Inference")},
        "eb_means": {run: {k: mean_ratio(r, k) for k in ("r_eb", "r_ctrl")}
                     for run, r in next(iter(seeds.values()))["exposure_bias"]["results"].items()},
        "probe": {model: {"matched_vs_mismatched": probe_difference(seeds, model, "removed_mismatched",
                                                                    "removed_matched"),
                          "matched_vs_removed": probe_difference(seeds, model, "removed", "removed_matched")}
                  for model in ("Standard", "MemDLM")},
        "overhead": overhead(out, seeds),
        "final_losses": final_losses(seeds),
        "memory_trajectory": memory_trajectory(seeds),
    }


def claims(summary: dict) -> list[tuple[str, str, str, str]]:
    """(claim, our measurement, interval, verdict) rows."""
    rows = []
    hl = summary["heldout_loss"]
    rows.append(("MemDLM reaches a lower loss (held-out, memory off)", "MemDLM - Standard, nats/token",
                 _ci(hl, digits=3), verdict(hl["low"], hl["high"], "lower") if hl else "not measured"))
    for run in ("MemDLM Train-Only", "MemDLM Train & Inference"):
        eb = summary["eb"][run]["r_eb"]
        rows.append((f"{run}: flatter R_EB than Standard", "mean R_EB over steps, difference",
                     _ci(eb, digits=3), verdict(eb["low"], eb["high"], "lower") if eb else "not measured"))
    for run in ("MemDLM Train-Only", "MemDLM Train & Inference"):
        c = summary["comparisons"].get(run, {})
        w = c.get("within")
        rows.append((f"{run} retrieves better than Standard (trained lengths)", "score points",
                     _ci(w), score_verdict(w)))
        b = c.get("beyond")
        rows.append((f"{run}: gains persist past the trained length", "score points",
                     _ci(b), score_verdict(b)))
    for run, d in summary["ablations"].items():
        rows.append((f"{run} scores below anchor-consistent MemDLM (paper: every ablation lower)",
                     "ablation - MemDLM Train-Only, score points", _ci(d), score_verdict(d, "lower")))
    return rows


def write_report(out: Path, result: dict, provenance: dict) -> Path:
    summary = summarize(out, result)
    plots = make_plots(out, result, summary)
    (out / "report.json").write_text(json.dumps({"summary": _jsonable(summary), "provenance": provenance,
                                                 "calibration": result["calibration"],
                                                 "control_lr0": result["control_lr0"]}, indent=2))
    (out / "REPORT.md").write_text(render_markdown(result, summary, provenance, plots))
    return out / "REPORT.md"


def _jsonable(summary: dict) -> dict:
    out = dict(summary)
    out["mean_scores"] = {run: {f"{t}@{n}": v for (t, n), v in cells.items()}
                          for run, cells in summary["mean_scores"].items()}
    return out


def render_markdown(result: dict, summary: dict, prov: dict, plots: dict) -> str:
    from memdlm.reproduce.markdown import render

    return render(result, summary, prov, plots, claims(summary))
