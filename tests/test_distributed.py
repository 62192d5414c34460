"""Multi-process training on a CPU (DDP over gloo), fast weights local to each process,
gradient accumulation, gradient checkpointing and bf16 with the fast-weight hooks.

Two gloo ranks come from ``torchrun --nproc_per_node 2`` or ``accelerate launch`` with
``configs/accelerate/ddp.yaml`` (``accelerate launch --cpu --num_processes 2`` starts one
process). ``scripts/ddp_probe.py`` dumps what each rank holds.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from file_modules import load_file
from memdlm.cli import main

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "scripts" / "ddp_probe.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TINY = ["--tiny-layers", "2", "--per-device-train-batch-size", "4", "--train-lengths", "96",
        "--logging-steps", "1", "--seed", "0"]
RUN_FILES = ("model.safetensors", "tokenizer.json", "run_config.json", "log_history.json",
             "data_report.json", "heldout_eval.json", "run_complete.json")


def torchrun(*args: str) -> list[str]:
    # --standalone: a free rendezvous port, so concurrent jobs on the machine do not collide.
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]


@contextlib.contextmanager
def held_port():
    """A port bound and listening for the whole block (never picked, released and reused).

    Passed as accelerate's ``--main_process_port``, a port in use makes accelerate launch
    torchrun ``--standalone``: the rendezvous store binds a port of its own the moment it
    starts, so no other job on the machine can take it between a pick and its use.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def launch(cmd: list[str], log: Path, timeout: float = 240) -> str:
    with log.open("w") as handle:
        proc = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, env=ENV, cwd=ROOT,
                              timeout=timeout)
    text = log.read_text()
    assert proc.returncode == 0, text[-4000:]
    return text


def check_run_directory(run: Path, output: str, steps: int) -> None:
    """One finished run directory, written by rank 0 alone, from a real 2-rank run."""
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    assert not list(run.rglob("*.tmp"))
    summary = json.loads((run / "run_complete.json").read_text())
    assert summary["global_step"] == steps
    # Both ranks trained (Trainer saves one RNG file per process) ...
    assert {p.name for p in (run / f"checkpoint-{steps}").glob("rng_state*.pth")} == \
        {"rng_state_0.pth", "rng_state_1.pth"}
    # ... but only the main process evaluated and wrote the run's files.
    assert output.count("held-out exact match") == 1, output[-4000:]
    history = json.loads((run / "log_history.json").read_text())
    losses = {h["step"]: h["loss"] for h in history if "loss" in h}
    assert sorted(losses) == list(range(1, steps + 1))
    assert all(math.isfinite(v) and v > 0 for v in losses.values())


def check_rank_weights(dump: Path, steps: int) -> None:
    ranks = [torch.load(dump / f"weights_rank{r}.pt") for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    assert all(r["global_step"] == steps for r in ranks)
    a, b = ranks[0]["weights"], ranks[1]["weights"]
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs between the ranks"


def load_probe():
    return load_file("scripts/ddp_probe.py", "ddp_probe")


# --- 1. the CLI under two processes --------------------------------------------------------


@pytest.mark.slow
def test_torchrun_module_entry_trains_mdlm(tmp_path):
    """``torchrun -m memdlm.cli train`` (no --use-cpu: training sets it when there is no CUDA)."""
    run = tmp_path / "run"
    output = launch(torchrun("-m", "memdlm.cli", "train", "--method", "mdlm", "--output-dir", str(run),
                             "--max-steps", "3", "--save-steps", "3", "--heldout-items", "2",
                             "--num-eval-samples", "8", "--eval-steps", "2", *TINY), tmp_path / "log")
    check_run_directory(run, output, 3)
    assert any("eval_loss" in h for h in json.loads((run / "log_history.json").read_text()))


@pytest.mark.slow
def test_torchrun_memdlm_with_accumulation_keeps_ranks_identical(tmp_path):
    """MemDLM under DDP with gradient accumulation 2: both ranks end with the same weights."""
    run, dump = tmp_path / "run", tmp_path / "dump"
    output = launch(torchrun(str(PROBE), "train", "--out", str(dump), "--", "--method", "memdlm",
                             "--output-dir", str(run), "--max-steps", "3", "--save-steps", "3",
                             "--gradient-accumulation-steps", "2", "--heldout-items", "2",
                             "--num-eval-samples", "0", *TINY), tmp_path / "log")
    check_run_directory(run, output, 3)
    check_rank_weights(dump, 3)
    history = json.loads((run / "log_history.json").read_text())
    assert all(math.isfinite(h["inner_loss/anchor"]) for h in history if "loss" in h)


@pytest.mark.slow
def test_accelerate_ddp_config_keeps_ranks_identical(tmp_path):
    """``accelerate launch --config_file configs/accelerate/ddp.yaml`` on a CPU: 2 gloo ranks."""
    run, dump = tmp_path / "run", tmp_path / "dump"
    with held_port() as port:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "configs" / "accelerate" / "ddp.yaml"), "--main_process_port", str(port),
               str(PROBE), "train", "--out", str(dump), "--", "--method", "mdlm", "--output-dir", str(run),
               "--max-steps", "3", "--save-steps", "3", "--heldout-items", "2", "--num-eval-samples", "0",
               *TINY]
        output = launch(cmd, tmp_path / "log")
    check_run_directory(run, output, 3)
    check_rank_weights(dump, 3)


