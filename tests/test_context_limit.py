"""No silent truncation: the context limit is read from the model (config, else tokenizer),
never made up; past it every inference command refuses with the numbers, or truncates /
extends when told to, and counts it."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from memdlm.cli import main
from memdlm.backbones.context import (
    ContextLimit,
    ContextOverflowError,
    context_limit,
    fit_prompts,
    new_counts,
)

LIMIT = 64  # positions of the small model below


def _model(**config):
    return SimpleNamespace(config=SimpleNamespace(**config))


@pytest.mark.parametrize("config, expected", [
    ({"max_position_embeddings": 4096, "rope_theta": 1e4}, (4096, "config.max_position_embeddings", False)),
    ({"max_sequence_length": 4096, "rope_theta": 5e5}, (4096, "config.max_sequence_length", False)),  # LLaDA
    ({"n_positions": 1024}, (1024, "config.n_positions", True)),  # GPT-2: an absolute table
    ({"max_position_embeddings": None, "n_ctx": 512, "rope_theta": 1e4}, (512, "config.n_ctx", False)),
])
def test_limit_is_read_from_the_config(config, expected):
    limit = context_limit(_model(**config))
    assert (limit.tokens, limit.source, limit.absolute_positions) == expected


def test_limit_falls_back_to_the_tokenizer_and_is_otherwise_unknown():
    model = _model(rope_theta=1e4)
    assert context_limit(model, SimpleNamespace(model_max_length=2048)) == ContextLimit(
        2048, "tokenizer.model_max_length", False)
    # transformers' "no limit" (1e30) is not a limit, and nothing is made up in its place
    assert context_limit(model, SimpleNamespace(model_max_length=int(1e30))).tokens is None
    assert context_limit(model).tokens is None
    assert context_limit(model, override=300) == ContextLimit(300, "max_length argument", False)


def test_fit_prompts_by_hand():
    limit = ContextLimit(10, "config.max_position_embeddings", False)
    short, long = list(range(6)), list(range(12))
    with pytest.raises(ContextOverflowError, match=r"prompt 1 is 12 tokens \+ 4 new = 16 positions, past the "
                                                   r"model's context limit 10 \(config.max_position_embeddings\)"):
        fit_prompts([short, long], 4, limit)
    counts = new_counts()
    fitted = fit_prompts([short, long], 4, limit, "truncate", counts)
    assert fitted == [short, list(range(6, 12))]  # the last 10 - 4 tokens
    assert counts == {"requests": 2, "over_limit": 1, "truncated": 1, "tokens_dropped": 6, "extended": 0}
    counts = new_counts()
    assert fit_prompts([long], [1], limit, "extend", counts) == [long]
    assert (counts["extended"], counts["truncated"]) == (1, 0)
    with pytest.raises(ContextOverflowError, match="absolute table"):
        fit_prompts([long], 1, ContextLimit(10, "config.n_positions", True), "extend")
    with pytest.raises(ContextOverflowError, match="no room"):
        fit_prompts([long], 10, limit, "truncate")
    assert fit_prompts([long], 4, ContextLimit(None, "unknown")) == [long]  # unknown: not checked


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory, tok):
    from memdlm.backbones.modeling import build_tiny_model

    path = tmp_path_factory.mktemp("small")
    build_tiny_model(tok, seed=0, num_hidden_layers=1, hidden_size=32, intermediate_size=64,
                     max_position_embeddings=LIMIT).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _refused(capsys, rc: int, command: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"memdlm {command}: error:")]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert f"past the model's context limit {LIMIT} (config.max_position_embeddings)" in lines[0]
    return lines[0]


def test_every_inference_command_refuses_a_prompt_past_the_limit(small_dir, tmp_path, capsys):
    prompt = "word " * 80
    _refused(capsys, main(["generate", "--model", str(small_dir), "--prompt", prompt, "--max-new-tokens", "2"]),
             "generate")
    _refused(capsys, main(["eval", "--run", f"a={small_dir}", "--tasks", "kv", "--lengths", "128", "--items", "1",
                           "--output-dir", str(tmp_path / "eval"), "--no-progress"]), "eval")
    _refused(capsys, main(["exposure-bias", "--run", f"a={small_dir}", "--task", "kv", "--length", "160", "--items", "1",
                           "--steps", "2", "--output-dir", str(tmp_path / "eb")]), "exposure-bias")


def test_eval_truncates_when_told_and_records_it(small_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "--run", f"a={small_dir}", "--tasks", "kv", "--lengths", "128", "--items", "1",
                 "--output-dir", str(out), "--no-progress", "--context-overflow", "truncate",
                 "--dtype", "float32", "--device", "cpu"]) == 0
    suite = json.loads((out / "suite.json").read_text())
    context = suite["cells"][0]["results"]["a"]["context"]
    assert (context["limit"], context["overflow"], context["truncated"], context["over_limit"]) == (
        LIMIT, "truncate", 1, 1)
    assert context["tokens_dropped"] > 0
    assert suite["placement"]["a"] == {"device": "cpu", "dtype": "float32"}


def test_lm_eval_model_refuses_or_truncates_and_counts(small_dir):
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance

    from memdlm.eval.lm_eval_model import MemdlmLM

    context = "word " * 80
    loglik = Instance(request_type="loglikelihood", doc={}, arguments=(context, " end"), idx=0)
    gen = Instance(request_type="generate_until", doc={}, arguments=(context, {"max_gen_toks": 2}), idx=0)
    lm = MemdlmLM(str(small_dir), device="cpu", mc_samples=1, greedy_check="none")
    assert lm.max_length == LIMIT  # read from the config, not a default
    for request, method in ((loglik, lm.loglikelihood), (gen, lm.generate_until)):
        with pytest.raises(ContextOverflowError, match=f"past the model's context limit {LIMIT}"):
            method([request])
    cut = MemdlmLM(str(small_dir), device="cpu", mc_samples=1, greedy_check="none", context_overflow="truncate")
    cut.loglikelihood([loglik])
    cut.generate_until([gen])
    info = cut.get_model_info()["memdlm"]
    assert (info["context"]["tokens"], info["context"]["truncated"], info["context"]["requests"]) == (LIMIT, 2, 2)
    assert (info["device"], info["dtype"]) == ("cpu", "float32")
    assert (info["sampler"]["unmask_rule"], info["sampler"]["remasking"]) == ("fixed", "low_confidence")
