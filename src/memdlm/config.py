"""Configuration dataclasses: every hyperparameter is defined once, here.

``memdlm train`` parses (ModelArguments, DataArguments, DiffusionArguments,
MemoryArguments, TrainConfig) with ``transformers.HfArgumentParser``, so each
field's ``help`` is its ``--help`` text, and a YAML/JSON config file can set any
field (flags override the file). Evaluation, generation and analysis reuse the
same classes.
"""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, dataclass, field, fields
from typing import Literal

from memdlm.errors import ConfigError
from memdlm.validation import check_choices, check_range


@dataclass
class ModelArguments:
    """Which backbone and tokenizer to train."""

    model: str | None = field(default=None, metadata={
        "help": "Local model directory (with a tokenizer that has a mask token), a shipped model's "
                "name (e.g. mqar-base) or a hub id ORG/NAME already in the local Hugging Face cache "
                "($HF_HUB_CACHE, else $HF_HOME/hub; never downloaded). Default: a freshly initialised "
                "model from --init-config and the shipped tokenizer."})
    init_config: str | None = field(default=None, metadata={
        "help": "Without --model: the config of the model trained from scratch -- a shipped config's "
                "name (assets/init/, listed at the end; 'tiny' is the bidirectional Gemma3, 'recall' the "
                "2-layer MobileBERT of the shipped mqar-base) or a config.json path naming "
                "a stock transformers class in 'architectures' (e.g. configs/experiments/recall_llama.json). "
                "Default: tiny."})
    trust_remote_code: bool = field(default=False, metadata={
        "help": "Allow model code from the model directory (LLaDA, Dream, LLaDA2). Off unless asked."})
    tiny_layers: int | None = field(default=None, metadata={
        "help": "Tiny default only: number of layers (default 4, from the shipped config)."})
    tiny_hidden_size: int | None = field(default=None, metadata={
        "help": "Tiny default only: hidden size (default 128)."})
    tiny_intermediate_size: int | None = field(default=None, metadata={
        "help": "Tiny default only: FFN width (default from the shipped config)."})
    tiny_heads: int | None = field(default=None, metadata={
        "help": "Tiny default only: attention heads (default 4); the head width becomes hidden size / heads "
                "and the key/value heads half the heads (grouped-query attention as shipped)."})
    tiny_overrides: str | None = field(default=None, metadata={
        "help": "Tiny default only: other config fields as JSON, e.g. '{\"query_pre_attn_scalar\": 8}'."})
    load_in_4bit: bool = field(default=False, metadata={
        "help": "Load --model with 4-bit NF4 weights (double quantisation, bfloat16 compute) through "
                "bitsandbytes and prepare it for k-bit training (peft's prepare_model_for_kbit_training): "
                "QLoRA, the paper's setting; needs --use-lora. Runs on a CPU too (bitsandbytes >= 0.49). "
                "Fast weights stay float32."})
    load_in_8bit: bool = field(default=False, metadata={
        "help": "Load --model with 8-bit (LLM.int8) weights through bitsandbytes, prepared for k-bit "
                "training; needs --use-lora."})
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(default="auto", metadata={
        "help": "Dtype of the model's weights. auto: float32 master weights when every weight is trained "
                "(a bfloat16 checkpoint is upcast; train with --bf16 for bfloat16 compute), the checkpoint's "
                "own dtype under --use-lora (the frozen base), bfloat16 for the unquantised parts of a "
                "4/8-bit model."})
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2", "flex_attention"] = field(
        default="auto", metadata={
            "help": "Attention kernel passed to from_pretrained (auto: the model's own choice; "
                    "flash_attention_2 needs a CUDA GPU and the flash-attn package)."})
    use_lora: bool = field(default=False, metadata={
        "help": "Train an outer LoRA adapter through PEFT instead of all weights (the paper's setting)."})
    lora_r: int = field(default=32, metadata={"help": "Outer LoRA rank (paper: 32)."})
    lora_alpha: int = field(default=64, metadata={"help": "Outer LoRA alpha (paper: 64)."})
    lora_target_modules: str = field(default="all-linear", metadata={
        "help": "Outer LoRA targets: 'all-linear', a comma-separated list of module names, or a regex."})
    save_merged_lora: bool = field(default=False, metadata={
        "help": "With --use-lora: also save RUN/merged, the base with the adapter merged in (a full model "
                "copy, loaded instead of base + adapter; lets the run travel without its base)."})

    def __post_init__(self):
        check_choices(self)
        if self.load_in_4bit and self.load_in_8bit:
            raise ConfigError("--load-in-4bit and --load-in-8bit exclude each other; choose one")
        check_range(self, "tiny_layers tiny_hidden_size tiny_intermediate_size tiny_heads", 1, optional=True)
        check_range(self, "lora_r", 1)
        check_range(self, "lora_alpha", 0, low_open=True)