# --- 2. fast weights stay local to each process --------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["per_sample", "shared"])
def test_fast_weights_are_each_ranks_own(tmp_path_factory, tok, mode):
    """Under DDP each rank's memory is exactly what its own samples give in one process alone.

    (The reference all-reduced the inner gradients, mixing the ranks' memories.) The base
    weights, updated through DDP with the memory active, stay identical across ranks.
    """
    dump = tmp_path_factory.getbasetemp() / "inner_probe"
    if not (dump / "inner_rank1.pt").is_file():  # one launch serves both modes
        launch(torchrun(str(PROBE), "inner", "--out", str(dump)), tmp_path_factory.mktemp("log") / "log")
    probe = load_probe()
    ranks = [torch.load(dump / f"inner_rank{r}.pt") for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1] and ranks[0]["world_size"] == 2
    for rank in (0, 1):
        model = probe.make_model(tok)
        model.train()
        _, x = probe.rank_inputs(tok, rank)
        alone = probe.write_memory(model, tok, x, mode)
        for got, want in zip(ranks[rank][mode], alone.params()):
            assert torch.equal(got, want), f"rank {rank}: fast weights differ from its samples alone"
    # The two ranks' memories differ (different samples), so any mixing would have shown.
    b0, b1 = ranks[0][mode][1], ranks[1][mode][1]  # B of the first target: moved from zero
    assert b0.abs().sum() > 0 and not torch.allclose(b0, b1)
    if mode == "per_sample":  # ... and each slot is that sample's memory in a batch of one
        model = probe.make_model(tok)
        model.train()
        _, x = probe.rank_inputs(tok, 1)
        for i in range(x.clean_ids.shape[0]):
            one = type(x)(*(t[i:i + 1] for t in (x.clean_ids, x.attention_mask, x.maskable, x.anchor,
                                                    x.sample_seeds)), x.step_seed)
            single = probe.write_memory(model, tok, one, mode)
            for got, want in zip(ranks[1][mode], single.params()):
                torch.testing.assert_close(got[i:i + 1], want, atol=1e-6, rtol=1e-5)
    # DDP kept the base weights in sync after the outer step, and the step moved them.
    init = probe.make_model(tok).state_dict()
    w0, w1 = ranks[0]["weights"], ranks[1]["weights"]
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert any(not torch.equal(w0[k], init[k]) for k in w0)
    assert ranks[0]["loss"] != ranks[1]["loss"]  # each rank's own samples


