"""Which exceptions are the user's to fix (reported in one line by the CLI)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad flag or config file entry."""


# Messages of plain ValueErrors that describe the user's input, not a bug.
USER_ERROR_TEXT = ("mask token", "no module matches", "unknown ", "is empty")


def is_user_error(err: BaseException) -> bool:
    from memdlm.data.formats import DataError
    from memdlm.remote_code import RemoteCodeError

    if isinstance(err, (DataError, ConfigError, FileNotFoundError, RemoteCodeError)):
        return True
    if isinstance(err, ValueError) and _raised_by_option_validation(err):
        return True
    text = str(err)
    return any(key in text for key in USER_ERROR_TEXT)


def _raised_by_option_validation(err: BaseException) -> bool:
    """Raised directly in a dataclass ``__post_init__`` (SamplerConfig, MemoryArguments,
    DiffusionArguments, ...): an option value out of range."""
    tb = err.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    return last is not None and last.tb_frame.f_code.co_name == "__post_init__"
