"""``memdlm plan``: counts on the meta device checked by hand against the paper's models'
published shapes, the estimate's formula on a tiny model, the paper presets from a fresh
clone (no weights, no download), and the estimate against a measured CPU peak."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from memdlm.cli import main
from memdlm.training.options import setup_from_options
from memdlm.training.plan import ACT_PER_TOKEN_F, ACT_PER_TOKEN_H, RUNTIME_BYTES, make_plan

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ["llada", "dream", "llada_moe", "llada2"]


def plan_json(capsys, *argv) -> dict:
    assert main(["plan", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_llada_8b_preset_counts_by_hand(capsys):
    """LLaDA-8B from memdlm's hub-style config: d 4096, 32 layers, SwiGLU 12288, vocab 126464,
    untied. Memory on the FFN of the last 10 % (layers 28-31) at rank 32; LoRA r=32 on every
    linear layer."""
    plan = plan_json(capsys, "--config", str(ROOT / "configs/paper_llada.yaml"))
    d, ff, L, V, r = 4096, 12288, 32, 126464, 32
    assert plan["parameters"] == L * (4 * d * d + 3 * d * ff + 2 * d) + d + 2 * V * d  # 8.0B
    assert plan["stand_in"].startswith("Llama of the same shapes")
    assert plan["memory_layers"] == [28, 29, 30, 31] and len(plan["memory_targets"]) == 12
    assert plan["fast_weight_params_per_slot"] == 4 * 3 * r * (d + ff) and plan["memory_slots"] == 1
    assert plan["lora_params"] == L * (4 * r * 2 * d + 3 * r * (d + ff))
    memory = plan["memory_bytes"]
    # 4-bit linear layers (0.5 byte + 1/64 for the double-quantised block scales); embeddings,
    # head and norms upcast to float32 by the k-bit preparation
    linear = L * (4 * d * d + 3 * d * ff)
    assert memory["weights"] == int(linear * (0.5 + 0.5 / 64) + 4 * (plan["parameters"] - linear))
    assert memory["adapters"] == memory["gradients"] == 4 * plan["lora_params"]
    assert memory["optimizer"] == 8 * plan["lora_params"]
    assert memory["logits"] == 4096 * V * (2 + 4 + 4)  # micro-batch 1, bf16 logits + float32 loss
    assert memory["inner_loop"] == 3 * 4 * plan["fast_weight_params_per_slot"]
    assert plan["total_bytes"] == sum(memory.values())
    assert plan["fits_gb"] == {str(gb): plan["total_bytes"] <= gb * 1e9 for gb in (24, 48, 80)}


@pytest.mark.slow
def test_moe_presets_target_every_expert_of_the_last_layers(capsys):
    """LLaDA-MoE-7B-A1B: 64 experts of width 1024 in each of 16 layers, hidden 2048: the
    memory's targets are both expert projections of every expert in layers 14-15."""
    plan = plan_json(capsys, "--config", str(ROOT / "configs/paper_llada_moe.yaml"))
    h, f, experts, r = 2048, 1024, 64, 32
    assert plan["memory_layers"] == [14, 15] and len(plan["memory_targets"]) == 2 * experts * 2
    per_expert = r * (h + 2 * f) + r * (f + h)  # fused gate_up (h -> 2f) and down (f -> h)
    assert plan["fast_weight_params_per_slot"] == 2 * experts * per_expert
    assert 7.0e9 < plan["parameters"] < 7.5e9  # "7B total"


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_every_paper_preset_plans_from_a_fresh_clone(preset, capsys):
    """The text a user sees: targets, counts, a verdict per capacity, the stand-in named.
    The 80 GB verdict is the one the presets are sized for."""
    assert main(["plan", "--config", str(ROOT / f"configs/paper_{preset}.yaml")]) == 0
    out = capsys.readouterr().out
    for needle in ("built as:", "of the same shapes", "memory targets:", "fast weights:", "LoRA adapter:",
                   "peak accelerator memory per device", "verdict: 24 GB", "80 GB fits"):
        assert needle in out, (needle, out)


def tiny_setup(**options):
    base = {"output_dir": "(plan)", "tiny_layers": 2, "tiny_hidden_size": 64, "tiny_intermediate_size": 256,
            "train_lengths": [128], "per_device_train_batch_size": 4}
    return setup_from_options({**base, **options})


def test_estimate_formula_on_the_tiny_model():
    """Full fine-tuning in float32: weights, gradients 4 bytes and AdamW 8 bytes per
    parameter; activations and logits by the documented formula."""
    plan = make_plan(tiny_setup())
    m, P = plan.memory, plan.parameters
    b, s, h, f, L, V = 4, 128, 64, 256, 2, 4096
    assert plan.lora_params == 0 and plan.trainable_params == P
    assert (m["weights"], m["gradients"], m["optimizer"]) == (4 * P, 4 * P, 8 * P)
    assert m["activations"] == L * b * s * (ACT_PER_TOKEN_H * h + ACT_PER_TOKEN_F * f + s) * 4
    assert m["logits"] == b * s * V * 12 and m["runtime"] == RUNTIME_BYTES and "inner_loop" not in m
    checkpointed = make_plan(tiny_setup(gradient_checkpointing=True)).memory["activations"]
    assert checkpointed == L * b * s * h * 4 + b * s * (ACT_PER_TOKEN_H * h + ACT_PER_TOKEN_F * f + s) * 4
    per_sample = make_plan(tiny_setup(method="memdlm", memory_mode="per_sample"))
    assert per_sample.slots == 4
    assert per_sample.memory["inner_loop"] == 3 * 4 * 4 * per_sample.fast_weight_params


def test_fsdp_divides_the_sharded_state_by_the_devices():
    one = make_plan(tiny_setup()).memory
    four = make_plan(tiny_setup(fsdp="full_shard"), devices=4).memory
    for name in ("weights", "gradients", "optimizer"):
        assert four[name] == one[name] // 4
    assert four["activations"] == one["activations"] and four["logits"] == one["logits"]


def test_unknown_model_is_one_line(capsys):
    rc = main(["plan", "--model", "nobody/no-such-model"])
    err = capsys.readouterr().err
    assert rc == 2 and "nobody/no-such-model: no config.json there" in err and "GSAI-ML/LLaDA-8B-Instruct" in err


@pytest.mark.slow
def test_estimate_within_ten_percent_of_a_measured_cpu_peak():
    """A shape held out of the coefficients' fit (benchmarks/plan_memory.py): the measured
    heap peak of three training steps above the post-warm-up baseline against the plan's
    gradients + activations + logits (scaled to the scorable positions) + inner loop."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from plan_memory import estimated_peak

    row = [6, 192, 768, 384, 3, "mdlm", False]
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/plan_memory.py"), "--child", json.dumps(row)],
                         capture_output=True, text=True, check=True, timeout=300)
    measured = json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]
    estimate, _ = estimated_peak(row)
    assert abs(estimate / measured - 1) < 0.10, (estimate, measured)


def test_train_dry_run_is_the_plan(capsys, tmp_path):
    """``memdlm train ... --dry-run`` prints the plan of exactly that run and writes nothing."""
    out = tmp_path / "run"
    flags = ["--tiny-layers", "2", "--method", "memdlm", "--output-dir", str(out)]
    assert main(["train", *flags, "--dry-run", "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert main(["plan", *flags, "--json"]) == 0
    assert dry == json.loads(capsys.readouterr().out)
    assert dry["settings"]["method"] == "memdlm" and dry["memory_layers"] == [1]
    assert not out.exists()