@pytest.mark.slow
def test_shared_memory_averaged_over_ranks_is_the_one_process_memory(tmp_path_factory, tok):
    """--shared-memory-ranks average: both ranks write the memory one process writes for the
    global batch (rank 0's samples then rank 1's, the same anchors), to float rounding."""
    dump = tmp_path_factory.getbasetemp() / "inner_probe"
    if not (dump / "inner_rank1.pt").is_file():
        launch(torchrun(str(PROBE), "inner", "--out", str(dump)), tmp_path_factory.mktemp("log") / "log")
    probe = load_probe()
    ranks = [torch.load(dump / f"inner_rank{r}.pt") for r in (0, 1)]
    parts = [probe.rank_inputs(tok, r, step_process=0)[1] for r in (0, 1)]
    width = max(p.clean_ids.shape[1] for p in parts)

    def padded(t, value):
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

    x = type(parts[0])(torch.cat([padded(p.clean_ids, tok.pad_token_id) for p in parts]),
                       torch.cat([padded(p.attention_mask, 0) for p in parts]),
                       torch.cat([padded(p.maskable, False) for p in parts]),
                       torch.cat([padded(p.anchor, False) for p in parts]),
                       torch.cat([p.sample_seeds for p in parts]), parts[0].step_seed)
    model = probe.make_model(tok)
    model.train()
    alone = probe.write_memory(model, tok, x, "shared", "average")  # one process: no all-reduce
    for rank in (0, 1):
        for got, want in zip(ranks[rank]["shared_average"], alone.params()):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    local = ranks[0]["shared"][1]  # the local memory of rank 0's samples differs from it
    assert not torch.allclose(local, alone.params()[1])


# --- 3. two processes train what one process trains ----------------------------------------

# (method flags, the one-process twin's batch flags, --as-ranks of the twin, exact)
# Two processes x 2 samples draw per micro-batch what one process with accumulation 2 draws
# (MDLMTrainer.micro_batch_index), and compute the same numbers; DDP's mean over the ranks is
# the twin's mean over its micro-batches. A batch-shared memory averaged over the ranks is one
# memory of the global batch: its twin holds the 4 samples in one micro-batch, noised as the
# two ranks noise their halves (ddp_probe.noise_as_ranks); per-sequence normalisation makes
# the mean of the ranks' losses the global batch's loss.
TWINS = {
    "mdlm": (["--method", "mdlm"], ["--per-device-train-batch-size", "2", "--gradient-accumulation-steps", "2"], 1),
    "per_sample": (["--method", "memdlm", "--memory-mode", "per_sample"],
                   ["--per-device-train-batch-size", "2", "--gradient-accumulation-steps", "2"], 1),
    "shared_local": (["--method", "memdlm", "--memory-mode", "shared"],
                     ["--per-device-train-batch-size", "2", "--gradient-accumulation-steps", "2"], 1),
    "shared_average": (["--method", "memdlm", "--memory-mode", "shared", "--shared-memory-ranks", "average",
                        "--normalization", "sequence"], ["--per-device-train-batch-size", "4"], 2),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(TWINS))
def test_two_processes_log_the_losses_and_memories_of_one(tmp_path, case):
    """Every logged step loss, every memory the inner loop wrote and the final weights of a
    2-rank run equal those of a one-process run of the same global batches.

    Bit-identical where the twin runs the ranks' micro-batches one after the other (the same
    tensors go through the same operations; DDP's all-reduce of g/2 sums two terms as the
    accumulation does). For the averaged batch-shared memory the twin pads the two halves to
    one length (other matmul shapes) and sums the inner gradient in one process, where gloo
    sums two ranks' shares: float32 rounding, about 1e-7 relative here, so rtol 1e-5.
    """
    method, twin, as_ranks = TWINS[case]
    common = ["--max-steps", "3", "--save-steps", "1000", "--heldout-items", "0", "--num-eval-samples", "0",
              "--tiny-layers", "2", "--train-lengths", "96", "--logging-steps", "1", "--seed", "0", *method]
    launch(torchrun(str(PROBE), "train", "--out", str(tmp_path / "d2"), "--", "--output-dir",
                    str(tmp_path / "r2"), "--per-device-train-batch-size", "2", *common), tmp_path / "log2")
    launch([sys.executable, str(PROBE), "train", "--as-ranks", str(as_ranks), "--out", str(tmp_path / "d1"),
            "--", "--output-dir", str(tmp_path / "r1"), *twin, *common], tmp_path / "log1")
    exact = as_ranks == 1
    two, one = _history(tmp_path / "r2"), _history(tmp_path / "r1")
    assert [h["step"] for h in two] == [h["step"] for h in one] == [1, 2, 3]
    for a, b in zip(one, two):
        assert b["loss"] == (a["loss"] if exact else pytest.approx(a["loss"], rel=1e-5)), a["step"]
    check_rank_weights(tmp_path / "d2", 3)
    ranks = [torch.load(tmp_path / "d2" / f"weights_rank{r}.pt") for r in (0, 1)]
    alone = torch.load(tmp_path / "d1" / "weights_rank0.pt")
    tol = dict(rtol=0, atol=0) if exact else dict(rtol=1e-5, atol=1e-6)
    for name, value in alone["weights"].items():
        torch.testing.assert_close(ranks[0]["weights"][name], value, **tol)
    if method[1] == "mdlm":
        return
    # MemDLM took the split forward (lower layers once) in every micro-batch, under DDP too:
    # through the wrapper's forward (split_forward.through_wrapper), or the ranks would differ.
    assert [r["split_calls"] for r in ranks] == [3, 3] and alone["split_calls"] == len(alone["memories"])
    # Rank r's memory of step s is the twin's micro-batch 2s + r (accumulation), or the twin's
    # one memory of step s (averaged).
    assert len(alone["memories"]) == 3 * (2 if exact else 1)
    for r in (0, 1):
        assert len(ranks[r]["memories"]) == 3
        for s, memory in enumerate(ranks[r]["memories"]):
            twin_memory = alone["memories"][2 * s + r if exact else s]
            for got, want in zip(memory, twin_memory):
                torch.testing.assert_close(got, want, **(tol if exact else dict(rtol=1e-5, atol=1e-7)))
    # Averaged, both ranks hold the one memory; otherwise each its own samples' (so mixing would show).
    assert torch.equal(ranks[0]["memories"][0][1], ranks[1]["memories"][0][1]) == (case == "shared_average")


