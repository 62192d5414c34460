"""The mini reproduction, stage by stage; every stage is a cached cell under ``out``.

Every arm fine-tunes the shipped base (``Preset.base_model``, ``mqar-base``) with the same
outer LoRA adapter, steps, data and learning rate; only the objective differs.

    calibrate/r{R}_lr{LR}[_shared]/  MemDLM fine-tunes per candidate and memory mode: absorption, change
    seed{S}/standard/           Standard MDLM
    seed{S}/memdlm/             MemDLM, batch-shared memory at its calibrated rank / lr (the headline)
    seed{S}/memdlm_per_sample/  MemDLM, per-sample memory at its own calibrated rank / lr
    seed{S}/standard_matched/   Standard with as many steps as fit in MemDLM's training time
    pace.json                   MemDLM / Standard optimiser-step seconds, timed side by side (pace_rounds > 0)
    eb_calibration.json, calibrate/eb_r{R}_lr{LR}/   the exposure-bias MemDLM's own operating point
                                (eb_inner_candidates; seed 0's eb_memdlm is the chosen candidate)
    seed{S}/ablation_{name}/    the headline MemDLM with one inner-loop knob changed (full preset)
    control_lr0/{standard,memdlm_lr0}/   inner lr 0 against Standard, step by step
    dev.json                    Standard and MemDLM on the dev items (operating-point check)
    cost.json                   step time and peak memory side by side (full preset)
    seed{S}/eval.json           the 2 x 2 (and extra arms) on the test items, over lengths
    seed{S}/eb_standard/, seed{S}/eb_memdlm/   the exposure-bias pair: Standard and MemDLM
                                (batch-shared, the headline's point) fine-tuned from the chain base
    seed{S}/exposure_bias.json  R_EB, the absolute gap and their controls, three modes, on that pair
    seed{S}/heldout_loss.json   per-item held-out loss of every arm, memory off and adapted on the prompt
    seed{S}/probe.json          the in-weight retrieval probe

Seed 0's two MemDLM arms *are* the chosen calibration runs: a candidate runs the real
fine-tune of seed 0 (same options, evaluation included), so its cell is reused instead of
training the same run twice (the settings check guarantees the options are equal).
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from memdlm.reproduce.cells import json_cell, train_cell
from memdlm.reproduce.presets import Preset
from memdlm.tasks.seeds import DEV_SEED, EXPOSURE_CALIBRATION_SEED
from memdlm.runs.placement import resolve_device, resolve_dtype
from memdlm.runs.run import Run
from memdlm.eval.suite import STANDARD, STANDARD_ADAPT, TRAIN_AND_INFERENCE, TRAIN_ONLY, RunSpec, evaluate_suite
from memdlm.eval.exposure_bias import ExposureBiasConfig, exposure_bias, heldout_pairs
from memdlm.eval.item_loss import temperature_nll
from memdlm.eval.heldout import heldout_samples
from memdlm.eval.item_loss import item_losses
from memdlm.reproduce.probe import probe_items, run_logprob_probe

logger = logging.getLogger("memdlm")
# JSON cells that measure (evaluate or benchmark) rather than aggregate training cells:
# their "seconds" add to the report's compute time without counting a run twice.
MEASUREMENT_CELLS = ("dev.json", "eval.json", "exposure_bias.json", "probe.json", "cost.json", "heldout_loss.json",
                     "pace.json")
CALIBRATION_SEED = 0  # the seed the calibration candidates fine-tune with
PER_SAMPLE = "MemDLM per-sample, Train-Only"


@dataclass
class Reproduction:
    preset: Preset
    out: Path
    threads: int | None = None
    progress: bool = True
    device: str | None = None  # where evaluation cells run (memdlm.runs.placement); None: cuda if visible
    dtype: str | None = None  # their weights' precision; None: the checkpoint's own

    def placement_settings(self) -> dict:
        """``device`` / ``dtype`` when given: part of an evaluation cell's settings, so a cell
        computed in another precision is not reused (none given: the settings as before)."""
        return {k: v for k, v in (("device", self.device), ("dtype", self.dtype)) if v is not None}

    def load(self, path):
        """A trained arm for evaluation, on ``device`` in ``dtype``."""

        return Run.load(path, dtype=resolve_dtype(self.dtype), device=resolve_device(self.device))

    # ------------------------------------------------------------------ training
    def _train(self, cell: Path, options: dict) -> dict:
        runtime = {"threads": self.threads} if self.threads else {}
        return train_cell(cell, options, runtime, progress=self.progress)

    def finetune_options(self, seed: int, method: str, *, base: str | None = None, spec=None, **extra) -> dict:
        """One arm's training options: a shipped base (default the preset's), the outer
        adapter, a fine-tune (default the preset's ``finetune``)."""
        spec = spec or self.preset.finetune
        return {"model": base or self.preset.base_model, "method": method, "seed": seed,
                **spec.options(), **self.preset.lora.options(), **extra}

    def memory_options(self, rank: int, inner_lr: float, mode: str = "per_sample") -> dict:
        """A MemDLM arm's memory: ``mode``, rank and inner lr, at the preset's placement."""
        return {"memory_mode": mode, "memory_rank": rank, "inner_lr": inner_lr,
                "memory_scope": self.preset.memory_scope,
                "memory_layer_fraction": self.preset.memory_layer_fraction}

    def calibration_modes(self) -> tuple[str, ...]:
        """The memory modes the arms train with: each gets its own operating point."""
        return ("shared", "per_sample") if self.preset.per_sample_arm else ("shared",)

    def calibration_cell(self, rank: int, lr: float, mode: str) -> Path:
        return self.out / "calibrate" / (f"r{rank}_lr{lr:g}" + ("_shared" if mode == "shared" else ""))

    def calibrate(self) -> dict:
        """MemDLM fine-tunes from the base, one per (rank, inner lr) candidate and memory mode.

        Each candidate run is the real fine-tune of seed 0 (same steps, warmup, schedule,
        data and evaluation; the chosen one is seed 0's arm) unless the preset sets ``calibration_steps``: a memory
        that collapses does so after ~100 steps, so a shorter or warm-up-free run cannot
        show it (the first versions judged 20, then 100 steps without warmup, and chose
        memories that collapsed in the real runs; docs/REPRODUCE.md).

        Rule, per mode: among candidates whose late absorption ratio (mean over the last
        fifth of the logged steps, :func:`late_mean`, the window the report's collapse
        check uses) lies in ``[absorption_floor, absorption_ceiling]`` (the memory removes
        at most a fifth of the anchor loss it was written from, and does not raise it),
        take the one whose fast weights change the adapted layers' outputs most (largest
        late relative change); if none qualifies, the one whose late absorption lies
        closest to that band.
        """
        modes = {}
        for mode in self.calibration_modes():
            rows = []
            for rank, lr in self.preset.inner_candidates:
                cell = self.calibration_cell(rank, lr, mode)
                options = self.finetune_options(CALIBRATION_SEED, "memdlm", **self.memory_options(rank, lr, mode))
                if self.preset.calibration_steps is not None:
                    options.update(max_steps=self.preset.calibration_steps)
                rows.append(self.candidate(cell, options, rank, lr))
            chosen, qualified = choose_point(rows, self.preset.absorption_floor, self.preset.absorption_ceiling)
            modes[mode] = {"candidates": rows, "chosen": chosen, "qualified": qualified}
        return {"modes": modes, "floor": self.preset.absorption_floor,
                "ceiling": self.preset.absorption_ceiling, "steps": self.preset.calibration_steps or self.preset.finetune.steps}

    def candidate(self, cell: Path, options: dict, rank: int, inner_lr: float) -> dict:
        """Train (or reuse) one calibration candidate: its late absorption and relative change."""
        self._train(cell, options)
        logs = log_history(cell)
        return {"rank": rank, "inner_lr": inner_lr,
                "absorption_ratio": late_mean(logs, "memory/absorption_ratio"),
                "relative_change": late_mean(logs, "memory/relative_change")}

    def arms(self, seed: int, chosen: dict[str, dict], pace: dict | None = None) -> dict[str, Path]:
        """Fine-tune every arm of one seed; returns arm name -> run directory.
        ``chosen``: the operating point of each memory mode; ``pace``: the side-by-side step-time
        ratio (:meth:`pace`) that counts the compute-matched arm's steps, if measured."""
        root = self.out / f"seed{seed}"
        points = {mode: (c["rank"], c["inner_lr"]) for mode, c in chosen.items()}
        headline = self.memory_options(*points["shared"], "shared")
        runs = {"standard": self.finetune_options(seed, "mdlm"),
                "memdlm": self.finetune_options(seed, "memdlm", **headline)}
        if self.preset.per_sample_arm:
            runs["memdlm_per_sample"] = self.finetune_options(
                seed, "memdlm", **self.memory_options(*points["per_sample"], "per_sample"))
        for name, overrides in self.preset.ablations.items():
            runs[f"ablation_{name}"] = self.finetune_options(seed, "memdlm", **{**headline, **overrides})
        dirs = {name: root / name for name in runs}
        if seed == CALIBRATION_SEED and self.preset.calibration_steps is None:
            dirs["memdlm"] = self.calibration_cell(*points["shared"], "shared")
            if self.preset.per_sample_arm:
                dirs["memdlm_per_sample"] = self.calibration_cell(*points["per_sample"], "per_sample")
        summaries = {name: self._train(dirs[name], options) for name, options in runs.items()}
        if self.preset.compute_matched:
            memdlm_steps = summaries["memdlm"]["global_step"]
            steps = max(1, round(memdlm_steps * pace["ratio"])) if pace else \
                matched_steps(training_seconds(dirs["standard"], summaries["standard"]),
                              training_seconds(dirs["memdlm"], summaries["memdlm"]), memdlm_steps)
            options = self.finetune_options(seed, "mdlm")
            options.update(max_steps=steps)
            self._train(root / "standard_matched", options)
            dirs["standard_matched"] = root / "standard_matched"
        return dirs

    def eb_memdlm_options(self, seed: int, rank: int, inner_lr: float) -> dict:
        """The exposure-bias MemDLM's training options: batch-shared memory at (rank, inner lr) on
        the exposure-bias fine-tune from its base."""
        return self.finetune_options(seed, "memdlm", base=self.preset.eb_base, spec=self.preset.eb_finetune,
                                     **self.memory_options(rank, inner_lr, "shared"))

    def eb_arms(self, seed: int, point: dict) -> dict[str, Path]:
        """The exposure-bias pair of one seed: Standard and MemDLM (batch-shared memory at
        ``point``: the headline's operating point, or the pair's own, :meth:`eb_calibrate`)
        fine-tuned from the prose base on the long-response task, with the same outer adapter,
        steps, data and lr. Seed 0's MemDLM is the chosen calibration candidate's run."""
        root = self.out / f"seed{seed}"
        runs = {"eb_standard": self.finetune_options(seed, "mdlm", base=self.preset.eb_base,
                                                     spec=self.preset.eb_finetune),
                "eb_memdlm": self.eb_memdlm_options(seed, point["rank"], point["inner_lr"])}
        dirs = {name: root / name for name in runs}
        if seed == CALIBRATION_SEED and self.preset.eb_inner_candidates:
            dirs["eb_memdlm"] = self.eb_calibration_cell(point["rank"], point["inner_lr"])
        for name, options in runs.items():
            self._train(dirs[name], options)
        return dirs

    def eb_calibration_cell(self, rank: int, lr: float) -> Path:
        return self.out / "calibrate" / f"eb_r{rank}_lr{lr:g}"

    def eb_calibrate(self) -> dict:
        """The exposure-bias MemDLM's operating point: the headline's rule (:meth:`calibrate`) over
        ``eb_inner_candidates``, each the real exposure-bias fine-tune of seed 0."""
        rows = [self.candidate(self.eb_calibration_cell(rank, lr), self.eb_memdlm_options(CALIBRATION_SEED, rank, lr),
                               rank, lr) for rank, lr in self.preset.eb_inner_candidates]
        chosen, qualified = choose_point(rows, self.preset.absorption_floor, self.preset.absorption_ceiling)
        return {"candidates": rows, "chosen": chosen, "qualified": qualified,
                "floor": self.preset.absorption_floor, "ceiling": self.preset.absorption_ceiling,
                "steps": self.preset.eb_finetune.steps}

    def eb_operating_point(self, headline: dict) -> dict:
        """The exposure-bias MemDLM's (rank, inner lr): the headline's when the preset names no
        candidates of its own, else :meth:`eb_calibrate`'s choice (a cached cell)."""
        if not self.preset.eb_inner_candidates:
            return headline
        settings = {"candidates": list(self.preset.eb_inner_candidates), "floor": self.preset.absorption_floor,
                    "ceiling": self.preset.absorption_ceiling, "steps": self.preset.eb_finetune.steps}
        return json_cell(self.out / "eb_calibration.json", settings, self.eb_calibrate)["chosen"]

    def pace(self, chosen: dict[str, dict]) -> dict | None:
        """MemDLM's optimiser-step seconds over Standard's, timed side by side (``pace_rounds`` > 0).

        Each round trains both arms' real settings (seed 0, memory at the headline's point) for
        ``pace_steps`` steps, without evaluation or saving, in alternating order; the ratio is of
        the two arms' median seconds per step (``step_seconds``: training alone). Both arms share
        every round's load, which two runs timed minutes apart do not (quick's seed 0 was paid
        5.3x MemDLM's steps where this ratio was 1.87x)."""
        p = self.preset
        if not (p.compute_matched and p.pace_rounds):
            return None
        common = dict(max_steps=p.pace_steps, logging_steps=p.pace_steps, eval_strategy="no", save_strategy="no")
        arms = {"standard": self.finetune_options(CALIBRATION_SEED, "mdlm", **common),
                "memdlm": self.finetune_options(CALIBRATION_SEED, "memdlm", **self.memory_options(
                    chosen["shared"]["rank"], chosen["shared"]["inner_lr"], "shared"), **common)}
        settings = {"rounds": p.pace_rounds, "arms": arms}

        def compute():
            per_step = {name: [] for name in arms}
            with tempfile.TemporaryDirectory() as scratch:
                for i in range(p.pace_rounds):
                    for name in (list(arms) if i % 2 == 0 else list(arms)[::-1]):
                        summary = self._train(Path(scratch) / f"{name}_{i}", arms[name])
                        per_step[name].append(summary["step_seconds"] / max(summary["global_step"], 1))
            medians = {name: statistics.median(v) for name, v in per_step.items()}
            return {"seconds_per_step": per_step, "median": medians,
                    "ratio": medians["memdlm"] / medians["standard"]}

        return json_cell(self.out / "pace.json", settings, compute)

    def lr0_control(self) -> dict:
        """Inner lr 0 against Standard: same seed, same data, every step logged."""
        root = self.out / "control_lr0"
        steps = self.preset.lr0_control_steps
        common = dict(max_steps=steps, logging_steps=1, eval_strategy="no", save_strategy="no")
        std = self.finetune_options(0, "mdlm", **common)
        mem = self.finetune_options(0, "memdlm", **self.memory_options(2, 0.0), **common)
        self._train(root / "standard", std)
        self._train(root / "memdlm_lr0", mem)
        a = [r["loss"] for r in log_history(root / "standard") if "loss" in r]
        b = [r["loss"] for r in log_history(root / "memdlm_lr0") if "loss" in r]
        diff = max((abs(x - y) for x, y in zip(a, b)), default=float("nan"))
        return {"steps": steps, "standard_loss": a, "memdlm_lr0_loss": b, "max_abs_difference": diff}

    # ---------------------------------------------------------------- evaluation
    def memory_overrides(self) -> dict:
        """Inference-time memory of every adapted arm: the preset's one :class:`Adaptation`
        (paper inner lr 0.1, anchor-consistent trajectory) at the preset's memory placement, the
        same settings for every arm -- Standard, MemDLM and each ablation -- whatever it trained
        with. Only adaptation settings: inference adapts per prompt whatever ``memory_mode`` an arm
        trained with, so none is passed. (Before issue 22 every arm adapted at the headline arm's
        training lr, 1.0, and ablations with their own trajectories.)"""
        p = self.preset
        return p.adaptation.overrides(p.memory_scope, p.memory_layer_fraction)

    def evaluate(self, seed: int, dirs: dict[str, Path], chosen: dict) -> dict:

        p = self.preset
        runs = [RunSpec(STANDARD, str(dirs["standard"])), RunSpec(STANDARD_ADAPT, str(dirs["standard"]), True),
                RunSpec(TRAIN_ONLY, str(dirs["memdlm"])), RunSpec(TRAIN_AND_INFERENCE, str(dirs["memdlm"]), True)]
        extra = {"memdlm_per_sample": PER_SAMPLE, "standard_matched": "Standard, compute-matched"}
        extra.update({k: f"MemDLM {k.removeprefix('ablation_')}, Train-Only" for k in dirs if k.startswith("ablation_")})
        runs += [RunSpec(label, str(dirs[k])) for k, label in extra.items() if k in dirs]
        settings = {"runs": [asdict(r) for r in runs], "tasks": list(p.eval_tasks),
                    "lengths": list(p.eval_lengths), "n": p.eval_items, "memory": chosen, "adaptation": self.memory_overrides(),
                    **self.placement_settings()}
        return json_cell(self.out / f"seed{seed}" / "eval.json", settings, lambda: evaluate_suite(
            runs, list(p.eval_tasks), list(p.eval_lengths), p.eval_items,
            memory_overrides=self.memory_overrides(), progress=self.progress,
            device=self.device, dtype=self.dtype))

    def dev(self, dirs: dict[str, Path], chosen: dict) -> dict:
        """Standard and MemDLM on dev items at the trained length: the operating-point check."""

        p = self.preset
        runs = [RunSpec(STANDARD, str(dirs["standard"])), RunSpec(TRAIN_ONLY, str(dirs["memdlm"]))]
        length = max(p.finetune.lengths)
        settings = {"runs": [asdict(r) for r in runs], "tasks": list(p.eval_tasks), "length": length,
                    "n": p.dev_items, "seed": DEV_SEED, **self.placement_settings()}
        return json_cell(self.out / "dev.json", settings, lambda: evaluate_suite(
            runs, list(p.eval_tasks), [length], p.dev_items, seed=DEV_SEED,
            memory_overrides=self.memory_overrides(), progress=self.progress,
            device=self.device, dtype=self.dtype))

    def eb_memory_overrides(self, point: dict) -> dict:
        """The exposure-bias pair's inference-time adaptation: the preset's one adaptation, at the
        pair's own (rank, inner lr) when it has its own operating point (``eb_inner_candidates``)."""
        overrides = self.memory_overrides()
        if self.preset.eb_inner_candidates:
            overrides.update(memory_rank=point["rank"], inner_lr=point["inner_lr"])
        return overrides

    def exposure_bias(self, seed: int, dirs: dict[str, Path], chosen: dict, point: dict | None = None) -> dict:
        """R_EB and the gaps of Standard, MemDLM Train-Only and Train & Inference on the
        exposure-bias pair, as trained (``results``) and at matched calibration
        (``calibrated``: each model's logits divided by the temperature that minimises its static
        NLL on held-out items of their own seed range, ``temperatures``), and the flattening
        control (``flattened``: Standard with its logits divided by ``eb_flatten_temperature``:
        a less confident model looks flatter on every measure, issue 22). ``point``: the pair's
        operating point (default ``chosen``), whose adaptation the Train & Inference mode uses.
        The random-order trajectory's per-item losses are not kept (:func:`compact_exposure`)."""
        p = self.preset
        point = point or chosen
        adaptation = self.eb_memory_overrides(point)
        settings = {"items": p.eb_items, "steps": p.eb_steps, "length": p.eb_length, "task": p.eb_task,
                    "memory": chosen, "adaptation": adaptation,
                    "runs": {k: str(dirs[k]) for k in ("eb_standard", "eb_memdlm")},
                    "calibration_items": p.eb_calibration_items, "flatten": p.eb_flatten_temperature,
                    **self.placement_settings()}

        def compute():

            config = ExposureBiasConfig(steps=p.eb_steps)
            out = {"results": {}, "calibrated": {}, "flattened": {}, "temperatures": {}, "calibration_nll": {}}
            for arm, modes in (("eb_standard", (("Standard", False),)),
                               ("eb_memdlm", (("MemDLM Train-Only", False), ("MemDLM Train & Inference", True)))):
                run = self.load(dirs[arm])
                pairs = [(s.prompt, s.response)
                         for s in heldout_pairs(run.tokenizer, p.eb_items, p.eb_length, p.eb_task)]
                calibration = heldout_pairs(run.tokenizer, p.eb_calibration_items, p.eb_length, p.eb_task,
                                            seed=EXPOSURE_CALIBRATION_SEED)
                nll = temperature_nll(run.model, run.tokenizer, calibration)
                temperature = min(nll, key=nll.get)
                out["calibration_nll"][arm] = {"t1": nll[1.0], "best": nll[temperature]}
                for label, adapt in modes:
                    memory = run.memory(**adaptation) if adapt else None

                    def analyse(t, memory=memory, run=run, pairs=pairs):
                        return compact_exposure(exposure_bias(run.model, run.tokenizer, pairs, config, memory=memory,
                                                              progress=self.progress, temperature=t).to_dict())

                    out["temperatures"][label] = temperature
                    out["results"][label] = analyse(1.0)
                    # a fitted temperature of 1 is the model as trained: the same analysis, not run again
                    out["calibrated"][label] = out["results"][label] if temperature == 1.0 else analyse(temperature)
                    if arm == "eb_standard":
                        out["flattened"][label] = analyse(p.eb_flatten_temperature, memory=None)
            return out

        return json_cell(self.out / f"seed{seed}" / "exposure_bias.json", settings, compute)

    def heldout_loss(self, seed: int, dirs: dict[str, Path], chosen: dict) -> dict:
        """Per-item held-out loss of every arm on the fine-tuning task's test items at the
        fine-tuning length (the test items of ``eval.json`` there, the same masks for every
        arm: :mod:`memdlm.eval.item_loss`), memory off and adapted on each item's prompt
        (the inference-time memory every adapted arm gets)."""
        p = self.preset
        length = max(p.finetune.lengths)
        arms = [a for a in dirs if not a.startswith("eb_")]
        settings = {"tasks": list(p.finetune.tasks), "length": length, "items": p.eval_items,
                    "memory": chosen, "adaptation": self.memory_overrides(), "runs": {a: str(dirs[a]) for a in arms},
                    **self.placement_settings()}

        def compute():

            out, samples = {}, None
            for arm in arms:
                run = self.load(dirs[arm])
                if samples is None:  # every arm fine-tunes the same base: one tokenizer, one item set
                    samples = heldout_samples(run.tokenizer, list(p.finetune.tasks), length, p.eval_items)
                out[arm] = {"off": item_losses(run.model, run.tokenizer, samples, progress=self.progress),
                            "prompt_memory": item_losses(run.model, run.tokenizer, samples,
                                                         memory=run.memory(**self.memory_overrides()),
                                                         progress=self.progress)}
            return {"results": out}

        return json_cell(self.out / f"seed{seed}" / "heldout_loss.json", settings, compute)

    def probe(self, seed: int, dirs: dict[str, Path], chosen: dict) -> dict:
        """The in-weight retrieval probe (:func:`memdlm.reproduce.probe.run_logprob_probe`):
        log p and rank of the answer, with the needle present and removed, memory matched and
        mismatched, and the positive control, for Standard and MemDLM."""
        p = self.preset
        settings = {"items": p.probe_items, "length": p.probe_length, "task": p.probe_task, "memory": chosen,
                    "adaptation": self.memory_overrides(), "control": asdict(p.probe_control),
                    "kind": "logprob", **self.placement_settings()}

        def compute():

            out, memory_used = {}, {}
            for label, arm in (("Standard", "standard"), ("MemDLM", "memdlm")):
                run = self.load(dirs[arm])
                samples = probe_items(run.tokenizer, p.probe_items, p.probe_length, p.probe_task)
                memory = run.memory(**self.memory_overrides())
                out[label] = run_logprob_probe(run, samples, memory, p.probe_control, progress=self.progress)
                memory_used[label] = memory.record()
            return {"results": out, "memory": memory_used}

        return json_cell(self.out / f"seed{seed}" / "probe.json", settings, compute)

    def cost(self, chosen: dict) -> dict | None:
        """MemDLM's step time and peak memory against Standard's, measured side by side by
        ``benchmarks/train_step.py`` (the tiny model's depth, the chosen rank)."""
        if not self.preset.benchmark_rounds:
            return None
        script = Path(__file__).resolve().parents[3] / "benchmarks" / "train_step.py"
        settings = {"rounds": self.preset.benchmark_rounds, "rank": chosen["rank"], "layers": 4}

        def compute():
            import subprocess
            import sys

            if not script.is_file():
                return {"error": f"{script} not found (benchmarks/ ships with the source checkout)"}
            cmd = [sys.executable, str(script), "--layers", "4", "--rank", str(chosen["rank"]),
                   "--rounds", str(self.preset.benchmark_rounds), "--threads", str(self.threads or 1)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            return {"command": " ".join(cmd[1:]), "result": json.loads(done.stdout.strip().splitlines()[-1])}

        return json_cell(self.out / "cost.json", settings, compute)

    # ----------------------------------------------------------------- the whole
    def head(self) -> dict:
        """The cells every seed reads: the operating points (per memory mode, and the exposure-bias
        pair's), the side-by-side pace and the inner-lr-0 control."""
        p = self.preset
        calibration = json_cell(self.out / "calibration.json", {
            "candidates": list(p.inner_candidates), "floor": p.absorption_floor, "ceiling": p.absorption_ceiling,
            "modes": list(self.calibration_modes()), "steps": p.calibration_steps or p.finetune.steps}, self.calibrate)
        by_mode = {mode: c["chosen"] for mode, c in calibration["modes"].items()}
        chosen = by_mode["shared"]
        return {"calibration": calibration, "by_mode": by_mode, "chosen": chosen,
                "eb_point": self.eb_operating_point(chosen), "pace": self.pace(by_mode),
                "control": json_cell(self.out / "control_lr0.json", {"steps": p.lr0_control_steps}, self.lr0_control)}

    def head_done(self) -> bool:
        """Whether the head's cells are all written (its last one is the inner-lr-0 control)."""
        return (self.out / "control_lr0.json").is_file()

    def seed_cells(self, seed: int, head: dict) -> dict:
        """Every cell of one seed: its arms, their evaluation, held-out loss, the exposure-bias pair
        and its analysis, the probe; the preset's first seed adds the dev check (``"dev"``)."""
        chosen = head["chosen"]
        dirs = self.arms(seed, head["by_mode"], head["pace"])
        dev = self.dev(dirs, chosen) if seed == self.preset.seeds[0] else None
        evaluation = self.evaluate(seed, dirs, chosen)
        dirs.update(self.eb_arms(seed, head["eb_point"]))
        cells = {"dirs": {k: str(v) for k, v in dirs.items()}, "eval": evaluation,
                 "heldout_loss": self.heldout_loss(seed, dirs, chosen),
                 "exposure_bias": self.exposure_bias(seed, dirs, chosen, head["eb_point"]),
                 "probe": self.probe(seed, dirs, chosen)}
        return {**cells, "dev": dev} if dev is not None else cells

    def run(self) -> dict:
        start = time.perf_counter()
        head = self.head()
        seeds = {seed: self.seed_cells(seed, head) for seed in self.preset.seeds}
        dev = seeds[self.preset.seeds[0]].pop("dev")
        extra = {"pace": head["pace"]} if head["pace"] else {}
        if self.preset.eb_inner_candidates:
            extra["eb_calibration"] = json.loads((self.out / "eb_calibration.json").read_text())
        return {"preset": self.preset.to_dict(), "calibration": head["calibration"], "control_lr0": head["control"],
                "dev": dev, "cost": self.cost(head["chosen"]), "seeds": seeds, **extra,
                "seconds_this_invocation": round(time.perf_counter() - start, 1)}


# The random-order trajectory's per-item losses: the report reads the low-confidence trajectory
# only (its per-step means and ratios stay in the cell). They were ~40% of a committed result.json.
UNREAD_EXPOSURE_LOSSES = ("l_seq_random", "l_static_same_random")


def compact_exposure(result: dict) -> dict:
    """An exposure-bias result without the per-item losses the report never reads."""
    per_item = {k: v for k, v in result["per_item"].items() if k not in UNREAD_EXPOSURE_LOSSES}
    return {**result, "per_item": per_item}


def choose_point(rows: list[dict], floor: float, ceiling: float) -> tuple[dict, bool]:
    """The calibration rule: among candidates whose late absorption lies in [floor, ceiling], the
    one with the largest late relative change; if none qualifies, the one closest to the band.
    Returns (chosen row, whether it qualified)."""
    ok = [r for r in rows if floor <= r["absorption_ratio"] <= ceiling]
    if ok:
        return max(ok, key=lambda r: r["relative_change"]), True
    return min(rows, key=lambda r: max(floor - r["absorption_ratio"], r["absorption_ratio"] - ceiling)), False


def log_history(run_dir) -> list[dict]:
    """A training run's logged records (``log_history.json``)."""
    return json.loads((Path(run_dir) / "log_history.json").read_text())


def seconds_per_step(summary: dict) -> float:
    """Measured training seconds per optimiser step of a run (its ``run_complete.json``)."""
    return summary["train_seconds"] / max(summary["global_step"], 1)


def training_seconds(run_dir, summary: dict | None = None) -> float:
    """A run's training time alone: the seconds its optimiser steps took (``step_seconds`` of
    ``run_complete.json``: forward, backward and update of every micro-batch, measured by
    :class:`memdlm.training.callbacks.RunRecord`), without the held-out evaluations, checkpoint
    saves and logging between steps, which the compute-matched arm must not be paid for (the
    audit of issue 22 found up to 7% extra steps from evaluations alone). Runs made before that
    field: their wall seconds less the logged evaluations (``eval_runtime``)."""
    summary = summary if summary is not None else json.loads((Path(run_dir) / "run_complete.json").read_text())
    if "step_seconds" in summary:
        return max(float(summary["step_seconds"]), 1e-9)
    evals = sum(r.get("eval_runtime", 0.0) for r in log_history(run_dir)) if \
        (Path(run_dir) / "log_history.json").is_file() else 0.0
    return max(summary["train_seconds"] - evals, 1e-9)


def matched_steps(standard_seconds: float, memdlm_seconds: float, memdlm_steps: int,
                  standard_steps: int | None = None) -> int:
    """Standard steps that take as long as MemDLM's run did, from the two runs' training
    seconds (:func:`training_seconds`); both ran ``memdlm_steps`` unless ``standard_steps`` says."""
    per_standard = standard_seconds / (standard_steps or memdlm_steps)
    return max(1, round(memdlm_seconds / per_standard))


def window_mean(logs: list[dict], key: str, part: str) -> float:
    """Mean of ``key`` over the first (``part="early"``) or last (``"late"``) fifth of the
    records that log it (at least one record); NaN when none do."""
    values = [r[key] for r in logs if key in r]
    if not values:
        return float("nan")
    k = max(1, len(values) // 5)
    chunk = values[:k] if part == "early" else values[-k:]
    return sum(chunk) / len(chunk)


def late_mean(logs: list[dict], key: str) -> float:
    """:func:`window_mean` over the last fifth: where a memory that collapses has collapsed."""
    return window_mean(logs, key, "late")
