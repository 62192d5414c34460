"""--device / --dtype: bfloat16 on the CPU predicts what float32 predicts on the shipped base,
and the inference commands record where and in which precision they ran."""

from __future__ import annotations

import json

import pytest
import torch

from memdlm.cli import main
from memdlm.errors import ConfigError
from memdlm.runs.placement import resolve_device, resolve_dtype


def _masked_answers(tok, samples):
    """Prompt + every answer token masked, right-padded: ids, attention, the answer positions."""
    rows = [(tok(s.prompt, add_special_tokens=False)["input_ids"], tok(s.response, add_special_tokens=False)["input_ids"])
            for s in samples]
    width = max(len(p) + len(r) for p, r in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id)
    attn = torch.zeros_like(ids)
    where = torch.zeros_like(ids, dtype=torch.bool)
    for i, (p, r) in enumerate(rows):
        ids[i, :len(p)] = torch.tensor(p)
        ids[i, len(p):len(p) + len(r)] = tok.mask_token_id
        attn[i, :len(p) + len(r)] = 1
        where[i, len(p):len(p) + len(r)] = True
    return ids, attn, where


@pytest.mark.slow
def test_bfloat16_on_cpu_gives_float32s_argmax_on_the_shipped_base():
    """The argmax at every masked answer token of 8 held-out recall items (the unmasked prompt
    positions are no prediction: near-ties there may flip, and do at 160 tokens)."""
    from memdlm.eval.heldout import heldout_samples
    from memdlm.backbones.modeling import forward_logits
    from memdlm.runs.run import Run

    full = Run.load("mqar-base", dtype=resolve_dtype("float32"), device=resolve_device("cpu"))
    half = Run.load("mqar-base", dtype=resolve_dtype("bfloat16"), device=resolve_device("cpu"))
    assert next(half.model.parameters()).dtype == torch.bfloat16
    ids, attn, where = _masked_answers(full.tokenizer, heldout_samples(full.tokenizer, ["mqar"], 256, 8))
    with torch.no_grad():
        a = forward_logits(full.model, ids, attn, positions=where).float()  # [answers, V]
        b = forward_logits(half.model, ids, attn, positions=where).float()
    assert a.shape[0] >= 8
    assert not torch.equal(a, b)  # the precision did change the numbers ...
    assert torch.equal(a.argmax(-1), b.argmax(-1))  # ... and not one prediction


def test_generate_records_device_and_dtype(capsys):
    prompt = "The value of red fox is 1234. Question: what is the value of red fox? Answer:"
    argv = ["generate", "--model", "mqar-base", "--prompt", prompt, "--max-new-tokens", "4", "--json", "--device", "cpu"]
    outputs = {}
    for dtype in ("float32", "bfloat16"):
        assert main([*argv, "--dtype", dtype]) == 0
        (row,) = json.loads(capsys.readouterr().out)
        assert (row["device"], row["dtype"]) == ("cpu", dtype)
        assert row["context"]["limit"] == 4096 and row["context"]["truncated"] == 0
        assert (row["sampler"]["unmask_rule"], row["sampler"]["max_new_tokens"]) == ("fixed", 4)
        outputs[dtype] = row["response"]
    assert outputs["bfloat16"] == outputs["float32"]


def test_bad_device_and_dtype_are_named():
    with pytest.raises(ConfigError, match="--device 'gpu0'"):
        resolve_device("gpu0")
    with pytest.raises(ConfigError, match="--dtype 'fp8'"):
        resolve_dtype("fp8")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_reproduction_cells_name_device_and_dtype_only_when_given(tmp_path):
    """Evaluation cells computed before --device/--dtype existed keep their settings (reused);
    a cell asked for in another precision has different settings (recomputed, not reused)."""
    from memdlm.reproduce.pipeline import Reproduction
    from memdlm.reproduce.presets import get_preset

    preset = get_preset("smoke")
    assert Reproduction(preset, tmp_path).placement_settings() == {}
    assert Reproduction(preset, tmp_path, device="cpu", dtype="bfloat16").placement_settings() == {
        "device": "cpu", "dtype": "bfloat16"}
