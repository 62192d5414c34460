"""Throughput of inference-time adaptation + generation: batched vs one prompt at a time.

    OMP_NUM_THREADS=1 python benchmarks/eval_throughput.py                 # tiny fresh model, CPU, 1 thread
    python benchmarks/eval_throughput.py --threads 2 --rounds 5
    python benchmarks/eval_throughput.py --model runs/tiny-mem             # a trained run
    python benchmarks/eval_throughput.py --device cuda --prompts 64        # on a GPU

What is timed: for 16 kv prompts of different lengths around 256 tokens (230..280),
"Train & Inference" answering -- per prompt, the inner loop adapts fast weights on the
prompt (pre-anchor stage + anchor-to-target stage, two SGD steps), then greedy
iterative denoising with that memory active. Two ways:

- batched: ``memdlm.sampling.generation.generate(..., batch_size=8)`` -- per-sample memory,
  one fast-weight slot per prompt, all prompts of a batch in one forward;
- sequential: ``batch_size=1`` -- one prompt at a time, the reference's way.

Both go through the library's own code path (the run's prompt memory,
``memdlm.runs.run.Run.memory().adapt``, then ``Sampler.generate`` with the memory as forward
context); a trained run adapts with its own memory settings, a fresh model with the defaults. The script warms up,
interleaves the two modes for ``--rounds`` rounds (alternating which goes first) and
reports medians. It checks that both modes give each prompt the same fast weights
(within 1e-5), the same logits on the prompt + mask canvas with the memory active
(within 1e-4) and the same generated tokens, and counts model forward calls with a
forward pre-hook (batched: 2 batches x (2 adaptation stages + denoising steps)).

The last line printed is a JSON object with the numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def parse_args(argv=None):
    from memdlm.config import EVAL_BATCH_SIZE  # memdlm eval's batch: the mode this measures

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="A model directory (default: a fresh tiny model, seed 0).")
    p.add_argument("--prompts", type=int, default=16, help="Number of prompts (default 16).")
    p.add_argument("--min-length", type=int, default=230, help="Shortest context in tokens (default 230).")
    p.add_argument("--max-length", type=int, default=280, help="Longest context in tokens (default 280).")
    p.add_argument("--batch-size", type=int, default=EVAL_BATCH_SIZE,
                   help="Batch size of the batched mode (default %(default)s).")
    p.add_argument("--new-tokens", type=int, default=16, help="Response slots = denoising steps (default 16).")
    p.add_argument("--rounds", type=int, default=3, help="Timed rounds per mode (default 3).")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1).")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu).")
    p.add_argument("--seed", type=int, default=0, help="Seed of the prompts (default 0).")
    return p.parse_args(argv)


def make_prompts(tokenizer, n, lo, hi, seed):
    """``n`` kv prompts (eval split) with context lengths spread evenly over [lo, hi]."""
    from memdlm.tasks import get_task
    from memdlm.backbones.tokenizer import count_tokens_fn

    count = count_tokens_fn(tokenizer)
    task = get_task("kv")
    lengths = [round(lo + (hi - lo) * i / max(n - 1, 1)) for i in range(n)]
    samples = [task.sample(seed * 1000 + i, "eval", length, count) for i, length in enumerate(lengths)]
    return [tokenizer(s.prompt, add_special_tokens=False)["input_ids"] for s in samples]


class ForwardCounter:
    """Counts calls of ``model.forward`` (a forward pre-hook on the top module)."""

    def __init__(self, model):
        self.calls = 0
        self.handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, *_):
        self.calls += 1

    def remove(self):
        self.handle.remove()


def answer(model, tokenizer, memory, prompts, config, batch_size, keep=False):
    """Adapt + generate for every prompt, ``batch_size`` at a time (generate()'s loop).

    With ``keep`` also returns each prompt's fast weights (one slot each) and response ids.
    """
    from memdlm.sampling.sampler import Sampler

    sampler = Sampler(model, tokenizer, config)
    device = next(model.parameters()).device
    seeds = list(range(len(prompts)))
    memories, responses = [], []
    for start in range(0, len(prompts), batch_size):
        chunk, chunk_seeds = prompts[start:start + batch_size], seeds[start:start + batch_size]
        fast = memory.adapt(chunk, chunk_seeds)
        out = sampler.generate(chunk, seeds=chunk_seeds, forward_context=fast.active)
        if keep:
            memories += [fast.slot(i) for i in range(len(chunk))]
            responses += out.responses
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize()
    return memories, responses


def canvas_logits(model, tokenizer, prompts, memories, n_new, batch_size):
    """Logits at every real position of ``[prompt][n_new masks]`` with each prompt's memory
    active, computed ``batch_size`` prompts per forward; one ``[len_i, V]`` tensor per prompt."""
    import torch

    from memdlm.memory.fast_weights import FastWeights
    from memdlm.backbones.modeling import forward_logits

    device = next(model.parameters()).device
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        mems = memories[start:start + batch_size]
        width = max(len(p) for p in chunk) + n_new
        ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for i, p in enumerate(chunk):
            ids[i, :len(p)] = torch.tensor(p)
            ids[i, len(p):len(p) + n_new] = tokenizer.mask_token_id
            attn[i, :len(p) + n_new] = 1
        ids, attn = ids.to(device), attn.to(device)
        joined = FastWeights(mems[0].targets,
                             [[torch.cat([m.tensors[t][k] for m in mems]) for k in range(len(group))]
                              for t, group in enumerate(mems[0].tensors)], mems[0].scale)
        with torch.no_grad(), joined.active():
            logits = forward_logits(model, ids, attn).float()
        out += [logits[i, :len(p) + n_new].cpu() for i, p in enumerate(chunk)]
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from memdlm.backbones.modeling import build_tiny_model
    from memdlm.runs.run import Run
    from memdlm.sampling.sampler import SamplerConfig
    from memdlm.backbones.tokenizer import load_tokenizer

    device = torch.device(args.device)
    if args.model:
        run = Run.load(args.model, device=device)
        model_name = args.model
    else:
        tokenizer = load_tokenizer()
        run = Run(build_tiny_model(tokenizer, seed=0).to(device).eval(), tokenizer)
        model_name = "fresh tiny model (seed 0)"
    model, tokenizer = run.model, run.tokenizer
    memory = run.memory()  # a trained run's own settings (the defaults used to be taken for any run)
    memory_args = memory.settings
    config = SamplerConfig(max_new_tokens=args.new_tokens, steps=args.new_tokens, temperature=0.0)
    prompts = make_prompts(tokenizer, args.prompts, args.min_length, args.max_length, args.seed)
    plens = [len(p) for p in prompts]
    modes = {"batched": args.batch_size, "sequential": 1}

    # Warm-up: both modes on a couple of prompts (allocator, kernels, lazy imports).
    for bs in modes.values():
        answer(model, tokenizer, memory, prompts[:2], config, min(bs, 2))

    # Forward calls and outputs (untimed): one pass per mode with a counter.
    forwards, memories, responses = {}, {}, {}
    for mode, bs in modes.items():
        counter = ForwardCounter(model)
        memories[mode], responses[mode] = answer(model, tokenizer, memory, prompts, config, bs, keep=True)
        forwards[mode] = counter.calls
        counter.remove()

    # Timed rounds, interleaved, alternating which mode goes first.
    times = {mode: [] for mode in modes}
    for r in range(args.rounds):
        order = list(modes) if r % 2 == 0 else list(modes)[::-1]
        for mode in order:
            start = time.perf_counter()
            answer(model, tokenizer, memory, prompts, config, modes[mode])
            times[mode].append(time.perf_counter() - start)

    # Equivalence: fast weights per prompt, logits with the memory active, tokens.
    fw_diff = max(
        max((a - b).abs().max().item() for a, b in zip(mb.params(), ms.params()))
        for mb, ms in zip(memories["batched"], memories["sequential"]))
    logits_b = canvas_logits(model, tokenizer, prompts, memories["batched"], args.new_tokens,
                             args.batch_size)
    logits_s = canvas_logits(model, tokenizer, prompts, memories["sequential"], args.new_tokens, 1)
    logit_diff = max((a - b).abs().max().item() for a, b in zip(logits_b, logits_s))
    same_tokens = responses["batched"] == responses["sequential"]

    med = {mode: statistics.median(ts) for mode, ts in times.items()}
    ratio = med["sequential"] / med["batched"]
    n_batches = -(-len(prompts) // args.batch_size)
    print(f"model: {model_name}; device: {device}; torch threads: {torch.get_num_threads()}")
    print(f"{len(prompts)} kv prompts, {min(plens)}..{max(plens)} prompt tokens "
          f"(contexts {args.min_length}..{args.max_length}); {args.new_tokens} new tokens in "
          f"{args.new_tokens} steps; adaptation: {memory_args.trajectory}, "
          f"{memory_args.pre_anchor_steps + 1} SGD steps, mask ratio {memory_args.adapt_mask_ratio}")
    print(f"expected forwards if nothing stops early: batched {n_batches} x (2 + {args.new_tokens}) = "
          f"{n_batches * (2 + args.new_tokens)}; sequential {len(prompts)} x (2 + {args.new_tokens}) = "
          f"{len(prompts) * (2 + args.new_tokens)}")
    print()
    print(f"{'mode':<12}{'batch':>6}{'forwards':>10}{'median s':>10}{'prompts/s':>11}   rounds (s)")
    for mode, bs in modes.items():
        print(f"{mode:<12}{bs:>6}{forwards[mode]:>10}{med[mode]:>10.3f}"
              f"{len(prompts) / med[mode]:>11.2f}   " + ", ".join(f"{t:.3f}" for t in times[mode]))
    print()
    print(f"throughput ratio (sequential / batched time): {ratio:.2f}x")
    print(f"max |fast weight diff| per prompt: {fw_diff:.2e} (tolerance 1e-5)")
    print(f"max |logit diff| with memory active: {logit_diff:.2e} (tolerance 1e-4)")
    print(f"same generated tokens: {same_tokens}")
    ok = fw_diff <= 1e-5 and logit_diff <= 1e-4 and same_tokens
    if not ok:
        print("EQUIVALENCE CHECK FAILED", file=sys.stderr)
    summary = {
        "throughput_ratio": round(ratio, 3),
        "batched_s": round(med["batched"], 4), "sequential_s": round(med["sequential"], 4),
        "forwards_batched": forwards["batched"], "forwards_sequential": forwards["sequential"],
        "threads": torch.get_num_threads(), "device": str(device),
        "max_abs_fast_weight_diff": fw_diff, "max_abs_logit_diff": logit_diff,
        "same_tokens": same_tokens, "prompts": len(prompts), "batch_size": args.batch_size,
        "new_tokens": args.new_tokens, "rounds": args.rounds, "model": model_name, **memory.record(),
    }
    print(json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
