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


# FileNotFoundError as such too: a path the user gave that ``open()`` found missing.
USER_ERRORS = (UserError, FileNotFoundError)


def is_user_error(err: BaseException) -> bool:
    """Whether the CLI reports ``err`` in one line (exit code 2) instead of a traceback."""
    return isinstance(err, USER_ERRORS)
