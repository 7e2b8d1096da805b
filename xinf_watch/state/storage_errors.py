"""Which errors of the state database the daemon survives, and how to tell them to people.

Three kinds of failure reach the state store: the storage under the state dir refuses writes (disk
full, read-only, I/O error: `is_storage_error`), which the daemon survives by keeping the state in
memory (state/mirror.py); the file is damaged (`is_damage`), which costs a re-read: it is moved
aside and a fresh database is created (state/store.py); anything else is a bug and is raised.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

# SQLite primary result codes that mean "this file is damaged", as opposed to "cannot open it"
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
# ... and those that mean "the storage refuses writes": SQLITE_PERM, READONLY, IOERR, FULL, CANTOPEN
_SQLITE_STORAGE = frozenset({3, 8, 10, 13, 14})
_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT,
                             errno.EFBIG, errno.EIO})  # fmt: skip


def is_storage_error(exc: BaseException) -> bool:
    """True for an error of the storage under the state dir (full, read-only, I/O), which the
    daemon survives, as opposed to a bug or a damaged file."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code is not None and code & 0xFF in _SQLITE_STORAGE
    return isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS


def is_damage(exc: sqlite3.DatabaseError) -> bool:
    """True when SQLite says the file is damaged (corrupt, not a database)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:  # pragma: no cover - Python < 3.11 keeps no error code
        return not isinstance(exc, sqlite3.OperationalError)
    return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


def describe(exc: BaseException, path: Path) -> str:
    """The path and the error, with the OS's own word for it when SQLite has only its own
    ("database or disk is full"): a small file written next to `path` finds it out."""
    if isinstance(exc, OSError):
        return f"{exc.filename or path}: {exc.strerror or exc}"
    probe = path.parent / ".xinf-watch-probe"
    why = ""
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, bytes(65536))
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as os_exc:
        why = f" ({os_exc.strerror or os_exc})"
    return f"{path}: {exc}{why}"
