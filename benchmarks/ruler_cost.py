"""What the paper's evaluation costs: one RULER task at 4,096 tokens, with and without memory.

    OMP_NUM_THREADS=1 python benchmarks/ruler_cost.py                          # CPU, shipped mqar-base, 2 items
    python benchmarks/ruler_cost.py --model RUN --device cuda --dtype bfloat16 --limit 16   # one GPU

The paper scores its runs with lm-evaluation-harness's own RULER tasks (docs/LM_EVAL.md). This
runs one of them -- ``ruler_vt`` (variable tracking) by default, built for ``--length`` tokens
of the model's own tokenizer -- through lm-eval's ``simple_evaluate`` with memdlm's lm-eval
model (:class:`memdlm.eval.lm_eval_model.MemdlmLM`, the model ``memdlm lm-eval`` registers),
once with ``memory=False`` and once with ``memory=True`` (each item's memory adapted on its
4,096-token context before its answer is decoded), on the first ``--limit`` items.

What is timed, per arm: ``generation_s``, the model's ``generate_until`` calls (adaptation
included with memory: that is where the model works), and ``evaluate_s``, the whole
``simple_evaluate`` (building the items, scoring). ``items_per_minute`` is items over
``generation_s``. Start-up (imports, lm-eval's task index, loading the model) is timed
apart as ``load_s``. The machine's load average is recorded beside the numbers: on a shared
CPU the wall times move with it.

The same measurement from the command line (what a user runs):

    memdlm lm-eval --model-args pretrained=RUN,memory=False --tasks ruler_vt \\
        --metadata '{"max_seq_lengths":[4096]}' --limit 2 --device cuda --dtype bfloat16

The last line printed is a JSON object with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mqar-base", help="A run or model directory, or a shipped model's name "
                                                       "(default: mqar-base).")
    p.add_argument("--task", default="ruler_vt", help="An lm-eval RULER task that needs no hub data (default ruler_vt).")
    p.add_argument("--length", type=int, default=4096, help="RULER's max_seq_lengths entry (default 4096).")
    p.add_argument("--limit", type=int, default=2, help="Items per arm (default 2).")
    p.add_argument("--memory", choices=["both", "off", "on"], default="both", help="Which arms (default both).")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu).")
    p.add_argument("--dtype", default=None, help="Weights' precision (default: the checkpoint's).")
    p.add_argument("--batch-size", type=int, default=16, help="Sequences per forward pass (default 16).")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1).")
    p.add_argument("--context-overflow", default="refuse", help="Past the model's limit: refuse (default), "
                                                                 "truncate or extend.")
    return p.parse_args(argv)


def timed_generation(lm) -> dict:
    """Wrap ``lm.generate_until`` so its calls' seconds and requests add up in the returned dict."""
    spent = {"seconds": 0.0, "requests": 0}
    original = lm.generate_until

    def generate_until(requests, *args, **kwargs):
        start = time.perf_counter()
        try:
            return original(requests, *args, **kwargs)
        finally:
            spent["seconds"] += time.perf_counter() - start
            spent["requests"] += len(requests)

    lm.generate_until = generate_until
    return spent


def run_arm(args, path: str, memory: bool) -> dict:
    from lm_eval import evaluator

    from memdlm.eval.lm_eval_model import MemdlmLM

    start = time.perf_counter()
    lm = MemdlmLM(path, memory=memory, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                  context_overflow=args.context_overflow)
    load_s = time.perf_counter() - start
    spent = timed_generation(lm)
    start = time.perf_counter()
    results = evaluator.simple_evaluate(
        model=lm, tasks=[args.task], limit=args.limit,
        metadata={"max_seq_lengths": [args.length], "pretrained": path})  # RULER counts in the model's tokens
    evaluate_s = time.perf_counter() - start
    scores = {k: v for k, v in results["results"][args.task].items() if isinstance(v, (int, float))}
    return {"memory": memory, "items": spent["requests"], "load_s": round(load_s, 1),
            "generation_s": round(spent["seconds"], 1), "evaluate_s": round(evaluate_s, 1),
            "items_per_minute": round(60 * spent["requests"] / spent["seconds"], 3) if spent["seconds"] else None,
            "scores": scores, "sampler": results["config"].get("memdlm", {}).get("sampler", {}).get("unmask_rule")}


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    from memdlm.backbones.shipped import resolve_model

    torch.set_num_threads(args.threads)
    path = str(resolve_model(args.model))
    arms = {"both": [False, True], "off": [False], "on": [True]}[args.memory]
    load_before = os.getloadavg()
    rows = [run_arm(args, path, memory) for memory in arms]
    for row in rows:
        print(f"memory={row['memory']}: {row['items']} items, generation {row['generation_s']} s "
              f"({row['items_per_minute']} items/min), evaluate {row['evaluate_s']} s, load {row['load_s']} s")
    summary = {"benchmark": "ruler_cost", "model": args.model, "task": args.task, "length": args.length,
               "limit": args.limit, "device": args.device, "dtype": args.dtype, "threads": args.threads,
               "batch_size": args.batch_size, "cpu": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "load_average_before": [round(x, 2) for x in load_before],
               "load_average_after": [round(x, 2) for x in os.getloadavg()], "arms": rows}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