def test_through_wrapper_is_one_ddp_forward_and_keeps_the_modules_own_forward(tmp_path, make_tiny_model, tok):
    """The split step under DDP: ``compute`` runs inside exactly one forward of the DDP module
    (where the reducer prepares the all-reduce), calls the wrapped model's own forward as usual
    (here an instance forward, as the 4-D key-padding fix installs), and leaves it in place."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from memdlm.backbones.bidirectional import pass_4d_key_padding_masks
    from memdlm.backbones.modeling import forward_logits
    from memdlm.backbones.split_forward import through_wrapper

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = make_tiny_model()
        pass_4d_key_padding_masks(model)
        own = model.__dict__["forward"]
        ddp = DistributedDataParallel(model)
        entered = []
        ddp.register_forward_pre_hook(lambda _m, _a: entered.append(1))
        ids = torch.randint(10, len(tok), (2, 8), generator=torch.Generator().manual_seed(0))
        mask = torch.ones_like(ids)
        mask[1, 6:] = 0
        calls = []
        model.register_forward_pre_hook(lambda _m, _a: calls.append(1))

        def compute():
            return forward_logits(model, ids, mask).square().mean(), "extra"

        loss, extra = through_wrapper(ddp, compute)
        assert entered == [1] and extra == "extra" and len(calls) == 2  # DDP's call, then the model's own
        assert model.__dict__["forward"] is own
        loss.backward()
        got = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        forward_logits(model, ids, mask).square().mean().backward()
        assert all(torch.equal(a, p.grad) for a, p in zip(got, model.parameters()))
        assert through_wrapper(model, lambda: (torch.ones(()), 1)) == (torch.ones(()), 1)  # no wrapper: direct
    finally:
        dist.destroy_process_group()


def test_fsdp_on_a_cpu_is_refused_in_one_line(tmp_path, capsys):
    """accelerate runs a CPU job's --fsdp as DDP (nothing sharded): refused before anything loads."""
    if torch.cuda.is_available():
        pytest.skip("checks the refusal on a machine without CUDA")
    rc = main(["train", "--fsdp", "full_shard", "--output-dir", str(tmp_path / "run"), *TINY])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("memdlm train: error:")]
    assert rc == 2 and len(errors) == 1 and "--fsdp shards over CUDA devices" in errors[0]
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "run_config.json").exists()


# --- gradient accumulation, gradient checkpointing, bf16 (one process) ---------------------


def _history(run: Path) -> list[dict]:
    return [h for h in json.loads((run / "log_history.json").read_text()) if "loss" in h]


def _train(run: Path, *extra: str) -> int:
    return main(["train", "--output-dir", str(run), "--heldout-items", "0", "--num-eval-samples", "0",
                 "--save-steps", "1000", *TINY, *extra])


