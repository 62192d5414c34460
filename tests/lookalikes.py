"""Tiny look-alikes of the real remote-code DLMs, written as transformers-4.x-era remote code.

Each family's directory gets ``configuration_<f>.py``, ``modeling_<f>.py``, a ``config.json``
with ``auto_map``, a checkpoint written with ``safetensors`` (as a hub download holds it,
never saved through transformers 5) and the shipped tokenizer. They reproduce the contracts
that break under transformers 5, not the real models' code:

| family | auto_map | contract reproduced |
|---|---|---|
| dream | AutoConfig, AutoModel (the LM head lives on the AutoModel class) | ``_tied_weights_keys`` a list; rotary class looking up ``ROPE_INIT_FUNCTIONS["default"]``; non-persistent ``inv_freq`` |
| llada | AutoConfig, AutoModel, AutoModelForCausalLM | never calls ``post_init``; ``tie_weights(self)`` override without ``**kwargs``; layers built on a hard-coded ``init_device = "cuda"``; ``d_model`` config with a ``hidden_size`` alias; blocks ``transformer.blocks.N.ff_proj/up_proj/ff_out`` |
| llada_moe | AutoConfig, AutoModelForCausalLM | experts as a list of linear MLPs, top-k routing by ``torch.where``; rotary class looking up "default"; a config ``mask_token_id`` unlike the tokenizer's |
| llada2 | AutoConfig, AutoModel, AutoModelForCausalLM | imports ``transformers.modeling_attn_mask_utils`` (deprecated in 5) and imports and calls ``is_torch_fx_available`` (removed in 5); attention ``attention.query_key_value`` (fused) / ``attention.dense``; tied list (tie on); a padded 2-D mask becomes a causal 4-D mask; MoE eval path under ``torch.no_grad`` ordering rows by an unstable ``argsort``; shared experts; rotary class looking up "default" |
| broken | as llada2 | imports ``find_pruneable_heads_and_indices`` from ``transformers.pytorch_utils`` (removed in 5; nothing memdlm provides) |

The reference model ``write_family`` returns is built with the constructs resolved by the test
itself, not by memdlm: the rope "default" from :func:`hand_default_rope`, ``is_torch_fx_available``
as ``True``, and LLaDA's layers on the CPU (the value the hub's copy of LLaDA's file has). The
model's modules are then dropped from ``sys.modules``, so memdlm imports the code afresh.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import torch

CONFIG = '''
from transformers import PretrainedConfig


class LookalikeConfig(PretrainedConfig):
    model_type = "{model_type}"
    attribute_map = {attribute_map}

    def __init__(self, vocab_size=4096, {hidden}=32, intermediate_size=64, {layers}=2, {heads}=4,
                 rope_theta=10000.0, rope_scaling=None, num_experts=4, num_experts_per_tok=2,
                 moe_intermediate_size=16, tie_word_embeddings=False, **kwargs):
        self.vocab_size = vocab_size
        self.{hidden} = {hidden}
        self.intermediate_size = intermediate_size
        self.{layers} = {layers}
        self.{heads} = {heads}
        self.rope_theta = rope_theta
        self.rope_scaling = rope_scaling
        self.num_experts = num_experts
        self.num_experts_per_tok = num_experts_per_tok
        self.moe_intermediate_size = moe_intermediate_size
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
'''

COMMON = '''
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from .configuration_{family} import LookalikeConfig


class RMSNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class Rotary(nn.Module):
    """transformers 4 style: the init function looked up by rope type ("default" without
    scaling; transformers 5 has no such entry); inv_freq a non-persistent buffer."""

    def __init__(self, config, device=None):
        super().__init__()
        self.rope_type = "default" if config.rope_scaling is None else config.rope_scaling["rope_type"]
        self.config = config
        self.rope_init_fn = ROPE_INIT_FUNCTIONS[self.rope_type]
        inv_freq, self.attention_scaling = self.rope_init_fn(config, device)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, length, device):
        freqs = torch.outer(torch.arange(length, device=device, dtype=torch.float32), self.inv_freq.float())
        emb = torch.cat([freqs, freqs], -1)
        return emb.cos() * self.attention_scaling, emb.sin() * self.attention_scaling


def rope_on_the_fly(dim, base, length, device):
    """LLaDA computes its rotary tables on the fly (no buffer)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, device=device, dtype=torch.int64).float() / dim))
    freqs = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq)
    emb = torch.cat([freqs, freqs], -1)
    return emb.cos(), emb.sin()


