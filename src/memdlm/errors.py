"""Which exceptions are the user's to fix: the ``UserError`` family.

A ``UserError`` says what the user gave that cannot be used (a flag, a config file
entry, a data row, a model directory or checkpoint) and how to fix it. The CLI prints
it as one ``memdlm <command>: error: ...`` line and exits with code 2; every other
exception is a bug and keeps its traceback. Each subclass also derives from the
built-in exception callers would expect (``ValueError``, ``FileNotFoundError``,
``ImportError``, ``RuntimeError``), so ``except ValueError`` keeps working.

Subclasses elsewhere: ``bidirectional.CausalAttentionError`` (a ConfigError),
``remote_code.RemoteCodeError`` (an ImportError), ``training.nonfinite.NonFiniteStepError``
(a RuntimeError).
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user gave cannot be used; the message names it and the fix."""


class ConfigError(UserError, ValueError):
    """A bad flag, config file entry or option value, or a model / tokenizer that does not fit."""


class DataError(UserError, ValueError):
    """A data row or file that cannot be used; the message names the row."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or directory the user named does not exist."""


class Stopped(KeyboardInterrupt):
    """The user or a scheduler stopped the command (Ctrl-C: SIGINT, or SIGTERM).

    A KeyboardInterrupt, so everything that unwinds on Ctrl-C unwinds on SIGTERM too. The
    CLI prints ``message`` in one line and exits with ``exit_code``: 128 + the signal
    number, as a shell reports a process the signal ended (130 for SIGINT, 143 for SIGTERM).
    """

    EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}

    def __init__(self, signal_name: str = "SIGINT", message: str | None = None):
        self.signal_name = signal_name
        self.exit_code = self.EXIT_CODES.get(signal_name, 130)
        self.message = message or f"stopped by {signal_name}{' (Ctrl-C)' if signal_name == 'SIGINT' else ''}"
        super().__init__(self.message)


class DiskFullError(UserError, OSError):
    """A write failed because the disk is full; the message says "disk full" and how to go on."""


# FileNotFoundError as such too: a path the user gave that ``open()`` found missing.
USER_ERRORS = (UserError, FileNotFoundError)


def disk_full_message(err: BaseException, path=None) -> str | None:
    """One line for an exception a full disk caused, else None.

    Recognised anywhere in the exception's chain: ``OSError`` with ENOSPC / EDQUOT (Python's
    own writes), or the text safetensors keeps ("No space left on device"). torch.save's zip
    writer says only "file write failed" or "unexpected pos", so given ``path`` (where the
    command writes) any exception while that file system has under ``LOW_SPACE`` bytes free
    is reported as a full disk too.
    """
    import errno

    seen = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            where = f" writing {seen.filename}" if seen.filename else ""
            return f"disk full ({seen.strerror}){where}: {DISK_FULL_FIX}"
        text = str(seen)
        if "No space left on device" in text or "Disk quota exceeded" in text:
            return f"disk full (a write failed: {text.splitlines()[0][-160:]}): {DISK_FULL_FIX}"
        seen = seen.__cause__ or seen.__context__
    if path is not None:
        import shutil

        try:
            free = shutil.disk_usage(path).free
        except OSError:
            return None
        if free < LOW_SPACE:
            first = (str(err).splitlines() or [type(err).__name__])[0][-160:]
            return f"disk full ({free // 1024} KiB left where {path} is; the write failed with: {first}): {DISK_FULL_FIX}"
    return None


LOW_SPACE = 16 * 2**20  # bytes: below this, a failed write is put down to the full disk
DISK_FULL_FIX = ("free space there, then run the command again (memdlm train --resume continues a run "
                 "from its newest whole checkpoint)")


def is_user_error(err: BaseException) -> bool:
    """Whether the CLI reports ``err`` in one line (exit code 2) instead of a traceback."""
    return isinstance(err, USER_ERRORS)