@pytest.mark.slow
def test_memdlm_gradient_accumulation_two(tmp_path):
    assert _train(tmp_path, "--method", "memdlm", "--max-steps", "3", "--gradient-accumulation-steps", "2") == 0
    history = _history(tmp_path)
    assert [h["step"] for h in history] == [1, 2, 3]
    assert all(math.isfinite(h["loss"]) and h["loss"] > 0 for h in history)
    assert json.loads((tmp_path / "run_complete.json").read_text())["global_step"] == 3


@pytest.mark.slow
@pytest.mark.parametrize("method", ["mdlm", "memdlm"])
def test_gradient_checkpointing_trains_exactly_as_without(tmp_path, method):
    """Recomputing activations in the backward changes no number: step 2's loss (after step 1's
    update) and MemDLM's inner losses equal an ordinary run's (the memory's hooks must stay on
    until the recomputation has run)."""
    assert _train(tmp_path / "plain", "--method", method, "--max-steps", "2") == 0
    assert _train(tmp_path / "ckpt", "--method", method, "--max-steps", "2", "--gradient-checkpointing") == 0
    plain, ckpt = _history(tmp_path / "plain"), _history(tmp_path / "ckpt")
    assert [h["step"] for h in ckpt] == [1, 2]
    keys = ["loss"] + (["inner_loss/anchor", "memory/absorption_ratio"] if method == "memdlm" else [])
    for a, b in zip(plain, ckpt):
        for key in keys:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (a["step"], key)


@pytest.mark.slow
def test_memdlm_bf16_on_cpu(tmp_path):
    """``--bf16`` on a CPU (autocast; it needs --use-cpu on a machine without CUDA)."""
    assert _train(tmp_path, "--method", "memdlm", "--memory-mode", "per_sample", "--max-steps", "2",
                  "--bf16", "--use-cpu") == 0
    history = _history(tmp_path)
    assert len(history) == 2
    assert all(math.isfinite(h["loss"]) and 0 < h["memory/absorption_ratio"] for h in history)
    assert all(h["memory/norm"] > 0 for h in history)


def test_fast_weight_delta_takes_the_output_dtype_under_bf16_autocast(tok, make_tiny_model):
    """Fast weights and their gradients stay float32; the delta is cast to the layer's bf16 output."""
    from memdlm.memory.config import MemoryArguments
    from memdlm.memory.fast_weights import FastWeights
    from memdlm.memory.targets import find_targets

    model = make_tiny_model()
    args = MemoryArguments()
    targets = find_targets(model, args.memory_scope, args.memory_layer_fraction, args.memory_target_modules)
    memory = FastWeights.fresh(targets, rank=2, scale=2.0, dense=False, slot_seeds=[1, 2], device="cpu")
    memory = memory.replace([p + 0.01 for p in memory.params()]).requires_grad_()  # a non-zero delta
    seen = []
    ids = torch.randint(10, len(tok), (2, 12))
    with torch.autocast("cpu", dtype=torch.bfloat16), memory.active():
        # registered after the memory's hook, so it sees the output with the delta added
        handle = targets[0].module.register_forward_hook(lambda _m, _a, out: seen.append(out.dtype))
        logits = model(input_ids=ids).logits
    handle.remove()
    assert seen and all(d == torch.bfloat16 for d in seen)
    grads = torch.autograd.grad(logits.float().pow(2).mean(), memory.params())
    assert all(p.dtype == torch.float32 for p in memory.params())
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_zero3_is_refused_in_one_line(tmp_path, monkeypatch):
    """ZeRO-3 from a --deepspeed file, a dict or accelerate's launcher: refused; ZeRO-2 passes."""
    from types import SimpleNamespace

    from memdlm.errors import ConfigError
    from memdlm.training.train import check_sharding, zero_stage

    monkeypatch.delenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", raising=False)
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    for deepspeed in (str(path), {"zero_optimization": {"stage": 3}}):
        with pytest.raises(ConfigError, match="ZeRO-3 partitions the weights"):
            check_sharding(SimpleNamespace(fsdp=None, deepspeed=deepspeed))
    assert zero_stage(SimpleNamespace(deepspeed={"zero_optimization": {"stage": 2}})) == 2
    check_sharding(SimpleNamespace(fsdp=None, deepspeed={"zero_optimization": {"stage": 2}}))
    assert zero_stage(SimpleNamespace(deepspeed=None)) is None
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    with pytest.raises(ConfigError, match="ZeRO-3"):
        check_sharding(SimpleNamespace(fsdp=None, deepspeed=None))
