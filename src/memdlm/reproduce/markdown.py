"""The text of REPORT.md (tables and prose around the numbers ``report.py`` computed)."""

from __future__ import annotations

import math

from memdlm.reproduce.rules import arm_notes, score_verdict, with_note


def _f(x, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def ci(d: dict | None, digits: int = 1, scale: float = 1.0) -> str:
    """``+x.x; items [lo, hi]; seeds [lo, hi]`` of a :func:`memdlm.stats.compare` result: the
    estimate, the paired-item bootstrap and the seed t-interval (undefined with one seed)."""
    if d is None or (isinstance(d.get("estimate"), float) and math.isnan(d["estimate"])):
        return "n/a"
    def f(x: float) -> str:
        return f"{scale * x:+.{digits}f}"

    text = f"{f(d['estimate'])}; items [{f(d['low'])}, {f(d['high'])}]"
    if d["seeds"] < 2 or math.isnan(d["seed_low"]):
        return text + f"; seeds: undefined ({d['seeds']} seed)"
    return text + f"; seeds [{f(d['seed_low'])}, {f(d['seed_high'])}]"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)


def _provenance(prov: dict) -> str:
    v = prov["versions"]
    return "\n".join([
        f"- Command: `{prov['command']}`",
        f"- Commit: `{prov['commit']}`{' (working tree had uncommitted changes)' if prov.get('dirty') else ''}",
        f"- Preset `{prov['preset']}`, config hash `{prov['config_hash'][:12]}` (sha256 of the preset's JSON)",
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- Machine: {prov['machine']}",
        f"- Wall time: {prov['wall_seconds'] / 60:.1f} min for this invocation; "
        f"{prov['cell_seconds'] / 60:.1f} min of training and evaluation in all cells "
        f"(cells made by earlier invocations are reused).",
    ])


def _scores(summary: dict, preset: dict) -> str:
    ms = summary["mean_scores"]
    keys = sorted({k for cells in ms.values() for k in cells})
    header = ["run"] + [f"{t}@{n}" for t, n in keys]
    rows = [[run] + [_f(cells.get(k)) for k in keys] for run, cells in ms.items()]
    return _table(header, rows)


def _comparisons(summary: dict) -> str:
    rows = []
    for run, c in summary["comparisons"].items():
        for where in ("within", "beyond"):
            d = c.get(where)
            if d and not d.get("not_testable"):
                rows.append([run, {"within": "<= trained", "beyond": "> trained"}[where], ", ".join(d["tasks"]),
                             _f(d["run_mean"]), _f(d["base_mean"]), ci(d), d["seeds"], d["items"],
                             with_note(score_verdict(d), arm_notes(summary, run))])
    if not rows:
        return "No comparison: no task passed the capability gate (above)."
    return _table(["run", "lengths", "tasks", "run score", "Standard score",
                   "difference; 95% intervals", "seeds", "items", "verdict"], rows)


def _capability(summary: dict) -> list[str]:
    cap = summary["capability"]
    rows = [[t, _f(r["score"]), _f(r["copy"]), _f(r["uniform"], 2), _f(None if r["copy"] is None else r["copy"] + r["margin"]),
             "yes" if r["testable"] else "no: not testable here"] for t, r in cap["tasks"].items()]
    return ["### Capability gate", "",
            f"A retrieval verdict is given on a task only when Standard's score on the dev items "
            f"(first seed, trained length) reaches the task's copy level (copying a random value of the "
            f"context) plus {cap['margin']:g} points; below that, a difference between two models that "
            "do not retrieve says nothing about retrieval. Comparisons pool the tasks that pass.", "",
            _table(["task", "Standard (dev)", "copy level", "uniform level", "needed", "testable"], rows), ""]


