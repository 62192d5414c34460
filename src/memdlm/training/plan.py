"""What a training run will hold, before it runs: ``memdlm plan``.

The model is built on the meta device from its config alone (no weights are read or
allocated): a local model directory, a hub model in the local cache, a shipped hub-style
config of one of the paper's models (``assets/hub_configs/``), or the from-scratch
configs. A remote-code family whose code is absent is replaced by a stock architecture of
the same shapes (:mod:`memdlm.backbones.stand_ins`). The settings are resolved exactly as
``memdlm train`` resolves them (``training.options.parse``), and the plan reports:

- the memory's targets (modules and layers) and its fast-weight parameter count;
- the outer LoRA adapter's parameter count (PEFT on the meta model, so the count is PEFT's);
- an estimate of the peak accelerator memory per device, by component, and whether it
  fits 24 / 48 / 80 GB.

The estimate (bytes; b micro-batch, s length, h hidden size, f the FFN width a token
passes through -- the routed experts' and shared expert's for MoE --, L layers, V
vocabulary, a the activation bytes: 2 under bf16/fp16 compute, else 4):

- weights: quantised linear layers at 0.5 (NF4 with double quantisation: +1/64 for the
  block scales) or 1 byte per parameter; every other parameter at the weights' dtype
  (float32 after k-bit preparation);
- adapters, gradients and AdamW's two moments at 4 bytes per trained parameter (float32),
  or the weights' dtype when every weight is trained;
- with ``--fsdp`` over N devices the four above are divided by N (full sharding);
- activations kept for the backward: ``ACT_PER_TOKEN_H * h + ACT_PER_TOKEN_F * f + s`` values
  per token per layer (inputs of the norms, projections, attention and the gated FFN, and
  the 4-D attention mask -- none under flash attention);
  with gradient checkpointing only each layer's input (h per token per layer) plus one
  layer's worth during its recomputation; eager attention adds two s x s maps per head;
- logits: b s V (a + 4 + 4) -- the worst step, every position scored (bf16 logits, their
  float32 upcast for the loss and its gradient); memdlm computes logits only at scored
  positions, so most steps hold less;
- MemDLM's inner loop: the fast weights (value, gradient, update: 3 x 4 bytes per
  fast-weight parameter per slot); its stages run before the outer pass and free their
  graphs, so their activations do not add to the outer pass's peak (measured on a CPU);
- runtime: 1 GiB for the CUDA context, kernels and allocator slack.

docs/SCALING.md states how far the estimate was from measured peaks on a CPU.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from memdlm.errors import MissingFileError
from memdlm.backbones.modeling import init_config_path
from memdlm.backbones.shipped import resolve_model
from memdlm.backbones.modeling import tiny_config
from memdlm.backbones.tokenizer import load_tokenizer
from memdlm.training.train import tiny_overrides
from memdlm.backbones.stand_ins import stand_in_config
from memdlm.backbones.remote_code import RemoteCodeError
from memdlm.memory.experts import fused_expert_params, num_experts
from memdlm.training.train import wrap_lora
from memdlm.training.train import weights_dtype
from memdlm.memory.experts import fused_expert_params
from memdlm.backbones.families import family_of
from memdlm.memory.targets import targets_for

GIB = 1024 ** 3
CAPACITIES_GB = (24, 48, 80)
# Values kept for the backward per token per layer: ACT_PER_TOKEN_H of width h (norm inputs
# and outputs, their float32 upcasts, q k v, attention output, residuals), ACT_PER_TOKEN_F of
# width f (gate, up, activation, their product) and one of width s (the 4-D attention mask
# a padded batch passes to every layer). Fitted to the CPU peaks of benchmarks/plan_memory.py
# (docs/SCALING.md has the fit and the error on held-out shapes).
ACT_PER_TOKEN_H = 18
ACT_PER_TOKEN_F = 4
RUNTIME_BYTES = 1 * GIB
HUB_CONFIGS = Path(__file__).resolve().parent.parent / "assets" / "hub_configs"


@dataclass
class ModelSource:
    """Where the plan's model config came from, and what was built from it."""

    config_dict: dict
    origin: str  # a sentence: the directory, cache or shipped file read
    directory: Path | None = None  # the model directory (its remote code, if trusted)
    stand_in: str | None = None  # the stock class used in place of absent remote code
    built: tuple | None = None  # (architecture, config) of a from-scratch model