def rotate(x, cos, sin):
    x1, x2 = x.chunk(2, -1)
    return x * cos + torch.cat([-x2, x1], -1) * sin


def key_padding(mask):
    """Bidirectional families: a 2-D mask hides padded keys only; a 4-D mask is used as given."""
    if mask is None or mask.dim() == 4:
        return None if mask is None else mask.bool()
    return mask.bool()[:, None, None, :]


def causal_if_padded(mask, length):
    """transformers 4's _prepare_4d_causal_attention_mask_for_sdpa, as LLaDA2 calls it: an all-ones
    2-D mask is dropped (bidirectional), a padded one becomes causal plus padding, 4-D passes."""
    if mask is None or mask.dim() == 4:
        return None if mask is None else mask.bool()
    if bool(mask.all()):
        return None
    causal = torch.tril(torch.ones(length, length, dtype=torch.bool, device=mask.device))
    return causal[None, None] & mask.bool()[:, None, None, :]


class Attention(nn.Module):
    def __init__(self, hidden, heads, names=("q_proj", "k_proj", "v_proj", "o_proj")):
        super().__init__()
        self.heads, self.head_dim, self.names = heads, hidden // heads, names
        for n in names:
            setattr(self, n, nn.Linear(hidden, hidden, bias=False))

    def forward(self, x, cos, sin, mask):
        b, l, _ = x.shape
        q, k, v = (getattr(self, n)(x).view(b, l, self.heads, self.head_dim).transpose(1, 2)
                   for n in self.names[:3])
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=False)
        return getattr(self, self.names[3])(out.transpose(1, 2).reshape(b, l, -1))


class FusedAttention(nn.Module):
    """LLaDA2 style: one query_key_value projection, output projection ``dense``."""

    def __init__(self, hidden, heads):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.query_key_value = nn.Linear(hidden, 3 * hidden, bias=False)
        self.dense = nn.Linear(hidden, hidden, bias=False)

    def forward(self, x, cos, sin, mask):
        b, l, _ = x.shape
        q, k, v = (t.view(b, l, self.heads, self.head_dim).transpose(1, 2)
                   for t in self.query_key_value(x).chunk(3, -1))
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=False)
        return self.dense(out.transpose(1, 2).reshape(b, l, -1))


