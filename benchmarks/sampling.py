"""Fast sampling: task accuracy against model calls and wall time, side by side in one run.

    python benchmarks/sampling.py --model runs/tiny --task kv --length 128 --items 32
    python benchmarks/sampling.py --model DIR --taus 0.5 0.7 0.9 --caches none dual --plot acc_calls.png
    python benchmarks/sampling.py --model DIR --device cuda --items 200

On the task's held-out items (``memdlm.eval.heldout``: the eval split, the same
items for every configuration, per-item seeds), each configuration answers with the
held-out decoding (greedy, one block unless ``--block-length``, N = longest answer
+ 2 slots unless ``--max-new-tokens``) and a different sampler:

- ``fixed`` with S = N, N/2, N/4 steps, at least one per block (LLaDA's low-confidence
  remasking);
- ``threshold`` with each tau of ``--taus`` (Fast-dLLM's confidence-aware decoding);

each with every cache of ``--caches`` (none / prefix / dual; refreshed at each block's
first step, and every ``--cache-refresh-steps`` steps when given) and, unless
``--no-memory``, without and with inference-time memory (a per-prompt memory
adapted on the prompt, the run's memory settings). Reported per configuration:
score (the task's metric, 0-100), exact match, model calls per item (the forwards
in which the item still had a slot to commit), model calls of all batches, and
wall time of the generation (adaptation included for the memory rows: it is the
same for every sampler). A warm-up generation runs first; the configurations run
``--rounds`` times, interleaved (every configuration once per round), and the
seconds are medians over the rounds (scores and calls are the same in every round:
greedy decoding, checked).

The header names the task's reference levels (the scores of uniform guessing and of
copying a context value) where it defines them; they are in the JSON line too.

The last line is a JSON object: per memory setting, the baseline (fixed, S = N, no
cache), the configuration with the fewest calls per item whose score is within
``--tolerance`` (1) point of the baseline's, ``speedup_calls`` (baseline calls /
its calls) and ``speedup_time`` (the fastest such configuration, by wall time),
``informative`` (false when the baseline scores within the tolerance of 0: equal
accuracy is then trivial and the speed-ups say nothing), and every row.
"""

from __future__ import annotations

import argparse
import json
import time


