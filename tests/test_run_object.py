"""The run object (memdlm.runs.run.Run): every inference path adapts with the run's own memory.

A tiny MemDLM run is trained with non-default memory settings (rank 4, FFN and attention
targets, the progressive trajectory, adaptation ratio 0.3). ``memdlm generate --memory``,
``memdlm eval`` with ``:memory`` and ``--memdlm``, ``memdlm exposure-bias`` with ``:memory``,
the lm-eval model with ``memory=True`` and the retrieval probe must each adapt with exactly
those settings: every adaptation they make is recorded (a spy on ``adapt_on_prompts``) and
recomputed by a direct call with an inner loop built from the settings typed here; fast
weights (targets, shapes, values) and the generated tokens must be equal.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import memdlm.memory.adapt as adapt_module
from memdlm.memory.adapt import adapt_on_prompts as direct_adapt
from memdlm.memory.builder import ADAPTATION, build_inner_loop
from memdlm.memory.config import MemoryArguments, adaptation_part

# The run's memory settings, typed independently of run_config.json.
TRAINED = MemoryArguments(memory_rank=4, memory_scope="ffn_attn", trajectory="progressive",
                          adapt_mask_ratio=0.3)
ADAPTED = adaptation_part(TRAINED)  # what inference-time adaptation reads of them
LENGTH = 128  # kv items of this length fit the tiny model's positions and the eval suite


def build_adaptation_loop(model, settings, mask_token_id):
    """An adaptation loop resolved afresh from ``settings`` (not from the run's saved resolution)."""
    return build_inner_loop(model, settings, ADAPTATION, mask_token_id=mask_token_id)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished tiny MemDLM run with TRAINED's memory settings (one step, two held-out items)."""
    from memdlm.cli import main

    out = tmp_path_factory.mktemp("run") / "mem"
    assert main(["train", "--method", "memdlm", "--output-dir", str(out), "--max-steps", "1",
                 "--tiny-layers", "2", "--per-device-train-batch-size", "2", "--train-lengths", str(LENGTH),
                 "--num-eval-samples", "0", "--heldout-items", "2", "--save-strategy", "no",
                 "--memory-rank", "4", "--memory-scope", "ffn_attn", "--trajectory", "progressive",
                 "--adapt-mask-ratio", "0.3", "--disable-tqdm", "true"]) == 0
    return out


@pytest.fixture(scope="module")
def direct(run_dir):
    """The run's model and tokenizer loaded by hand, with an inner loop built from TRAINED."""
    from memdlm.backbones.modeling import load_model
    from memdlm.backbones.tokenizer import load_tokenizer

    tok = load_tokenizer(str(run_dir))
    model = load_model(str(run_dir)).eval()
    return SimpleNamespace(model=model, tok=tok, loop=build_adaptation_loop(model, ADAPTED, tok.mask_token_id))


@pytest.fixture
def spy(monkeypatch):
    """Every inference-time adaptation made while the test runs: its loop, inputs and result."""
    calls = []

    def recording(loop, input_ids, attention_mask, prompt_positions, mask_ratio, seeds):
        memory = direct_adapt(loop, input_ids, attention_mask, prompt_positions, mask_ratio, seeds)
        calls.append(SimpleNamespace(loop=loop, ids=input_ids, attn=attention_mask, positions=prompt_positions,
                                     ratio=mask_ratio, seeds=seeds, memory=memory))
        return memory

    monkeypatch.setattr(adapt_module, "adapt_on_prompts", recording)
    return calls


def assert_adapted_as_trained(calls, direct, settings=TRAINED):
    """Each recorded adaptation used ``settings`` and equals a direct call with them."""
    assert calls, "no inference-time adaptation happened"
    settings = adaptation_part(settings)
    loop = direct.loop if settings == ADAPTED else build_adaptation_loop(direct.model, settings,
                                                                         direct.tok.mask_token_id)
    for call in calls:
        assert call.loop.args == settings and call.ratio == settings.adapt_mask_ratio
        want = direct_adapt(loop, call.ids, call.attn, call.positions, settings.adapt_mask_ratio, call.seeds)
        assert [t.name for t in call.memory.targets] == [t.name for t in want.targets]
        assert [[p.shape for p in g] for g in call.memory.tensors] == [[p.shape for p in g] for g in want.tensors]
        for got, exp in zip(call.memory.params(), want.params()):
            assert torch.equal(got, exp)


def direct_generate(direct, prompts, config, seeds, adapt_on=None) -> list[str]:
    """Adapt with the directly built loop, then sample with that memory active, one batch."""
    from memdlm.sampling.sampler import Sampler

    tok = direct.tok
    ids = [tok(p, add_special_tokens=False)["input_ids"] if isinstance(p, str) else list(p) for p in prompts]
    context = [tok(p, add_special_tokens=False)["input_ids"] for p in adapt_on] if adapt_on else ids
    padded, attn = adapt_module.right_pad(context, tok.pad_token_id, "cpu")
    memory = direct_adapt(direct.loop, padded, attn, attn.bool(), TRAINED.adapt_mask_ratio, torch.tensor(seeds))
    return Sampler(direct.model, tok, config).generate(ids, seeds=seeds, forward_context=memory.active).texts


def test_the_run_holds_its_settings(run_dir):
    from memdlm.runs.run import Run

    run = Run.load(run_dir)
    assert run.memory_args == TRAINED
    assert run.memory().settings == ADAPTED and run.memory().overrides == {}
    assert run.memory(adapt_mask_ratio=0.5).settings == replace(ADAPTED, adapt_mask_ratio=0.5)
    assert run.memory(adapt_mask_ratio=0.5).record()["memory_overrides"] == {"adapt_mask_ratio": 0.5}
    assert run.data_args.train_lengths == [LENGTH] and run.train_args["method"] == "memdlm"
    assert run.diffusion_args.schedule == "linear" and run.model_args.tiny_layers == 2
    with pytest.raises(ValueError, match="unknown memory settings"):
        run.memory(memory_rnak=8)
    # not the defaults: the rank and the targets a default memory would take differ
    default = Run(run.model, run.tokenizer).memory()
    assert default.loop.rank != 4 and len(default.loop.targets) < len(run.memory().loop.targets)
    assert any("attn" in t.name for t in run.memory().loop.targets)
    assert (run_dir / "heldout_eval.json").is_file()  # the trainer's held-out evaluation, from a Run


def test_the_run_saves_its_resolution_and_inference_uses_it(run_dir):
    """Training resolves rank, alpha, scale and targets once and writes them to run_config.json;
    they equal a fresh resolution on the loaded model, and the prompt memory adapts with them."""
    from memdlm.memory.builder import ResolvedMemory, resolve_memory
    from memdlm.memory.targets import canonical_name
    from memdlm.runs.run import Run

    saved = json.loads((run_dir / "run_config.json").read_text())["memory_resolved"]
    run = Run.load(run_dir)
    assert run.resolved_memory == ResolvedMemory.from_dict(saved)
    assert run.resolved_memory == resolve_memory(run.model, TRAINED)  # == a fresh resolution
    assert (saved["rank"], saved["alpha"], saved["scale"]) == (4, 8.0, 2.0)  # alpha 2 x rank
    memory = run.memory()
    assert [canonical_name(t.name) for t in memory.loop.targets] == saved["targets"]
    assert (memory.loop.rank, memory.loop.scale) == (4, 2.0)
    assert memory.record()["memory_resolved"] == saved
    # the settings part keeps what was given (the resolution is beside it)
    assert json.loads((run_dir / "run_config.json").read_text())["memory"]["memory_rank"] == 4


def test_a_run_saved_without_its_resolution_adapts_identically(run_dir):
    """A run_config.json from before resolutions were saved loads, and its prompt memory (resolved
    afresh) equals the saved-resolution one to the bit."""
    from memdlm.runs.run import Run

    run = Run.load(run_dir)
    legacy = Run(run.model, run.tokenizer, run_dir, {k: v for k, v in run.config.items() if k != "memory_resolved"})
    assert legacy.resolved_memory is None and legacy.memory_args == run.memory_args
    prompts = [run.tokenizer("The value of red fox is 1234.", add_special_tokens=False)["input_ids"],
               run.tokenizer("The value of blue owl is 77. The value of grey cat", add_special_tokens=False)["input_ids"]]
    new, old = run.memory().adapt(prompts, [3, 4]), legacy.memory().adapt(prompts, [3, 4])
    assert [t.name for t in new.targets] == [t.name for t in old.targets]
    assert all(torch.equal(a, b) for a, b in zip(new.params(), old.params()))


def test_overrides_resolve_afresh_only_what_they_change(run_dir):
    """An override of the scope re-chooses the targets (fewer without attention), of the rank
    re-derives the scale from the run's alpha rule; a training-only name is refused, never ignored;
    a saved target the model lacks is an error naming it."""
    from memdlm.errors import ConfigError
    from memdlm.runs.run import Run

    run = Run.load(run_dir)
    ffn = run.memory(memory_scope="ffn")
    assert len(ffn.loop.targets) < len(run.memory().loop.targets)
    assert not any("attn" in t.name for t in ffn.loop.targets) and ffn.loop.rank == 4
    assert run.memory(memory_scope="ffn_attn").resolved == run.resolved_memory  # equal to the run's: kept
    ranked = run.memory(memory_rank=2)
    assert (ranked.loop.rank, ranked.loop.scale, ranked.resolved.targets) == (2, 2.0, run.resolved_memory.targets)
    with pytest.raises(ValueError, match="training-only"):
        run.memory(memory_mode="per_sample")
    broken = dict(run.config, memory_resolved={**run.config["memory_resolved"], "targets": ["no.such.module"]})
    with pytest.raises(ConfigError, match="no.such.module"):
        Run(run.model, run.tokenizer, run_dir, broken).memory()


@pytest.mark.slow
def test_generate_memory(run_dir, direct, spy, capsys):
    from memdlm.cli import main
    from memdlm.sampling.sampler import SamplerConfig

    prompts = ["The value of red fox is 1234. Question: what is the value of red fox? Answer:",
               "The value of blue owl is 77. The value of grey cat is 5. Question: what is the value of grey cat?"]
    argv = ["generate", "--model", str(run_dir), "--memory", "--json", "--max-new-tokens", "4", "--steps", "4"]
    for p in prompts:
        argv += ["--prompt", p]
    assert main(argv) == 0
    texts = [r["response"] for r in json.loads(capsys.readouterr().out)]
    assert_adapted_as_trained(spy, direct)
    assert texts == direct_generate(direct, prompts, SamplerConfig(max_new_tokens=4, steps=4), [0, 1])


@pytest.mark.slow
def test_eval_memory_runs(run_dir, direct, spy, tmp_path):
    from memdlm.cli import main
    from memdlm.eval.heldout import HELDOUT_SEED, answer_sampler_config, heldout_samples
    from memdlm.eval.suite import TRAIN_AND_INFERENCE

    out = tmp_path / "eval"
    assert main(["eval", "--memdlm", str(run_dir), "--run", f"mem={run_dir}:memory", "--tasks", "kv",
                 "--lengths", str(LENGTH), "--items", "2", "--batch-size", "2", "--no-progress",
                 "--output-dir", str(out)]) == 0
    data = json.loads((out / "suite.json").read_text())
    adapted = ("mem", TRAIN_AND_INFERENCE)
    assert data["memory_args"] == {name: asdict(ADAPTED) for name in adapted}
    assert data["memory_overrides"] == {name: {} for name in adapted}
    assert_adapted_as_trained(spy, direct)
    samples = heldout_samples(direct.tok, ["kv"], LENGTH, 2, HELDOUT_SEED)
    want = direct_generate(direct, [s.prompt for s in samples], answer_sampler_config(direct.tok, samples), [0, 1])
    results = data["cells"][0]["results"]
    assert [results[name]["predictions"] for name in adapted] == [want, want]


@pytest.mark.slow
def test_exposure_bias_memory_run(run_dir, direct, spy, tmp_path):
    from memdlm.cli import main

    out = tmp_path / "eb"
    assert main(["exposure-bias", "--run", f"m={run_dir}:memory", "--items", "2", "--steps", "2",
                 "--length", str(LENGTH), "--task", "kv", "--bootstrap", "0", "--output-dir", str(out)]) == 0
    meta = json.loads((out / "exposure_bias.json").read_text())["runs"]["m"]["meta"]
    assert meta["memory_args"] == asdict(ADAPTED) and meta["memory_overrides"] == {}
    assert_adapted_as_trained(spy, direct)


@pytest.mark.slow
def test_lm_eval_model_with_memory(run_dir, direct, spy):
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance

    from memdlm.eval.lm_eval_model import MemdlmLM, request_seed

    lm = MemdlmLM(str(run_dir), memory=True, mc_samples=2, batch_size=4, device="cpu", greedy_check="none")
    assert lm.memory.settings == ADAPTED and lm.memory_record["memory_args"] == asdict(ADAPTED)
    context = "The value of red fox is 1234. Question: what is the value of red fox? Answer:"
    lm.loglikelihood([Instance("loglikelihood", {}, (context, " 1234"), 0)])
    (text,) = lm.generate_until([Instance("generate_until", {}, (context, {"until": [], "max_gen_toks": 4}), 0)])
    assert_adapted_as_trained(spy, direct)
    config = lm.sampler_config(4)
    assert text == direct_generate(direct, [lm._prompt_ids(context, 4)], config, [request_seed(lm.seed, context)])[0]


@pytest.mark.slow
def test_probe_adapts_every_arm_with_the_one_adaptation(run_dir, direct, spy, tmp_path):
    """The reproduction's probe adapts every arm with the preset's one inference-time
    adaptation (issue 22: the same settings for Standard and MemDLM, whatever they trained
    with), and equals a direct adaptation with those settings."""
    from memdlm.reproduce.pipeline import Reproduction
    from memdlm.reproduce.presets import SMOKE

    preset = replace(SMOKE, probe_items=2, probe_length=LENGTH, probe_task="mqar")
    repro = Reproduction(preset, tmp_path, progress=False)
    result = repro.probe(0, {"standard": run_dir, "memdlm": run_dir}, {"rank": 4, "inner_lr": 1.0})
    overrides = repro.memory_overrides()
    assert overrides["inner_lr"] == preset.adaptation.inner_lr and "memory_mode" not in overrides
    settings = replace(ADAPTED, **overrides)  # the run's settings with the adaptation's on top
    for label in ("Standard", "MemDLM"):
        record = result["memory"][label]
        assert (record["memory_args"], record["memory_overrides"]) == (asdict(settings), overrides)
    assert_adapted_as_trained(spy, direct, settings)
    for cell in result["results"]["MemDLM"].values():  # log p and rank of each item's answer
        assert len(cell["logp"]) == len(cell["rank"]) == 2 and all(lp <= 0 for lp in cell["logp"])


def without_positive_control(path: Path) -> str:
    """``path``'s source, less the probe's positive control: a memory deliberately unlike any
    run's (both layers, the answer as the only target; issue 22), the one exception."""
    import ast

    text = path.read_text()
    if path.name != "probe.py":
        return text
    (control,) = [n for n in ast.parse(text).body
                  if isinstance(n, ast.FunctionDef) and n.name == "write_control_memory"]
    return text.replace(ast.get_source_segment(text, control), "")


def test_inference_paths_take_memory_from_the_run_only():
    """No inference module builds memory settings or an adaptation loop of its own, and the
    adaptation ratio's default is written once (MemoryArguments)."""
    root = Path(__file__).resolve().parents[1]
    inference = [*(root / "src/memdlm/eval").glob("*.py"), *(root / "src/memdlm/commands").glob("*.py"),
                 *(root / "src/memdlm/reproduce").glob("*.py"), root / "src/memdlm/sampling/generation.py",
                 root / "benchmarks/eval_throughput.py", root / "benchmarks/sampling.py"]
    for path in inference:
        # import lines name what a module may use; the uses are what count
        text = "\n".join(line for line in without_positive_control(path).splitlines()
                         if not line.startswith(("from ", "import ")))
        for needle in ("MemoryArguments(", "AdaptationArguments(", "build_inner_loop", "PromptMemory(",
                       "adapt_on_prompts("):
            assert needle not in text, f"{path.relative_to(root)} has {needle}"
    for path in [*(root / "src").rglob("*.py"), *(root / "benchmarks").glob("*.py")]:
        if path.name != "config.py" or path.parent.name != "memory":
            assert "default=0.2" not in path.read_text().replace(" ", ""), path
