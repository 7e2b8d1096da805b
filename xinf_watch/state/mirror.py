"""The mirror: the state in memory while the state dir cannot be written.

A state dir that cannot be written (disk full, read-only, I/O error: `is_storage_error`) never
stops the daemon. The first write that fails is rolled back, the database is copied into memory
(the mirror) and everything goes on there: commits, the outbox's delivered and failed marks, the
firing set, so delivery goes on too. `recover()` (the daemon calls it with backoff) writes what
the mirror has that the file has not in one transaction, and the file takes over again. A store
that cannot be opened for writing at startup loads the file read-only into the mirror (or starts
empty when it cannot be read) and recovers the same way. While the daemon stays up nothing is
lost; a kill while in memory loses what the disk did not get: the lines are read again, as after
any crash.

The store (state/store.py) decides when to switch; this module makes the copies and writes them
back.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from xinf_watch.state.database import BUSY_TIMEOUT_MS, check_existing, create_schema

# the tables a recovery writes back, with their keys; positions are always replaced whole
_TABLES = (("positions", "source"), ("blobs", "name"), ("meta", "name"), ("outbox", "id"),
           ("firing", "alert_id"))  # fmt: skip
_PARTIAL_IDS = 1 << 40  # outbox ids of a mirror that could not copy the file start here: no clash


def memory() -> sqlite3.Connection:
    """An empty database in memory."""
    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")  # for the file a recovery attaches
    return conn


def read_only_copy(path: Path) -> sqlite3.Connection | None:
    """The file's checkpoint read read-only into memory; None when it is absent or cannot be read."""
    mirror = memory()
    # read-only; a WAL file closed cleanly has no -shm, which a read-only dir cannot get: then
    # immutable (no -wal either, so nothing is missed)
    for mode in ("ro", "ro&immutable=1"):
        checking: list[sqlite3.Connection] = []
        try:
            if check_existing(path, checking, mode=mode) is None and path.exists():
                checking[0].backup(mirror)
                return mirror
        except sqlite3.Error:
            pass
        finally:
            for checker in checking:
                checker.close()
    mirror.close()
    return None


def copy_of(conn: sqlite3.Connection) -> sqlite3.Connection | None:
    """The database of `conn` copied into memory; None when it cannot even be read."""
    mirror = memory()
    try:
        conn.backup(mirror)
    except (OSError, sqlite3.Error):
        mirror.close()
        return None
    return mirror


def prepare(mirror: sqlite3.Connection, *, partial: bool) -> None:
    """The schema in `mirror`; `partial`: it did not start as a copy of the file, so what comes is
    kept alone (its outbox ids cannot clash with the file's)."""
    mirror.execute("BEGIN")
    create_schema(mirror, outbox_from=_PARTIAL_IDS if partial else None)
    mirror.execute("COMMIT")


def write_back(mirror: sqlite3.Connection, path: Path, *, sync: str, partial: bool) -> None:
    """What the mirror has that the file has not, in one transaction on the file. The file has not
    changed since the mirror copied it, so rows missing from the mirror were deleted there (a
    partial mirror deletes nothing but positions, which every commit gives whole)."""
    mirror.execute("ATTACH DATABASE ? AS disk", (path.resolve().as_uri() + "?mode=rw",))
    try:
        mirror.execute(f"PRAGMA disk.synchronous = {sync}")
        mirror.execute("BEGIN IMMEDIATE")
        try:
            for table, key in _TABLES:
                names = ", ".join(row[1] for row in mirror.execute(f"PRAGMA main.table_info({table})"))
                if table == "positions" or not partial:
                    mirror.execute(f"DELETE FROM disk.{table}"
                                   f" WHERE {key} NOT IN (SELECT {key} FROM main.{table})")  # fmt: skip
                changed = f"SELECT {names} FROM main.{table} EXCEPT SELECT {names} FROM disk.{table}"
                mirror.execute(f"INSERT OR REPLACE INTO disk.{table} ({names}) {changed}")
            mirror.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                if mirror.in_transaction:
                    mirror.execute("ROLLBACK")
            raise
    finally:
        mirror.execute("DETACH DATABASE disk")