def _calibration(cal: dict, finetune_steps: int) -> list[str]:
    length = "as long as the real fine-tune" if cal["steps"] == finetune_steps else \
        f"shorter than the real fine-tune's {finetune_steps}"
    single = all(len(c["candidates"]) == 1 for c in cal["modes"].values())
    rule = ("The memory's rank and inner lr are fixed by rule before any arm is compared (the paper's inner lr "
            "0.1; docs/REPRODUCE.md); the run below is seed 0's MemDLM arm, and its late absorption is "
            "reported against the band, not used to choose." if single else
            "Memory rank and inner lr come from MemDLM fine-tunes, one per candidate and memory mode: per mode, "
            "the candidate whose fast weights change the adapted layers' outputs most while the late absorption "
            "stays within the band.")
    parts = ["## Operating point (fixed before the test items were evaluated)", "",
             f"{rule} Runs of {cal['steps']} steps ({length}); band [{cal['floor']}, {cal.get('ceiling', 'inf')}] "
             "(late absorption ratio: anchor loss with memory / without, last fifth of the logged steps).", ""]
    for mode, c in cal["modes"].items():
        rows = [[r["rank"], r["inner_lr"], _f(r["absorption_ratio"], 3), f"{r['relative_change']:.2e}"]
                for r in c["candidates"]]
        ch = c["chosen"]
        parts += [f"Memory mode `{mode}`:", "",
                  _table(["rank", "inner lr", "late absorption ratio", "late relative change"], rows), "",
                  f"Operating point: rank {ch['rank']}, inner lr {ch['inner_lr']}"
                  + ("" if c["qualified"] else " (late absorption outside the band: reported, see usability)") + ".", ""]
    return parts


def _eb_calibration(cal: dict | None) -> list[str]:
    """The exposure-bias MemDLM's own operating point (presets with ``eb_inner_candidates``)."""
    if not cal:
        return []
    rows = [[r["rank"], r["inner_lr"], _f(r["absorption_ratio"], 3), f"{r['relative_change']:.2e}"]
            for r in cal["candidates"]]
    ch = cal["chosen"]
    return ["Exposure-bias MemDLM (prose; at the headline's lr 0.1 its memory is inert there): the same rule "
            f"over its own candidates, each the exposure-bias fine-tune of seed 0 ({cal['steps']} steps), band "
            f"[{cal['floor']}, {cal['ceiling']}]. The chosen point is also that pair's inference-time adaptation.", "",
            _table(["rank", "inner lr", "late absorption ratio", "late relative change"], rows), "",
            f"Operating point: rank {ch['rank']}, inner lr {ch['inner_lr']}"
            + ("" if cal["qualified"] else " (late absorption outside the band)") + ".", ""]


def _memory(summary: dict, plots: dict) -> list[str]:
    """Memory strength over every logged step of every MemDLM run, and the usability rule."""
    traj = summary.get("memory_trajectory", [])
    if not traj:
        return []
    parts = ["### Memory strength during training (every logged step)", ""]
    if "memory_strength" in plots:
        parts += [f"![memory strength]({plots['memory_strength']})", ""]
    parts += ["Absorption: the anchor loss with the step's final fast weights over the same loss with memory "
              "off (1: the memory does nothing to it; far below 1: it holds the targets). Relative change: how "
              "much the fast weights change the adapted layers' outputs. Clip: the share of fast-weight tensors "
              "the per-parameter inner clip (norm 1) rescaled -- the paper's clip ablation shows its clip acted.",
              "Each logged absorption is the mean over the step's micro-batches; the weakest micro-batch "
              "column is the smallest single micro-batch's over the run (n/a: logged before it was).",
              "", _table(["seed", "arm", "logged steps", "absorption min / median / max",
                          "weakest micro-batch", "early", "late",
                          "relative change (median)", "clip fraction (mean)", f"late in band [{summary['floor']}, "
                          f"{summary.get('ceiling', 'inf')}]", "diverged"],
                         [[r["seed"], r["arm"], r.get("steps_logged", "n/a"),
                           f"{_f(r.get('absorption_min'), 2)} / {_f(r.get('absorption_median'), 2)} / "
                           f"{_f(r.get('absorption_max'), 2)}", _f(r.get("absorption_micro_min"), 3),
                           _f(r["absorption_early"], 3),
                           _f(r["absorption_late"], 3), _f(r.get("change_median"), 4), _f(r.get("clip_mean"), 3),
                           "yes" if r.get("in_band") else "no", "yes" if r.get("diverged") else "no"]
                          for r in traj]), ""]
    rows = [[arm, ci(d, digits=3), summary.get("unusable", {}).get(arm, "usable")]
            for arm, d in summary.get("base_loss", {}).items()]
    parts += ["### Usability (the model, not the memory)", "",
              "An arm is **unusable** when its base model (memory off) is worse than Standard on held-out items "
              f"(per-item loss difference, paired-item interval entirely above the preset's minimum effect, "
              f"{summary.get('usability_min_effect', 0.0):g} nats/token) or when its memory diverged (late "
              "absorption above the band's ceiling, or a non-finite inner loss); every verdict resting on it says so. "
              "A low absorption alone is not collapse. The main arms are scored on the fine-tuning task's test "
              "items (`heldout_loss`), the exposure-bias pair's MemDLM on that analysis's static losses.", "",
              _table(["arm", "base model (memory off) - Standard, nats/token; 95% intervals", "usability"], rows)
              if rows else "No held-out losses to judge usability from.", ""]
    return parts


