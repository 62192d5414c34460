"""Remote-code DLMs written for transformers 4.x, loaded, trained and adapted under
transformers 5 -- on tiny look-alikes written by ``tests/lookalikes.py`` (no hub).

Each contract the real families break is reproduced by a look-alike and checked with
equalities against the in-memory model the checkpoint was written from.
"""

from __future__ import annotations

import contextlib
import copy
import json
import sys
from pathlib import Path

import pytest
import torch

from memdlm.backbones.bidirectional import (
    CausalAttentionError,
    ensure_bidirectional,
    key_padding_mask_4d,
    position_zero_sees_last_token,
)
from memdlm.cli import main
from memdlm.memory.fast_weights import FastWeights
from memdlm.memory.targets import find_targets
from memdlm.backbones.modeling import forward_logits, load_model
from memdlm.backbones.remote_code import RemoteCodeError, reset_rotary_buffers

sys.path.insert(0, str(Path(__file__).parent))
from lookalikes import write_family  # noqa: E402

torch.set_num_threads(1)
FAMILIES = ["dream", "llada", "llada_moe", "llada2"]
WITH_ROTARY_BUFFER = ["dream", "llada_moe", "llada2"]
MOE = ["llada_moe", "llada2"]


@pytest.fixture(scope="module")
def written(tok, tmp_path_factory):
    """family -> (checkpoint directory, the in-memory model it was written from)."""
    root = tmp_path_factory.mktemp("remote")
    return {f: write_family(f, root, tok) for f in FAMILIES}


