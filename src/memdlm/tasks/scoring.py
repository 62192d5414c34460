"""Scorers for the generated tasks, as RULER and BABILong define them.

``Task.metric`` names one of :data:`METRICS` (one small :class:`Metric` class per rule,
looked up by name); :func:`score_samples` scores with it.
All scores are on a 0-100 scale (RULER additionally rounds its reports to 2 decimals;
we return the unrounded mean).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from memdlm.errors import ConfigError
from memdlm.tasks.base import get_task
from memdlm.tasks.recall import recall_report

_CONTROL = re.compile(r"[\x00-\x1f]")


def postprocess_prediction(prediction: str) -> str:
    """RULER's clean-up: strip, turn every control character (U+0000-U+001F, which
    includes newline and tab) into a newline, strip again."""
    return _CONTROL.sub("\n", prediction.strip()).strip()


def _check(predictions: Sequence[str], references_list: Sequence[Sequence[str]]) -> None:
    if len(predictions) != len(references_list):
        raise ValueError(f"{len(predictions)} predictions but {len(references_list)} "
                         "reference lists")
    if not predictions:
        raise ValueError("nothing to score: no predictions")
    if any(len(refs) == 0 for refs in references_list):
        raise ValueError("every sample needs at least one reference")


def _hits(prediction: str, references: Iterable[str]) -> list[bool]:
    text = postprocess_prediction(prediction).lower()
    return [ref.lower() in text for ref in references]


def string_match_all(predictions: Sequence[str], references_list: Sequence[Sequence[str]]) -> float:
    """RULER's ``string_match_all`` (NIAH, MV, VT, CWE): for each sample, the fraction of its
    references that occur as substrings of the (post-processed) prediction, both
    lower-cased; the mean over samples, times 100. Partial credit: 3 of 4 values = 75."""
    _check(predictions, references_list)
    per_sample = [sum(h) / len(h) for h in map(_hits, predictions, references_list)]
    return 100.0 * sum(per_sample) / len(per_sample)


def string_match_part(predictions: Sequence[str], references_list: Sequence[Sequence[str]]) -> float:
    """RULER's ``string_match_part`` (QA): 1 for a sample if any of its references occurs
    (case-insensitive substring of the post-processed prediction), else 0; mean x 100."""
    _check(predictions, references_list)
    per_sample = [float(any(h)) for h in map(_hits, predictions, references_list)]
    return 100.0 * sum(per_sample) / len(per_sample)


def _babilong_cut(prediction: str) -> str:
    text = prediction.lower().split(".")[0]
    for marker in ("<context>", "<example>", "question"):
        text = text.split(marker)[0]
    return text


def _labels_in(text: str, labels: Iterable[str], match: str) -> set[str]:
    if match == "substring":
        return {label for label in labels if label in text}
    return {label for label in labels if re.search(rf"\b{re.escape(label)}\b", text)}


def babilong_score(prediction: str, target: str, question: str, labels: Iterable[str],
                   match: str = "word") -> bool:
    """BABILong's answer check (booydar/babilong ``compare_answers``).

    1. Lower-case the prediction and keep the text before its first ".";
    2. cut it at the first "<context>", "<example>" and "question";
    3. find the task's labels (lower-cased) in it and in the lower-cased question;
    4. correct iff (labels in the prediction) minus (labels in the question) == {target}.

    Two deliberate differences from the upstream code: upstream cuts at "Question" *after*
    lower-casing, which never matches, so we cut at "question" as the rule intends; and
    with ``match="word"`` (default) labels are matched as whole words, because our qa5
    labels include every first name and substring matching would find "lena" inside
    "elena" or "ken" inside "taken". ``match="substring"`` gives upstream's matching.
    """
    if match not in ("word", "substring"):
        raise ValueError(f"match must be 'word' or 'substring', not {match!r}")
    labels = {label.lower() for label in labels}
    found = _labels_in(_babilong_cut(prediction), labels, match)
    found -= _labels_in(question.lower(), labels, match)
    return found == {target.lower()}


def _fields(sample) -> tuple[tuple[str, ...], dict]:
    """(answers, meta) of a :class:`~memdlm.tasks.base.Sample` or of its ``to_row()`` dict."""
    if isinstance(sample, dict):
        return tuple(sample["answers"]), sample.get("meta") or {}
    return tuple(sample.answers), sample.meta


class Metric:
    """A task's scoring rule: ``score`` (0-100) and optionally ``details``, a breakdown the
    held-out evaluation reports beside the score. ``Task.metric`` names one by ``name``."""

    name = "base"

    def score(self, task, predictions: Sequence[str], samples: Sequence) -> float:  # pragma: no cover
        raise NotImplementedError

    def details(self, task, predictions: Sequence[str], samples: Sequence) -> dict | None:
        """A breakdown beside the score, or None (every metric but ``recall``)."""
        return None


class StringMatchAll(Metric):
    name = "string_match_all"

    def score(self, task, predictions, samples):
        return string_match_all(predictions, [_fields(s)[0] for s in samples])


class Babilong(Metric):
    """:func:`babilong_score` per sample: the question from ``meta["question"]``, the label
    set from the task's ``labels``."""

    name = "babilong"

    def score(self, task, predictions, samples):
        if not predictions:
            raise ValueError("nothing to score: no predictions")
        hits = [babilong_score(p, answers[0], meta["question"], task.labels)
                for p, (answers, meta) in zip(predictions, map(_fields, samples))]
        return 100.0 * sum(hits) / len(hits)


class Recall(Metric):
    """Per-query accuracy, answers read by position; ``details`` is the whole
    :func:`memdlm.tasks.recall.recall_report` (all-correct accuracy, reference levels,
    where wrong answers came from)."""

    name = "recall"

    def score(self, task, predictions, samples):
        return self.details(task, predictions, samples)["per_query"]

    def details(self, task, predictions, samples):

        return recall_report(predictions, samples, task)


# Exactly the metrics some task names (tests/test_scoring.py): RULER's ``string_match_part``
# above has no task here, so no entry until one uses it.
METRICS: dict[str, Metric] = {m.name: m for m in (StringMatchAll(), Babilong(), Recall())}


def get_metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise ConfigError(f"unknown metric {name!r}; choose one of {sorted(METRICS)}") from None


def reference_levels(task_name: str) -> dict[str, float] | None:
    """The task's scores (0-100) of the two non-solutions every score is read against --
    ``uniform`` guessing and ``copy``-ing a random value of the context -- or None for a
    task that defines none (:meth:`memdlm.tasks.base.Task.reference_levels`)."""

    return get_task(task_name).reference_levels()


def score_samples(task_name: str, predictions: Sequence[str], samples: Sequence) -> float:
    """Score predictions for generated samples (``Sample`` objects or their row dicts) with
    the task's metric; 0-100."""

    task = get_task(task_name)
    if len(predictions) != len(samples):
        raise ValueError(f"{len(predictions)} predictions but {len(samples)} samples")
    return get_metric(task.metric).score(task, predictions, samples)


def score_details(task_name: str, predictions: Sequence[str], samples: Sequence) -> dict | None:
    """The task's metric's breakdown beside the score (:meth:`Metric.details`), or None."""

    task = get_task(task_name)
    return get_metric(task.metric).details(task, predictions, samples)