class MLP(nn.Module):
    def __init__(self, hidden, inter):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=False)
        self.up_proj = nn.Linear(hidden, inter, bias=False)
        self.down_proj = nn.Linear(inter, hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class TopKMoE(nn.Module):
    """LLaDA-MoE style: a linear router, softmax top-k, experts fed the rows torch.where picks."""

    def __init__(self, config):
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.gate = nn.Linear(config.hidden_size, config.num_experts, bias=False)
        self.experts = nn.ModuleList(MLP(config.hidden_size, config.moe_intermediate_size)
                                     for _ in range(config.num_experts))

    def forward(self, h):
        b, l, d = h.shape
        x = h.reshape(-1, d)
        weights, index = F.softmax(self.gate(x), -1, dtype=torch.float).topk(self.top_k, -1)
        weights = (weights / weights.sum(-1, keepdim=True)).to(x.dtype)
        out = torch.zeros_like(x)
        hit = F.one_hot(index, len(self.experts)).permute(2, 1, 0)
        for e, expert in enumerate(self.experts):
            k, tok = torch.where(hit[e])
            if tok.numel():
                out = out.index_add(0, tok, expert(x[tok]) * weights[tok, k, None])
        return out.view(b, l, d)


class Router(nn.Module):
    """LLaDA2 style: a sigmoid router module (not nn.Linear) returning (indices, weights)."""

    def __init__(self, config):
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.weight = nn.Parameter(torch.randn(config.num_experts, config.hidden_size) * 0.02)

    def forward(self, h):
        scores = torch.sigmoid(F.linear(h.reshape(-1, h.shape[-1]).float(), self.weight.float()))
        weights, index = scores.topk(self.top_k, -1)
        return index, (weights / weights.sum(-1, keepdim=True)).to(h.dtype)


class SharedExpertMoE(nn.Module):
    """LLaDA2 style: repeat_interleave in training, a sort-by-expert path under no_grad in eval."""

    def __init__(self, config):
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.gate = Router(config)
        self.experts = nn.ModuleList(MLP(config.hidden_size, config.moe_intermediate_size)
                                     for _ in range(config.num_experts))
        self.shared_experts = MLP(config.hidden_size, config.moe_intermediate_size)

    def forward(self, h):
        b, l, d = h.shape
        index, weights = self.gate(h)
        x = h.reshape(-1, d)
        if self.training:
            rows = x.repeat_interleave(self.top_k, dim=0)
            flat = index.view(-1)
            y = torch.zeros_like(rows)
            for e, expert in enumerate(self.experts):
                y = y.index_put((torch.where(flat == e)[0],), expert(rows[flat == e]))
            y = (y.view(*index.shape, d) * weights[..., None]).sum(1)
        else:
            y = self.moe_infer(x, index, weights)
        return y.view(b, l, d) + self.shared_experts(h)

    @torch.no_grad()
    def moe_infer(self, x, topk_ids, topk_weight):
        # LLaDA2's construct: an unstable argsort (the default) orders the routed rows, so
        # bit-identical rows (the same prompt twice in a batch) reach an expert in any order
        cnts = topk_ids.new_zeros((topk_ids.shape[0], len(self.experts)))
        cnts.scatter_(1, topk_ids, 1)
        tokens_per_expert = cnts.sum(dim=0).tolist()
        idxs = topk_ids.view(-1).argsort()
        sorted_tokens = x[idxs // topk_ids.shape[1]]
        outputs, start_idx = [], 0
        for i, num_tokens in enumerate(tokens_per_expert):
            if num_tokens == 0:
                continue
            outputs.append(self.experts[i](sorted_tokens[start_idx:start_idx + num_tokens]))
            start_idx += num_tokens
        outs = torch.cat(outputs, dim=0)
        new_x = torch.empty_like(outs)
        new_x[idxs] = outs
        return (new_x.view(*topk_ids.shape, -1) * topk_weight[..., None]).sum(1)


class Layer(nn.Module):
    def __init__(self, config, mlp, attn_attr="self_attn", fused_attention=False):
        super().__init__()
        self.attn_attr = attn_attr
        setattr(self, attn_attr, FusedAttention(config.hidden_size, config.num_attention_heads) if fused_attention
                else Attention(config.hidden_size, config.num_attention_heads))
        self.input_layernorm = RMSNorm(config.hidden_size)
        self.post_attention_layernorm = RMSNorm(config.hidden_size)
        self.mlp = mlp

    def forward(self, x, cos, sin, mask):
        x = x + getattr(self, self.attn_attr)(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class LookalikePreTrained(PreTrainedModel):
    config_class = LookalikeConfig
    base_model_prefix = "model"

    def _init_weights(self, module):  # 4.x style, in place
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=0.1)
'''

DECODER = '''

class Decoder(nn.Module):
    def __init__(self, config, make_mlp, attn_attr="self_attn", fused_attention=False, mask_fn=key_padding):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Layer(config, make_mlp(config), attn_attr, fused_attention)
                                    for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size)
        self.rotary_emb = Rotary(config)
        self.mask_fn = mask_fn

    def forward(self, input_ids, attention_mask=None, inputs_embeds=None):
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        cos, sin = self.rotary_emb(x.shape[1], x.device)
        mask = self.mask_fn(attention_mask) if self.mask_fn is key_padding else \\
            self.mask_fn(attention_mask, x.shape[1])
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.norm(x)


class LMWithHead(LookalikePreTrained):
    _tied_weights_keys = ["lm_head.weight"]  # 4.x: a list of targets

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, input_ids=None, attention_mask=None, use_cache=None, inputs_embeds=None, **kwargs):
        return CausalLMOutput(logits=self.lm_head(self.model(input_ids, attention_mask, inputs_embeds)))
'''

FAMILIES = {
    "dream": dict(model_type="Dream", auto=("AutoModel",), cls="DreamLookalikeModel", body='''

class DreamLookalikeModel(LMWithHead):
    def __init__(self, config):
        super().__init__(config)
        self.model = Decoder(config, lambda c: MLP(c.hidden_size, c.intermediate_size))
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()
'''),
    "llada": dict(model_type="llada", auto=("AutoModel", "AutoModelForCausalLM"), cls="LLaDALookalikeModelLM",
                  llada=True, body='''

# dllm's LLaDA builds its layers on a device named in its code; the hub's copy says "cpu"
INIT_DEVICE = "cuda"


