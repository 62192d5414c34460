"""Scorers against hand-worked cases, and dispatch on each task's metric."""

from __future__ import annotations

import pytest

from memdlm.errors import ConfigError
from memdlm.tasks import get_task, task_names
from memdlm.tasks.babilong import LOCATIONS
from memdlm.tasks.recall import recall_report
from memdlm.tasks.scoring import (
    METRICS,
    babilong_score,
    get_metric,
    postprocess_prediction,
    score_details,
    score_samples,
    string_match_all,
    string_match_part,
)

QA5_LABELS = ["Bill", "Fred", "Jeff", "Mary", "Lena", "Elena", "apple", "football", "milk"]


def test_postprocess_strips_and_turns_control_characters_into_newlines():
    assert postprocess_prediction("  12\t34\x00 \n") == "12\n34"
    assert postprocess_prediction("\x1b abc \x7f") == "abc \x7f"  # only U+0000-U+001F


def test_string_match_all_partial_credit_and_case():
    refs = [["1234567", "2345678", "3456789", "4567890"]]
    assert string_match_all(["1234567, 2345678 and 3456789"], refs) == pytest.approx(75.0)
    assert string_match_all(["ABCDE fghij"], [["abcde", "FGHIJ"]]) == 100.0
    assert string_match_all(["nothing"], [["x1"]]) == 0.0
    # mean over samples: 100 and 50 -> 75
    assert string_match_all(["a b", "a"], [["a", "b"], ["a", "b"]]) == pytest.approx(75.0)
    # a control character splits a number: the reference is no longer there
    assert string_match_all(["123\t4567"], [["1234567"]]) == 0.0


def test_string_match_part_any_reference():
    assert string_match_part(["Paris, maybe"], [["paris", "London"]]) == 100.0
    assert string_match_part(["Rome", "LONDON"], [["paris"], ["london"]]) == 50.0


def test_string_match_rejects_bad_input():
    with pytest.raises(ValueError):
        string_match_all(["a"], [["a"], ["b"]])
    with pytest.raises(ValueError):
        string_match_all([], [])
    with pytest.raises(ValueError):
        string_match_part(["a"], [[]])


@pytest.mark.parametrize("prediction, target, question, expected", [
    ("kitchen", "kitchen", "Where is Mary?", True),
    ("Kitchen.", "kitchen", "Where is Mary?", True),
    ("The most recent location of Mary is the KITCHEN", "kitchen", "Where is Mary?", True),
    ("kitchen. Before that she was in the bathroom.", "kitchen", "Where is Mary?", True),
    ("bathroom. kitchen", "kitchen", "Where is Mary?", False),  # cut at the first "."
    ("kitchen or bathroom", "kitchen", "Where is Mary?", False),  # two labels: wrong
    ("no idea", "kitchen", "Where is Mary?", False),
    ("kitchen <context> bathroom", "kitchen", "Where is Mary?", True),
    ("kitchen <example> garden", "kitchen", "Where is Mary?", True),
    ("kitchen Question: where is the garden", "kitchen", "Where is Mary?", True),
    # labels in the question never count: "hallway" is dropped, "kitchen" remains
    ("The hallway is south of the kitchen", "kitchen", "What is the hallway south of?", True),
    ("hallway", "kitchen", "What is the hallway south of?", False),
    ("Where was the apple before the office? The garden", "garden",
     "Where was the apple before the office?", True),  # an echoed question's label is dropped
])
def test_babilong_rule(prediction, target, question, expected):
    assert babilong_score(prediction, target, question, LOCATIONS) is expected


def test_babilong_qa5_and_whole_word_matching():
    q = "What did Mary give to Fred?"
    assert babilong_score("Mary gave the apple to Fred", "apple", q, QA5_LABELS)
    assert not babilong_score("Mary gave the apple to Bill", "apple", q, QA5_LABELS)
    assert babilong_score("Fred", "Fred", "Who received the milk?", QA5_LABELS)
    # whole words (default): "lena" is not found inside "elena"; upstream substring matching is
    assert babilong_score("Elena", "Elena", "Who gave the milk?", QA5_LABELS)
    assert not babilong_score("Elena", "Elena", "Who gave the milk?", QA5_LABELS, match="substring")
    assert babilong_score("kitchen", "kitchen", "Where is Mary?", LOCATIONS, match="substring")
    with pytest.raises(ValueError):
        babilong_score("x", "x", "q", ["x"], match="regex")


def test_score_samples_dispatches_on_the_metric():
    count = len  # character counts: the scorer does not care how lengths were measured
    for name in task_names():
        if get_task(name).plain_text:
            continue  # pre-training text: nothing to score
        samples = [get_task(name).sample(seed, "eval", 2000, count) for seed in range(3)]
        assert score_samples(name, [s.response for s in samples], samples) == 100.0
        assert score_samples(name, ["", "", ""], samples) == 0.0
        rows = [s.to_row() for s in samples]  # JSONL rows score the same
        assert score_samples(name, [s.response.upper() for s in samples], rows) == 100.0
    mv = [get_task("mv").sample(0, "eval", 2000, count)]
    assert score_samples("mv", [", ".join(mv[0].answers[:3])], mv) == pytest.approx(75.0)
    with pytest.raises(ValueError):
        score_samples("mv", ["a", "b"], mv)


def test_metric_registry_holds_exactly_the_metrics_tasks_name():
    assert {get_task(name).metric for name in task_names()} == set(METRICS)
    assert all(metric.name == name for name, metric in METRICS.items())


def test_unknown_metric_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown metric 'x'.*'babilong'.*'recall'.*'string_match_all'"):
        get_metric("x")


def test_only_the_recall_metric_gives_details(count=len):
    mqar = [get_task("mqar_q4").sample(seed, "eval", 2000, count) for seed in range(2)]
    guesses = [s.response for s in mqar[:1]] + [" nothing"]
    details = score_details("mqar_q4", guesses, mqar)
    assert details == recall_report(guesses, mqar) and details["per_query"] == 50.0
    assert score_samples("mqar_q4", guesses, mqar) == 50.0
    kv = [get_task("kv").sample(0, "eval", 2000, count)]
    assert score_details("kv", [kv[0].response], kv) is None


def test_recall_scores_rows_without_a_task_name():
    """lm-eval's rows carry answers and meta only: the metric hands the task to the report."""
    s = get_task("mqar").sample(0, "eval", 2000, len)
    row = {"answers": list(s.answers), "meta": s.meta}
    assert score_samples("mqar", [s.response], [row]) == 100.0
