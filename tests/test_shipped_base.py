"""The shipped associative-recall base: loadable by name, and it still retrieves.

A regression guard for the asset (``src/memdlm/assets/models/mqar-base``): by inference
alone, on 200 fresh held-out items (seeds no training or provenance run used) at the
shortest and the longest length it was trained at, every answer masked at once, it must
answer at least 90% of the queries -- against a copy level of 12.5% -- and choose the
queried value far more often than another context value.
"""

from __future__ import annotations

import pytest

from memdlm.backbones.shipped import (
    PROVENANCE_MD,
    SHIPPED_DIR,
    load_provenance,
    render_provenance,
    resolve_model,
    shipped_models,
)

BASE = "mqar-base"
GUARD_SEED = 90_000  # disjoint from HELDOUT_SEED (50,000) and the provenance's (70,000)


def test_the_base_is_shipped_with_its_provenance():
    assert BASE in shipped_models()
    provenance = load_provenance(BASE)
    for key in ("commit", "command", "seed", "train_seconds", "machine", "heldout"):
        assert key in provenance, key
    assert all(cell["per_query"] >= 90.0 for cell in provenance["heldout"].values())


def test_a_local_directory_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_model(BASE) == str(SHIPPED_DIR / BASE)
    (tmp_path / BASE).mkdir()
    assert resolve_model(BASE) == BASE


@pytest.mark.parametrize("length", [19, 128])
def test_the_base_answers_90_percent_of_fresh_queries(length):
    from memdlm.eval.heldout import evaluate_samples, heldout_samples
    from memdlm.backbones.modeling import load_model
    from memdlm.backbones.tokenizer import load_tokenizer

    tok, model = load_tokenizer(BASE), load_model(BASE).eval()  # by name, no path
    samples = heldout_samples(tok, ["mqar"], length, 200, seed=GUARD_SEED)
    report = evaluate_samples(model, tok, samples, progress=False)["recall_by_task"]["mqar"]
    assert report["reference"]["copy"] == pytest.approx(12.5)
    assert report["per_query"] >= 90.0, report
    assert report["chose"]["queried"] > 5 * report["chose"]["other_context"]


def test_the_prose_base_continues_prose_far_better_than_a_unigram_model():
    """prose-base (the exposure-bias analysis's base): on 50 fresh prose_cont items its
    per-item held-out loss is under 60% of the unigram model's loss recorded in its
    provenance (shipped: 2.16 vs 4.45 nats/token at 128 tokens)."""
    from memdlm.eval.heldout import heldout_samples
    from memdlm.eval.item_loss import item_losses
    from memdlm.backbones.modeling import load_model
    from memdlm.backbones.tokenizer import load_tokenizer

    provenance = load_provenance("prose-base")
    cell = provenance["heldout"]["128"]
    assert cell["loss"] < 0.6 * cell["reference"]["unigram"] < cell["reference"]["uniform"]
    tok, model = load_tokenizer("prose-base"), load_model("prose-base").eval()
    losses = item_losses(model, tok, heldout_samples(tok, ["prose_cont"], 128, 50, seed=GUARD_SEED))
    assert sum(losses) / len(losses) < 0.6 * cell["reference"]["unigram"]


@pytest.mark.parametrize("name", shipped_models())
def test_every_shipped_model_has_its_provenance_beside_its_weights(name):
    """provenance.json with the commit, command, seed, time, machine and measured quality,
    and PROVENANCE.md rendered from exactly that record."""
    record = load_provenance(name)
    for key in ("commit", "command", "seed", "train_seconds", "machine", "heldout"):
        assert record[key] not in (None, "", {}), key
    assert (SHIPPED_DIR / name / PROVENANCE_MD).read_text() == render_provenance(record)
