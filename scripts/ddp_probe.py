"""Probes for multi-process (DDP) training, launched with torchrun on a CPU (gloo).

    # (1) the inner loop under DDP: each rank writes the memory of its own samples
    torchrun --standalone --nproc_per_node 2 scripts/ddp_probe.py inner --out DIR
    # (2) a real `memdlm train` run, each rank dumping its weights when training ends
    torchrun --standalone --nproc_per_node 2 scripts/ddp_probe.py train --out DIR -- \\
        --method memdlm --output-dir RUN --max-steps 3 ...

(1) builds the tiny model with the same seed on every rank, wraps it in
DistributedDataParallel, gives each rank different samples, writes the memory
with the inner loop exactly as ``MemDLMTrainer`` does (on the DDP-stripped model,
through the one builder, ``memory.builder.build_inner_loop``, with the trainer's
``LoopRole.training``), then takes one outer SGD step through DDP
with the memory active. Each rank saves ``inner_rank{r}.pt``: its fast weights
(per-sample and batch-shared modes) and its base weights after the step. The
test compares the fast weights with a single-process computation on the same
samples (``rank_inputs`` + ``write_memory`` below, importable without torchrun)
and the base weights across ranks.

(2) runs ``memdlm.cli.main`` with a callback added to the trainer that saves
each rank's final weights, and every memory its inner loop wrote, to
``weights_rank{r}.pt``: DDP must leave the weights equal, and the test compares losses,
memories and weights with a one-process run of the same batches (run without torchrun;
``--as-ranks 2`` noises one process's batch as two ranks would, see ``noise_as_ranks``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

SEED = 0
BATCH = 3  # samples per rank
LENGTH = 96


def make_model(tok, layers: int = 2):
    from memdlm.backbones.modeling import build_tiny_model

    return build_tiny_model(tok, seed=SEED, num_hidden_layers=layers)


def rank_inputs(tok, rank: int, step_process: int | None = None):
    """Rank ``rank``'s samples as the trainer sees them at step 0, micro-step 0 of 2 processes:
    (NoisedBatch, InnerLoopInputs). ``step_process``: the micro-batch index in the step seed (0
    on every rank for a batch-shared memory averaged over the ranks; default: the rank's index,
    ``MDLMTrainer.micro_batch_index``)."""
    from memdlm.data.collate import DiffusionCollator
    from memdlm.diffusion.process import noise_batch
    from memdlm.diffusion.masking import seeded_generator
    from memdlm.memory.inner_loop import InnerLoopInputs, step_seed_of
    from memdlm.diffusion.schedules import get_schedule
    from memdlm.tasks.dataset import SyntheticTaskDataset

    data = SyntheticTaskDataset(tok, ["kv"], [LENGTH], "train", 64, seed=SEED)
    collate = DiffusionCollator(tok.pad_token_id, tok.eos_token_id)
    inputs = collate([data[rank * BATCH + i] for i in range(BATCH)])
    # The trainer's seeds: (seed, 0, global step, micro-batch index); the index of micro-step 0
    # of rank r is r.
    batch = noise_batch(inputs, schedule=get_schedule("linear"), weighting="scheduler", eps=1e-3,
                        mask_token_id=tok.mask_token_id, generator=seeded_generator(SEED, 0, 0, rank))
    index = rank if step_process is None else step_process
    x = InnerLoopInputs(batch.clean_ids, batch.attention_mask, batch.maskable, batch.masked,
                        batch.sample_seed, step_seed_of(SEED, 0, 0, index + 1))
    return batch, x


def write_memory(model, tok, x, mode: str, ranks: str = "local"):
    """The memory MemDLMTrainer writes for ``x`` (``model`` may be DDP-wrapped): its loop, built
    as its ``inner_loop`` builds it (default diffusion settings: the linear schedule)."""
    from memdlm.backbones.modeling import strip_ddp
    from memdlm.config import DiffusionArguments
    from memdlm.memory.builder import LoopRole, build_inner_loop
    from memdlm.memory.config import MemoryArguments

    args = MemoryArguments(memory_mode=mode, shared_memory_ranks=ranks)
    loop = build_inner_loop(strip_ddp(model), args, LoopRole.training(args, DiffusionArguments()),
                            mask_token_id=tok.mask_token_id)
    memory, _ = loop.run(x)
    return memory


def probe_inner(out: Path) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from memdlm.diffusion.process import mdlm_loss
    from memdlm.backbones.tokenizer import load_tokenizer

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.set_num_threads(1)
    tok = load_tokenizer()
    model = make_model(tok)
    model.train()
    ddp = DistributedDataParallel(model)
    batch, x = rank_inputs(tok, rank)
    result = {"rank": rank, "world_size": dist.get_world_size()}
    memories = {mode: write_memory(ddp, tok, x, mode) for mode in ("per_sample", "shared")}
    for mode, memory in memories.items():
        result[mode] = [p.clone() for p in memory.params()]
    # A batch-shared memory averaged over the ranks: the step seed of process 0 on every rank.
    _, x_shared = rank_inputs(tok, rank, step_process=0)
    result["shared_average"] = [p.clone() for p in write_memory(ddp, tok, x_shared, "shared", "average").params()]
    # One outer step through DDP with the per-sample memory active (first-order).
    memory = memories["per_sample"]
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
    with memory.active():
        loss = mdlm_loss(ddp, batch)
    loss.backward()
    optimizer.step()
    result["loss"] = loss.item()
    result["weights"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save(result, out / f"inner_rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


def probe_train(out: Path, argv: list[str], as_ranks: int = 1) -> int:
    from transformers import TrainerCallback

    import memdlm.training.memdlm_trainer as memdlm_trainer
    import memdlm.training.train as run
    from memdlm.cli import main
    from memdlm.memory.inner_loop import InnerLoop

    rank = int(os.environ.get("RANK", "0"))
    memories: list[list[torch.Tensor]] = []  # every memory the inner loop wrote, in order
    split_calls = []  # the trainer's split forwards (the lower halves it ran)
    lower = memdlm_trainer.lower

    def counted_lower(*a, **kw):
        split_calls.append(1)
        return lower(*a, **kw)

    memdlm_trainer.lower = counted_lower

    class DumpWeights(TrainerCallback):
        def on_train_end(self, args, state, control, model=None, **kwargs):
            weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            torch.save({"rank": args.process_index, "world_size": args.world_size,
                        "global_step": state.global_step, "weights": weights, "memories": memories,
                        "split_calls": len(split_calls)},
                       out / f"weights_rank{rank}.pt")

    run_inner = InnerLoop.run

    def recording_run(self, *a, **kw):
        memory, stats = run_inner(self, *a, **kw)
        memories.append([p.detach().clone() for p in memory.params()])
        return memory, stats

    InnerLoop.run = recording_run
    make_trainer = run.make_trainer

    def patched(*a, **kw):
        trainer = make_trainer(*a, **kw)
        trainer.add_callback(DumpWeights())
        if as_ranks > 1:
            noise_as_ranks(trainer, as_ranks)
        return trainer

    run.make_trainer = patched
    return main(["train", *argv])


def noise_as_ranks(trainer, ranks: int) -> None:
    """One process noising its batch as ``ranks`` processes would have noised their parts.

    The reference for a batch-shared memory averaged over the ranks, whose one-process twin has
    the global batch in one micro-batch: the batch's ``ranks`` consecutive row blocks are
    noised alone -- cut to their own padded length, masks from the generator of micro-batch
    index micro-step x ranks + r (``MDLMTrainer.micro_batch_index`` of rank r) -- and put back.
    """
    import memdlm.training.mdlm_trainer as module
    from memdlm.diffusion.masking import seeded_generator
    from memdlm.diffusion.process import NoisedBatch

    original = module.noise_batch

    def noise(inputs, *, generator, **kw):
        micro = trainer._micro_step - 1  # counted by _generator before this call
        rows = inputs["input_ids"].shape[0] // ranks
        full = original(inputs, generator=generator, **kw)  # clean ids, mask and maskable as they are
        noisy, masked, t, weight = full.noisy_ids.clone(), torch.zeros_like(full.masked), [], []
        for r in range(ranks):
            block = slice(r * rows, (r + 1) * rows)
            width = int(inputs["attention_mask"][block].sum(1).max())
            part = {k: (v[block, :width] if v.dim() == 2 else v[block]) for k, v in inputs.items()}
            g = seeded_generator(trainer.args.seed, 0, trainer.state.global_step, micro * ranks + r)
            own = original(part, generator=g, **kw)
            noisy[block, :width], masked[block, :width] = own.noisy_ids, own.masked
            t.append(own.t)
            weight.append(own.weight)
        return NoisedBatch(full.clean_ids, full.attention_mask, full.maskable, masked, noisy,
                           torch.cat(t), torch.cat(weight), full.sample_seed)

    module.noise_batch = noise


def main_(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, rest = argv[:i], argv[i + 1:]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["inner", "train"])
    parser.add_argument("--out", required=True, help="folder for the per-rank dumps")
    parser.add_argument("--as-ranks", type=int, default=1,
                        help="train: noise each batch as this many processes would (noise_as_ranks)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.mode == "inner":
        probe_inner(out)
        return 0
    return probe_train(out, rest, args.as_ranks)


if __name__ == "__main__":
    sys.exit(main_())