@dataclass
class Plan:
    source: ModelSource
    architecture: str
    parameters: int
    targets: list[str]
    target_layers: list[int]
    family_ffn_names: tuple[str, ...]
    fast_weight_params: int  # per slot
    slots: int
    lora_params: int
    trainable_params: int
    memory: dict[str, int] = field(default_factory=dict)  # component -> bytes per device
    settings: dict = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(self.memory.values())

    def verdicts(self) -> dict[int, bool]:
        return {gb: self.total_bytes <= gb * 1e9 for gb in CAPACITIES_GB}

    def to_dict(self) -> dict:
        return {"model": self.source.origin, "stand_in": self.source.stand_in, "architecture": self.architecture,
                "parameters": self.parameters, "memory_targets": self.targets, "memory_layers": self.target_layers,
                "fast_weight_params_per_slot": self.fast_weight_params, "memory_slots": self.slots,
                "lora_params": self.lora_params, "trainable_params": self.trainable_params,
                "memory_bytes": self.memory, "total_bytes": self.total_bytes,
                "fits_gb": {str(k): v for k, v in self.verdicts().items()}, "settings": self.settings}


# --- the model's config, and the model on the meta device ---------------------------------------


def model_source(model_args) -> ModelSource:
    """The config a plan builds from, for ``--model`` / ``--init-config`` / the tiny default."""

    if model_args.model is None:

        path = init_config_path(model_args.init_config)
        architecture, config = tiny_config(load_tokenizer(), path, **tiny_overrides(model_args))
        return ModelSource(config.to_dict(), f"from-scratch config {path.name}", built=(architecture, config))
    resolved = resolve_model(model_args.model)
    config_file = Path(resolved) / "config.json"
    if config_file.is_file():
        return ModelSource(json.loads(config_file.read_text()), f"{model_args.model} ({config_file})",
                           directory=config_file.parent)
    shipped = HUB_CONFIGS / model_args.model.replace("/", "--") / "config.json"
    if shipped.is_file():
        return ModelSource(json.loads(shipped.read_text()),
                           f"{model_args.model}: not on this machine; shapes from memdlm's hub-style copy {shipped}")
    known = ", ".join(p.name.replace("--", "/") for p in sorted(HUB_CONFIGS.iterdir()) if p.is_dir())
    raise MissingFileError(f"--model {model_args.model}: no config.json there, in the hub cache, or among the "
                           f"shipped hub-style configs ({known})")


