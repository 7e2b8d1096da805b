"""How a command ends: the exit codes, and the one stderr line for a failure the user can cause.

Bad usage or an invalid config is exit 2, a runtime failure (a file that cannot be read) exit 1;
`app/cli.py` turns these errors into their line, the commands (`app/checkcmd.py`,
`app/replaycmd.py`) only raise them.
"""

from __future__ import annotations

from enum import IntEnum

from xinf_watch.config.schema import ConfigError
from xinf_watch.keys.files import KeyFileError


class Exit(IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2


class UsageError(Exception):
    """Bad arguments that argparse cannot see (an unknown source name...)."""


def describe_error(exc: Exception) -> tuple[str, Exit]:
    """The user-facing lines for an error the user can cause, and the exit code."""
    if isinstance(exc, ConfigError | KeyFileError):
        return str(exc), Exit.USAGE  # already `file:line: path: what (expected ...)`, a line each
    if isinstance(exc, UsageError):
        return f"xinf-watch: {exc}", Exit.USAGE
    assert isinstance(exc, OSError)
    return f"xinf-watch: {exc.filename or ''}: {exc.strerror or exc}", Exit.FAILURE
