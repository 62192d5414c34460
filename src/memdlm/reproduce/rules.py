"""The reproduction's reading rules: when a comparison may be read at all, and how.

The intervals themselves are the project's one bootstrap and the seed t-interval
(:mod:`memdlm.stats`); this module adds the rules that belong to the reproduction:

- **Capability gate** (:func:`capability_gate`): a retrieval comparison is testable on a
  task only when Standard's score on the dev items clears the task's copy level
  (copying a random value of the context) by a stated margin; otherwise its verdict is
  "not testable here", with the two numbers.
- **Both near 0**: when both arms score under ``NEAR_ZERO`` points, nothing is compared.
- **Exposure bias is measurable** only when the same-position control climbs
  (:func:`eb_measurable`).
- **Usability** (:func:`usability_note`): a MemDLM arm whose base model (memory off) is
  worse than Standard on held-out items by more than the preset's minimum effect, or whose
  memory diverged, has its verdicts say so.
"""

from __future__ import annotations

import math

from memdlm.stats import compare, side, verdict
from memdlm.tasks.scoring import reference_levels

NEAR_ZERO = 2.0  # score points: below this for both arms, a comparison says nothing


def nanmean(xs) -> float:
    """Mean of the values that are neither None nor NaN (NaN when none are)."""
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return sum(xs) / len(xs) if xs else math.nan


def seed_item_comparison(diffs_by_seed, **kwargs) -> dict:
    """:func:`memdlm.stats.compare` of per-item differences, one list per training seed
    (every seed on the same items)."""
    return compare([list(map(float, g)) for g in diffs_by_seed], **kwargs)


def score_verdict(d: dict | None, better: str = "higher") -> str:
    """:func:`memdlm.stats.verdict` of a score comparison; "not testable here" when the
    capability gate held it back, "both near 0" when neither arm scores."""
    if d is None:
        return "not measured"
    if d.get("not_testable"):
        return f"not testable here: {d['not_testable']}"
    if d["both_near_zero"]:
        return f"both near 0 (< {NEAR_ZERO:g} points): nothing to compare"
    return verdict(d, better)


# ------------------------------------------------------------------ capability
def capability_gate(dev: dict, margin: float, run: str = "Standard") -> dict[str, dict]:
    """Per task of the dev check: may a retrieval verdict be given on it?

    Rule: ``run``'s mean dev score (items at the trained length) must reach the task's
    copy level plus ``margin`` score points; a task with no copy level defined
    (:func:`memdlm.tasks.scoring.reference_levels`) is not testable either. Returns
    ``{task: {"score", "copy", "uniform", "margin", "testable", "reason"}}``.
    """

    gate = {}
    for cell in dev["cells"]:
        if cell["skipped"] is not None or run not in cell["results"]:
            continue
        task, score = cell["task"], cell["results"][run]["score"]
        levels = reference_levels(task)
        row = {"score": score, "margin": margin, "copy": None, "uniform": None}
        if levels is None:
            row.update(testable=False, reason=f"{task} has no copy level to clear")
        else:
            row.update(copy=levels["copy"], uniform=levels["uniform"])
            need = levels["copy"] + margin
            row["testable"] = score >= need
            row["reason"] = (f"{run} scores {score:.1f} on {task}'s dev items, "
                             f"{'at or above' if row['testable'] else 'below'} the copy level "
                             f"{levels['copy']:.1f} + margin {margin:g} = {need:.1f}")
        gate[task] = row
    return gate


def gate_reason(gate: dict[str, dict]) -> str:
    """One line on why no task passed the capability gate."""
    if not gate:
        return "no dev scores to check Standard's capability against"
    return "; ".join(row["reason"] for row in gate.values())


