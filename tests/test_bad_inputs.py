"""A battery of bad inputs: each gives a clear error naming the offending item (row index,
file, option, module pattern or step), or a documented recovery (rows dropped and listed,
a non-finite inner loss skipped and counted). Nothing is dropped silently, and a run that
did not finish never carries ``run_complete.json``.

Everything runs in process through ``memdlm.cli.main`` (exit code 2 and one
``memdlm <command>: error:`` line for user errors).
"""

from __future__ import annotations

import json
import math
import re
import shutil

import pytest
import torch

from memdlm.cli import main
from memdlm.data.formats import DataError
from memdlm.data.sources import load_file_examples

torch.set_num_threads(1)

# The smallest run that still trains: the tiny default at 1 layer, width 32.
TINY = ["--tiny-layers", "1", "--tiny-hidden-size", "32", "--tiny-intermediate-size", "64"]
QUICK = ["--max-steps", "2", "--per-device-train-batch-size", "2", "--train-lengths", "96",
         "--heldout-items", "0", "--num-eval-samples", "0", "--logging-steps", "1",
         "--save-strategy", "no", "--disable-tqdm", "true"]


def one_error_line(capsys, rc: int, command: str = "train") -> str:
    """Exit code 2 and exactly one ``memdlm <command>: error:`` line, no traceback."""
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.startswith(f"memdlm {command}: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def history(run) -> list[dict]:
    return [h for h in json.loads((run / "log_history.json").read_text()) if "loss" in h]


# --- data files ---------------------------------------------------------------------------------
GOOD = '{"prompt": "Q: 1+1?", "response": "2"}'
BAD_ROWS = [
    ("malformed JSON", ".jsonl", f'{GOOD}\n{{"prompt": "c", "response": \n',
     ["row 1 (line 2) is not valid JSON"]),
    ("malformed after a blank line", ".jsonl", f'{GOOD}\n\n{{"prompt": "c"\n',
     ["row 1 (line 3) is not valid JSON"]),
    ("row not an object", ".jsonl", f'{GOOD}\n["a", "b"]\n', ["row 1 is a list, expected a JSON object"]),
    ("empty object", ".jsonl", f"{GOOD}\n{{}}\n",
     ["row 1 has none of the fields", "(fields present: [])"]),
    ("wrong field names", ".jsonl", f'{GOOD}\n{{"question": "q", "answer": "a"}}\n',
     ["row 1 has none of the fields", "(fields present: ['answer', 'question'])"]),
    ("empty response", ".jsonl", f'{GOOD}\n{{"prompt": "p", "response": "  "}}\n',
     ["row 1: field 'response' is empty"]),
    ("missing response", ".jsonl", f'{GOOD}\n{{"prompt": "p"}}\n',
     ["row 1: missing field 'response' (fields present: ['prompt'])"]),
    ("response not a string", ".jsonl", f'{GOOD}\n{{"prompt": "p", "response": 5}}\n',
     ["row 1: field 'response' is a int, expected a string"]),
    ("alpaca without output", ".jsonl", '{"instruction": "say hi"}\n',
     ["row 0: missing field 'output'"]),
    ("alpaca input not a string", ".jsonl", '{"instruction": "a", "input": [1], "output": "b"}\n',
     ["row 0: field 'input' is a list, expected a string"]),
    ("chat ending with the user", ".jsonl", '{"messages": [{"role": "user", "content": "hi"}]}\n',
     ["row 0: the last message must be the assistant's (got 'user')"]),
    ("chat message without content", ".jsonl",
     '{"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]}\n',
     ["row 0: message 0 needs 'role' and 'content'"]),
    ("empty text row", ".jsonl", '{"text": "some text"}\n{"text": ""}\n', ["row 1: field 'text' is empty"]),
    ("text mixed with prompt/response", ".jsonl", f'{GOOD}\n{{"text": "plain"}}\n',
     ["row 1 is plain text but other rows are prompt/response"]),
    ("broken JSON list", ".json", f"[{GOOD}, {{\"prompt\": ]", ["not valid JSON"]),
    ("JSON list with a string row", ".json", f'[{GOOD}, "just a string"]', ["row 1 is a str"]),
    ("empty file", ".jsonl", "", ["no usable rows", "0 rows read, 0 examples kept"]),
    ("only blank lines", ".jsonl", "\n\n  \n", ["no usable rows", "0 rows read"]),
]


@pytest.mark.parametrize("label, suffix, text, needles", BAD_ROWS, ids=[r[0] for r in BAD_ROWS])
def test_bad_data_file_names_the_file_and_row(tmp_path, capsys, label, suffix, text, needles):
    data = tmp_path / f"data{suffix}"
    data.write_text(text)
    out = tmp_path / "run"
    rc = main(["train", "--data", str(data), "--output-dir", str(out), *TINY])
    line = one_error_line(capsys, rc)
    assert str(data) in line
    for needle in needles:
        assert needle in line, line
    assert not (out / "run_complete.json").exists()


def test_missing_data_file_and_short_text_file(tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    rc = main(["train", "--data", str(missing), "--output-dir", str(tmp_path / "a"), *TINY])
    assert f"data file {missing} does not exist" in one_error_line(capsys, rc)
    short = tmp_path / "short.txt"
    short.write_text("too short")
    rc = main(["train", "--data", str(short), "--output-dir", str(tmp_path / "b"), "--max-length", "64", *TINY])
    assert f"{short}: shorter than one block of 64 tokens" in one_error_line(capsys, rc)


def test_blank_lines_are_not_rows_and_rows_keep_their_indices(tok, tmp_path):
    """Documented recovery: blank lines in JSONL carry no data and are not counted as rows;
    row indices in every message count data rows (line numbers are given beside them)."""
    data = tmp_path / "d.jsonl"
    data.write_text(f"\n{GOOD}\n\n\n{GOOD}\n  \n{GOOD}\n")
    examples, report = load_file_examples(data, tok, max_length=64)
    assert report.rows_read == 3 and report.examples_kept == 3 and len(examples) == 3
    assert [e["sample_seed"] for e in examples] == [0, 1, 2]


def test_over_length_rows_are_dropped_listed_and_counted(tmp_path, capsys):
    """Rows longer than --max-length are dropped, listed by index in data_report.json and the
    log; kept + dropped == read; training goes on with the rest."""
    rows = [{"prompt": "Q: " + "long " * (60 if i in (1, 4) else 2), "response": f"A{i}"} for i in range(6)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    rc = main(["train", "--method", "mdlm", "--data", str(data), "--max-length", "32", "--output-dir",
               str(out), *TINY, *QUICK])
    assert rc == 0
    report = json.loads((out / "data_report.json").read_text())
    assert report["dropped_too_long"] == [1, 4]
    assert report["examples_kept"] + len(report["dropped_too_long"]) == report["rows_read"] == 6
    assert (out / "run_complete.json").is_file()


def test_every_row_over_length_is_an_error_listing_them(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": "x " * 80, "response": "y"}) + "\n" for _ in range(3)))
    rc = main(["train", "--data", str(data), "--max-length", "16", "--output-dir", str(tmp_path / "r"), *TINY])
    line = one_error_line(capsys, rc)
    assert "no usable rows" in line and "3 dropped as longer than max_length (rows 0, 1, 2)" in line


# --- tokenizer and model ------------------------------------------------------------------------
@pytest.fixture()
def maskless_model_dir(tmp_path, make_tiny_model, maskless_tokenizer):
    path = tmp_path / "maskless"
    make_tiny_model(num_hidden_layers=1).save_pretrained(path)
    maskless_tokenizer.save_pretrained(path)
    return path


def test_tokenizer_without_mask_token_train_and_generate(tmp_path, capsys, maskless_model_dir):
    rc = main(["train", "--model", str(maskless_model_dir), "--output-dir", str(tmp_path / "run")])
    line = one_error_line(capsys, rc)
    assert f"tokenizer at {maskless_model_dir} has no mask token" in line
    rc = main(["generate", "--model", str(maskless_model_dir), "--prompt", "hello"])
    assert f"tokenizer at {maskless_model_dir} has no mask token" in one_error_line(capsys, rc, "generate")


def test_target_pattern_matching_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--method", "memdlm", "--memory-target-modules", "nomatch", "--output-dir", str(out),
               *TINY, *QUICK])
    line = one_error_line(capsys, rc)
    assert "Gemma3ForCausalLM: no module matches pattern 'nomatch'" in line
    assert "--memory_target_modules" in line  # says what to do
    assert not (out / "run_complete.json").exists()


def test_model_whose_ffn_is_unknown_to_the_table(tok, tmp_path, capsys):
    """GPT-2's FFN is Conv1D (c_fc / c_proj), not nn.Linear: no default target; the error
    names the model, what was looked for and the way out. (``is_causal = False``: a causal
    GPT-2 is refused earlier, by the bidirectionality check.)"""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=256,
                        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                        bos_token_id=tok.eos_token_id)
    config.is_causal = False
    path = tmp_path / "gpt2"
    GPT2LMHeadModel(config).save_pretrained(path)
    tok.save_pretrained(path)
    rc = main(["train", "--method", "memdlm", "--model", str(path), "--output-dir", str(tmp_path / "run"),
               *QUICK])
    line = one_error_line(capsys, rc)
    assert "GPT2LMHeadModel: no module matches ffn projections" in line and "in layers >= 1" in line
    assert "--memory_target_modules" in line


def test_causal_model_without_a_switch_is_refused_in_one_line(tok, tmp_path, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=256,
                        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                        bos_token_id=tok.eos_token_id)
    path = tmp_path / "gpt2"
    GPT2LMHeadModel(config).save_pretrained(path)
    tok.save_pretrained(path)
    rc = main(["train", "--model", str(path), "--output-dir", str(tmp_path / "run"), *QUICK])
    assert "GPT2LMHeadModel: position 0 ignores the last token" in one_error_line(capsys, rc)


# --- non-finite losses --------------------------------------------------------------------------
def test_nan_in_the_inner_loss_is_skipped_counted_and_training_goes_on(tmp_path, monkeypatch):
    """A NaN in sample 0's inner loss (every stage, every step): its memory update is
    skipped and counted in inner/skipped_nonfinite; the other sample still writes its
    memory; the outer loss stays finite; the run finishes."""
    from memdlm.memory import inner_losses

    original = inner_losses.CrossEntropy.student

    def poisoned(self, *args, **kwargs):
        dense = original(self, *args, **kwargs).clone()
        dense[0] = float("nan")
        return dense

    monkeypatch.setattr(inner_losses.CrossEntropy, "student", poisoned)
    out = tmp_path / "run"
    assert main(["train", "--method", "memdlm", "--memory-mode", "per_sample", "--output-dir", str(out),
                 *TINY, *QUICK]) == 0
    logged = history(out)
    assert len(logged) == 2
    for h in logged:
        assert h["inner/skipped_nonfinite"] == 2  # sample 0, in both stages
        assert math.isfinite(h["loss"]) and h["memory/norm"] > 0
    assert (out / "run_complete.json").is_file()


def test_non_finite_outer_loss_names_the_step_and_leaves_no_finished_run(tmp_path, monkeypatch, capsys):
    from memdlm.training.memdlm_trainer import MemDLMTrainer

    original = MemDLMTrainer.loss_on

    def blow_up(self, model, batch, training):
        loss = original(self, model, batch, training)
        return loss * float("inf") if self.state.global_step == 1 else loss

    monkeypatch.setattr(MemDLMTrainer, "loss_on", blow_up)
    out = tmp_path / "run"
    assert main(["train", "--method", "memdlm", "--output-dir", str(out), *TINY, *QUICK]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    # the second optimiser step (global_step 1 while it runs), numbered as logs and checkpoints are
    assert re.search(r"error: non-finite loss (inf|nan) .*at step 2; the step was not applied", err)
    assert "no checkpoint was saved" in err
    assert not (out / "run_complete.json").exists()


# --- the run directory --------------------------------------------------------------------------
def test_output_dir_under_a_regular_file(tmp_path, capsys):
    """Tests run as root, so chmod cannot make a directory unwritable; a parent that is a
    regular file can."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    out = blocker / "run"
    rc = main(["train", "--output-dir", str(out), *TINY, *QUICK])
    line = one_error_line(capsys, rc)
    assert f"cannot write the output directory {out}" in line and "Not a directory" in line


def test_interrupted_run_has_no_completion_marker(tmp_path, monkeypatch):
    """A run killed mid-training (a BaseException at step 1, as a kill) leaves no run_complete.json --
    also when it replaced a finished run: the old marker is removed once the inputs are checked."""
    from memdlm.training.mdlm_trainer import MDLMTrainer

    out = tmp_path / "run"
    out.mkdir()
    (out / "run_complete.json").write_text('{"global_step": 99}')  # an earlier, finished run
    original = MDLMTrainer.loss_on

    class Killed(BaseException):
        pass

    def interrupt(self, model, batch, training):
        if self.state.global_step == 1:
            raise Killed
        return original(self, model, batch, training)

    monkeypatch.setattr(MDLMTrainer, "loss_on", interrupt)
    with pytest.raises(Killed):
        main(["train", "--method", "mdlm", "--output-dir", str(out), "--overwrite-output-dir", *TINY, *QUICK])
    assert not (out / "run_complete.json").exists()
    assert (out / "run_config.json").is_file()  # it did start


# --- generation ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from memdlm.backbones.modeling import build_tiny_model
    from memdlm.backbones.tokenizer import load_tokenizer

    tok = load_tokenizer()
    path = tmp_path_factory.mktemp("tiny")
    build_tiny_model(tok, seed=0, num_hidden_layers=1, hidden_size=32, intermediate_size=64).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("args, needle", [
    ([], "give at least one --prompt or a --prompt-file"),
    (["--prompt", "ok", "--prompt", ""], "prompt 1 is empty"),
    (["--prompt", "ok", "--max-new-tokens", "4", "--steps", "8"], "steps must lie in [1, max_new_tokens=4], got 8"),
    (["--prompt", "ok", "--max-new-tokens", "0"], "max_new_tokens must be >= 1, got 0"),
])
def test_bad_generation_options(tiny_model_dir, capsys, args, needle):
    rc = main(["generate", "--model", str(tiny_model_dir), *args])
    assert needle in one_error_line(capsys, rc, "generate")


def test_generate_from_a_missing_directory(tmp_path, capsys):
    rc = main(["generate", "--model", str(tmp_path / "nowhere"), "--prompt", "x"])
    assert f"model directory {tmp_path / 'nowhere'} does not exist" in one_error_line(capsys, rc, "generate")


def test_data_error_is_a_value_error_naming_the_row(tok, tmp_path):
    """The library API raises DataError (a ValueError) with the same message as the CLI."""
    data = tmp_path / "d.jsonl"
    data.write_text(f'{GOOD}\n{{"prompt": 3, "response": "x"}}\n')
    with pytest.raises(DataError, match=r"d\.jsonl: row 1: field 'prompt' is a int"):
        load_file_examples(data, tok, max_length=64)


# --- config files: the same checks as flags ----------------------------------------------------
@pytest.mark.parametrize("text, needles", [
    ("method: foo\n", ["argument --method: invalid choice: 'foo'", "mdlm", "memdlm"]),
    ("memory_mode: per-sample\n", ["invalid choice: 'per-sample'", "per_sample"]),
    ("inner_clip: perparam\n", ["invalid choice: 'perparam'", "per_param"]),
    ("max_steps: 1.5\n", ["argument --max_steps/--max-steps: invalid int value: '1.5'"]),
    ("max_steps: 0\n", ["--max-steps must be >= 1, got 0"]),
    ("learning_rate: -1.0e-7\n", ["--learning-rate must be >= 0, got -1e-07"]),
    ("method: memdlm\n  inner_lr: 2\n", ["is not valid YAML at line 2, column 11"]),
], ids=["method", "memory_mode", "inner_clip", "max_steps-type", "max_steps-0", "negative-lr", "bad-yaml"])
def test_config_file_values_are_checked_like_flags(tmp_path, capsys, text, needles):
    """Before: values went in as parser defaults, unchecked -- method: foo trained MDLM,
    memory_mode: per-sample silently used shared memory, inner_clip: perparam failed at step 1."""
    config = tmp_path / "c.yaml"
    config.write_text(text)
    out = tmp_path / "run"
    line = one_error_line(capsys, main(["train", "--config", str(config), "--output-dir", str(out), *TINY]))
    assert str(config) in line or "--" in line
    for needle in needles:
        assert needle in line, line
    assert not out.exists() or not any(out.iterdir())


def test_config_file_json_errors_and_flags_override_the_file(tmp_path, capsys):
    from memdlm.commands.train import parse

    bad = tmp_path / "c.json"
    bad.write_text('{"method": "memdlm",}')
    line = one_error_line(capsys, main(["train", "--config", str(bad), "--output-dir", str(tmp_path / "r")]))
    assert f"config file {bad} is not valid JSON at line 1, column 21" in line
    good = tmp_path / "g.yaml"
    good.write_text("method: memdlm\nmemory_mode: per_sample\ntrain_lengths: [64, 96]\nmax_steps: 7\n"
                    "use_lora: false\nmemory_rank: null\n")
    setup, _ = parse(["--config", str(good), "--output-dir", str(tmp_path / "r"), "--max-steps", "9"])
    assert setup.train.method == "memdlm" and setup.memory.memory_mode == "per_sample"
    assert setup.data.train_lengths == [64, 96] and setup.train.max_steps == 9  # the flag wins


def test_dataclasses_check_choices_and_ranges_for_python_callers():
    from memdlm.config import DataArguments
    from memdlm.errors import ConfigError
    from memdlm.memory.config import MemoryArguments
    from memdlm.training.args import TrainConfig

    with pytest.raises(ConfigError, match=r"--memory-mode 'per-sample' is not one of: shared, per_sample"):
        MemoryArguments(memory_mode="per-sample")
    with pytest.raises(ConfigError, match=r"--method 'foo' is not one of: mdlm, memdlm"):
        TrainConfig(output_dir="x", method="foo")
    with pytest.raises(ConfigError, match=r"--train-lengths must be >= 1, got 0"):
        DataArguments(train_lengths=[128, 0])


@pytest.mark.parametrize("flags, needle", [
    (["--max-steps", "0"], "--max-steps must be >= 1, got 0"),
    (["--max-steps", "-5"], "--max-steps must be >= 1, got -5"),
    (["--learning-rate", "-0.001"], "--learning-rate must be >= 0, got -0.001"),
    (["--per-device-train-batch-size", "-2"], "--per-device-train-batch-size must be >= 1, got -2"),
    (["--max-length", "0"], "--max-length must be >= 1, got 0"),
    (["--memory-rank", "0"], "--memory-rank must be >= 1, got 0"),
    (["--progressive-ratios", "0.8", "1.5"], "--progressive-ratios must be in (0, 1], got 1.5"),
])
def test_out_of_range_flags(tmp_path, capsys, flags, needle):
    """Before: --max-steps 0 trained a step and was marked complete, -5 fell back to 3 epochs,
    a negative batch size or learning rate ended in a traceback."""
    out = tmp_path / "run"
    assert needle in one_error_line(capsys, main(["train", "--output-dir", str(out), *TINY, *flags]))
    assert not (out / "run_complete.json").exists()


# --- data files: encoding and paths -----------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".jsonl", ".txt"])
def test_non_utf8_data_names_line_and_byte(tmp_path, capsys, suffix):
    data = tmp_path / f"d{suffix}"
    data.write_bytes(f"{GOOD}\n".encode() + b'{"prompt": "caf\xe9", "response": "x"}\n')
    line = one_error_line(capsys, main(["train", "--data", str(data), "--output-dir", str(tmp_path / "r"), *TINY]))
    assert f"data file {data}: line 2 (byte {len(GOOD) + 16}) is not UTF-8" in line
    assert "re-save the file as UTF-8" in line


def test_data_path_that_is_a_directory(tmp_path, capsys):
    line = one_error_line(capsys, main(["train", "--data", str(tmp_path), "--output-dir", str(tmp_path / "r"), *TINY]))
    assert f"data file {tmp_path} is a directory" in line


# --- models: remote code, positions ------------------------------------------------------------------
@pytest.mark.parametrize("model_type, needle", [
    ("llama", "but its model_type 'llama' is also a stock transformers class, which would be loaded instead"),
    ("my_dlm", "holds its own model code (modeling_my.py, model_type 'my_dlm'); pass --trust-remote-code"),
])
def test_auto_map_without_trust_remote_code(tiny_model_dir, tmp_path, capsys, model_type, needle):
    """Before: an unknown model_type gave transformers' message naming its own argument; a
    stock model_type silently ignored the directory's code."""
    path = tmp_path / "remote"
    shutil.copytree(tiny_model_dir, path)
    config = json.loads((path / "config.json").read_text())
    config.update(model_type=model_type, auto_map={"AutoModel": "modeling_my.MyModel"})
    (path / "config.json").write_text(json.dumps(config))
    line = one_error_line(capsys, main(["generate", "--model", str(path), "--prompt", "x"]), "generate")
    assert needle in line and "--trust-remote-code" in line


def test_prompt_past_absolute_positions_is_an_error_and_past_rope_refused_unless_extended(
        tok, tmp_path, capsys, caplog, tiny_model_dir):
    """Before: past a rotary model's max_position_embeddings generation ran with a warning."""
    from transformers import BertConfig, BertForMaskedLM

    # a bidirectional encoder with a 32-row absolute position table
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=32, pad_token_id=tok.pad_token_id)
    path = tmp_path / "bert"
    BertForMaskedLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    prompt = "word " * 40
    n = len(tok(prompt, add_special_tokens=False)["input_ids"])
    line = one_error_line(capsys, main(["generate", "--model", str(path), "--prompt", prompt,
                                        "--max-new-tokens", "4"]), "generate")
    assert (f"prompt 0 is {n} tokens + 4 new = {n + 4} positions, past the model's context limit 32 "
            "(config.max_position_embeddings)") in line
    line = one_error_line(capsys, main(["generate", "--model", str(path), "--prompt", prompt, "--max-new-tokens",
                                        "4", "--context-overflow", "extend"]), "generate")
    assert "absolute table" in line
    rope = tmp_path / "rope"
    shutil.copytree(tiny_model_dir, rope)
    config = json.loads((rope / "config.json").read_text())
    config["max_position_embeddings"] = 16
    (rope / "config.json").write_text(json.dumps(config))
    line = one_error_line(capsys, main(["generate", "--model", str(rope), "--prompt", prompt,
                                        "--max-new-tokens", "2"]), "generate")
    assert f"{n + 2} positions, past the model's context limit 16" in line and "--context-overflow" in line
    assert main(["generate", "--model", str(rope), "--prompt", prompt, "--max-new-tokens", "2",
                 "--context-overflow", "extend"]) == 0
    assert "1 run past it" in caplog.text


def test_generate_steps_default_follows_max_new_tokens(tiny_model_dir, capsys):
    """Before: --max-new-tokens 4 alone failed on the default --steps 64. Now the steps are 4:
    the answer is the sampler's with one token per step."""
    from memdlm.sampling.generation import generate
    from memdlm.runs.run import Run
    from memdlm.sampling.sampler import SamplerConfig

    capsys.readouterr()
    assert main(["generate", "--model", str(tiny_model_dir), "--prompt", "hi", "--max-new-tokens", "4",
                 "--json"]) == 0
    loaded = Run.load(tiny_model_dir)
    expected = generate(loaded.model, loaded.tokenizer, ["hi"], SamplerConfig(max_new_tokens=4, steps=4))
    rows = json.loads(capsys.readouterr().out)
    assert [{k: row[k] for k in ("prompt", "response")} for row in rows] == [{"prompt": "hi", "response": expected[0]}]
