"""The ``memdlm`` command line. Heavy imports happen inside each subcommand.

    memdlm train --method mdlm --output-dir runs/tiny          # tiny default, CPU, minutes
    memdlm train --method memdlm --output-dir runs/tiny-mem    # MemDLM bi-level training
    memdlm generate --model runs/tiny --prompt "..."           # iterative denoising
    memdlm <command> --help                                    # every option, with defaults
"""

from __future__ import annotations

import argparse
import logging
import sys

from memdlm.errors import USER_ERRORS, Stopped, disk_full_message

COMMANDS = {
    "train": ("memdlm.commands.train", "Train a masked diffusion LM (Standard MDLM or MemDLM)."),
    "generate": ("memdlm.commands.generate", "Generate with iterative denoising (optionally with memory)."),
    "eval": ("memdlm.commands.evaluate", "Long-context evaluation of one or more runs over lengths."),
    "exposure-bias": ("memdlm.commands.exposure_bias", "Exposure-bias ratio per denoising step."),
    "lm-eval": ("memdlm.commands.lm_eval", "Run lm-evaluation-harness tasks with a memdlm model."),
    "reproduce": ("memdlm.commands.reproduce", "Mini reproduction of the MemDLM paper on a CPU."),
    "plan": ("memdlm.commands.plan", "What a training run will hold (targets, counts, peak memory), before it runs."),
}


def _available() -> dict:
    import importlib.util

    return {name: spec for name, spec in COMMANDS.items() if importlib.util.find_spec(spec[0]) is not None}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = _available()
    parser = argparse.ArgumentParser(
        prog="memdlm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in commands.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    if argv[0] not in commands:
        parser.error(f"unknown command {argv[0]!r}; choose one of {', '.join(commands)}")
    import importlib

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    module = importlib.import_module(commands[argv[0]][0])
    previous = _stop_on_sigterm()
    try:
        return module.run(argv[1:], prog=f"memdlm {argv[0]}") or 0
    except USER_ERRORS as err:  # the user's to fix (memdlm.errors): one line, exit code 2
        print(f"memdlm {argv[0]}: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        message = disk_full_message(err)  # a full disk is the user's to fix too
        if message is None:
            raise
        print(f"memdlm {argv[0]}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: one line, exit 130 / 143, no traceback
        stopped = err if isinstance(err, Stopped) else Stopped("SIGINT")
        print(f"memdlm {argv[0]}: {stopped.message}", file=sys.stderr)
        return stopped.exit_code
    finally:
        _restore_sigterm(previous)


def _stop_on_sigterm():
    """SIGTERM (what schedulers send before a kill) unwinds like Ctrl-C: ``errors.Stopped``.
    Only from the main thread (Python's rule for signal handlers)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum, frame):
        raise Stopped("SIGTERM")

    return signal.signal(signal.SIGTERM, stop)


def _restore_sigterm(previous) -> None:
    import signal

    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
