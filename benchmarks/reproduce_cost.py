"""What the reproduction presets cost on this machine: measured seconds per training step and
per evaluated item, and the CPU time of each preset estimated from them.

    python benchmarks/reproduce_cost.py --threads 1                    # quick and full, 4 steps, 8 items
    python benchmarks/reproduce_cost.py --threads 1 --steps 6 --items 16 --presets quick

Each kind of arm the presets train -- MemDLM (batch-shared, the headline; per-sample),
Standard, and the exposure-bias pair -- is trained for ``--steps`` optimiser steps with the
preset's own options (no evaluation, no checkpoints); its rate is the optimiser-step seconds
the run records (``run_complete.json``'s ``step_seconds``). Those arms are then evaluated at
the presets' shapes on ``--items`` items: answering (no adaptation, and with the one
inference-time adaptation) at every evaluation length, the per-item held-out loss (memory off
and adapted), the exposure-bias analysis (a model without and with prompt memory), its
temperature fit, and the probe. The estimate multiplies these rates by each preset's counts of
steps, arms, seeds, lengths and items (``estimate``); it leaves out the held-out evaluations
during training and checkpoint saves (1.5-3% of a training cell's wall time in the issue-22
pilot), model loading and the full preset's cost benchmark. A shared machine's load changes
every rate: the command line records the load average before and after. The first preset's
shapes are measured (quick and full share them; every length of every preset is measured).

The last line is a JSON object: ``rates`` and, per preset, ``estimate`` (seconds by part).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

TRAIN_KINDS = ("memdlm", "memdlm_per_sample", "standard", "eb_memdlm", "eb_standard")


def train_rates(repro, steps: int) -> dict[str, float]:
    """Optimiser-step seconds per step of each kind of arm, trained for ``steps`` steps."""
    p = repro.preset
    point = p.inner_candidates[0]
    eb = {"base": p.eb_base, "spec": p.eb_finetune}
    options = {
        "memdlm": repro.finetune_options(0, "memdlm", **repro.memory_options(*point, "shared")),
        "memdlm_per_sample": repro.finetune_options(0, "memdlm", **repro.memory_options(*point, "per_sample")),
        "standard": repro.finetune_options(0, "mdlm"),
        "eb_memdlm": repro.finetune_options(0, "memdlm", **eb, **repro.memory_options(*point, "shared")),
        "eb_standard": repro.finetune_options(0, "mdlm", **eb),
    }
    rates = {}
    for kind, o in options.items():
        o.update(max_steps=steps, eval_strategy="no", save_strategy="no")
        summary = repro._train(repro.out / kind, o)
        rates[kind] = summary["step_seconds"] / summary["global_step"]
    return rates


def _timed(f) -> float:
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def answer_rates(repro, lengths, items: int) -> dict[str, dict[int, float]]:
    """Seconds per item of answering a test item, without and with the inference-time adaptation."""
    from memdlm.eval.suite import STANDARD, STANDARD_ADAPT, RunSpec, evaluate_suite

    std = str(repro.out / "standard")
    result = evaluate_suite([RunSpec(STANDARD, std), RunSpec(STANDARD_ADAPT, std, True)],
                            list(repro.preset.eval_tasks), list(lengths), items,
                            memory_overrides=repro.memory_overrides(), progress=False)
    out = {"answer": {}, "answer_adapted": {}}
    for cell in result["cells"]:
        for key, run in (("answer", STANDARD), ("answer_adapted", STANDARD_ADAPT)):
            out[key][cell["length"]] = cell["results"][run]["seconds"] / items
    return out


def eval_rates(repro, items: int) -> dict[str, float]:
    """Seconds per item of the held-out loss, exposure bias (per analysis), temperature fit and
    probe (per model), on the trained arms."""
    from memdlm.eval.exposure_bias import ExposureBiasConfig, exposure_bias, heldout_pairs
    from memdlm.eval.heldout import heldout_samples
    from memdlm.eval.item_loss import item_losses, temperature_nll
    from memdlm.reproduce.probe import probe_items, run_logprob_probe

    p = repro.preset
    run = repro.load(repro.out / "memdlm")
    samples = heldout_samples(run.tokenizer, list(p.finetune.tasks), max(p.finetune.lengths), items)
    memory = run.memory(**repro.memory_overrides())
    rates = {"loss": _timed(lambda: item_losses(run.model, run.tokenizer, samples)) / items,
             "loss_adapted": _timed(lambda: item_losses(run.model, run.tokenizer, samples, memory=memory)) / items}
    probes = probe_items(run.tokenizer, items, p.probe_length, p.probe_task)
    rates["probe"] = _timed(lambda: run_logprob_probe(run, probes, memory, p.probe_control)) / items
    eb_run = repro.load(repro.out / "eb_memdlm")
    n_eb = max(2, items // 2)
    pairs = [(s.prompt, s.response) for s in heldout_pairs(eb_run.tokenizer, n_eb, p.eb_length, p.eb_task)]
    config = ExposureBiasConfig(steps=p.eb_steps)
    eb_memory = eb_run.memory(**repro.memory_overrides())
    rates["eb"] = _timed(lambda: exposure_bias(eb_run.model, eb_run.tokenizer, pairs, config)) / n_eb
    rates["eb_adapted"] = _timed(lambda: exposure_bias(eb_run.model, eb_run.tokenizer, pairs, config,
                                                       memory=eb_memory)) / n_eb
    rates["temperature_fit"] = _timed(lambda: temperature_nll(eb_run.model, eb_run.tokenizer, pairs)) / n_eb
    return rates


def estimate(preset, rates: dict) -> dict[str, float]:
    """Seconds of each part of ``preset`` from the measured rates (see the module docstring)."""
    p, r = preset, rates
    steps, seeds = p.finetune.steps, len(p.seeds)
    memdlm_arms = 1 + len(p.ablations) + (1 if p.compute_matched else 0)  # the matched arm: MemDLM's time
    train = seeds * steps * (memdlm_arms * r["memdlm"] + r["standard"]
                             + (r["memdlm_per_sample"] if p.per_sample_arm else 0.0))
    train += seeds * p.eb_finetune.steps * (r["eb_memdlm"] + r["eb_standard"])
    train += p.lr0_control_steps * (r["memdlm"] + r["standard"])
    plain_runs = 2 + len(p.ablations) + int(p.per_sample_arm) + int(p.compute_matched)  # Standard, Train-Only, ...
    answer = sum(plain_runs * r["answer"][n] + 2 * r["answer_adapted"][n] for n in p.eval_lengths) * p.eval_items
    trained = max(p.finetune.lengths)
    dev = 2 * r["answer"][trained] * p.dev_items
    loss_arms = 2 + len(p.ablations) + int(p.per_sample_arm) + int(p.compute_matched)
    heldout = loss_arms * (r["loss"] + r["loss_adapted"]) * p.eval_items
    # Standard: as trained, calibrated, flattened; MemDLM Train-Only: two; Train & Inference: two
    eb = (5 * r["eb"] + 2 * r["eb_adapted"]) * p.eb_items + 2 * r["temperature_fit"] * p.eb_calibration_items
    probe = 2 * r["probe"] * p.probe_items
    evaluation = seeds * (answer + heldout + eb + probe) + dev
    return {"training": round(train), "evaluation": round(evaluation), "total": round(train + evaluation),
            "per_seed": {"answer": round(answer), "heldout_loss": round(heldout), "exposure_bias": round(eb),
                         "probe": round(probe)}, "dev": round(dev)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["quick", "full"])
    parser.add_argument("--steps", type=int, default=4, help="training steps measured per kind of arm")
    parser.add_argument("--items", type=int, default=8, help="items per evaluation measured")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output-dir", default=None, help="where the short runs go (default: a temporary one)")
    args = parser.parse_args(argv)

    import torch

    from memdlm.reproduce.pipeline import Reproduction
    from memdlm.reproduce.presets import get_preset

    torch.set_num_threads(args.threads)
    presets = [get_preset(name) for name in args.presets]
    lengths = sorted({n for p in presets for n in p.eval_lengths})
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.output_dir or tmp)
        repro = Reproduction(presets[0], out, threads=args.threads, progress=False)
        rates = {"train_step": train_rates(repro, args.steps), **answer_rates(repro, lengths, args.items),
                 **eval_rates(repro, args.items)}
    result = {"threads": args.threads, "steps": args.steps, "items": args.items, "load_before": load_before,
              "load_after": os.getloadavg(), "cpus": os.cpu_count(),
              "rates": rates, "estimate": {p.name: estimate(p, {**rates["train_step"], **rates}) for p in presets}}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