def _batch(tok, padded=True, b=2, length=12):
    ids = torch.randint(10, len(tok), (b, length), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    if padded:
        mask[0, -3:] = 0
    return ids, mask


@pytest.mark.parametrize("family", FAMILIES)
def test_loads_with_the_logits_of_the_model_it_was_written_from(tok, written, family):
    path, reference = written[family]
    loaded = load_model(path, trust_remote_code=True).eval()
    assert type(loaded).__name__ == type(reference).__name__
    ids, mask = _batch(tok, padded=False)
    with torch.no_grad():
        assert torch.equal(forward_logits(loaded, ids), forward_logits(reference, ids))


@pytest.mark.parametrize("family", WITH_ROTARY_BUFFER)
def test_rotary_buffers_are_recomputed_and_two_loads_agree(tok, written, family):
    path, reference = written[family]
    first, second = (load_model(path, trust_remote_code=True).eval() for _ in range(2))
    ids, _ = _batch(tok, padded=False)
    with torch.no_grad():
        assert torch.equal(forward_logits(first, ids), forward_logits(second, ids))
    expected = dict(reference.named_buffers())
    rotary = [n for n, _ in first.named_buffers() if n.endswith("inv_freq")]
    assert rotary
    for name, buffer in first.named_buffers():
        if name in rotary:
            buffer.fill_(7.0)  # what an uninitialised buffer may hold
    assert reset_rotary_buffers(first) == rotary
    for name in rotary:
        assert torch.equal(dict(first.named_buffers())[name], expected[name])


def test_tied_list_becomes_a_tied_head_that_saves_and_reloads(tok, written, tmp_path):
    path, _ = written["llada2"]  # _tied_weights_keys = ["lm_head.weight"], tie_word_embeddings on
    loaded = load_model(path, trust_remote_code=True).eval()
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert loaded.all_tied_weights_keys == {"lm_head.weight": "model.embed_tokens.weight"}
    loaded.save_pretrained(tmp_path / "again")  # a list here fails: 'list' has no attribute 'keys'
    tok.save_pretrained(tmp_path / "again")
    again = load_model(str(tmp_path / "again"), trust_remote_code=True).eval()
    ids, _ = _batch(tok, padded=False)
    with torch.no_grad():
        assert torch.equal(forward_logits(again, ids), forward_logits(loaded, ids))


def test_tied_list_class_built_directly_is_tied_as_in_4x(written):
    """Outside from_pretrained (which ties after loading), the patched class ties when built."""
    loaded = load_model(written["llada2"][0], trust_remote_code=True)
    built = type(loaded)(loaded.config)
    assert built.lm_head.weight is built.model.embed_tokens.weight


def test_untied_list_and_missing_post_init_meet_the_contract(written, tmp_path):
    dream = load_model(written["dream"][0], trust_remote_code=True)
    assert dream.all_tied_weights_keys == {}  # listed, but the config does not tie
    dream.save_pretrained(tmp_path / "dream")
    llada = load_model(written["llada"][0], trust_remote_code=True)  # never calls post_init
    assert llada.all_tied_weights_keys == {}


def test_automodel_only_auto_map_gets_the_model_with_its_head(written):
    config = json.loads((Path(written["dream"][0]) / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel"}
    assert load_model(written["dream"][0], trust_remote_code=True).get_output_embeddings() is not None


# --- constructs of the real files (docs/BACKBONES.md, "construct found in real remote code") ----
def test_an_import_memdlm_cannot_provide_names_the_file_the_line_and_the_fix(tok, tmp_path):
    path, _ = write_family("broken", tmp_path, tok)
    with pytest.raises(RemoteCodeError, match=r"modeling_broken\.py line 3 \(`from transformers\.pytorch_utils import "
                       r"find_pruneable_heads_and_indices`\).*not in this transformers.*edit that line"):
        load_model(path, trust_remote_code=True)


def test_a_removed_module_is_named_with_the_line_and_its_fix(tok, tmp_path, monkeypatch):
    """LLaDA2 / LLaDA-MoE import transformers.modeling_attn_mask_utils (deprecated in 5.25, so
    removed here as a later 5.x may do)."""
    path, _ = write_family("llada2", tmp_path, tok)
    monkeypatch.setitem(sys.modules, "transformers.modeling_attn_mask_utils", None)
    with pytest.raises(RemoteCodeError, match=r"modeling_llada2\.py line 1 .*imports transformers\."
                       r"modeling_attn_mask_utils, but .*BACKBONES"):
        load_model(path, trust_remote_code=True)


def test_is_torch_fx_available_is_provided_while_the_code_imports_only(written):
    import transformers.utils
    import transformers.utils.import_utils

    loaded = load_model(written["llada2"][0], trust_remote_code=True)  # imports and calls it at module level
    assert sys.modules[type(loaded).__module__].is_torch_fx_available() is True
    assert not hasattr(transformers.utils.import_utils, "is_torch_fx_available")  # removed again
    assert not hasattr(transformers.utils, "is_torch_fx_available")


@pytest.mark.parametrize("family", WITH_ROTARY_BUFFER)
def test_rope_default_is_given_to_the_models_own_module_only(written, family):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from memdlm.backbones.remote_code import default_rope

    loaded = load_model(written[family][0], trust_remote_code=True)
    assert sys.modules[type(loaded).__module__].ROPE_INIT_FUNCTIONS["default"] is default_rope
    assert "default" not in ROPE_INIT_FUNCTIONS  # transformers' own table is not touched
    head_dim = loaded.config.hidden_size // loaded.config.num_attention_heads  # 8: 4 frequencies
    by_hand = torch.tensor([loaded.config.rope_theta ** (-i / 4) for i in range(4)])
    torch.testing.assert_close(loaded.model.rotary_emb.inv_freq, by_hand, atol=0, rtol=1e-6)
    assert head_dim == 8


def test_default_rope_takes_base_and_dim_from_kwargs_or_the_config():
    from types import SimpleNamespace

    from memdlm.backbones.remote_code import default_rope

    inv, scaling = default_rope(None, None, base=100.0, dim=4)
    assert scaling == 1.0 and torch.equal(inv, torch.tensor([1.0, 0.1]))
    config = SimpleNamespace(rope_theta=10000.0, hidden_size=64, num_attention_heads=4, partial_rotary_factor=0.5)
    inv, _ = default_rope(config)  # head 16, half of it rotated: dim 8
    torch.testing.assert_close(inv, torch.tensor([10000.0 ** (-i / 4) for i in range(4)]), atol=0, rtol=1e-6)


def test_a_tie_weights_override_without_kwargs_is_called_without_them(written):
    loaded = load_model(written["llada"][0], trust_remote_code=True)
    calls = loaded.tie_calls  # transformers 5 called it while loading, with recompute_mapping=False
    assert calls >= 1
    loaded.tie_weights(missing_keys=set(), recompute_mapping=True)
    assert loaded.tie_calls == calls + 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="the fix applies only where CUDA is missing")
@pytest.mark.parametrize("init_device", ["cuda", "cpu"])
def test_layers_the_code_builds_on_cuda_are_built_on_the_cpu_without_cuda(tok, written, tmp_path, init_device):
    """dllm's LLaDA file hard-codes init_device = "cuda"; the hub's copy says "cpu". Both load,
    on the CPU, with the logits of the reference (built on the CPU)."""
    import shutil

    path, reference = written["llada"]
    if init_device == "cpu":  # the hub's copy of the file
        shutil.copytree(path, tmp_path / "hub")
        code = tmp_path / "hub" / "modeling_llada.py"
        code.write_text(code.read_text().replace('INIT_DEVICE = "cuda"', 'INIT_DEVICE = "cpu"'))
        path = str(tmp_path / "hub")
    loaded = load_model(path, trust_remote_code=True).eval()
    assert sys.modules[type(loaded).__module__].INIT_DEVICE == init_device
    assert {p.device.type for p in loaded.parameters()} == {"cpu"}
    ids, _ = _batch(tok, padded=False)
    with torch.no_grad():
        assert torch.equal(forward_logits(loaded, ids), forward_logits(reference, ids))


def test_device_redirect_rewrites_cuda_only_and_only_inside_the_block():
    from memdlm.backbones.remote_code import _DevicesOnCpu

    with _DevicesOnCpu() as mode:
        made = [torch.zeros(2, device="cuda"), torch.ones(2, device=torch.device("cuda", 0)),
                torch.arange(3).to("cuda"), torch.empty(1, device="meta")]
    assert [t.device.type for t in made] == ["cpu", "cpu", "cpu", "meta"] and mode.redirected == 3


def test_a_config_mask_id_unlike_the_tokenizers(tok, written, caplog):
    """LLaDA-MoE's config names another mask id than its tokenizer: memdlm masks with the
    tokenizer's (as dllm does), writes it into the config and says so."""
    from memdlm.runs.run import Run

    path = written["llada_moe"][0]
    assert json.loads((Path(path) / "config.json").read_text())["mask_token_id"] == tok.mask_token_id + 7
    with caplog.at_level("WARNING"):
        run = Run.load(path, trust_remote_code=True)
    assert run.model.config.mask_token_id == tok.mask_token_id
    assert f"config.json has mask_token_id {tok.mask_token_id + 7}" in caplog.text and "LLaDA-MoE" in caplog.text


def test_a_config_mask_id_unlike_the_tokenizers_is_refused_outside_the_dlm_families(tok, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from memdlm.errors import ConfigError
    from memdlm.runs.run import Run

    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=len(tok), mask_token_id=tok.mask_token_id + 1)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match=rf"mask_token_id {tok.mask_token_id + 1} but the tokenizer's mask token "
                       rf".* is id {tok.mask_token_id}.*set mask_token_id to {tok.mask_token_id} in config.json"):
        Run.load(str(tmp_path))


def test_ffn_attn_targets_llada2s_attention_and_a_table_that_misses_it_is_an_error(written, monkeypatch):
    from dataclasses import replace

    from memdlm.backbones.families import FAMILIES, LLAMA_ATTN
    from memdlm.errors import ConfigError

    loaded = load_model(written["llada2"][0], trust_remote_code=True)
    added = {t.name for t in find_targets(loaded, scope="ffn_attn")} - {t.name for t in find_targets(loaded)}
    assert added == {"model.layers.1.attention.query_key_value", "model.layers.1.attention.dense"}
    monkeypatch.setitem(FAMILIES, "llada2_moe", replace(FAMILIES["llada2_moe"], attn=LLAMA_ATTN))
    with pytest.raises(ConfigError, match=r"ffn_attn selects no attention module of LLaDA2LookalikeModelLM \(family "
                       r"LLaDA2, looking for q_proj.*\); its linear modules in layers >= 1: "
                       r"attention\.query_key_value, attention\.dense, mlp\.experts\.N\.gate_proj"):
        find_targets(loaded, scope="ffn_attn")
    assert find_targets(loaded)  # scope ffn names no attention module: still fine


# --- bidirectional in padded batches ----------------------------------------------------------
def test_padded_2d_mask_turned_causal_is_fixed_with_a_4d_key_padding_mask(tok, written):
    path, reference = written["llada2"]
    assert position_zero_sees_last_token(reference, padded=False)
    assert not position_zero_sees_last_token(reference, padded=True)  # the family's own behaviour
    loaded = load_model(path, trust_remote_code=True).eval()
    assert position_zero_sees_last_token(loaded, padded=True)
    ids, mask = _batch(tok)
    with torch.no_grad():
        got = forward_logits(loaded, ids, mask)
        expected = reference(input_ids=ids, attention_mask=key_padding_mask_4d(mask)).logits
    real = mask.bool()
    assert torch.equal(got[real], expected[real])


def test_a_deep_copy_of_a_wrapped_model_runs_its_own_weights(tok, written):
    """The 4-D mask wrapper is bound to its model: a deep copy's forward must run the copy
    (a closure over the original made the copy's logits the original's, silently)."""
    import copy

    loaded = load_model(written["llada2"][0], trust_remote_code=True).eval()
    twin = copy.deepcopy(loaded)
    with torch.no_grad():
        twin.get_input_embeddings().weight.mul_(2.0)
    ids, mask = _batch(tok)
    with torch.no_grad():
        mine, theirs = forward_logits(loaded, ids, mask), forward_logits(twin, ids, mask)
    real = mask.bool()
    assert not torch.allclose(mine[real], theirs[real])
    assert getattr(twin.forward, "__self__", None) is twin


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_is_bidirectional_padded_and_unpadded(written, family):
    loaded = load_model(written[family][0], trust_remote_code=True)
    assert position_zero_sees_last_token(loaded, padded=False)
    assert position_zero_sees_last_token(loaded, padded=True)


def test_a_causal_model_is_refused(tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=len(tok))
    with pytest.raises(CausalAttentionError, match="ignores the last token"):
        ensure_bidirectional(LlamaForCausalLM(config))


# --- fast weights on list-of-MLP experts --------------------------------------------------------
def _moe_block(model):
    return model.model.layers[1].mlp, "model.layers.1.mlp"


def _random_memory(model, slots, seed=0):
    targets = find_targets(model)
    fresh = FastWeights.fresh(targets, rank=3, scale=2.0, dense=False, slot_seeds=list(range(slots)), device="cpu")
    g = torch.Generator().manual_seed(seed)
    return fresh.replace([torch.randn(p.shape, generator=g) * 0.3 for p in fresh.params()])


def _merged_block(block, prefix, memory, slot):
    """The block with ``slot``'s deltas merged into every targeted linear layer in it."""
    merged = copy.deepcopy(block)
    with torch.no_grad():
        for t, (a, b) in zip(memory.targets, memory.tensors):
            if t.name.startswith(prefix + "."):
                merged.get_submodule(t.name[len(prefix) + 1:]).weight += memory.scale * b[slot] @ a[slot]
    return merged


@pytest.mark.parametrize("family", MOE)
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("slots", [2, 1])
def test_each_routed_row_gets_its_own_samples_delta(written, family, mode, slots):
    """Hooked MoE block on a batch == each sample alone through the block with its own slot's
    deltas merged into the expert weights (per-sample: 2 slots; shared: 1)."""
    _, reference = written[family]
    model = copy.deepcopy(reference).train(mode == "train")
    block, prefix = _moe_block(model)
    assert sum(t.block is block for t in find_targets(model)) == 4 * 3  # 4 experts x 3 projections
    memory = _random_memory(model, slots)
    hidden = torch.randn(3 if slots == 1 else 2, 7, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        with memory.active():
            got = block(hidden)
        for s in range(hidden.shape[0]):
            expected = _merged_block(block, prefix, memory, min(s, slots - 1))(hidden[s:s + 1])
            torch.testing.assert_close(got[s:s + 1], expected, atol=1e-5, rtol=1e-5)
        bare = block(hidden)
    assert not torch.allclose(got, bare)


@pytest.mark.parametrize("family", MOE)
def test_duplicate_rows_in_two_samples_take_their_own_slots(written, family):
    """The same sample twice: bit-identical rows, two slots. LLaDA2's eval path orders rows by an
    unstable argsort (unstable on the CPU from 17 elements on: 2 x 16 tokens x top-2 here)."""
    _, reference = written[family]
    model = copy.deepcopy(reference).eval()
    block, prefix = _moe_block(model)
    memory = _random_memory(model, 2)
    one = torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(2))
    hidden = torch.cat([one, one])  # the same sample twice: bit-identical rows, two slots
    with torch.no_grad(), memory.active():
        got = block(hidden)
    with torch.no_grad():
        for s in range(2):
            torch.testing.assert_close(got[s:s + 1], _merged_block(block, prefix, memory, s)(one),
                                       atol=1e-5, rtol=1e-5)


def test_same_prompt_twice_in_one_batch_adapts_and_predicts_as_alone(tok, written):
    """LLaDA2, per-sample memory, eval path end to end: a batch holding one prompt twice gives
    each row exactly what the prompt gives alone with that row's seed (the same seed twice: two
    equal rows), through adaptation and the memory's forward."""
    from memdlm.memory.adapt import adapt_on_prompts
    from memdlm.memory.builder import ADAPTATION, build_inner_loop
    from memdlm.memory.config import AdaptationArguments

    _, reference = written["llada2"]
    model = copy.deepcopy(reference).eval()
    loop = build_inner_loop(model, AdaptationArguments(memory_layer_fraction=0.5), ADAPTATION,
                            mask_token_id=tok.mask_token_id)
    ids, _ = _batch(tok, padded=False, b=1, length=20)
    ones = torch.ones_like(ids)

    def rows(seeds):
        b = len(seeds)
        batch, mask = ids.expand(b, -1), ones.expand(b, -1)
        memory = adapt_on_prompts(loop, batch, mask, mask.bool(), 0.3, torch.tensor(seeds))
        with torch.no_grad(), memory.active():
            return forward_logits(model, batch, mask)

    alone = {seed: rows([seed]) for seed in (5, 6)}
    assert not torch.allclose(alone[5], alone[6])  # two seeds, two memories
    torch.testing.assert_close(rows([5, 6]), torch.cat([alone[5], alone[6]]), atol=2e-6, rtol=0)
    same = rows([5, 5])
    torch.testing.assert_close(same[0], same[1], atol=2e-6, rtol=0)
    torch.testing.assert_close(same[:1], alone[5], atol=2e-6, rtol=0)


def _adapt(model, tok):
    from memdlm.memory.adapt import adapt_on_prompts
    from memdlm.memory.builder import ADAPTATION, build_inner_loop
    from memdlm.memory.config import AdaptationArguments

    loop = build_inner_loop(model, AdaptationArguments(), ADAPTATION, mask_token_id=tok.mask_token_id)
    ids, mask = _batch(tok, length=16)
    prompt = mask.bool()
    return adapt_on_prompts(loop, ids, mask, prompt, 0.3, torch.tensor([5, 6]))


def test_eval_mode_adaptation_reaches_experts_run_under_no_grad(tok, written, caplog, monkeypatch):
    """LLaDA2's eval MoE path runs under torch.no_grad: adaptation still moves every routed
    expert that received tokens; without the fix they stay at zero and a warning says so."""
    _, reference = written["llada2"]
    model = copy.deepcopy(reference).eval()

    def routed_deltas(memory):
        return {t.name: float(b.abs().sum()) for t, (a, b) in zip(memory.targets, memory.tensors)
                if ".experts." in t.name}

    with caplog.at_level("WARNING"):
        moved = routed_deltas(_adapt(model, tok))
    assert "received no gradient" not in caplog.text
    assert sum(v > 0 for v in moved.values()) >= 6  # most experts got tokens, and all of those moved
    assert model.model.layers[1].mlp.training is False  # put back in eval mode
    monkeypatch.setattr("memdlm.memory.inner_loop.blocks_in_training_mode", lambda blocks: contextlib.nullcontext())
    caplog.clear()
    with caplog.at_level("WARNING"):
        frozen = routed_deltas(_adapt(model, tok))
    assert all(v == 0 for v in frozen.values())
    assert "ran but received no gradient during adaptation" in caplog.text


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", ["shared", "per_sample"])
def test_memdlm_step_on_each_family(tok, written, tmp_path, family, mode):
    from test_backbones import noised

    from memdlm.config import DiffusionArguments
    from memdlm.memory.config import MemoryArguments
    from memdlm.training.args import TrainConfig
    from memdlm.training.memdlm_trainer import MemDLMTrainer

    model = load_model(written[family][0], trust_remote_code=True).train()
    args = TrainConfig(output_dir=str(tmp_path), use_cpu=True, eval_strategy="no", disable_tqdm=True)
    trainer = MemDLMTrainer(model=model, args=args, diffusion_args=DiffusionArguments(),
                            mask_token_id=tok.mask_token_id, processing_class=tok,
                            memory_args=MemoryArguments(memory_mode=mode))
    loss = trainer.loss_on(model, noised(tok), training=True)
    metrics = trainer._read_metrics("train")
    assert torch.isfinite(loss) and metrics["memory/norm"][0] > 0 and metrics["memory/relative_change"][0] > 0


# --- end to end through the CLI: train (shared, per-sample), generate (+memory), LoRA -----------
TRAIN = ["--trust-remote-code", "--method", "memdlm", "--max-steps", "2", "--per-device-train-batch-size", "2",
         "--train-lengths", "80", "96", "--heldout-items", "0", "--num-eval-samples", "0",
         "--save-strategy", "no", "--disable-tqdm", "true", "--logging-steps", "1"]


def _train_and_generate(path, run, mode: str, capsys, *flags):
    """Two MemDLM steps of ``mode`` memory (the memory written, no step skipped), then
    generation with and without inference-time memory."""
    assert main(["train", "--model", str(path), "--memory-mode", mode, "--output-dir", str(run), *TRAIN,
                 *flags]) == 0
    logged = [h for h in json.loads((run / "log_history.json").read_text()) if "loss" in h]
    assert len(logged) == 2 and all(h["memory/norm"] > 0 and h["inner/skipped_nonfinite"] == 0 for h in logged)
    for extra in ([], ["--memory"]):
        _generate(run, capsys, *extra)


def _generate(run, capsys, *extra):
    capsys.readouterr()
    assert main(["generate", "--model", str(run), "--trust-remote-code", "--prompt", "The value of red fox is",
                 "--prompt", "Hi", "--max-new-tokens", "6", "--steps", "3", "--json", *extra]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["prompt"] for o in out] == ["The value of red fox is", "Hi"]


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_train_generate_and_lora_round_trip_from_the_cli(tok, written, tmp_path, capsys, family):
    from peft import PeftModel

    path = written[family][0]
    for mode in ("shared", "per_sample"):
        run = tmp_path / mode
        checkpointing = ["--gradient-checkpointing"] if mode == "per_sample" else []  # every family has it
        _train_and_generate(path, run, mode, capsys, *checkpointing)
    lora = tmp_path / "lora"
    assert main(["train", "--model", path, "--use-lora", "--lora-r", "4", "--learning-rate", "1e-2",
                 "--output-dir", str(lora), *TRAIN]) == 0
    record = json.loads((lora / "lora_base.json").read_text())
    assert record == {"base": str(Path(path).resolve()), "built_tiny_default": False, "trust_remote_code": True}
    loaded = load_model(str(lora), trust_remote_code=True).eval()
    assert isinstance(loaded, PeftModel)
    ids, _ = _batch(tok, padded=False)
    with torch.no_grad():
        with loaded.disable_adapter():
            base = forward_logits(loaded, ids)
        assert torch.equal(base, forward_logits(load_model(path, trust_remote_code=True).eval(), ids))
        assert not torch.allclose(forward_logits(loaded, ids), base, atol=1e-4)
    for extra in ([], ["--memory"]):
        _generate(lora, capsys, *extra)
