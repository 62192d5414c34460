"""The checks of tests/test_remote_code.py, run on the families' *real* modeling files.

Set ``MEMDLM_REAL_FAMILIES_DIR`` to a directory whose subdirectories are checkpoints of
remote-code DLMs as a user has them (the model's unmodified ``*.py`` files, ``config.json``
with ``auto_map``, weights, a tokenizer with a mask token); skipped otherwise. Nothing here
is downloaded: the files are the user's (docs/BACKBONES.md, "Checking real family files",
says how tiny random ones were built from the public repositories during development).

Per directory: it loads; its logits equal those of the class built directly (eager
construction + ``load_state_dict``, no ``from_pretrained``), rotary ``inv_freq`` buffers equal
the default rope written out here; it attends bidirectionally in padded and unpadded
batches; the model's and the tokenizer's mask ids agree after loading; and through the CLI:
two MemDLM training steps with shared and with per-sample memory, ``generate`` with and
without ``--memory``, a LoRA run whose adapter-off logits equal the base's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from memdlm.backbones.bidirectional import position_zero_sees_last_token
from memdlm.cli import main
from memdlm.backbones.modeling import forward_logits, load_model

sys.path.insert(0, str(Path(__file__).parent))
from test_remote_code import TRAIN, _generate, _train_and_generate  # noqa: E402

ROOT = os.environ.get("MEMDLM_REAL_FAMILIES_DIR")
DIRS = sorted(str(p.parent) for p in Path(ROOT).glob("*/config.json")) if ROOT else []
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not ROOT, reason="MEMDLM_REAL_FAMILIES_DIR names no directory of real family files")]
torch.set_num_threads(1)


def _ids(vocab: int, b: int = 2, length: int = 12) -> torch.Tensor:
    return torch.randint(10, vocab, (b, length), generator=torch.Generator().manual_seed(0))


def direct_build(path: str):
    """The class built directly from its own code (memdlm's class-level fixes applied, as
    they must be for it to build at all) with the checkpoint's tensors loaded by
    ``load_state_dict``: no meta device, no ``from_pretrained``."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    from memdlm.backbones.remote_code import adapt_remote_class, import_remote_class, remote_class_reference

    config = AutoConfig.from_pretrained(path, trust_remote_code=True, local_files_only=True)
    cls = import_remote_class(path, remote_class_reference(config)[1])
    adapt_remote_class(cls)
    model = cls(config)
    state = load_file(str(Path(path) / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected
    assert set(missing) <= set(getattr(model, "all_tied_weights_keys", None) or {})
    return model.eval()


def by_hand_inv_freq(theta: float, dim: int) -> torch.Tensor:
    return torch.tensor([theta ** (-2 * i / dim) for i in range(dim // 2)])


@pytest.fixture(params=DIRS or ["none"], ids=lambda p: Path(p).name)
def family_dir(request):
    return request.param


def test_loads_with_the_logits_of_a_direct_build_and_the_default_rope(family_dir):
    loaded = load_model(family_dir, trust_remote_code=True).eval()
    direct = direct_build(family_dir)
    ids = _ids(loaded.get_input_embeddings().num_embeddings)
    with torch.no_grad():
        assert torch.equal(forward_logits(loaded, ids), forward_logits(direct, ids))
    theta = getattr(loaded.config, "rope_theta", None)
    for name, buffer in loaded.named_buffers():
        if name.endswith("inv_freq"):
            torch.testing.assert_close(buffer, by_hand_inv_freq(theta, 2 * buffer.numel()), atol=0, rtol=1e-6)


def test_bidirectional_padded_and_unpadded(family_dir):
    loaded = load_model(family_dir, trust_remote_code=True)
    assert position_zero_sees_last_token(loaded, padded=False)
    assert position_zero_sees_last_token(loaded, padded=True)


def test_split_forward_equals_the_full_forward(family_dir):
    """The real code's layers below / from each k, as two calls of its forward (padded batch)."""
    from memdlm.backbones.checkpointing import transformer_blocks
    from memdlm.backbones.split_forward import lower, supports_split, upper

    loaded = load_model(family_dir, trust_remote_code=True).eval()
    assert supports_split(loaded)
    ids = _ids(loaded.get_input_embeddings().num_embeddings)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    with torch.no_grad():
        full = forward_logits(loaded, ids, mask)
        for k in range(len(transformer_blocks(loaded))):
            split = upper(loaded, lower(loaded, ids, mask, k), mask, k)
            torch.testing.assert_close(split, full, atol=1e-5, rtol=1e-5)


def test_mask_ids_agree_after_loading(family_dir):
    from memdlm.runs.run import Run

    run = Run.load(family_dir, trust_remote_code=True)
    assert getattr(run.model.config, "mask_token_id", None) in (None, run.tokenizer.mask_token_id)


def test_train_shared_and_per_sample_generate_and_lora_round_trip(family_dir, tmp_path, capsys):
    from peft import PeftModel

    for mode in ("shared", "per_sample"):
        run = tmp_path / mode
        _train_and_generate(family_dir, run, mode, capsys)
    lora = tmp_path / "lora"
    assert main(["train", "--model", family_dir, "--use-lora", "--lora-r", "4", "--learning-rate", "1e-2",
                 "--output-dir", str(lora), *TRAIN]) == 0
    loaded = load_model(str(lora), trust_remote_code=True).eval()
    assert isinstance(loaded, PeftModel)
    ids = _ids(loaded.get_input_embeddings().num_embeddings)
    with torch.no_grad():
        with loaded.disable_adapter():
            base = forward_logits(loaded, ids)
        assert torch.equal(base, forward_logits(load_model(family_dir, trust_remote_code=True).eval(), ids))
        assert not torch.allclose(forward_logits(loaded, ids), base, atol=1e-4)
    for extra in ([], ["--memory"]):
        _generate(lora, capsys, *extra)


def test_block_cache_exact_at_refresh_or_refused_with_the_reason(family_dir):
    """Families with a cache path: refreshing at every step equals no cache, with and without
    memory, and a cached step runs; the others fall back to no cache, saying why in one line."""
    from memdlm.runs.run import Run
    from memdlm.sampling.block_cache import cache_unsupported
    from memdlm.sampling.sampler import Sampler, SamplerConfig

    run = Run.load(family_dir, trust_remote_code=True)
    model, tok = run.model.eval(), run.tokenizer
    prompts = ["The cat sat on", "Hello", "Numbers: 1 2 3 4 5 6 7"]
    cfg = SamplerConfig(max_new_tokens=8, steps=8, block_length=4, unmask_rule="fixed", stop_at_eos=False)
    reason = cache_unsupported(model)
    memory = run.memory().adapt(tok(prompts, add_special_tokens=False)["input_ids"], [0, 1, 2]).active
    for context in (None, memory):
        plain = Sampler(model, tok, cfg).generate(prompts, forward_context=context)
        for mode in ("prefix", "dual"):
            every = Sampler(model, tok, cfg).generate(prompts, cache=mode, cache_refresh_steps=1,
                                                     forward_context=context)
            assert torch.equal(every.sequences, plain.sequences)
            cached = Sampler(model, tok, cfg).generate(prompts, cache=mode, forward_context=context)
            assert cached.cache_used == ("none" if reason else mode)
    if reason:
        assert reason.startswith(f"family {model.config.model_type!r}: ") and "\n" not in reason
