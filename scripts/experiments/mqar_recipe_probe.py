"""The recipe search's probe: token-level MQAR in the layout of ``memdlm.tasks.recall``
(pairs, filler, SEP, queries, SEP, answers, EOS), MDLM loss on the answers only, evaluated
with every answer masked at once beside the copy level 1/N. Not package code: a quick way
to compare architectures and optimiser settings before a `memdlm train` run. Its logs from
the search are in docs/results/recall_search/ (docs/RESULTS.md reads them).

    python scripts/experiments/mqar_recipe_probe.py --arch deberta --conv 11 --seconds 2400
"""
import argparse
import time

import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--arch", default="deberta")
p.add_argument("--pairs", type=int, default=8)
p.add_argument("--queries", type=int, default=4)
p.add_argument("--width", type=int, default=128)
p.add_argument("--layers", type=int, default=2)
p.add_argument("--heads", type=int, default=4)
p.add_argument("--batch", type=int, default=128)
p.add_argument("--lr", type=float, default=2e-3)
p.add_argument("--warmup", type=int, default=200)
p.add_argument("--steps", type=int, default=20000)
p.add_argument("--seconds", type=float, default=1e9)
p.add_argument("--tmin", type=float, default=0.0)
p.add_argument("--conv", type=int, default=0)
p.add_argument("--filler", type=int, default=0)
p.add_argument("--eval_every", type=int, default=250)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--wd", type=float, default=0.0)
p.add_argument("--noeq", type=int, default=0)
p.add_argument("--infill", type=int, default=0, help="1: queries interleaved with their answer slots: | q1 a1 q2 a2 ...")
p.add_argument("--qkbias", type=int, default=0, help="1: Llama with attention_bias (content-independent q/k terms: a learnable relative-position prior under RoPE)")
p.add_argument("--mixq1", type=float, default=0.0, help="fraction of batches with Q=1")
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)
V = 2048
PAD, MASK, EOS, SEP = 0, 1, 2, 3
KEYS = torch.arange(100, 278)
VALS = torch.arange(300, 514)
FILL = torch.arange(600, 1600)
N, Q = a.pairs, a.queries

def batch(n, g, Q=Q):
    ks = torch.stack([KEYS[torch.randperm(len(KEYS), generator=g)[:N]] for _ in range(n)])
    vs = VALS[torch.randint(0, len(VALS), (n, N), generator=g)]
    order = torch.stack([torch.randperm(N, generator=g)[:Q] for _ in range(n)])
    qk = torch.gather(ks, 1, order)
    qa = torch.gather(vs, 1, order)
    fill = FILL[torch.randint(0, len(FILL), (n, a.filler), generator=g)]
    eq = [] if a.noeq else [torch.full((n, 1), SEP)]
    if a.infill:  # | q1 a1 q2 a2 ...: every answer right after its own query
        x = torch.cat([torch.stack([ks, vs], -1).flatten(1), fill, torch.full((n, 1), SEP),
                       torch.stack([qk, qa], -1).flatten(1), torch.full((n, 1), EOS)], 1)
        ans = torch.zeros_like(x, dtype=torch.bool)
        start = x.shape[1] - 1 - 2 * Q
        ans[:, start + 1:start + 2 * Q:2] = True
        return x, ans
    x = torch.cat([torch.stack([ks, vs], -1).flatten(1), fill, torch.full((n, 1), SEP), qk,
                   *eq, qa, torch.full((n, 1), EOS)], 1)
    ans = torch.zeros_like(x, dtype=torch.bool)
    L = x.shape[1]
    ans[:, L - 1 - Q:L - 1] = True
    return x, ans

if a.arch == "deberta":
    from transformers import DebertaV2Config, DebertaV2ForMaskedLM
    cfg = DebertaV2Config(vocab_size=V, hidden_size=a.width, num_hidden_layers=a.layers, num_attention_heads=a.heads,
                          intermediate_size=2 * a.width, relative_attention=True, position_buckets=32,
                          max_relative_positions=64, pos_att_type=["p2c", "c2p"], position_biased_input=False,
                          pad_token_id=PAD, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                          conv_kernel_size=a.conv if a.conv > 1 else (3 if a.conv else 0), max_position_embeddings=2048)
    model = DebertaV2ForMaskedLM(cfg)
    def hidden(x): return model.deberta(input_ids=x).last_hidden_state
    def head(h): return model.cls(h) if hasattr(model, "cls") else model.lm_predictions(h, model.deberta.embeddings.word_embeddings)
