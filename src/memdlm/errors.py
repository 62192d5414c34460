"""Which exceptions are the user's to fix (reported in one line by the CLI)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad flag or config file entry."""


def is_user_error(err: BaseException) -> bool:
    from memdlm.data.formats import DataError

    if isinstance(err, (DataError, ConfigError, FileNotFoundError)):
        return True
    text = str(err)
    return any(key in text for key in ("mask token", "no module matches", "unknown "))
