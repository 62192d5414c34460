"""Diagnostic for docs/RESULTS.md, "Fast sampling": is the cache's loss on mqar_v3 the trigram
neighbour of the block (a column whose layer-0 keys/values read the block)? Recompute the
block's two neighbour columns at every cached step too and compare (100 held-out items).

    PYTHONPATH=src python docs/results/sampling_mqar/cache_neighbours.py  # needs the v3 run at /work/runs/v3
"""
import dataclasses
import time

import torch

import memdlm.sampling as S
from memdlm.block_cache import BlockForward
from memdlm.eval.heldout import HELDOUT_SEED, answer_sampler_config, heldout_samples
from memdlm.generation import generate
from memdlm.run import Run
from memdlm.tasks.scoring import score_samples

torch.set_num_threads(1)
run = Run.load("/work/runs/v3")
tok, model = run.tokenizer, run.model
samples = heldout_samples(tok, ["mqar_v3"], 64, 100, HELDOUT_SEED)
base = answer_sampler_config(tok, samples)
print(base)
prompts = [s.prompt for s in samples]

class Neighbours(BlockForward):
    """dual, with the block's left neighbour column (and right, when inside the canvas) recomputed too."""
    def start_block(self, block_pos, suffix_pos):
        super().start_block(block_pos, suffix_pos)
        left = block_pos[:, :1] - 1
        right = (block_pos[:, -1:] + 1).clamp(max=self.attn.shape[1] - 1)
        self.query_cols = torch.cat([block_pos, left, right], 1)

def score(cfg, cls=BlockForward):
    S.BlockForward = cls
    t = time.perf_counter()
    texts = generate(model, tok, prompts, cfg, seeds=list(range(len(prompts))), batch_size=8)
    S.BlockForward = BlockForward
    return round(score_samples("mqar_v3", texts, samples), 1), round(time.perf_counter() - t, 2)

for name, cfg, cls in [("none", base, BlockForward),
                       ("dual", dataclasses.replace(base, cache="dual"), BlockForward),
                       ("dual+neighbours", dataclasses.replace(base, cache="dual"), Neighbours)]:
    print(name, "(score, seconds):", score(cfg, cls), flush=True)