def _heldout(summary: dict) -> list[str]:
    rows = []
    for arm, d in summary["heldout_losses"].items():
        seeds = sorted(d["off"], key=str)
        on = [d["prompt_memory"][s] for s in seeds if s in d["prompt_memory"]]
        rows.append([arm, len(seeds), _f(sum(d["off"][s] for s in seeds) / len(seeds), 4),
                     _f(sum(on) / len(on), 4) if on else "not measured",
                     ", ".join(f"{d['off'][s]:.4f}" + (f" / {d['prompt_memory'][s]:.4f}" if s in d["prompt_memory"] else "")
                               for s in seeds)])
    if not rows:
        return []
    return ["Per-item held-out loss of each arm (mean over items; `memdlm.eval.item_loss`: the fine-tuning "
            "task's test items at the fine-tuning length, every response token's cross-entropy at 8 mask "
            "ratios with the same masks for every arm), memory off and with memory adapted on each item's "
            "prompt alone, as at inference (every arm with the same adaptation):", "",
            _table(["arm", "seeds", "memory off", "memory adapted on the prompt", "per seed (off / adapted)"], rows), ""]


def _temps(summary: dict) -> str:
    temps = summary.get("eb_temperatures") or {}
    text = "; ".join(f"seed {seed}: " + ", ".join(f"{run} T = {t:.2f}" for run, t in ts.items())
                     for seed, ts in temps.items() if ts)
    return text or "no temperatures fitted"


def _probe(summary: dict, preset: dict) -> list[str]:
    control = preset.get("probe_control", {})
    parts = ["## In-weight retrieval probe", "",
             f"Task `{preset['probe_task']}` at {preset['probe_length']} tokens. Log-probability (nats) and rank "
             "of the answer at the answer slot (the whole response masked), with the queried pair present or "
             "removed from the context, and memory written on the item's own full context (matched) or on "
             "another item's (mismatched), with the one inference-time adaptation every arm gets. The "
             f"**positive control** writes a memory that must move the answer if the probe can see anything: "
             f"{control.get('scope', '?')} of the last {control.get('layer_fraction', '?')} of layers, rank "
             f"{control.get('rank', '?')}, inner lr {control.get('inner_lr', '?')} x {control.get('steps', '?')} "
             "steps on the full context with the queried value as the only target. Means over seeds.", ""]
    for model, p in summary["probe"].items():
        conds = p.get("conditions", {})
        if conds:
            parts += [f"{model}:", "", _table(["condition", "mean log p", "median rank", "top-1 %"],
                                              [[c, _f(v["mean_logp"], 2), _f(v["median_rank"], 0), _f(100 * v["top1"])]
                                               for c, v in conds.items()]), ""]
        rows = [[name, ci(d, digits=2)] for name, d in p.get("contrasts", {}).items() if d is not None]
        if rows:
            parts += [_table(["contrast (log p, nats, per item)", "estimate; 95% intervals"], rows), ""]
    return parts


def _introduction(preset: dict, prov: dict) -> list[str]:
    return [f"# MemDLM mini reproduction: preset `{preset['name']}`", "",
            "Produced by `memdlm reproduce`; every number below is read from this directory's cached "
            "outputs. Each difference has two 95% intervals: a bootstrap over the test items (the same item "
            "indices resampled for every seed) and a t-interval over the seed means (undefined with one "
            "seed). A verdict is **reproduced** or **opposite** only when both lie on that side of zero; "
            "otherwise it is **unresolved** and says why.", "", _provenance(prov), ""]


def _claims(claim_rows) -> list[str]:
    return ["## The paper's claims here", "",
            _table(["claim", "measured as", "estimate; 95% intervals", "verdict"],
                   [list(r) for r in claim_rows]), ""]


