"""``memdlm exposure-bias``: the exposure-bias ratio per denoising step (paper Fig. 3).

Examples:

    memdlm exposure-bias --run mdlm=runs/tiny --run memdlm=runs/tiny-mem \\
        --run memdlm+inf=runs/tiny-mem:memory --output-dir runs/eb        # CPU, tiny runs
    memdlm exposure-bias --run base=DIR --run base+inf=DIR:memory --items 64 --steps 48 \\
        --length 1024 --output-dir OUT                                    # one GPU, paper's 48 steps

For each run, held-out items of a generated task (``--task``, eval split)
are decoded from all-mask in ``--steps`` steps and scored at every step (definitions:
:mod:`memdlm.eval.exposure_bias`): L_seq on the model's own trajectory, L_static on a
random mask of the same size, L_static_same on the trajectory's masked positions with
the true context; R_EB = L_seq / L_static, R_ctrl = L_seq / L_static_same. A run
``NAME=DIR:memory`` adapts a memory on each prompt first ("Train & Inference"),
configured from the run's ``run_config.json`` when it has one. Writes
OUT/exposure_bias.json and OUT/exposure_bias.png and prints a table.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, fields
from pathlib import Path

from memdlm.errors import ConfigError, MissingFileError
from memdlm.memory.config import add_adaptation_flags, adaptation_overrides
from memdlm.runs.directory import check_finished

logger = logging.getLogger("memdlm")


@dataclass(frozen=True)
class RunSpec:
    name: str
    path: str
    memory: bool


def parse_run(text: str) -> RunSpec:
    """``NAME=DIR`` or ``NAME=DIR:memory``."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise ConfigError(f"--run {text!r}: expected NAME=DIR or NAME=DIR:memory")
    memory = path.endswith(":memory")
    if memory:
        path = path[: -len(":memory")]
    return RunSpec(name, path, memory)


def build_parser(prog: str) -> argparse.ArgumentParser:
    from memdlm.config import THREADS_HELP
    from memdlm.eval.exposure_bias import EXPOSURE_TASK, ExposureBiasConfig

    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", required=True, metavar="NAME=DIR[:memory]",
                   help="A run to analyse (repeatable): a name, its model directory, and ':memory' "
                        "to adapt a per-prompt memory on the prompt (Train & Inference mode).")
    p.add_argument("--output-dir", required=True,
                   help="Where exposure_bias.json and exposure_bias.png are written.")
    p.add_argument("--items", type=int, default=32, help="Held-out prompt/response pairs per run.")
    p.add_argument("--length", type=int, default=256,
                   help="Total length (prompt + response, tokens) of the generated items.")
    p.add_argument("--task", default=EXPOSURE_TASK,
                   help="Generated task supplying the items (eval split); needs responses of at "
                        "least --steps tokens (default %(default)s).")
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    p.add_argument("--trust-remote-code", action="store_true", help="Allow model code from DIR.")
    p.add_argument("--allow-incomplete", action="store_true", help="Use a run directory that has no run_complete.json (an unfinished or failed run) anyway, with a warning.")
    from memdlm.runs.placement import add_inference_flags

    add_inference_flags(p)
    defaults = ExposureBiasConfig()
    for f in fields(ExposureBiasConfig):
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                           help=f.metadata["help"])
        else:
            p.add_argument(flag, type=type(default), default=default, help=f.metadata["help"])
    add_adaptation_flags(p)
    return p


def format_table(results: dict) -> str:
    """Step, masked fraction, L_seq, L_static, their gap, R_EB, R_ctrl per run (name -> dict)."""
    lines = []
    for name, d in results.items():
        lines.append(f"{name}  ({d['items']} items, {d['steps']} steps"
                     f"{', memory on the prompt' if d['memory'] else ''})")
        lines.append(f"{'step':>4} {'masked':>6} {'L_seq':>8} {'L_static':>8} {'gap':>8} {'R_EB':>6} "
                     f"{'R_ctrl':>6}")
        for k in d["step"]:
            lines.append(f"{k:>4} {d['masked_fraction'][k]:>6.2f} {d['l_seq'][k]:>8.4f} "
                         f"{d['l_static'][k]:>8.4f} {d['l_seq'][k] - d['l_static'][k]:>+8.4f} "
                         f"{d['r_eb'][k]:>6.3f} {d['r_ctrl'][k]:>6.3f}")
    return "\n".join(lines)


def run(argv: list[str], prog: str = "memdlm exposure-bias") -> int:
    args = build_parser(prog).parse_args(argv)
    specs = [parse_run(r) for r in args.run]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"run names must be distinct, got {names}")
    for s in specs:
        if not Path(s.path).is_dir():
            raise MissingFileError(f"--run {s.name}: model directory {s.path} does not exist")
        check_finished(s.path, args.allow_incomplete)
    overrides = adaptation_overrides(args, any(s.memory for s in specs), "give a run NAME=DIR:memory")
    import torch

    from memdlm.config import resolve_threads
    from memdlm.eval.exposure_bias import ExposureBiasConfig, exposure_bias, heldout_pairs
    from memdlm.outputs import prepare_output_dir, write_json_atomic
    from memdlm.runs.run import load_run

    torch.set_num_threads(resolve_threads(args.threads))
    config = ExposureBiasConfig(**{f.name: getattr(args, f.name) for f in fields(ExposureBiasConfig)})
    out = prepare_output_dir(args.output_dir)  # before any model is loaded
    results, loaded = {}, {}
    for spec in specs:
        if spec.path not in loaded:  # keep one model at a time; DIR, DIR:memory in a row load once
            loaded = {spec.path: load_run(spec.path, args)}
        current = loaded[spec.path]
        model, tokenizer = current.model, current.tokenizer
        pairs = heldout_pairs(tokenizer, args.items, args.length, args.task)
        memory = current.memory(**overrides) if spec.memory else None
        logger.info("exposure bias: %s (%s%s)", spec.name, spec.path,
                    f", memory: {memory.describe()}" if memory else "")
        result = exposure_bias(model, tokenizer, pairs, config, memory=memory, progress=True,
                               meta={"run": spec.path, "task": args.task, "length": args.length},
                               context_overflow=args.context_overflow)
        results[spec.name] = result.to_dict(config.bootstrap)
        # rewritten as each run finishes: a failure at a later run loses none of the earlier ones
        write_json_atomic(out / "exposure_bias.json", {"config": vars(args), "runs": results,
                                                       "complete": len(results) == len(specs)})
    print(format_table(results))
    try:
        from memdlm.eval.plots import plot_exposure_bias

        plot_exposure_bias(results, out / "exposure_bias.png")
    except ImportError as err:  # matplotlib is an optional extra; the JSON is already written
        logger.warning("no figure: %s", err)
    print(f"wrote {out / 'exposure_bias.json'}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(run(sys.argv[1:]))
