"""What a bidirectional model needs to learn associative recall: a 60-line transformer
(not a transformers class) on the recall task's token layout, one factor changed at a time.

Layout: k1 v1 ... kN vN SEP q1 a1 ... qQ aQ (token ids; every answer right after its
query), loss on the answers only, every answer masked (MDLM with t = 1) or, with
--causal 1, next-token prediction under causal attention (the Zoology setting).
Accuracy on 500 fixed items beside the copy level 1/N. Not package code: the diagnosis
behind the shipped base's recipe (docs/RESULTS.md, "What was missing").

    python scripts/experiments/mqar_minimal_transformer.py --causal 1       # learns in < 750 steps
    python scripts/experiments/mqar_minimal_transformer.py                  # copy level
    python scripts/experiments/mqar_minimal_transformer.py --prevtok 1      # learns in < 500 steps
"""
import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--pairs", type=int, default=8)
p.add_argument("--queries", type=int, default=4)
p.add_argument("--nkeys", type=int, default=176)
p.add_argument("--nvals", type=int, default=212)
p.add_argument("--width", type=int, default=128)
p.add_argument("--layers", type=int, default=2)
p.add_argument("--heads", type=int, default=4)
p.add_argument("--batch", type=int, default=128)
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--steps", type=int, default=20000)
p.add_argument("--seconds", type=float, default=900)
p.add_argument("--eval_every", type=int, default=250)
p.add_argument("--pos", default="abs", choices=["abs", "rope"], help="learned absolute positions or RoPE")
p.add_argument("--causal", type=int, default=0, help="1: causal attention, next-token loss (the AR control)")
p.add_argument("--shift", type=int, default=0, help="1: bidirectional, answer read at its query's position (Dream-style)")
p.add_argument("--prevtok", type=int, default=0, help="1: add an embedding of the previous token at every position")
p.add_argument("--init", type=float, default=0.0, help="std of a normal init of every linear/embedding (0: PyTorch default)")
p.add_argument("--seed", type=int, default=0)
a = p.parse_args()
torch.set_num_threads(1)
torch.manual_seed(a.seed)
MASK, SEP = 1, 2
KEYS = torch.arange(10, 10 + a.nkeys)
VALS = torch.arange(10 + a.nkeys, 10 + a.nkeys + a.nvals)
V = 10 + a.nkeys + a.nvals
N, Q = a.pairs, a.queries


def batch(n, g):
    ks = torch.stack([KEYS[torch.randperm(len(KEYS), generator=g)[:N]] for _ in range(n)])
    vs = torch.stack([VALS[torch.randperm(len(VALS), generator=g)[:N]] for _ in range(n)])
    order = torch.stack([torch.randperm(N, generator=g)[:Q] for _ in range(n)])
    qk, qa = ks.gather(1, order), vs.gather(1, order)
    x = torch.cat([torch.stack([ks, vs], -1).flatten(1), torch.full((n, 1), SEP), torch.stack([qk, qa], -1).flatten(1)], 1)
    ans = torch.zeros_like(x, dtype=torch.bool)
    ans[:, 2 * N + 2::2] = True
    return x, ans


class Block(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h, self.n1, self.n2 = h, nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.o = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x, rope):
        B, T, D = x.shape
        q, k, v = self.qkv(self.n1(x)).view(B, T, 3, self.h, D // self.h).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = rope(q), rope(k)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=bool(a.causal)).transpose(1, 2).reshape(B, T, D)
        x = x + self.o(y)
        return x + self.ff(self.n2(x))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.prev, self.pos = nn.Embedding(V, a.width), nn.Embedding(V, a.width), nn.Embedding(128, a.width)
        self.blocks = nn.ModuleList(Block(a.width, a.heads) for _ in range(a.layers))
        self.norm, self.head = nn.LayerNorm(a.width), nn.Linear(a.width, V)
        hd = a.width // a.heads
        angle = torch.arange(128)[:, None] / (10000 ** (torch.arange(0, hd, 2) / hd))
        self.register_buffer("cos", angle.cos())
        self.register_buffer("sin", angle.sin())

    def rope(self, x):
        c, s = self.cos[: x.shape[2]], self.sin[: x.shape[2]]
        x1, x2 = x[..., ::2], x[..., 1::2]
        return torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], -1).flatten(-2)

    def forward(self, x):
        h = self.emb(x) + (self.pos(torch.arange(x.shape[1])) if a.pos == "abs" else 0)
        if a.prevtok:
            h = h + self.prev(torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], 1))
        for block in self.blocks:
            h = block(h, self.rope if a.pos == "rope" else None)
        return self.head(self.norm(h))


model = Model()
if a.init:
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=a.init)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.0, betas=(0.9, 0.98))
g = torch.Generator().manual_seed(a.seed)
xe, ae = batch(500, torch.Generator().manual_seed(999))
read_at_previous = a.causal or a.shift  # the answer is predicted at its query's position


def answer_logits(x, ans):
    logits = model(x if a.causal else x.masked_fill(ans, MASK))
    return logits[:, :-1][ans[:, 1:]] if read_at_previous else logits[ans]


start = time.time()
print(vars(a), "sequence", xe.shape[1], "copy level", 1 / N, flush=True)
for step in range(1, a.steps + 1):
    x, ans = batch(a.batch, g)
    loss = F.cross_entropy(answer_logits(x, ans), x[ans])
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    for group in opt.param_groups:
        group["lr"] = a.lr * min(1, step / 100)
    if step % a.eval_every == 0:
        with torch.no_grad():
            acc = (answer_logits(xe, ae).argmax(-1) == xe[ae]).float().mean().item()
        print(f"step {step} loss {loss.item():.3f} acc {acc:.3f} ({time.time() - start:.0f}s)", flush=True)
    if time.time() - start > a.seconds:
        break
