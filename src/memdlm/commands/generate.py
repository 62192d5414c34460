"""``memdlm generate``: answer prompts by iterative denoising.

Examples:

    memdlm generate --model runs/tiny --prompt "The value of red fox is 1234. Question: what is the value of red fox? Answer:"
    memdlm generate --model runs/tiny-mem --prompt-file prompts.txt --memory   # adapt on each prompt first
    memdlm generate --model DIR --prompt "..." --max-new-tokens 64 --steps 32 --block-length 16 --temperature 0.7
    memdlm generate --model DIR --prompt "..." --block-length 16 --unmask-rule threshold --threshold 0.9 --cache dual
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

from memdlm.errors import ConfigError
from memdlm.memory.config import add_adaptation_flags, adaptation_overrides
from memdlm.runs.directory import check_finished

logger = logging.getLogger("memdlm")


def build_parser(prog: str) -> argparse.ArgumentParser:
    from memdlm.commands.sampler_flags import add_sampler_flags
    from memdlm.config import THREADS_HELP
    from memdlm.config import GENERATION_BATCH_SIZE
    from memdlm.runs.placement import add_inference_flags

    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="Run or model directory (with its tokenizer).")
    p.add_argument("--prompt", action="append", default=[], help="A prompt (repeatable).")
    p.add_argument("--prompt-file", help="A text file with one prompt per line.")
    p.add_argument("--chat", action="store_true", help="Wrap each prompt in the tokenizer's chat template.")
    p.add_argument("--memory", action="store_true",
                   help="Inference-time adaptation: write a per-prompt memory from the prompt, then sample.")
    p.add_argument("--batch-size", type=int, default=GENERATION_BATCH_SIZE, help="Prompts per batch (default %(default)s).")
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    p.add_argument("--trust-remote-code", action="store_true", help="Allow model code from --model.")
    p.add_argument("--allow-incomplete", action="store_true", help="Use a run directory that has no run_complete.json (an unfinished or failed run) anyway, with a warning.")
    p.add_argument("--json", action="store_true", help="Print a JSON list instead of plain text.")
    add_sampler_flags(p)
    add_inference_flags(p)
    # unset --steps: as many as the sampler's default allows for --max-new-tokens
    p.set_defaults(steps=None)
    add_adaptation_flags(p)
    return p


def read_prompt_file(path: Path) -> list[str]:
    """One prompt per non-blank line; a missing, unreadable or empty file is an error naming it."""
    from memdlm.errors import MissingFileError

    if not path.is_file():
        raise MissingFileError(f"--prompt-file {path} does not exist" + (" (it is a directory)" if path.is_dir() else ""))
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ConfigError(f"--prompt-file {path} is not UTF-8 text (byte {err.start}); re-save it as UTF-8") from None
    prompts = [line for line in lines if line.strip()]
    if not prompts:
        raise ConfigError(f"--prompt-file {path} holds no prompt (every line is blank); write one prompt per line")
    return prompts


def run(argv: list[str], prog: str = "memdlm generate") -> int:
    args = build_parser(prog).parse_args(argv)
    import torch

    from memdlm.commands.sampler_flags import sampler_values
    from memdlm.config import resolve_threads
    from memdlm.sampling.generation import generate
    from memdlm.runs.placement import record
    from memdlm.runs.run import load_run
    from memdlm.sampling.sampler import SamplerConfig

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    prompts = list(args.prompt)
    if args.prompt_file:
        prompts += read_prompt_file(Path(args.prompt_file))
    if not prompts:
        raise ConfigError("give at least one --prompt or a --prompt-file")
    overrides = adaptation_overrides(args, args.memory, "add --memory")
    check_finished(args.model, args.allow_incomplete)
    torch.set_num_threads(resolve_threads(args.threads))
    loaded = load_run(args.model, args)
    tokenizer = loaded.tokenizer
    if args.chat:
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                 add_generation_prompt=True) for p in prompts]
    if args.steps is None:
        args.steps = max(1, min(SamplerConfig().steps, args.max_new_tokens))
    config = SamplerConfig(**sampler_values(args))
    memory = None
    if args.memory:
        memory = loaded.memory(**overrides)
        logger.info("memory: %s", memory.describe())
    stats: dict = {}
    texts = generate(loaded.model, tokenizer, prompts, config, memory=memory, batch_size=args.batch_size,
                     progress=len(prompts) > args.batch_size, stats=stats, context_overflow=args.context_overflow)
    placement = record(loaded.model)
    logger.info("ran on %s in %s; context: %s", placement["device"], placement["dtype"], stats["context"])
    if args.json:
        sampler = dataclasses.asdict(config.for_model(loaded.model))  # the decoding rule used
        print(json.dumps([{"prompt": p, "response": t, **placement, "context": stats["context"], "sampler": sampler}
                          for p, t in zip(prompts, texts)], indent=2))
    else:
        for t in texts:
            print(t)
    return 0
