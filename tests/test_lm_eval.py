"""lm-eval integration: light imports, the Monte-Carlo log-likelihood, generate_until, the CLI path."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402

from memdlm.eval.lm_eval_model import MemdlmLM, cut_at_stop, mask_draws, request_seed  # noqa: E402
from memdlm.backbones.modeling import forward_logits  # noqa: E402

OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
CONTEXT = "The value of red fox is 1234. The value of blue owl is 5678. Question: what is the value of red fox?"


def _request(kind: str, *args) -> Instance:
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


@pytest.fixture(scope="module")
def tiny(make_tiny_model):
    return make_tiny_model(seed=0, num_hidden_layers=2).eval()


@pytest.fixture(scope="module")
def lm(tiny, tok):
    return MemdlmLM(tiny, tokenizer=tok, mc_samples=6, batch_size=4, device="cpu")


def _exact_one_token(model, tok, ctx: list[int], token: int, memory=None) -> float:
    """log softmax(logits at the masked last position)[token], one direct forward pass."""
    ids = torch.tensor([ctx + [tok.mask_token_id]])
    with torch.no_grad(), (memory.active() if memory is not None else contextlib.nullcontext()):
        logits = forward_logits(model, ids, torch.ones_like(ids))
    return logits[0, -1].float().log_softmax(-1)[token].item()


def _one_token_pairs(lm):
    candidates = [(CONTEXT + " Answer:", " 1"), ("The value of red fox is 12", "3"),
                  ("Mary went to the garden. Where is", " the"), ("Hello", "!")]
    pairs = [(c, y) for c, y in candidates if len(lm._pair(c, y)[1]) == 1]
    assert len(pairs) >= 3, "the tokenizer changed: pick other one-token continuations"
    return pairs


def test_import_memdlm_does_not_import_lm_eval():
    code = "import memdlm, memdlm.cli, sys; assert 'lm_eval' not in sys.modules, 'lm_eval imported'"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, **OFFLINE})


def test_command_without_lm_eval_says_how_to_install():
    code = ("import sys; sys.modules['lm_eval'] = None\n"
            "from memdlm.commands.lm_eval import run\n"
            "sys.exit(run(['--model-args', 'pretrained=x', '--tasks', 'memdlm_kv_128']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, **OFFLINE})
    assert out.returncode == 2
    assert "pip install 'memdlm[lmeval]'" in out.stderr


def test_mask_draws_are_stratified_over_levels():
    length, per_level = 5, 3
    masked, weight = mask_draws(length, length * per_level, torch.Generator().manual_seed(0))
    counts = masked.sum(1)
    # n a multiple of L: every level l = 1..L drawn exactly n / L times, weight L / l
    assert sorted(counts.tolist()) == sorted(list(range(1, length + 1)) * per_level)
    torch.testing.assert_close(weight, length / counts.float())


def test_one_token_estimate_is_exact(lm, tiny, tok):
    pairs = _one_token_pairs(lm)
    results = lm.loglikelihood([_request("loglikelihood", c, y) for c, y in pairs])
    for (c, y), (value, is_greedy) in zip(pairs, results):
        ctx, cont = lm._pair(c, y)
        assert value == pytest.approx(_exact_one_token(tiny, tok, ctx, cont[0]), abs=1e-4)
        assert isinstance(is_greedy, bool)


def test_one_token_estimate_is_exact_with_memory(tiny, tok):
    lm_mem = MemdlmLM(tiny, tokenizer=tok, memory=True, mc_samples=2, batch_size=4, device="cpu")
    pairs = _one_token_pairs(lm_mem)[:2]
    together = lm_mem.loglikelihood([_request("loglikelihood", c, y) for c, y in pairs])
    for (c, y), (value, _) in zip(pairs, together):
        ctx, cont = lm_mem._pair(c, y)
        memory = lm_mem._adapt([ctx], [request_seed(lm_mem.seed, c, y)])
        assert value == pytest.approx(_exact_one_token(tiny, tok, ctx, cont[0], memory), abs=1e-4)
        assert value != pytest.approx(_exact_one_token(tiny, tok, ctx, cont[0]), abs=1e-7)


def test_greedy_flag_matches_the_sampler(lm, tiny, tok):
    from memdlm.sampling.sampler import Sampler, SamplerConfig

    ctx = lm._encode(CONTEXT)
    config = SamplerConfig(max_new_tokens=2, steps=2, stop_at_eos=False)
    greedy = Sampler(tiny, tok, config).generate([ctx]).responses[0]
    other = [t for t in range(3, 40) if t not in greedy][:2]
    text = tok.decode(greedy)
    pairs = [(ctx, list(greedy)), (ctx, other)]
    assert lm._greedy(pairs, None) == [True, False]
    if lm._pair(CONTEXT, text)[1] == list(greedy):  # the text round-trips to the same tokens
        assert lm.loglikelihood([_request("loglikelihood", CONTEXT, text)])[0][1] is True


def test_estimate_ignores_batch_mates_and_approaches_the_elbo(lm, tiny, tok):
    a, b = (CONTEXT, " 1234"), ("Where is Mary?", " in the garden")
    both = lm.loglikelihood([_request("loglikelihood", *a), _request("loglikelihood", *b)])
    alone = lm.loglikelihood([_request("loglikelihood", *b)])
    assert both[1][0] == pytest.approx(alone[0][0], abs=1e-4)
    # exact ELBO of a 3-token continuation by enumerating every masked subset
    ctx, cont = lm._pair(*b)
    cont = cont[:3]
    length, elbo = len(cont), 0.0
    for level in range(1, length + 1):
        subsets = list(itertools.combinations(range(length), level))
        for subset in subsets:
            ids = torch.tensor([ctx + cont])
            where = torch.zeros_like(ids, dtype=torch.bool)
            where[0, [len(ctx) + i for i in subset]] = True
            with torch.no_grad():
                logits = forward_logits(tiny, ids.masked_fill(where, tok.mask_token_id), torch.ones_like(ids))
            logp = logits[where].float().log_softmax(-1).gather(-1, ids[where][:, None]).sum().item()
            elbo += (length / level) * logp / (length * len(subsets))
    many = MemdlmLM(tiny, tokenizer=tok, mc_samples=60, batch_size=64, device="cpu", greedy_check="none")
    estimate = many._mc_loglik([(ctx, cont)], [1], None)[0]
    assert torch.isfinite(torch.tensor(estimate))
    assert estimate == pytest.approx(elbo, abs=0.05)  # 60 draws: MC error ~0.01 nats here


def test_rolling_is_the_sum_of_its_windows_which_cover_the_text(lm, tok):
    text = "The harbour greeted the slow stream without a word. " * 3
    short = MemdlmLM(lm.model, tokenizer=tok, max_length=16, mc_samples=2, device="cpu")
    tokens = short._encode(text)
    windows = short._windows(tokens)
    assert len(windows) > 2 and sum((piece for _, piece in windows), []) == tokens
    assert all(len(c) + len(p) <= 16 for c, p in windows)
    (value,) = short.loglikelihood_rolling([_request("loglikelihood_rolling", text)])
    # each window is one log-likelihood request with its own seed (text, window index)
    parts = [short._mc_loglik([w], [request_seed(short.seed, text, str(i))], None)[0]
             for i, w in enumerate(windows)]
    assert value == pytest.approx(sum(parts), abs=1e-4) and value < 0


def test_memory_settings_come_from_the_run(tmp_path, tiny, tok):
    tiny.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    (tmp_path / "run_config.json").write_text(json.dumps(
        {"memory": {"inner_lr": 0.3, "memory_rank": 4, "not_a_field": 1}, "train": {}}))
    lm_mem = MemdlmLM(str(tmp_path), memory=True, adapt_mask_ratio=0.5, device="cpu")
    args = lm_mem.memory.settings
    assert (args.inner_lr, args.memory_rank, args.adapt_mask_ratio) == (0.3, 4, 0.5)
    assert lm_mem.memory_record["memory_overrides"] == {"adapt_mask_ratio": 0.5}
    assert MemdlmLM(tiny, tokenizer=tok, memory=True, device="cpu").memory.settings.inner_lr == 0.1


def test_cut_at_stop():
    assert cut_at_stop("abc\ndef", ["\n"]) == "abc"
    assert cut_at_stop("abcdef", ["e", "c"]) == "ab"
    assert cut_at_stop("abc", ["x", ""]) == "abc"


def test_generate_until_respects_until(lm):
    kwargs = {"until": [], "max_gen_toks": 12}
    (full,) = lm.generate_until([_request("generate_until", CONTEXT, kwargs)])
    assert len(full) >= 4
    stop = full[2:4]
    (cut,) = lm.generate_until([_request("generate_until", CONTEXT, {**kwargs, "until": [stop]})])
    assert cut == full[:full.find(stop)]
    assert stop not in cut



BATCH = [CONTEXT, "The value of green cat is 4321. Question: what is the value of green cat?",
         "Mary went to the garden. John went to the kitchen. Where is Mary?", "Hello world"]


@pytest.mark.slow
@pytest.mark.parametrize("memory", [False, True])
def test_batched_generate_until_with_per_request_stops_equals_one_by_one(tiny, tok, memory):
    """Requests with different stop strings (two sharing one) in one call give what each gives
    alone, cut at its own stop string."""
    lm_ = MemdlmLM(tiny, tokenizer=tok, memory=memory, batch_size=4, device="cpu")
    kwargs = {"until": [], "max_gen_toks": 10}
    full = [lm_.generate_until([_request("generate_until", c, kwargs)])[0] for c in BATCH]
    assert all(len(f) >= 4 for f in full)
    stops = [[full[0][1:3]], [full[1][2:4]], [full[0][1:3]], [full[3][3:5], "\n"]]
    requests = [_request("generate_until", c, {**kwargs, "until": u}) for c, u in zip(BATCH, stops)]
    together = lm_.generate_until(requests)
    alone = [lm_.generate_until([r])[0] for r in requests]
    assert together == alone == [cut_at_stop(f, u) for f, u in zip(full, stops)]
    assert together[0] == full[0][:full[0].find(stops[0][0])] and together[1] != full[1]
    if memory:  # the memory is adapted on each request's own prompt and changes what it says
        bare = MemdlmLM(tiny, tokenizer=tok, batch_size=4, device="cpu")
        assert [bare.generate_until([_request("generate_until", c, kwargs)])[0] for c in BATCH] != full

def test_export_tasks_and_process_results(tok, tmp_path):
    from memdlm.eval.lm_eval_tasks import export_tasks, parse_task_name, process_results

    names = export_tasks(["kv"], [128], 3, tmp_path, tok)
    assert names == ["memdlm_kv_128"] and parse_task_name("memdlm_kv_128") == ("kv", 128)
    rows = [json.loads(line) for line in (tmp_path / "memdlm_kv_128.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    yaml_text = (tmp_path / "memdlm_kv_128.yaml").read_text()
    assert str(tmp_path / "memdlm_kv_128.jsonl") in yaml_text and "generate_until" in yaml_text
    row = rows[0]
    assert process_results(row, [f" {row['answers'][0]}\n"]) == {"string_match_all": 100.0}
    assert process_results(row, ["nothing"]) == {"string_match_all": 0.0}


@pytest.mark.slow
def test_cli_runs_an_exported_task_offline(tiny, tok, tmp_path, monkeypatch):
    from memdlm.commands.lm_eval import run

    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    model_dir = tmp_path / "model"
    tiny.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    out = tmp_path / "results.json"
    rc = run(["--model-args", f"pretrained={model_dir},batch_size=4", "--tasks", "memdlm_kv_128",
              "--limit", "4", "--output-path", str(out), "--export-dir", str(tmp_path / "tasks")])
    assert rc == 0
    (written,) = tmp_path.glob("results_*.json")  # lm-eval stamps FILE.json with the date
    results = json.loads(written.read_text())
    result = results["results"]["memdlm_kv_128"]
    assert result["sample_len"] == 4
    # the score is the task's scorer on what the model answers to the first four exported rows
    from memdlm.eval.lm_eval_tasks import STOP_STRINGS, process_results

    rows = [json.loads(line) for line in (tmp_path / "tasks" / "memdlm_kv_128.jsonl").read_text().splitlines()]
    max_gen = int(next(line for line in (tmp_path / "tasks" / "memdlm_kv_128.yaml").read_text().splitlines()
                       if "max_gen_toks" in line).split(":")[1])
    lm_ = MemdlmLM(tiny, tokenizer=tok, batch_size=4, device="cpu")
    answers = lm_.generate_until([_request("generate_until", row["prompt"],
                                           {"until": list(STOP_STRINGS), "max_gen_toks": max_gen})
                                  for row in rows[:4]])
    expected = sum(process_results(row, [a])["string_match_all"] for row, a in zip(rows, answers)) / 4
    assert result["string_match_all,none"] == pytest.approx(expected)
    assert results["config"]["batch_size"] == "4"  # moved out of --model-args to lm-eval's own flag
    memdlm = results["config"]["memdlm"]
    assert (memdlm["device"], memdlm["dtype"], memdlm["world_size"]) == ("cpu", "float32", 1)
    assert memdlm["context"]["source"] == "config.max_position_embeddings"
    assert memdlm["context"]["requests"] == 4 and memdlm["context"]["truncated"] == 0


def test_harness_flags_in_either_spelling():
    from memdlm.commands.lm_eval import _run_options, harness_argv, harness_parser

    options = _run_options(harness_parser())
    argv = ["--model-args", "pretrained=x,memory=True", "--output-path=o", "--log-samples", "--gen_kwargs",
            "temperature=0", "--not-a-flag", "--limit", "2"]
    assert harness_argv(argv, options) == [
        "--model_args", "pretrained=x,memory=True", "--output_path=o", "--log_samples", "--gen_kwargs",
        "temperature=0", "--not-a-flag", "--limit", "2"]


def test_namespace_for_the_memdlm_model(tmp_path):
    from memdlm.commands.lm_eval import build_parser, harness_parser, prepare_namespace
    from memdlm.errors import ConfigError
    from memdlm.backbones.shipped import resolve_model

    def prepared(*argv, ours=()):
        ns = harness_parser().parse_args(["run", "--tasks", "ruler_vt", *argv])
        prepare_namespace(ns, build_parser("x").parse_args(list(ours)))
        return ns

    ns = prepared("--model_args", "pretrained=mqar-base,device=cpu,batch_size=3", ours=["--dtype", "bfloat16"])
    assert ns.model == "memdlm" and (ns.device, ns.batch_size) == ("cpu", "3")
    # the shipped name becomes the path RULER's data builder loads the tokenizer from
    assert ns.model_args == {"pretrained": resolve_model("mqar-base"), "dtype": "bfloat16"}
    ns = prepared("--model_args", "pretrained=mqar-base")
    assert ns.batch_size == "16" and ns.device in ("cpu", "cuda")  # not lm-eval's cuda:0 on a CPU machine
    with pytest.raises(ConfigError, match="device is given twice"):
        prepared("--model_args", "pretrained=mqar-base,device=cpu", "--device", "cpu")
    with pytest.raises(ConfigError, match="needs pretrained"):
        prepared("--model_args", "memory=True")
    with pytest.raises(ConfigError, match="runs the memdlm model"):
        prepared("--model", "hf", "--model_args", "pretrained=mqar-base")


def test_local_dataset_config_overrides_the_hub_loader(tmp_path):
    from memdlm.commands.lm_eval import local_dataset_yaml

    data = tmp_path / "qa1.jsonl"
    text = local_dataset_yaml("babilong_qa1", tmp_path / "babilong_qa1.yaml", data, "qa1")
    assert text.splitlines() == [
        "task: babilong_qa1", f'include: "{tmp_path / "babilong_qa1.yaml"}"', "custom_dataset: null",
        "dataset_path: json", "dataset_name: null", f'dataset_kwargs: {{data_files: {{"qa1": "{data}"}}}}']


BABILONG_FIXTURE = [  # BABILong's columns: input (facts), question, target
    {"input": "Mary went to the garden. John moved to the kitchen.", "question": "Where is Mary?",
     "target": "garden"},
    {"input": "John went to the hallway. Mary moved to the office.", "question": "Where is John?",
     "target": "hallway"},
]


@pytest.mark.slow
def test_hub_task_on_a_local_dataset_and_without_it(tmp_path, monkeypatch):
    """lm-eval's own babilong_qa1 on a local fixture file (the harness's prompt, few-shot
    examples and scorer); without the file, offline: one line naming the dataset."""
    from memdlm.commands.lm_eval import run

    data = tmp_path / "qa1.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in BABILONG_FIXTURE))
    base = ["--model-args", "pretrained=mqar-base", "--tasks", "babilong_qa1", "--limit", "2"]
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    assert run([*base, "--local-dataset", f"babilong_qa1={data}", "--output-path", str(tmp_path / "out"),
                "--log-samples"]) == 0
    (samples_file,) = (tmp_path / "out").rglob("samples_babilong_qa1_*.jsonl")
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert sorted(s["doc"]["target"] for s in samples) == ["garden", "hallway"]
    assert all(s["doc"]["input"] in s["arguments"]["gen_args_0"]["arg_0"] for s in samples)
    # a fresh process, so the hub libraries read the offline switches at import
    missing = subprocess.run([sys.executable, "-m", "memdlm.cli", "lm-eval", *base], capture_output=True,
                             text=True, env={**os.environ, **OFFLINE}, cwd=tmp_path)
    lines = [line for line in missing.stderr.splitlines() if line.startswith("memdlm lm-eval: error:")]
    assert missing.returncode == 2 and len(lines) == 1 and "Traceback" not in missing.stderr, missing.stderr[-3000:]
    assert "RMT-team/babilong-1k-samples" in lines[0] and "--local-dataset" in lines[0]


def test_fast_sampling_model_arguments(tiny, tok):
    from memdlm.sampling.sampler import SamplerConfig

    default = MemdlmLM(tiny, tokenizer=tok, device="cpu").sampler_config(16)
    base = SamplerConfig()
    assert (default.unmask_rule, default.threshold, default.max_per_step, default.cache) == (
        base.unmask_rule, base.threshold, base.max_per_step, base.cache)
    # lm-eval hands model arguments over as strings
    fast = MemdlmLM(tiny, tokenizer=tok, device="cpu", unmask_rule="threshold", threshold="0.5",
                    max_per_step="2", cache="dual").sampler_config(16)
    assert (fast.unmask_rule, fast.threshold, fast.max_per_step, fast.cache) == ("threshold", 0.5, 2, "dual")
    with pytest.raises(ValueError, match="unknown cache"):
        MemdlmLM(tiny, tokenizer=tok, device="cpu", cache="full")


# --- model arguments parsed strictly (issue 23) ---------------------------------------------------
@pytest.fixture(scope="module")
def tiny_dir(tiny, tok, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_lm")
    tiny.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("text, on", [("no", False), ("false", False), ("0", False), ("False", False),
                                      ("yes", True), ("TRUE", True), ("1", True)])
def test_memory_model_argument_is_a_strict_boolean(tiny_dir, text, on):
    """Before: memory=no turned the memory on (any non-empty string was true)."""
    lm_ = MemdlmLM.create_from_arg_string(f"pretrained={tiny_dir},memory={text}", {"device": "cpu"})
    assert (lm_.memory is not None) is on


@pytest.mark.parametrize("args, needle", [
    ("memory=on", "memory='on' is not a boolean"),
    ("steps=abc", "steps='abc' is not a whole number"),
    ("mc_samples=0", "mc_samples must be >= 1, got 0"),
    ("temperature=nan", "temperature=nan must be a finite number"),
])
def test_bad_model_arguments_are_one_line_naming_the_key(tiny_dir, capsys, args, needle):
    """Before: a bare memory silently turned it off; steps=abc was a traceback."""
    from memdlm.cli import main

    rc = main(["lm-eval", "--model-args", f"pretrained={tiny_dir},{args}", "--tasks", "memdlm_kv_128"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("memdlm lm-eval: error:")]
    assert len(lines) == 1 and needle in lines[0], err


def test_unknown_lm_eval_task_is_one_line(tiny_dir, capsys, monkeypatch, tmp_path):
    from memdlm.cli import main

    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "blocker"
    out.write_text("a file")
    rc = main(["lm-eval", "--model-args", f"pretrained={tiny_dir}", "--tasks", "memdlm_kv_128",
               "--output-path", str(out / "r.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "--output-path (its directory)" in err and "Traceback" not in err, err
    rc = main(["lm-eval", "--model-args", f"pretrained={tiny_dir}", "--tasks", "no_such_task_anywhere"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    assert "memdlm lm-eval: error: unknown lm-eval task: no_such_task_anywhere" in err


def test_a_bare_model_argument_is_the_harness_one_line_error(tiny_dir, capsys):
    """A bare ``memory`` (before: silently off) is refused by lm-eval's own --model_args parser."""
    from memdlm.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["lm-eval", "--model-args", f"pretrained={tiny_dir},memory", "--tasks", "memdlm_kv_128"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err
    assert "expected `key=value`, got 'memory'" in err.strip().splitlines()[-1]
def _responses(out_dir) -> dict:
    (samples,) = out_dir.rglob("samples_*.jsonl")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    return {row["doc_id"]: (row["doc"]["target"], row["resps"]) for row in rows}


@pytest.mark.slow
def test_two_processes_on_the_cpu_give_one_process_results(tmp_path, monkeypatch):
    """torchrun, 2 processes, gloo: lm-eval splits the items between them and gathers the
    answers; every answer and the score equal one process's (4 items: an even split, so no
    item is repeated as padding)."""
    from memdlm.commands.lm_eval import run

    argv = ["--model-args", "pretrained=mqar-base", "--tasks", "memdlm_kv_128", "--limit", "4", "--log-samples"]
    env = {**os.environ, **OFFLINE, "PYTHONPATH": os.pathsep.join(sys.path)}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "memdlm.cli",
                          "lm-eval", *argv, "--output-path", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    assert run([*argv, "--output-path", str(tmp_path / "one")]) == 0
    one_answers, two_answers = _responses(tmp_path / "one"), _responses(tmp_path / "two")
    assert sorted(one_answers) == [0, 1, 2, 3] and two_answers == one_answers
    (one,), (two,) = (tmp_path / "one").rglob("results_*.json"), (tmp_path / "two").rglob("results_*.json")
    one, two = json.loads(one.read_text()), json.loads(two.read_text())
    assert two["results"] == one["results"]
    assert (one["config"]["memdlm"]["world_size"], two["config"]["memdlm"]["world_size"]) == (1, 2)


def test_help_lists_memdlm_and_harness_flags(capsys):
    from memdlm.commands.lm_eval import run

    assert run(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--export-lengths", "--local-dataset", "--context-overflow", "--dtype", "--metadata",
                 "--gen_kwargs", "--output_path", "--log_samples"):
        assert flag in out


def test_only_hub_and_nltk_data_failures_become_one_line():
    from memdlm.commands.lm_eval import hub_data_error

    missing = LookupError("Resource punkt_tab not found. Please use the NLTK Downloader")
    line = str(hub_data_error(missing, ["niah_multivalue"]))
    assert "niah_multivalue need NLTK's punkt_tab data" in line and "docs/LM_EVAL.md" in line
    assert "\n" not in line
    assert hub_data_error(ValueError("a bug in a task"), ["ruler_vt"]) is None  # keeps its traceback