elif a.arch in ("llama", "gemma3"):
    if a.arch == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM
        cfg = LlamaConfig(vocab_size=V, hidden_size=a.width, intermediate_size=2 * a.width, num_hidden_layers=a.layers,
                          num_attention_heads=a.heads, num_key_value_heads=a.heads, max_position_embeddings=4096,
                          pad_token_id=PAD, tie_word_embeddings=True, attention_bias=bool(a.qkbias))
        cfg.is_causal = False
        model = LlamaForCausalLM(cfg)
    else:
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig
        cfg = Gemma3TextConfig(vocab_size=V, hidden_size=a.width, intermediate_size=2 * a.width, num_hidden_layers=a.layers,
                       num_attention_heads=a.heads, num_key_value_heads=a.heads, head_dim=a.width // a.heads,
                       query_pre_attn_scalar=a.width // a.heads, max_position_embeddings=4096,
                       use_bidirectional_attention=True, layer_types=["full_attention"] * a.layers,
                       pad_token_id=PAD, tie_word_embeddings=True)
        model = Gemma3ForCausalLM(cfg)
    def hidden(x): return model.model(input_ids=x).last_hidden_state
    def head(h): return model.lm_head(h)
elif a.arch == "convbert":  # span-based dynamic convolution heads beside attention in every layer
    from transformers import ConvBertConfig, ConvBertForMaskedLM
    cfg = ConvBertConfig(vocab_size=V, hidden_size=a.width, embedding_size=a.width, intermediate_size=2 * a.width,
                         num_hidden_layers=a.layers, num_attention_heads=a.heads, conv_kernel_size=a.conv or 9,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=PAD,
                         max_position_embeddings=512)
    model = ConvBertForMaskedLM(cfg)
    def hidden(x): return model.convbert(input_ids=x).last_hidden_state
    def head(h): return model.generator_lm_head(model.generator_predictions(h))
elif a.arch == "mobilebert":  # trigram input: every position's embedding also holds its two neighbours
    from transformers import MobileBertConfig, MobileBertForMaskedLM
    cfg = MobileBertConfig(vocab_size=V, hidden_size=a.width, embedding_size=a.width, true_hidden_size=a.width,
                           intermediate_size=2 * a.width, num_hidden_layers=a.layers, num_attention_heads=a.heads,
                           use_bottleneck=False, num_feedforward_networks=1, normalization_type="layer_norm",
                           trigram_input=True, hidden_act="gelu", hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0, pad_token_id=PAD, max_position_embeddings=512)
    model = MobileBertForMaskedLM(cfg)
    def hidden(x): return model.mobilebert(input_ids=x).last_hidden_state
    def head(h): return model.cls(h)
elif a.arch == "modernbert":
    from transformers import ModernBertConfig, ModernBertForMaskedLM
    cfg = ModernBertConfig(vocab_size=V, hidden_size=a.width, intermediate_size=2 * a.width, num_hidden_layers=a.layers,
                           num_attention_heads=a.heads, global_attn_every_n_layers=1, pad_token_id=PAD,
                           max_position_embeddings=4096)
    model = ModernBertForMaskedLM(cfg)
    def hidden(x): return model.model(input_ids=x).last_hidden_state
    def head(h): return model.decoder(model.head(h))
print(type(model).__name__, sum(p.numel() for p in model.parameters()) / 1e6, "M", flush=True)
opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.wd, betas=(0.9, 0.98))
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1, (s + 1) / a.warmup))
g = torch.Generator().manual_seed(a.seed)
eg = torch.Generator().manual_seed(999)
xe, ae = batch(500, eg)

def evaluate():
    model.eval()
    with torch.no_grad():
        h = hidden(xe.masked_fill(ae, MASK))
        pred = head(h[ae]).argmax(-1).view(len(xe), -1)
    model.train()
    gold = xe[ae].view(len(xe), -1)
    ctxv = xe[:, 1:2 * N:2]
    in_ctx = (pred[..., None] == ctxv[:, None, :]).any(-1)
    acc = (pred == gold).float().mean().item()
    return acc, in_ctx.float().mean().item(), (pred == gold).all(1).float().mean().item()

t0 = time.time()
print(f"seq len {xe.shape[1]} copy level {1/N:.3f}", flush=True)
for step in range(1, a.steps + 1):
    x, ans = batch(a.batch, g, 1 if torch.rand(1, generator=g).item() < a.mixq1 else Q)
    t = a.tmin + (1 - a.tmin) * torch.rand(a.batch, 1, generator=g)
    m = (torch.rand(x.shape, generator=g) < t) & ans
    none = ~m.any(1)
    if none.any():
        idx = torch.multinomial(ans[none].float(), 1)
        m[none] = m[none].scatter(1, idx, True)
    h = hidden(x.masked_fill(m, MASK))
    loss = F.cross_entropy(head(h[m]), x[m])
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    if step % a.eval_every == 0:
        acc, inctx, allc = evaluate()
        print(f"step {step} loss {loss.item():.3f} acc {acc:.3f} in_ctx {inctx:.3f} all {allc:.3f} ({time.time()-t0:.0f}s)", flush=True)
    if time.time() - t0 > a.seconds:
        break