class Block(nn.Module):
    def __init__(self, config, device):
        super().__init__()
        d = config.d_model
        self.attn = Attention(d, config.n_heads, ("q_proj", "k_proj", "v_proj", "attn_out"))
        self.attn_norm, self.ff_norm = RMSNorm(d), RMSNorm(d)
        self.ff_proj = nn.Linear(d, config.intermediate_size, bias=False, device=device)
        self.up_proj = nn.Linear(d, config.intermediate_size, bias=False, device=device)
        self.ff_out = nn.Linear(config.intermediate_size, d, bias=False, device=device)

    def forward(self, x, cos, sin, mask):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask)
        h = self.ff_norm(x)
        return x + self.ff_out(F.silu(self.ff_proj(h)) * self.up_proj(h))


class LLaDALookalikeModel(nn.Module):
    def __init__(self, config, device):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.d_model, device=device),
            blocks=nn.ModuleList(Block(config, device) for _ in range(config.n_layers)),
            ln_f=RMSNorm(config.d_model),
            ff_out=nn.Linear(config.d_model, config.vocab_size, bias=False)))

    def forward(self, input_ids, attention_mask=None, input_embeddings=None):
        x = self.transformer.wte(input_ids) if input_embeddings is None else input_embeddings
        # LLaDA scales (input_emb_norm) and drops out embeddings before the first block, given
        # embeddings too: the split forward must hand the upper layers their input unscaled
        x = x * 1.5
        cos, sin = rope_on_the_fly(self.config.d_model // self.config.n_heads, self.config.rope_theta,
                                   x.shape[1], x.device)
        for block in self.transformer.blocks:
            x = block(x, cos, sin, key_padding(attention_mask))
        return self.transformer.ff_out(self.transformer.ln_f(x))


class LLaDALookalikeModelLM(LookalikePreTrained):
    def __init__(self, config, model=None, init_params=False):
        super().__init__(config)  # 4.x LLaDA never calls self.post_init()
        self.model = model or LLaDALookalikeModel(config, INIT_DEVICE)

    def tie_weights(self):  # a 4.x override: transformers 5 passes recompute_mapping=...
        self.tie_calls = getattr(self, "tie_calls", 0) + 1
        if self.config.tie_word_embeddings:
            self.model.transformer.ff_out.weight = self.model.transformer.wte.weight

    def get_input_embeddings(self):
        return self.model.transformer.wte

    def get_output_embeddings(self):
        return self.model.transformer.ff_out

    def forward(self, input_ids=None, attention_mask=None, use_cache=None, inputs_embeds=None, **kwargs):
        return CausalLMOutput(logits=self.model(input_ids, attention_mask, input_embeddings=inputs_embeds))
'''),
    "llada_moe": dict(model_type="lladamoe", auto=("AutoModelForCausalLM",), cls="LLaDAMoELookalikeModelLM",
                      config_mask_offset=7, body='''

class LLaDAMoELookalikeModelLM(LMWithHead):
    _tied_weights_keys = None

    def __init__(self, config):
        super().__init__(config)
        self.model = Decoder(config, TopKMoE)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()
'''),
    "llada2": dict(model_type="llada2_moe", auto=("AutoModel", "AutoModelForCausalLM"), tie=True,
                   header="from transformers.modeling_attn_mask_utils import AttentionMaskConverter  # noqa\n"
                          "from transformers.utils.import_utils import is_torch_fx_available\n",
                   cls="LLaDA2LookalikeModelLM", body='''

class LLaDA2LookalikeModelLM(LMWithHead):
    def __init__(self, config):
        super().__init__(config)
        self.model = Decoder(config, SharedExpertMoE, attn_attr="attention", fused_attention=True,
                             mask_fn=causal_if_padded)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()


if is_torch_fx_available():  # 4.x: the mask helper stays a leaf of traced graphs
    torch.fx.wrap("causal_if_padded")