def _setup(preset: dict, summary: dict) -> list[str]:
    """What was trained and evaluated: the base, the fine-tune, the memory, the items."""
    return ["## Setup", "",
            f"- Base: the shipped `{preset['base_model']}` (a model trained once by a project command; "
            "its provenance.json says how), loaded frozen; every arm trains the same outer LoRA adapter "
            f"(rank {preset['lora']['r']}, alpha {preset['lora']['alpha']}, on {preset['lora']['targets']}).",
            f"- Fine-tuning (every arm from that base): {preset['finetune']['steps']} steps on "
            f"{', '.join(preset['finetune']['tasks'])} at {preset['finetune']['lengths']} tokens, "
            f"lr {preset['finetune']['learning_rate']}, batch {preset['finetune']['batch_size']}"
            + (f" in micro-batches of {preset['finetune']['micro_batch']}" if preset['finetune'].get('micro_batch') else "")
            + f", outer-loss weighting {preset['finetune'].get('weighting', 'uniform')}; seeds {preset['seeds']}.",
            f"- MemDLM memory: scope {preset.get('memory_scope', 'ffn')}, last "
            f"{preset.get('memory_layer_fraction', 0.1)} of the layers; inference-time adaptation for every arm: "
            + (", ".join(f"{k} {v}" for k, v in preset["adaptation"].items()) if "adaptation" in preset
               else "the headline arm's settings") + ".",
            f"- Test items: {preset['eval_items']} per (task, length), eval split (seeds never used in "
            f"training); lengths {preset['eval_lengths']} (trained: {summary['trained_length']}).",
            f"- Exposure bias: its own pair of arms, Standard and MemDLM (batch-shared memory at the "
            + ("pair's own operating point, below" if preset.get("eb_inner_candidates") else "headline's operating point")
            + f"), fine-tuned alike from the shipped `{preset['eb_base']}` "
            f"({preset['eb_finetune']['steps']} steps on {', '.join(preset['eb_finetune']['tasks'])} at "
            f"{preset['eb_finetune']['lengths']} tokens, same adapter and lr), then decoded in "
            f"{preset['eb_steps']} steps on {preset['eb_items']} held-out `{preset['eb_task']}` items.", ""]


def _dev(dev: dict) -> list[str]:
    """The dev items' scores (first seed), every run."""
    dev_rows = []
    for cell in dev["cells"]:
        if cell["skipped"] is None:
            dev_rows.append([cell["task"], cell["length"]] + [_f(r["score"]) for r in cell["results"].values()])
    dev_runs = [r["name"] for r in dev["runs"]]
    return ["Dev items (a seed range disjoint from the test items), first seed:", "",
            _table(["task", "length"] + dev_runs, dev_rows), ""]


def _retrieval(summary: dict, preset: dict, plots: dict) -> list[str]:
    return ["## Retrieval: scores (mean over seeds)", "", _scores(summary, preset), "",
            f"![score against length]({plots['score_vs_length']})", "",
            "### Differences from Standard, paired on items", "", _comparisons(summary), ""]


def _losses(summary: dict, plots: dict) -> list[str]:
    """The loss curves, each arm's last training and held-out loss, the per-item held-out loss."""
    parts = ["## Training and held-out loss", ""]
    for key in ("loss", "eval_loss"):
        if key in plots:
            parts += [f"![{key}]({plots[key]})", ""]
    loss_rows = []
    for row in summary["final_losses"]:
        for arm, d in row.items():
            if arm != "seed":
                loss_rows.append([row["seed"], arm, _f(d["train_loss_last"], 4), _f(d["eval_loss_last"], 4)])
    parts += ["MemDLM's training loss is measured after its inner loop wrote memory from the very targets "
              "being scored, so it is not comparable with Standard's; the held-out loss is computed with "
              "memory off.", "", _table(["seed", "arm", "last training loss", "last held-out loss"], loss_rows), ""]
    return parts + _heldout(summary)


