"""The text of REPORT.md (tables and prose around the numbers ``report.py`` computed)."""

from __future__ import annotations

import math

from memdlm.reproduce.stats import score_verdict


def _f(x, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def ci(d: dict | None, scale: float = 1.0, digits: int = 1) -> str:
    """``+x.x [+lo, +hi]`` of an estimate dict, or n/a."""
    if d is None:
        return "n/a"
    f = f"{{:+.{digits}f}}"
    return f"{f.format(scale * d['estimate'])} [{f.format(scale * d['low'])}, {f.format(scale * d['high'])}]"


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
            if d:
                rows.append([run, {"within": "<= trained", "beyond": "> trained"}[where], _f(d["run_mean"]), _f(d["base_mean"]), f"{d['estimate']:+.1f}",
                             f"[{d['low']:+.1f}, {d['high']:+.1f}]", d["seeds"], d["items"], score_verdict(d)])
    return _table(["run", "lengths", "run score", "Standard score", "difference", "95% interval", "seeds",
                   "items", "verdict"], rows)


def render(result: dict, summary: dict, prov: dict, plots: dict, claim_rows) -> str:
    preset = result["preset"]
    cal = result["calibration"]
    ctrl = result["control_lr0"]
    dev = result["dev"]
    parts = [f"# MemDLM mini reproduction: preset `{preset['name']}`", "",
             "Produced by `memdlm reproduce`; every number below is read from this directory's cached "
             "outputs. Intervals are 95% bootstrap intervals resampling training seeds, then test items; "
             "a difference whose interval contains zero is **unresolved**.", "", _provenance(prov), ""]

    parts += ["## The paper's claims here", "",
              _table(["claim", "measured as", "estimate [95% interval]", "verdict"],
                     [list(r) for r in claim_rows]), ""]

    parts += ["## Setup", "",
              f"- Base: a {preset['tiny_intermediate_size']}-FFN tiny bidirectional Gemma3 trained from scratch "
              f"with Standard MDLM for {preset['base']['steps']} steps on {', '.join(preset['base']['tasks'])} "
              f"at {preset['base']['lengths']} tokens.",
              f"- Fine-tuning (every arm from that checkpoint): {preset['finetune']['steps']} steps on "
              f"{', '.join(preset['finetune']['tasks'])} at {preset['finetune']['lengths']} tokens, "
              f"lr {preset['finetune']['learning_rate']}, batch {preset['finetune']['batch_size']}; "
              f"seeds {preset['seeds']}.",
              f"- Test items: {preset['eval_items']} per (task, length), eval split (keys and values never "
              f"used in training); lengths {preset['eval_lengths']} (trained: {summary['trained_length']}).", ""]

    rows = [[c["rank"], c["inner_lr"], _f(c["absorption_ratio"], 3), f"{c['relative_change']:.2e}"]
            for c in cal["candidates"]]
    ch = cal["chosen"]
    parts += ["## Operating point (fixed before the test items were evaluated)", "",
              "Memory rank and inner lr come from short MemDLM runs on training batches: the candidate "
              f"whose fast weights change the adapted layers' outputs most while the absorption ratio "
              f"(anchor loss with memory / without, second half of the run) stays at or above "
              f"{cal['floor']}.", "",
              _table(["rank", "inner lr", "absorption ratio", "relative change"], rows), "",
              f"Chosen: rank {ch['rank']}, inner lr {ch['inner_lr']}"
              + ("" if cal["qualified"] else " (no candidate met the floor: the least-absorbing one)") + ".", ""]
    traj = summary.get("memory_trajectory", [])
    if traj:
        parts += ["During fine-tuning (means over the first and last fifth of the logged steps; an "
                  "absorption ratio near 0 is memorisation collapse -- the memory stores the targets and "
                  "the model stops learning them):", "",
                  _table(["seed", "arm", "absorption early", "absorption late", "relative change early",
                          "relative change late"],
                         [[r["seed"], r["arm"], _f(r["absorption_early"], 3), _f(r["absorption_late"], 3),
                           _f(r["change_early"], 3), _f(r["change_late"], 3)] for r in traj]), ""]
    dev_rows = []
    for cell in dev["cells"]:
        if cell["skipped"] is None:
            dev_rows.append([cell["task"], cell["length"]] + [_f(r["score"]) for r in cell["results"].values()])
    dev_runs = [r["name"] for r in dev["runs"]]
    parts += ["Dev items (a seed range disjoint from the test items), first seed:", "",
              _table(["task", "length"] + dev_runs, dev_rows), ""]

    parts += ["## Retrieval: scores (mean over seeds)", "", _scores(summary, preset), "",
              f"![score against length]({plots['score_vs_length']})", "",
              "### Differences from Standard, paired on items", "", _comparisons(summary), ""]

    parts += ["## Training and held-out loss", ""]
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

    parts += ["## Exposure bias", "", f"![R_EB]({plots['exposure_bias']})", "",
              _table(["run (first seed)", "mean R_EB", "mean R_ctrl (same positions)"],
                     [[run, _f(v["r_eb"], 3), _f(v["r_ctrl"], 3)] for run, v in summary["eb_means"].items()]), ""]

    probe_rows = []
    for seed, s in result["seeds"].items():
        for model, conds in s["probe"]["results"].items():
            probe_rows.append([seed, model] + [f"{_f(100 * c['exact_match'])} / {_f(100 * c['digit_accuracy'])}"
                                               for c in conds.values()])
    first_probe = next(iter(result["seeds"].values()))["probe"]["results"]["MemDLM"]
    pd = summary["probe"]
    parts += ["## In-weight retrieval probe", "",
              "Answer the question with the needle removed from the context; memory adapted on the full "
              "context (matched) or on another item's context (mismatched). Exact match / digit accuracy, %.",
              "", _table(["seed", "model"] + list(first_probe), probe_rows), "",
              _table(["model", "matched - mismatched (digit acc.)", "matched - no memory"],
                     [[m, ci(d["matched_vs_mismatched"], 100), ci(d["matched_vs_removed"], 100)]
                      for m, d in pd.items()]), ""]

    parts += ["## Controls and cost", "",
              f"- Inner lr 0 against Standard, {ctrl['steps']} steps, same seed: largest per-step training-loss "
              f"difference {ctrl['max_abs_difference']:.2e}.",
              "- Compute-matched Standard: the `Standard, compute-matched` row above (as many steps as fit "
              "in MemDLM's measured wall time).", ""]
    parts += [_table(["seed", "Standard s/step", "MemDLM s/step", "ratio"],
                     [[r["seed"], _f(r["standard_s_per_step"], 3), _f(r["memdlm_s_per_step"], 3), _f(r["ratio"], 2)]
                      for r in summary["overhead"]]), "",
              "Seconds per step are whole-run wall times on a shared machine; the controlled, side-by-side "
              "measurement is `benchmarks/train_step.py`.", ""]
    cost = result.get("cost")
    if cost and "result" in cost:
        r = cost["result"]
        parts += [f"Side by side (`python {cost['command']}`, medians of interleaved steps): MemDLM's step "
                  f"takes {r['time_ratio']:.2f}x Standard's time and {r['peak_mem_ratio']:.2f}x its peak memory "
                  f"({r['layers']} layers, {r['threads']} thread(s), {r['device']}).", ""]
    elif cost:
        parts += [f"Side-by-side cost not measured: {cost['error']}.", ""]
    return "\n".join(parts)