'''),
}
FAMILIES["broken"] = dict(FAMILIES["llada2"], broken=True, header=FAMILIES["llada2"]["header"] + (
    "from transformers.pytorch_utils import find_pruneable_heads_and_indices\n"))


def write_family(family: str, root: Path, tok, seed: int = 0) -> tuple[str, torch.nn.Module]:
    """Write the family's code, config and a random checkpoint under ``root/family``.

    Returns (directory, the in-memory model the checkpoint holds) -- the model built
    directly from the written class, before any memdlm fix.
    """
    from safetensors.torch import save_file
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    spec = FAMILIES[family]
    path = root / family
    path.mkdir(parents=True)
    llada = spec.get("llada", False)
    names = dict(hidden="d_model", layers="n_layers", heads="n_heads") if llada else \
        dict(hidden="hidden_size", layers="num_hidden_layers", heads="num_attention_heads")
    attribute_map = {"hidden_size": "d_model", "num_hidden_layers": "n_layers",
                     "num_attention_heads": "n_heads"} if llada else {}
    (path / f"configuration_{family}.py").write_text(
        CONFIG.format(model_type=spec["model_type"], attribute_map=attribute_map, **names))
    header = spec.get("header", "")
    common = COMMON.replace("{family}", family)
    (path / f"modeling_{family}.py").write_text(header + common + ("" if llada else DECODER) + spec["body"])
    auto_map = {"AutoConfig": f"configuration_{family}.LookalikeConfig"}
    auto_map.update({key: f"modeling_{family}.{spec['cls']}" for key in spec["auto"]})
    config = dict(model_type=spec["model_type"], architectures=[spec["cls"]], auto_map=auto_map,
                  vocab_size=len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                  mask_token_id=tok.mask_token_id + spec.get("config_mask_offset", 0),
                  tie_word_embeddings=spec.get("tie", False))
    (path / "config.json").write_text(json.dumps(config))
    tok.save_pretrained(path)
    if spec.get("broken"):
        return str(path), None
    with removed_names_as_in_4x():
        config_cls = get_class_from_dynamic_module(auto_map["AutoConfig"], str(path), local_files_only=True)
        model_cls = get_class_from_dynamic_module(auto_map[spec["auto"][-1]], str(path), local_files_only=True)
    module = sys.modules[model_cls.__module__]
    torch.manual_seed(seed)
    with constructs_resolved_here(module):
        model = _instantiate(model_cls, config_cls.from_pretrained(str(path)))
    forget_modules(model_cls)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if spec.get("tie"):
        state.pop("lm_head.weight")  # as a 4.x save of a tied model: the head is the embedding
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    return str(path), model.eval()


def hand_default_rope(config, device=None, **_):
    """The default rope written out here: inv_freq[i] = 1 / theta ** (2i / head_dim), scaling 1
    (float32, as transformers 4 computed it)."""
    head_dim = config.hidden_size // config.num_attention_heads
    return 1.0 / config.rope_theta ** (torch.arange(0, head_dim, 2).float() / head_dim), 1.0


@contextlib.contextmanager
def removed_names_as_in_4x():
    """transformers 4's is_torch_fx_available (True), only while the reference's code imports."""
    import transformers.utils.import_utils as import_utils

    added = not hasattr(import_utils, "is_torch_fx_available")
    if added:
        import_utils.is_torch_fx_available = lambda: True
    try:
        yield
    finally:
        if added:
            del import_utils.is_torch_fx_available


@contextlib.contextmanager
def constructs_resolved_here(module):
    """The reference build: rope "default" from hand_default_rope, LLaDA's layers on the CPU."""
    saved = {name: getattr(module, name) for name in ("ROPE_INIT_FUNCTIONS", "INIT_DEVICE") if hasattr(module, name)}
    module.ROPE_INIT_FUNCTIONS = {"default": hand_default_rope}
    if "INIT_DEVICE" in saved:
        module.INIT_DEVICE = "cpu"
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def forget_modules(cls) -> None:
    """Drop the family's code from sys.modules: memdlm's load imports it afresh, as a user's would."""
    package = cls.__module__.rpartition(".")[0]
    for name in [n for n in sys.modules if n.startswith(package + ".")]:
        del sys.modules[name]


def _instantiate(model_cls, config):
    """The reference model: built directly, with 4.x semantics (weights initialised in place,
    head tied to the embedding when the config ties)."""
    import torch.nn as nn

    saved = model_cls.__dict__.get("_tied_weights_keys", "absent")
    if isinstance(getattr(model_cls, "_tied_weights_keys", None), list):
        model_cls._tied_weights_keys = None  # transformers 5's post_init cannot read a list
    try:
        model = model_cls(config)
    finally:
        if saved != "absent":
            model_cls._tied_weights_keys = saved
        elif "_tied_weights_keys" in model_cls.__dict__:
            del model_cls._tied_weights_keys
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.1)
    if config.tie_word_embeddings:
        model.get_output_embeddings().weight = model.get_input_embeddings().weight
    return model