def build_meta_model(source: ModelSource, model_args):
    """The model, every tensor on the meta device (nothing allocated), and the source updated
    with the stand-in used for absent remote code."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM


    if source.built is not None:
        import transformers

        architecture, config = source.built
        with torch.device("meta"):
            return getattr(transformers, architecture)(config)
    config_dict = dict(source.config_dict)
    config = None
    if config_dict.get("auto_map"):
        local = source.directory
        if local is not None and model_args.trust_remote_code and any(local.glob("*.py")):
            config = AutoConfig.from_pretrained(str(local), trust_remote_code=True, local_files_only=True)
        else:
            config = stand_in_config(config_dict)
            if config is None:

                raise RemoteCodeError(f"{source.origin}: model_type {config_dict.get('model_type')!r} needs its "
                                      "own code, which is absent, and memdlm has no stand-in for it")
            moe = ("; its fused experts are counted as the real model's per-expert linear layers "
                   "(4-bit, LoRA targets)") if config_dict.get("num_experts") else ""
            source.stand_in = (f"{type(config).__name__.replace('Config', '')} of the same shapes "
                               f"(the {config_dict.get('model_type')} code is not here; module names are the "
                               f"stand-in's{moe})")
    if config is None:
        kwargs = {k: v for k, v in config_dict.items() if k not in ("model_type", "transformers_version")}
        config = AutoConfig.for_model(config_dict["model_type"], **kwargs)
    architectures = getattr(config, "architectures", None) or []
    loader = AutoModelForMaskedLM if any("MaskedLM" in a for a in architectures) else AutoModelForCausalLM
    with torch.device("meta"):
        if config_dict.get("auto_map") and not source.stand_in:
            model = loader.from_config(config, trust_remote_code=True)
        else:
            model = loader.from_config(config)
    return model


# --- counts -------------------------------------------------------------------------------------


def lora_parameter_count(model, model_args, experts_as_linear: bool = False) -> int:
    """The outer adapter's parameters on linear layers, counted by PEFT itself on the meta
    model (unloaded again after counting).

    ``experts_as_linear``: a stand-in's fused experts stand for the real model's per-expert
    linear layers, which ``all-linear`` adapts: r (in + out) per expert projection is added
    (a fused gate_up projection is two projections of half the width).
    """
    if not model_args.use_lora:
        return 0
    import warnings

    import torch


    with contextlib.redirect_stdout(None), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT's notes on patterns for fused experts it does not adapt
        wrapped = wrap_lora(model, model_args)
    count = sum(p.numel() for name, module in wrapped.named_modules()
                if isinstance(getattr(module, "base_layer", None), torch.nn.Linear)
                for n, p in module.named_parameters() if ".lora_" in f".{n}" or n.startswith("lora_"))
    wrapped.unload()  # the base model as it was, for the counts that follow
    if experts_as_linear and model_args.lora_target_modules == "all-linear":
        r = model_args.lora_r
        for module in model.modules():
            params = fused_expert_params(module)
            for param, in_f, out_f in params or ():
                halves = 2 if "gate_up" in param else 1
                count += num_experts(module) * halves * r * (in_f + out_f // halves)
    return count


def fast_weight_count(targets, rank: int, dense: bool) -> int:
    """Fast-weight parameters of one memory slot: r (in + out) per target, or in x out dense."""
    return sum(t.in_features * t.out_features if dense else rank * (t.in_features + t.out_features)
               for t in targets)


# --- the estimate -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shapes:
    hidden: int
    layers: int
    ffn: int  # FFN width one token passes through (routed experts + shared expert for MoE)
    vocab: int
    heads: int

    @classmethod
    def of(cls, config) -> Shapes:
        get = lambda *names, default=None: next((getattr(config, n) for n in names  # noqa: E731
                                                 if getattr(config, n, None)), default)
        hidden = get("hidden_size", "d_model")
        experts_per_token = get("num_experts_per_tok")
        if experts_per_token and get("moe_intermediate_size"):
            ffn = experts_per_token * get("moe_intermediate_size") + get("shared_expert_intermediate_size", default=0)
        else:
            ffn = get("intermediate_size", default=4 * hidden)
        return cls(hidden, get("num_hidden_layers", "n_layers"), ffn, get("vocab_size"),
                   get("num_attention_heads", "n_heads"))


def loaded_dtype(model_args, config_dict: dict):
    """The dtype the run's weights are held in: ``--dtype`` resolved, else the checkpoint's."""
    import torch


    dtype = weights_dtype(model_args)
    if dtype is None:
        name = str(config_dict.get("dtype") or config_dict.get("torch_dtype") or "float32")
        dtype = getattr(torch, name.replace("torch.", ""), torch.float32)
    return dtype


def parameter_bytes(model, model_args, config_dict: dict, kbit_prepared: bool,
                    experts_as_linear: bool = False) -> int:
    """Bytes of the base model's weights as the run will hold them. ``experts_as_linear``:
    fused expert tensors are quantised like linear layers (a stand-in's fused experts are the
    real model's per-expert linear layers, which bitsandbytes quantises)."""
    import torch


    quantised = 0.5 + 0.5 / 64 if model_args.load_in_4bit else 1.0 if model_args.load_in_8bit else None
    other = 4 if kbit_prepared else torch.empty(0, dtype=loaded_dtype(model_args, config_dict)).element_size()
    head = model.get_output_embeddings()
    total, seen = 0, set()
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if id(p) in seen:  # tied embeddings count once
                continue
            seen.add(id(p))
            linear = (isinstance(module, torch.nn.Linear) and module is not head) or \
                (experts_as_linear and fused_expert_params(module) is not None)
            total += p.numel() * (quantised if (quantised and linear and p.dim() >= 2) else other)
    return int(total)


def sequence_length(data_args) -> int:
    """The longest sequence a step holds: the longest generated length, else --max-length
    (prompt/response rows) or the packing block."""
    if data_args.data is None:
        return max(data_args.train_lengths)
    return data_args.block_size or data_args.max_length


def estimate_memory(model, setup, config_dict: dict, shapes: Shapes, lora_params: int, trainable: int,
                    fast_weight_params: int, slots: int, devices: int = 1,
                    experts_as_linear: bool = False) -> dict[str, int]:
    """Peak bytes per device by component (the module docstring gives each formula)."""
    import torch

    m, t = setup.model, setup.train
    quantised = m.load_in_4bit or m.load_in_8bit
    shard = devices if getattr(t, "fsdp", None) else 1
    weights = parameter_bytes(model, m, config_dict, kbit_prepared=quantised, experts_as_linear=experts_as_linear)
    dtype = loaded_dtype(m, config_dict)
    # PEFT keeps adapters in float32; trained full weights are in the loaded dtype
    trained_bytes = 4 if m.use_lora else torch.empty(0, dtype=dtype).element_size()
    act = 2 if (t.bf16 or t.fp16 or dtype in (torch.bfloat16, torch.float16)) else 4
    b, s, h, f, L, V = (t.per_device_train_batch_size, sequence_length(setup.data), shapes.hidden, shapes.ffn,
                        shapes.layers, shapes.vocab)
    mask = 0 if m.attn_implementation == "flash_attention_2" else s  # flash attention takes no 4-D mask
    per_layer = b * s * (ACT_PER_TOKEN_H * h + ACT_PER_TOKEN_F * f + mask) * act
    attention_maps = 2 * b * shapes.heads * s * s * act if m.attn_implementation == "eager" else 0
    if t.gradient_checkpointing:
        activations = L * b * s * h * act + per_layer + attention_maps
    else:
        activations = L * (per_layer + attention_maps)
    logits = b * s * V * (act + 4 + 4)
    memory = {
        "weights": weights // shard,
        "adapters": lora_params * 4 // shard,
        "gradients": trainable * trained_bytes // shard,
        "optimizer": 2 * trainable * trained_bytes // shard,
        "activations": activations,
        "logits": logits,
    }
    if t.method == "memdlm":
        # The inner stages run (and free their graphs) before the outer pass, whose lower layers
        # they share: their peak is below the outer pass's (measured: MemDLM's CPU peak equals
        # MDLM's to 1 %), so what they add is the fast weights (value, gradient, update).
        memory["inner_loop"] = 3 * 4 * fast_weight_params * slots
    memory["runtime"] = RUNTIME_BYTES
    return memory


# --- the plan -----------------------------------------------------------------------------------


def make_plan(setup, devices: int = 1) -> Plan:

    source = model_source(setup.model)
    model = build_meta_model(source, setup.model)
    shapes = Shapes.of(model.config)
    parameters = sum(p.numel() for p in model.parameters())  # tied weights once (parameters() dedupes)
    lora = lora_parameter_count(model, setup.model, experts_as_linear=bool(source.stand_in))
    mem = setup.memory
    targets = targets_for(model, mem)
    rank = mem.rank_for(shapes.hidden)
    fast = fast_weight_count(targets, rank, mem.memory_dense)
    slots = setup.train.per_device_train_batch_size if mem.memory_mode == "per_sample" else 1
    layers = sorted({t.layer for t in targets if t.layer >= 0})
    trainable = lora if setup.model.use_lora else parameters
    memory = estimate_memory(model, setup, source.config_dict, shapes, lora, trainable, fast, slots,
                             devices, experts_as_linear=bool(source.stand_in))
    family = family_of(type("Config", (), {"model_type": source.config_dict.get("model_type")})())
    settings = {"method": setup.train.method, "precision": precision_name(setup, source.config_dict),
                "micro_batch": setup.train.per_device_train_batch_size, "length": sequence_length(setup.data),
                "gradient_checkpointing": bool(setup.train.gradient_checkpointing),
                "sharding": f"fsdp over {devices} devices" if getattr(setup.train, "fsdp", None) else "none",
                "memory_mode": mem.memory_mode, "memory_rank": rank,
                "attn_implementation": setup.model.attn_implementation}
    return Plan(source, type(model).__name__, parameters, [t.name for t in targets], layers,
                family.ffn, fast, slots, lora, trainable, memory, settings)


def precision_name(setup, config_dict: dict) -> str:
    m, t = setup.model, setup.train
    dtype = str(loaded_dtype(m, config_dict)).replace("torch.", "")
    base = "4-bit NF4" if m.load_in_4bit else "8-bit" if m.load_in_8bit else f"{dtype} weights"
    compute = "bf16" if t.bf16 else "fp16" if t.fp16 else "fp32"
    return f"{base}, {compute} compute"


def render(plan: Plan) -> str:
    """The plan as text."""
    lines = [f"model: {plan.source.origin}"]
    if plan.source.stand_in:
        lines.append(f"built as: {plan.source.stand_in}")
    lines.append(f"architecture (meta device, no weights): {plan.architecture}, "
                 f"{plan.parameters / 1e9:.3g}B parameters")
    lines.append("settings: " + ", ".join(f"{k} {v}" for k, v in plan.settings.items()))
    shown = plan.targets if len(plan.targets) <= 12 else plan.targets[:6] + ["..."] + plan.targets[-3:]
    lines.append(f"memory targets: {len(plan.targets)} modules in layers {plan.target_layers}: {', '.join(shown)}")
    if plan.source.stand_in:
        lines.append(f"  (on the real model: its FFN projections {', '.join(plan.family_ffn_names)})")
    lines.append(f"fast weights: {plan.fast_weight_params:,} parameters per slot x {plan.slots} slot(s)")
    lines.append(f"LoRA adapter: {plan.lora_params:,} parameters; trained: {plan.trainable_params:,}")
    lines.append("peak accelerator memory per device (estimate):")
    for name, value in plan.memory.items():
        lines.append(f"  {name:<12} {value / GIB:9.2f} GiB")
    lines.append(f"  {'total':<12} {plan.total_bytes / GIB:9.2f} GiB ({plan.total_bytes / 1e9:.1f} GB)")
    lines.append("verdict: " + ", ".join(f"{gb} GB {'fits' if ok else 'does not fit'}"
                                        for gb, ok in plan.verdicts().items()))
    return "\n".join(lines)