@dataclass
class DataArguments:
    """What to train on. Without --data, generated long-context tasks are used."""

    data: str | None = field(default=None, metadata={
        "help": "A .json/.jsonl/.parquet/.arrow file or a hub dataset name (e.g. Yukang/LongAlpaca-12k; read "
                "from the local cache when the hub is unreachable), all read by datasets.load_dataset, whose "
                "rows are prompt/response, instruction/input/output, messages or text; or a .txt file for "
                "pre-training. Default: generated tasks (see --tasks)."})
    data_split: str = field(default="train", metadata={
        "help": "With --data: the split to train on (local files have one, 'train'); a slice such as "
                "'train[:1000]' works without --data-streaming."})
    data_streaming: bool = field(default=False, metadata={
        "help": "With --data: read and tokenise rows while training (datasets streaming) instead of all up "
                "front; data_report.json counts the rows of the first pass and is rewritten at the end."})
    tasks: list[str] = field(default_factory=lambda: ["kv"], metadata={
        "help": "Generated tasks to train on (when --data is not given), by registered name "
                "(memdlm.tasks.task_names(); listed at the end)."})
    train_lengths: list[int] = field(default_factory=lambda: [128], metadata={
        "help": "Context lengths (tokens) of generated training samples, cycled."})
    num_train_samples: int = field(default=200_000, metadata={
        "help": "Number of distinct generated training samples (made lazily)."})
    num_eval_samples: int = field(default=64, metadata={
        "help": "Held-out samples for the evaluation loss (0 disables)."})
    max_length: int = field(default=4096, metadata={
        "help": "Longest example in tokens; longer file rows are dropped and listed in data_report.json."})
    block_size: int | None = field(default=None, metadata={
        "help": "Block length for packed plain text (default: max_length)."})
    pad_with_eos: bool = field(default=False, metadata={
        "help": "LLaDA SFT convention: pad responses with EOS tokens that are maskable targets."})
    mask_prompt: bool = field(default=False, metadata={
        "help": "Generated tasks only: make prompt tokens maskable and scored too (pre-training on the "
                "task text as plain text, every token a target) instead of asymmetric masking."})
    haystack: str = field(default="prose", metadata={
        "help": "Filler of generated tasks (training and held-out items): prose (varied sentences), noise "
                "(RULER's repeated paragraph) or a text file's sentences."})
    heldout_items: int = field(default=200, metadata={
        "help": "After training, answer this many held-out generated prompts and report exact match (0 skips)."})
    data_seed_offset: int = field(default=0, metadata={
        "help": "Shifts the generated training samples (a different draw of the same distribution)."})

    def __post_init__(self):
        if not self.tasks:
            raise ConfigError("--tasks needs at least one task")
        check_range(self, "train_lengths max_length num_train_samples", 1)
        check_range(self, "block_size", 1, optional=True)
        check_range(self, "num_eval_samples heldout_items", 0)


@dataclass
class DiffusionArguments:
    """The MDLM objective (Sahoo et al. 2024; the weighting and normalisation of memdlm.diffusion.loss)."""

    schedule: Literal["linear", "cosine"] = field(default="linear", metadata={
        "help": "Noise schedule alpha(t): linear (masked fraction = t) or cosine."})
    weighting: Literal["scheduler", "uniform"] = field(default="scheduler", metadata={
        "help": "Loss weight per masked token: the ELBO weight -alpha'(t)/(1-alpha(t)) (1/t for linear) or 1."})
    normalization: Literal["token", "sequence", "batch"] = field(default="token", metadata={
        "help": "Divide the batch's weighted sum by its maskable token count (token), average per-sequence "
                "means (sequence), or divide by the batch size (batch). Never by masked counts."})
    time_eps: float = field(default=1e-3, metadata={"help": "t ~ U(eps, 1)."})

    def __post_init__(self):
        check_choices(self)
        if not 0 < self.time_eps < 1:
            raise ConfigError(f"time_eps must be in (0, 1), got {self.time_eps}")


# Inference batch sizes: every default of a command's --batch-size and of a function's
# batch_size=. Batching changes speed and memory, not what is computed (per-item seeds);
# the values are those the committed results record (suite.json's and exposure_bias.json's
# "batch_size"). Training's are TrainConfig's per_device_{train,eval}_batch_size fields.
GENERATION_BATCH_SIZE = 16  # prompts per batch: memdlm generate, held-out accuracy after training, lm-eval
# items per batch where an item costs several rows or its own adapted memory: memdlm eval's
# suite, the per-item loss (one row per mask level), exposure bias (5 rows per item), the probe
EVAL_BATCH_SIZE = 8

THREADS_HELP = "CPU threads (torch.set_num_threads). Default: OMP_NUM_THREADS if set, else every core up to 8."


def default_threads() -> int:
    """Threads for CPU work: every core, up to 8; the environment wins if it says.

    Measured here (2-core VM, tiny model, batch 16 x 128 tokens): a training step took
    266 ms on two threads against 461 ms on one. Tests pin one thread
    (OMP_NUM_THREADS=1) so that they can run side by side.
    """
    text = os.environ.get("OMP_NUM_THREADS", "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise ConfigError(f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']!r} is not a whole number >= 1; "
                              "set it to one (e.g. OMP_NUM_THREADS=4) or unset it")
        return int(text)
    return max(1, min(8, os.cpu_count() or 1))


def resolve_threads(threads: int | None) -> int:
    """``--threads`` when given (>= 1: 0 is not "all of them"), else :func:`default_threads`."""
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"--threads must be a whole number >= 1, got {threads!r}")
    return threads


def config_dict(**parts) -> dict:
    """The resolved configuration (all parts) in JSON types, as ``run_config.json`` holds it."""
    def as_dict(obj):
        if hasattr(obj, "to_dict"):
            return obj.to_dict()
        return dict(obj.__dict__)

    return json.loads(json.dumps({name: as_dict(obj) for name, obj in parts.items()}, default=str))


def field_default(cls, name: str):
    """The default of dataclass ``cls``'s field ``name``, for code that needs it as a value
    (a preset's default) and must not retype it."""
    for f in fields(cls):
        if f.name == name:
            return f.default_factory() if f.default is MISSING else f.default
    raise KeyError(f"{cls.__name__} has no field {name!r}")