# ----------------------------------------------------------------- exposure bias
def eb_measurable(control_gap: dict | None) -> tuple[bool, str]:
    """Whether there is exposure bias to reduce, from Standard's same-position control gap
    (mean over steps of ``L_seq - L_static_same``, a :func:`memdlm.stats.compare` result).

    Rule: the control climbs when its bootstrap interval lies above zero and, with two or
    more seeds, its seed t-interval too. The control scores the very positions the model's
    own trajectory left masked, with the true context instead of the model's own; with no
    climb, the rise of R_EB is the low-confidence order (the hardest positions are
    decoded last), not the model's own context, and a comparison of flatness says
    nothing: "not measurable", not "unresolved".
    """
    if control_gap is None:
        return False, "no exposure-bias result for Standard"
    items = side(control_gap["low"], control_gap["high"])
    seeds = side(control_gap["seed_low"], control_gap["seed_high"]) if control_gap["seeds"] > 1 else 1
    text = (f"Standard's same-position control gap (L_seq - L_static_same, mean over steps) "
            f"{control_gap['estimate']:+.3f} nats, item interval [{control_gap['low']:+.3f}, "
            f"{control_gap['high']:+.3f}]")
    if control_gap["seeds"] > 1:
        text += f", seed interval [{control_gap['seed_low']:+.3f}, {control_gap['seed_high']:+.3f}]"
    if items > 0 and seeds > 0:
        return True, text
    return False, text + ": the control shows no climb"


# -------------------------------------------------------------------- usability
def usability_note(arm: str, base_loss: dict | None, rows: list[dict], min_effect: float) -> str | None:
    """Why a MemDLM arm is unusable, or None. The rule reads the model, not the memory:

    - **worse base model**: its held-out loss with memory off minus Standard's, per item
      (``base_loss``, a :func:`memdlm.stats.compare` result), has its paired-item interval
      entirely above ``min_effect`` (nats/token, the preset's ``usability_min_effect``, declared
      before the run) -- MemDLM training left a model worse than Standard training did by more
      than a practically null amount (the collapse the absorption ratio was meant to signal,
      measured where it matters). A difference whose interval reaches below ``min_effect`` does
      not disqualify, however far above 0 it lies;
    - **diverged memory**: in some seed (``rows``, :func:`memdlm.reproduce.report.memory_trajectory`)
      the late absorption ratio exceeds the ceiling (the memory raises the loss it was
      written from) or an inner loss was non-finite.

    A low absorption ratio alone is not collapse: the band is reported beside the arm.
    """
    if min_effect < 0:
        raise ValueError(f"min_effect must be >= 0 nats/token, got {min_effect}")
    parts = []
    if base_loss is not None and base_loss["low"] > min_effect:
        margin = f" by more than {min_effect:g} nats/token" if min_effect else ""  # reports before the minimum: none
        parts.append(f"{arm} unusable: its base model (memory off) is worse than Standard on held-out items{margin} "
                     f"({base_loss['estimate']:+.3f} nats, items [{base_loss['low']:+.3f}, {base_loss['high']:+.3f}])")
    bad = [r for r in rows if r.get("diverged")]
    if bad:
        seeds = ", ".join(str(r["seed"]) for r in bad)
        values = ", ".join(f"{r['absorption_late']:.2f}" for r in bad)
        parts.append(f"{arm} unusable: memory diverged (late absorption {values}; non-finite inner losses "
                     f"{sum(r.get('nonfinite', 0) for r in bad):g}; seed {seeds})")
    return "; ".join(parts) or None


def deviation_verdict(d: dict | None, higher: str, lower: str) -> str:
    """:func:`memdlm.stats.verdict` of a measured deviation from the paper (our choice against
    the paper's), which has no paper side to reproduce: an estimate resolved above / below 0
    reads as ``higher`` / ``lower``; the unresolved readings stay as they are."""
    return verdict(d, "higher").replace("reproduced", higher).replace("opposite", lower)


def arm_notes(summary: dict, *runs: str) -> str | None:
    """The usability notes of the arms behind ``runs`` -- run names, mapped through
    ``summary["arms"]``, or arm names -- None when none has one."""
    arms = dict.fromkeys(summary.get("arms", {}).get(run, run) for run in runs)
    notes = [summary["unusable"][a] for a in arms if a in summary.get("unusable", {})]
    return "; ".join(notes) or None


def with_note(text: str, note: str | None) -> str:
    return text if not note else f"{text}; {note}"