def _exposure_bias(summary: dict, plots: dict) -> list[str]:
    """The first seed's means over steps, how to read R_EB, and the measurability rule's outcome."""
    eb_ok = summary["eb_measurable"]
    return ["## Exposure bias", "", f"![R_EB]({plots['exposure_bias']})", "",
            _table(["run (first seed)", "mean R_EB", "mean gap L_seq - L_static (nats)",
                    "mean R_ctrl (same positions)", "mean control gap L_seq - L_static_same (nats)"],
                   [[run, _f(v["r_eb"], 3), _f(v["gap"], 3), _f(v["r_ctrl"], 3), _f(v["gap_ctrl"], 3)]
                    for run, v in summary["eb_means"].items()]), "",
            "R_EB is a ratio: a model with a worse static loss looks flatter for the same absolute gap, "
            "so the gap is reported beside it. A less confident model also looks flatter on both: the "
            "*calibrated* rows divide each model's logits by the temperature that minimises its static NLL "
            "on held-out items of their own seed range (" + _temps(summary) + "), and the comparisons that "
            "decide are made there; the *flattening control* is Standard with its logits divided by a fixed "
            "temperature, a model no better at anything that looks flatter. Measurability rule: exposure bias is measurable only when "
            "Standard's same-position control gap (mean over steps) lies above zero by both intervals "
            "(the item interval alone with one seed); otherwise the rise of R_EB is the low-confidence "
            "order -- the hardest positions are decoded last -- and the flatness claims are \"not "
            f"measurable\". Here: {eb_ok['reason']} -> "
            + ("measurable." if eb_ok["measurable"] else "**not measurable**."), ""]


def _pace(pace: dict | None) -> str:
    """How the compute-matched arm's steps were counted."""
    if not pace:
        return ("as many steps as fit in MemDLM's measured training time, each arm timed in its own run, "
                "the held-out evaluations during training left out")
    rounds = len(pace["seconds_per_step"]["standard"])
    return (f"MemDLM's steps x {pace['ratio']:.3f}, the ratio of the two arms' median optimiser-step seconds "
            f"({_f(pace['median']['memdlm'], 3)} / {_f(pace['median']['standard'], 3)} s) timed side by side: "
            f"{rounds} alternating rounds of both arms' real settings (pace.json)")


def _controls(ctrl: dict, summary: dict, pace: dict | None = None) -> list[str]:
    """The inner-lr-0 control, the compute-matched arm, and training seconds per step."""
    return ["## Controls and cost", "",
            f"- Inner lr 0 against Standard, {ctrl['steps']} steps, same seed: largest per-step training-loss "
            f"difference {ctrl['max_abs_difference']:.2e}.",
            "- Compute-matched Standard: the `Standard, compute-matched` row above, when the preset has it ("
            + _pace(pace) + ").", "",
            "Training seconds per step (held-out evaluations during training left out):", "",
            _table(["seed", "Standard s/step", "MemDLM s/step", "ratio"],
                   [[r["seed"], _f(r["standard_s_per_step"], 3), _f(r["memdlm_s_per_step"], 3), _f(r["ratio"], 2)]
                    for r in summary["overhead"]]), "",
            "Each run's own optimiser-step seconds, timed whenever that run trained on a shared machine (other "
            "cells may have run beside it); the side-by-side measurements are the pace above (where the preset "
            "has one) and `benchmarks/train_step.py` below.", ""]


def _cost(cost: dict | None) -> list[str]:
    """The side-by-side step cost (``benchmarks/train_step.py``), or why it is missing."""
    if cost and "result" in cost:
        r = cost["result"]
        return [f"Side by side (`python {cost['command']}`, medians of interleaved steps): MemDLM's step "
                f"takes {r['time_ratio']:.2f}x Standard's time and {r['peak_mem_ratio']:.2f}x its peak memory "
                f"({r['layers']} layers, {r['threads']} thread(s), {r['device']}).", ""]
    if cost:
        return [f"Side-by-side cost not measured: {cost['error']}.", ""]
    return []


def render(result: dict, summary: dict, prov: dict, plots: dict, claim_rows) -> str:
    """REPORT.md: its sections in reading order, each from the cells ``result`` holds and the
    numbers ``summary`` computed from them."""
    preset = result["preset"]
    parts = _introduction(preset, prov)
    parts += _claims(claim_rows)
    parts += _setup(preset, summary)
    # 1. the operating point and the memory it gave, then whether the tasks are testable at all
    parts += _calibration(result["calibration"], preset["finetune"]["steps"])
    parts += _eb_calibration(result.get("eb_calibration"))
    parts += _memory(summary, plots)
    parts += _dev(result["dev"])
    parts += _capability(summary)
    # 2. the measurements the claims read
    parts += _retrieval(summary, preset, plots)
    parts += _losses(summary, plots)
    parts += _exposure_bias(summary, plots)
    parts += _probe(summary, preset)
    # 3. what it cost, and the controls beside it
    parts += _controls(result["control_lr0"], summary, result.get("pace"))
    parts += _cost(result.get("cost"))
    return "\n".join(parts)