def sampler_grid(n_new: int, taus: list[float], caches: list[str], blocks: int = 1) -> list[dict]:
    """Sampler overrides per configuration, in table order: fixed steps, then thresholds.

    Fixed step counts below the number of ``blocks`` are left out (every block takes a step).
    """
    steps = sorted({max(blocks, n_new // d) for d in (1, 2, 4)}, reverse=True)
    rules = [dict(unmask_rule="fixed", steps=s) for s in steps]
    rules += [dict(unmask_rule="threshold", threshold=t) for t in taus]
    return [{**rule, "cache": cache} for rule in rules for cache in caches]


def label(overrides: dict) -> str:
    rule = (f"fixed S={overrides['steps']}" if overrides["unmask_rule"] == "fixed"
            else f"threshold tau={overrides['threshold']}")
    return f"{rule}, cache {overrides['cache']}"


def run_config(model, tok, samples, base_config, overrides, memory, batch_size) -> dict:
    """Answer every item with one sampler configuration; score, calls, seconds."""
    import dataclasses

    from memdlm.sampling.generation import generate
    from memdlm.tasks.scoring import score_samples

    config = dataclasses.replace(base_config, **overrides)
    stats: dict = {}
    start = time.perf_counter()
    texts = generate(model, tok, [s.prompt for s in samples], config, memory=memory,
                     seeds=list(range(len(samples))), batch_size=batch_size, stats=stats)
    seconds = time.perf_counter() - start
    exact = [t.strip() == s.response.strip() for t, s in zip(texts, samples)]
    return {
        "config": label(overrides), **overrides, "memory": memory is not None,
        "cache_used": stats["cache_used"],
        "score": round(score_samples(samples[0].task, texts, samples), 2),
        "exact_match": round(sum(exact) / len(exact), 4),
        "calls_per_item": round(sum(stats["calls_per_sample"]) / len(samples), 3),
        "model_calls": stats["model_calls"],
        "seconds": round(seconds, 3),
    }


def median_seconds(rounds: list[list[dict]]) -> list[dict]:
    """The first round's rows with the median seconds over all rounds."""
    import statistics

    rows = []
    for same in zip(*rounds):
        outcome = [{k: v for k, v in r.items() if k != "seconds"} for r in same]
        if any(o != outcome[0] for o in outcome):
            raise AssertionError(f"{same[0]['config']}: rounds disagree on score or calls")
        rows.append({**outcome[0], "seconds": round(statistics.median(r["seconds"] for r in same), 3)})
    return rows


def speedups(rows: list[dict], tolerance: float) -> dict:
    """Per memory setting: baseline, the cheapest configuration at equal accuracy, the ratios."""
    out = {}
    for memory in sorted({r["memory"] for r in rows}):
        group = [r for r in rows if r["memory"] == memory]
        base = max((r for r in group if r["unmask_rule"] == "fixed" and r["cache"] == "none"),
                   key=lambda r: r["steps"])
        equal = [r for r in group if r["score"] >= base["score"] - tolerance]
        fewest = min(equal, key=lambda r: (r["calls_per_item"], r["seconds"]))
        fastest = min(equal, key=lambda r: r["seconds"])
        out["memory" if memory else "no_memory"] = {
            "baseline": base["config"], "baseline_score": base["score"],
            "baseline_calls_per_item": base["calls_per_item"],
            "fewest_calls": fewest["config"], "its_score": fewest["score"],
            "its_calls_per_item": fewest["calls_per_item"],
            "speedup_calls": round(base["calls_per_item"] / fewest["calls_per_item"], 2),
            "fastest": fastest["config"],
            "speedup_time": round(base["seconds"] / fastest["seconds"], 2),
            "informative": base["score"] > tolerance,
        }
    return out


def print_table(rows: list[dict]) -> None:
    head = f"{'memory':>6} | {'configuration':<32} | {'score':>6} | {'exact':>5} | {'calls/item':>10} | " \
           f"{'calls':>6} | {'seconds':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{'yes' if r['memory'] else 'no':>6} | {r['config']:<32} | {r['score']:>6.1f} | "
              f"{r['exact_match']:>5.2f} | {r['calls_per_item']:>10.2f} | {r['model_calls']:>6} | "
              f"{r['seconds']:>8.2f}")


def plot(rows: list[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, x_key, x_label in ((axes[0], "calls_per_item", "model calls per item"),
                               (axes[1], "seconds", "wall time of the run (s)")):
        series: dict[tuple, list[dict]] = {}
        for r in rows:
            series.setdefault((r["unmask_rule"], r["cache"], r["memory"]), []).append(r)
        for (rule, cache, memory), members in sorted(series.items()):
            members = sorted(members, key=lambda r: r[x_key])
            ax.plot([r[x_key] for r in members], [r["score"] for r in members],
                    marker="o" if rule == "fixed" else "s", linestyle="-" if memory else "--",
                    label=f"{rule}, cache {cache}{', memory' if memory else ''}")
        ax.set_xlabel(x_label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("score (0-100)")
    axes[1].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="Run or model directory (with its tokenizer).")
    p.add_argument("--task", default="kv")
    p.add_argument("--length", type=int, default=128, help="Context length in tokens (prompt plus answer).")
    p.add_argument("--items", type=int, default=32, help="Held-out items.")
    p.add_argument("--seed", type=int, default=None, help="Seed of the held-out items (default: heldout's).")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=None, help="N (default: longest answer + 2).")
    p.add_argument("--block-length", type=int, default=None, help="Sampler blocks (default: one block).")
    p.add_argument("--taus", type=float, nargs="+", default=[0.5, 0.7, 0.9, 0.95])
    p.add_argument("--caches", nargs="+", default=["none", "prefix", "dual"], choices=["none", "prefix", "dual"])
    p.add_argument("--cache-refresh-steps", type=int, default=None,
                   help="With a cache: also refresh it every this many steps of a block (default: only "
                        "at a block's first step).")
    p.add_argument("--no-memory", action="store_true", help="Skip the rows with inference-time memory.")
    p.add_argument("--tolerance", type=float, default=1.0, help="'Equal accuracy': within this many points.")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=1, help="Interleaved rounds; seconds are medians.")
    p.add_argument("--plot", default=None, help="Write accuracy vs calls and vs time here (PNG).")
    args = p.parse_args()

    import dataclasses

    import torch

    from memdlm.eval.heldout import answer_sampler_config, heldout_samples
    from memdlm.runs.run import Run
    from memdlm.tasks.scoring import reference_levels
    from memdlm.tasks.seeds import HELDOUT_SEED

    torch.set_num_threads(args.threads)
    run = Run.load(args.model, device=args.device)
    tok, model = run.tokenizer, run.model
    samples = heldout_samples(tok, [args.task], args.length, args.items,
                              HELDOUT_SEED if args.seed is None else args.seed)
    base = answer_sampler_config(tok, samples, block_length=args.block_length)
    if args.max_new_tokens:
        base = dataclasses.replace(base, max_new_tokens=args.max_new_tokens, steps=args.max_new_tokens)
    if args.cache_refresh_steps:
        base = dataclasses.replace(base, cache_refresh_steps=args.cache_refresh_steps)
    blocks = -(-base.max_new_tokens // (base.block_length or base.max_new_tokens))
    grid = sampler_grid(base.max_new_tokens, args.taus, args.caches, blocks)
    memories = [None] if args.no_memory else [None, run.memory()]
    run_config(model, tok, samples[: args.batch_size], base, grid[0], None, args.batch_size)  # warm-up
    start = time.perf_counter()
    rounds = [[run_config(model, tok, samples, base, overrides, memory, args.batch_size)
               for memory in memories for overrides in grid] for _ in range(args.rounds)]
    rows = median_seconds(rounds)
    print(f"{args.task} at {args.length} tokens, {len(samples)} held-out items, N = {base.max_new_tokens}, "
          f"blocks of {base.block_length or base.max_new_tokens}, cache refresh "
          f"{'every ' + str(base.cache_refresh_steps) + ' steps' if base.cache_refresh_steps else 'per block'}, "
          f"{args.device}, {args.threads} thread(s), "
          f"{args.rounds} round(s), "
          f"{time.perf_counter() - start:.0f} s in all")
    reference = reference_levels(args.task)
    if reference is not None:
        print("reference levels (scores of non-solutions): " + ", ".join(f"{k} {v:.1f}" for k, v in reference.items()))
    print_table(rows)
    if args.plot:
        plot(rows, args.plot, f"{args.task} @ {args.length} tokens, {len(samples)} items, N = {base.max_new_tokens}")
        print(f"wrote {args.plot}")
    print(json.dumps({"task": args.task, "length": args.length, "items": len(samples),
                      "max_new_tokens": base.max_new_tokens, "tolerance": args.tolerance, "reference": reference,
                      **speedups(rows, args.tolerance), "rows": rows,
                      "memory_settings": memories[-1].record() if memories[-1] is not None else None}))


if __name__ == "__main__":
    main()
