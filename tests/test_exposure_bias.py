"""Exposure-bias analysis: the selection-bias control on a context-free fake predictor,
the losses on a tiny random Gemma3 (against the real sampler), memory mode, plots, CLI."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from memdlm.eval.exposure_bias import (
    ExposureBiasConfig,
    ExposureBiasResult,
    encode_pairs,
    exposure_bias,
    exposure_bias_from_predictor,
    model_logits_fn,
    score_batch,
)
from memdlm.sampling.sampler import Sampler, SamplerConfig

torch.set_num_threads(1)

PAIRS = [
    ("The value of red fox is 1234. Question: what is the value of red fox? Answer:", " 1234 then 5678"),
    ("Count:", " 1 2 3 4 5 6 7 8 9"),
    ("Hello there", " general kenobi, you are a bold one"),
]
STEPS = 5


# -- the selection-bias control (pure tensors) -------------------------------------------


def context_free_predictor(n_slots: int, prompt_len: int, vocab: int, seed: int = 0):
    """Fixed per-slot categorical distributions, sharpness varying by slot; context ignored.

    The last vocabulary id plays the mask token and gets (almost) no probability.
    """
    g = torch.Generator().manual_seed(seed)
    sharpness = torch.linspace(6.0, 0.0, n_slots)[torch.randperm(n_slots, generator=g)]  # [N]
    table = torch.randn(n_slots, vocab - 1, generator=g) * sharpness[:, None]
    table = torch.cat([table, torch.full((n_slots, 1), -30.0)], dim=1)  # [N, V]

    def logits_fn(ids, attention_mask, positions):
        return table[positions.nonzero()[:, 1] - prompt_len]  # [n, V], row-major like the model's

    return logits_fn, table.softmax(-1)


def test_control_removes_selection_bias():
    n_slots, prompt_len, vocab, items, steps = 24, 3, 8, 200, 8
    logits_fn, probs = context_free_predictor(n_slots, prompt_len, vocab)
    g = torch.Generator().manual_seed(1)
    truth = torch.multinomial(probs, items, replacement=True, generator=g).T  # [items, N]
    result = exposure_bias_from_predictor(
        logits_fn, [[0] * prompt_len] * items, truth.tolist(), steps=steps, mask_id=vocab - 1,
        batch_size=64)
    d = result.to_dict(bootstrap=200)
    # Context is ignored, so the same positions score the same with true or own context.
    assert d["per_item"]["l_seq"] == d["per_item"]["l_static_same"]
    assert d["r_ctrl"] == [1.0] * steps and d["r_ctrl_random"] == [1.0] * steps
    # Low-confidence decoding leaves the hardest slots masked: the uncontrolled ratio climbs.
    assert d["r_eb"][0] == 1.0  # step 0: everything masked, identical inputs
    for k in range(1, steps - 1):
        assert d["r_eb"][k] > 1.05 and d["r_eb_ci"][k][0] > 1.0, (k, d["r_eb"][k])
    # A random order has no such selection: its ratio stays near 1.
    assert all(abs(r - 1) < 0.1 for r in d["r_eb_random"])


# -- a tiny random model -------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(make_tiny_model):
    return make_tiny_model(seed=0, num_hidden_layers=2).eval()


@pytest.fixture(scope="module")
def result(model, tok):
    return exposure_bias(model, tok, PAIRS, ExposureBiasConfig(steps=STEPS, batch_size=2))


def forbidden_ids(tok):
    return sorted({tok.mask_token_id} | ({tok.pad_token_id} - {tok.eos_token_id}))


def test_shapes_and_json(result, tok):
    _, responses = encode_pairs(tok, PAIRS)
    assert result.items == len(PAIRS) and result.response_tokens == [len(r) for r in responses]
    assert all(r[-1] == tok.eos_token_id for r in responses)  # scored as trained: response + EOS
    d = json.loads(json.dumps(result.to_dict(bootstrap=50)))
    for key in ("l_seq", "l_static", "l_static_same", "l_seq_random", "l_static_same_random",
                "r_eb", "r_ctrl", "r_eb_random", "r_ctrl_random", "masked_fraction", "step"):
        assert len(d[key]) == STEPS, key
        assert all(x == x and x != float("inf") for x in d[key]), key  # finite
    assert len(d["r_eb_ci"]) == STEPS and len(d["per_item"]["l_seq"]) == len(PAIRS)
    assert d["masked_fraction"][0] == 1.0
    assert ExposureBiasResult.from_dict(d).losses == result.losses


def test_step_zero_states_are_identical(result):
    l_seq, l_static, l_same = (result.losses[k][0] for k in ("l_seq", "l_static", "l_static_same"))
    assert l_seq == pytest.approx(l_static, rel=1e-6) and l_seq == pytest.approx(l_same, rel=1e-6)
    assert result.ratios()["r_eb"][0] == pytest.approx(1.0, rel=1e-6)


def test_masked_counts_follow_the_sampler_plan(result):
    for n, masked in zip(result.response_tokens, result.per_item["masked"]):
        counts = SamplerConfig(max_new_tokens=n, steps=STEPS).plan()[0].counts
        expected = n - torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)[:-1]])
        assert masked == expected.tolist()


@pytest.mark.parametrize("remasking", ["low_confidence", "random"])
def test_trajectory_is_the_samplers(model, tok, remasking):
    prompts, responses = encode_pairs(tok, PAIRS[:2])
    field = "trajectory" if remasking == "low_confidence" else "trajectory_random"
    for i, (p, r) in enumerate(zip(prompts, responses)):
        out = score_batch(model_logits_fn(model), [p], [r], steps=STEPS, mask_id=tok.mask_token_id,
                          pad_id=tok.pad_token_id, item_seeds=[i], forbidden=forbidden_ids(tok))
        config = SamplerConfig(max_new_tokens=len(r), steps=STEPS, stop_at_eos=False,
                               remasking=remasking)
        sampled = Sampler(model, tok, config).generate([p], seeds=[i], return_history=True)
        states = torch.stack([h.state.gather(1, sampled.response_positions) for h in sampled.history])
        assert torch.equal(getattr(out, field), states)


def test_deterministic_and_batch_invariant(model, tok, result):
    again = exposure_bias(model, tok, PAIRS, ExposureBiasConfig(steps=STEPS, batch_size=2))
    assert again.to_dict(bootstrap=20) == result.to_dict(bootstrap=20)
    alone = exposure_bias(model, tok, PAIRS, ExposureBiasConfig(steps=STEPS, batch_size=1))
    for key, values in result.per_item.items():
        assert torch.allclose(torch.tensor(alone.per_item[key]), torch.tensor(values), atol=1e-5), key
    # Another seed moves the random masks only; the low-confidence trajectory has no randomness.
    other_seed = exposure_bias(model, tok, PAIRS, ExposureBiasConfig(steps=STEPS, seed=7))
    assert other_seed.per_item["l_static"] != result.per_item["l_static"]
    assert torch.allclose(torch.tensor(other_seed.per_item["l_seq"]),
                          torch.tensor(result.per_item["l_seq"]), atol=1e-5)


def test_too_short_response_names_the_item(model, tok):
    pairs = [PAIRS[1], ("Short:", " 1")]
    with pytest.raises(ValueError, match=r"item 1: .* fewer than steps=5"):
        exposure_bias(model, tok, pairs, ExposureBiasConfig(steps=STEPS))


def test_memory_mode(model, tok, result):
    from memdlm.runs.run import Run

    with_memory = exposure_bias(model, tok, PAIRS, ExposureBiasConfig(steps=STEPS, batch_size=2),
                                memory=Run(model, tok).memory(inner_lr=1.0))
    assert with_memory.memory and with_memory.per_item["l_seq"] != result.per_item["l_seq"]
    assert all(v == v for v in with_memory.losses["l_static"])
    # inner lr 0 adds nothing but the memory machinery: the numbers of no memory.
    inert = exposure_bias(model, tok, PAIRS, ExposureBiasConfig(steps=STEPS, batch_size=2),
                          memory=Run(model, tok).memory(inner_lr=0.0))
    for key, values in result.per_item.items():
        assert torch.allclose(torch.tensor(inert.per_item[key]), torch.tensor(values), atol=1e-5), key


# -- plots, light imports, CLI ---------------------------------------------------------------


def test_plots(tmp_path, result):
    from memdlm.eval.plots import plot_curves, plot_exposure_bias, plot_score_vs_length

    pytest.importorskip("matplotlib")
    paths = [
        plot_exposure_bias({"a": result, "b": result.to_dict(bootstrap=20)}, tmp_path / "eb.png",
                           random_order=True),
        plot_curves([0, 1, 2], {"x": [1.0, None, 2.0]}, tmp_path / "c.png", "step", "loss"),
        plot_score_vs_length([{"run": "a", "length": 128, "score": 0.5},
                              {"run": "a", "length": 256, "score": 0.4}], tmp_path / "s.png",
                             trained_length=128),
    ]
    assert all(p.stat().st_size > 1000 for p in paths)
    with pytest.raises(ValueError, match="row 0 lacks"):
        plot_score_vs_length([{"run": "a"}], tmp_path / "bad.png")


@pytest.mark.parametrize("module", ["memdlm.eval.exposure_bias", "memdlm.eval.plots",
                                    "memdlm.commands.exposure_bias"])
def test_no_module_level_matplotlib(module):
    """``import memdlm`` (and these modules) must not pull in matplotlib."""
    tree = ast.parse(Path(importlib.util.find_spec(module).origin).read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top for a in n.names] + [n.module or "" for n in top
                                                      if isinstance(n, ast.ImportFrom)]
    assert not any(name.startswith("matplotlib") for name in names)


def test_run_spec_and_help():
    from memdlm.commands.exposure_bias import build_parser, parse_run
    from memdlm.errors import ConfigError

    assert parse_run("a=runs/x").memory is False
    spec = parse_run("a+inf=runs/x:memory")
    assert (spec.name, spec.path, spec.memory) == ("a+inf", "runs/x", True)
    with pytest.raises(ConfigError):
        parse_run("runs/x")
    text = build_parser("memdlm exposure-bias").format_help()
    for flag in ("--run", "--items", "--steps", "--length", "--output-dir", "--task", "--batch-size",
                 "--seed", "--append-eos", "--bootstrap", "--adapt-mask-ratio"):
        assert flag in text, flag


@pytest.mark.slow
def test_cli_writes_json_and_png(tmp_path, model, tok, capsys):
    from memdlm.cli import main

    pytest.importorskip("matplotlib")
    run_dir = tmp_path / "run"
    model.save_pretrained(run_dir)
    tok.save_pretrained(run_dir)
    out = tmp_path / "eb"
    rc = main(["exposure-bias", "--run", f"base={run_dir}", "--run", f"base+inf={run_dir}:memory",
               "--items", "2", "--steps", "4", "--length", "256", "--bootstrap", "20",
               "--output-dir", str(out)])
    assert rc == 0
    data = json.loads((out / "exposure_bias.json").read_text())
    assert set(data["runs"]) == {"base", "base+inf"} and data["runs"]["base+inf"]["memory"]
    assert len(data["runs"]["base"]["r_eb"]) == 4
    assert (out / "exposure_bias.png").stat().st_size > 1000
    assert "R_ctrl" in capsys.readouterr().out
