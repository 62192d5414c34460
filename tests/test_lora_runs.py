"""LoRA runs are usable wherever a full run is: ``load_model(RUN)`` gives base + adapter
(or the merged copy), so generate / eval / exposure-bias / lm-eval / reproduce take them.

One LoRA run on the tiny default (2 layers, 3 steps at a large learning rate, so the
adapter moves) is trained once per module (about 3 s).
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from memdlm.cli import main
from memdlm.config import ModelArguments
from memdlm.errors import ConfigError
from memdlm.backbones.modeling import build_tiny_model, forward_logits, load_model

torch.set_num_threads(1)

TRAIN = ["train", "--use-lora", "--lora-r", "4", "--tiny-layers", "2", "--max-steps", "3",
         "--learning-rate", "1e-2", "--per-device-train-batch-size", "2", "--train-lengths", "96",
         "--heldout-items", "0", "--num-eval-samples", "0", "--save-strategy", "no",
         "--disable-tqdm", "true", "--seed", "3"]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("lora") / "run"
    assert main([*TRAIN, "--output-dir", str(run)]) == 0
    return run


def _in_memory_twin(tok, run):
    """The trained model rebuilt in memory: the tiny default from the run's seed, LoRA-wrapped,
    the saved adapter weights set -- no file of the run's base is read."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from memdlm.training.train import wrap_lora

    model = wrap_lora(build_tiny_model(tok, seed=3, num_hidden_layers=2),
                      ModelArguments(use_lora=True, lora_r=4))
    set_peft_model_state_dict(model, load_file(str(run / "adapter_model.safetensors")))
    return model.eval()


def test_run_records_its_base(lora_run):
    record = json.loads((lora_run / "lora_base.json").read_text())
    assert record == {"base": "base", "built_tiny_default": True, "trust_remote_code": False}
    assert (lora_run / "base" / "config.json").is_file() and not (lora_run / "config.json").exists()


def test_loaded_run_equals_base_plus_adapter_in_memory(tok, lora_run):
    from peft import PeftModel

    loaded = load_model(str(lora_run)).eval()
    assert isinstance(loaded, PeftModel)
    twin = _in_memory_twin(tok, lora_run)
    ids = torch.randint(10, len(tok), (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = forward_logits(loaded, ids)
        assert torch.equal(got, forward_logits(twin, ids))
        with loaded.disable_adapter():  # the adapter was trained: it changes the logits
            assert not torch.allclose(got, forward_logits(loaded, ids), atol=1e-4)


def test_generate_and_eval_take_the_run(lora_run, tmp_path, capsys):
    from memdlm.sampling.generation import generate
    from memdlm.runs.run import Run
    from memdlm.sampling.sampler import SamplerConfig

    capsys.readouterr()
    loaded = Run.load(lora_run)
    prompt = "The value of red fox is"
    for extra, memory in (([], None), (["--memory"], loaded.memory())):
        assert main(["generate", "--model", str(lora_run), "--prompt", prompt,
                     "--max-new-tokens", "6", "--steps", "3", "--json", *extra]) == 0
        out = json.loads(capsys.readouterr().out)
        # the CLI answers what the Python API answers with the run's base + adapter (and memory)
        expected = generate(loaded.model, loaded.tokenizer, [prompt], SamplerConfig(max_new_tokens=6, steps=3),
                            memory=memory)
        # the rows also record device, dtype, context and sampler (issue 26); the answers are what count
        assert [{k: row[k] for k in ("prompt", "response")} for row in out] == [{"prompt": prompt, "response": expected[0]}]
    assert main(["eval", "--run", f"L={lora_run}", "--run", f"L+mem={lora_run}:memory", "--tasks", "kv",
                 "--lengths", "96", "--items", "2", "--output-dir", str(tmp_path / "eval"),
                 "--no-progress"]) == 0
    suite = json.loads((tmp_path / "eval" / "suite.json").read_text())
    assert [r["name"] for r in suite["runs"]] == ["L", "L+mem"] and len(suite["cells"]) == 1


def test_exposure_bias_takes_the_run(lora_run, tmp_path):
    assert main(["exposure-bias", "--run", f"L={lora_run}", "--output-dir", str(tmp_path), "--items", "2",
                 "--length", "96", "--task", "kv", "--steps", "2", "--bootstrap", "0"]) == 0
    assert "L" in json.loads((tmp_path / "exposure_bias.json").read_text())["runs"]


def test_a_run_without_its_base_says_where_it_looked(lora_run, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(lora_run, moved, ignore=shutil.ignore_patterns("base"))
    with pytest.raises(ConfigError, match=r"needs its base model at .*moved/base"):
        load_model(str(moved))
    (moved / "lora_base.json").unlink()
    with pytest.raises(ConfigError, match="no lora_base.json"):
        load_model(str(moved))


def test_merged_copy_is_loaded_instead(tok, tmp_path):
    run = tmp_path / "run"
    assert main([*TRAIN, "--output-dir", str(run), "--save-merged-lora", "true"]) == 0
    loaded = load_model(str(run)).eval()
    assert type(loaded).__name__ == "Gemma3ForCausalLM"  # a plain model: no adapter layers left
    ids = torch.randint(10, len(tok), (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(forward_logits(loaded, ids), forward_logits(_in_memory_twin(tok, run), ids),
                                   atol=1e-5, rtol=1e-5)


def test_adapter_init_follows_the_run_seed(tok, tmp_path):
    """A LoRA run on a saved model draws its adapter's random half from the run's seed, not
    from whatever the global generator holds: two runs of one seed start from the same
    adapter (the inner-lr-0 control compares Standard and MemDLM runs step by step)."""
    from memdlm.training.train import build_model_and_tokenizer

    base = tmp_path / "base"
    build_tiny_model(tok, seed=0, num_hidden_layers=1).save_pretrained(base)
    tok.save_pretrained(base)
    args = ModelArguments(model=str(base), use_lora=True, lora_r=4)
    adapters = []
    for noise in (1, 2):
        torch.manual_seed(noise)
        model, _ = build_model_and_tokenizer(args, seed=7)
        adapters.append({n: p.detach().clone() for n, p in model.named_parameters() if "lora_A" in n})
    assert adapters[0] and all(torch.equal(adapters[0][n], adapters[1][n]) for n in adapters[0])
