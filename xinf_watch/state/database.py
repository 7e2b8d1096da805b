"""The state database file: its schema, its connections, its transactions, and the check made
before a file is used.

- One SQLite file, `state.db` in the state dir. The schema version is `PRAGMA user_version`;
  `check_existing` says why a file cannot be used (not a database, fails `PRAGMA quick_check`,
  written by a newer schema), and the store moves such a file aside (state/store.py).
- Connections are in autocommit mode: transactions are explicit (`BEGIN IMMEDIATE ... COMMIT`,
  `transaction`), with a busy timeout, since the store and the outbox may hold two connections on
  the same file.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from xinf_watch.state.storage_errors import is_damage

SCHEMA_VERSION = 1
DB_NAME = "state.db"
BUSY_TIMEOUT_MS = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS positions (source TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS blobs (name TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    alert_id TEXT NOT NULL,
    status TEXT NOT NULL,
    target TEXT NOT NULL,
    alert BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    delivered_at REAL,
    UNIQUE (alert_id, status, target)
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (target, id) WHERE delivered_at IS NULL;
CREATE TABLE IF NOT EXISTS firing (alert_id TEXT PRIMARY KEY, alert BLOB NOT NULL);
"""

T = TypeVar("T")


def connect(path: Path, *, create: bool, sync: str) -> sqlite3.Connection:
    uri = path.resolve().as_uri() + ("?mode=rwc" if create else "?mode=rw")
    # autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT)
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute(f"PRAGMA synchronous = {sync}")
    return conn


def check_existing(path: Path, opened: list[sqlite3.Connection], mode: str = "rw") -> tuple[str, str] | None:
    """Why the existing file cannot be used (kind, detail), or None when it can (or is absent).
    The connection it checks with goes to `opened`, for the caller to close."""
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + f"?mode={mode}", uri=True,
                               isolation_level=None, check_same_thread=False)  # fmt: skip
    except sqlite3.DatabaseError as exc:
        if is_damage(exc):
            return "corrupt", str(exc)
        raise
    opened.append(conn)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        rows = conn.execute("PRAGMA quick_check").fetchall()
        if [tuple(r) for r in rows] != [("ok",)]:
            detail = "; ".join(str(r[0]) for r in rows[:3])
            return "corrupt", f"quick_check: {detail}"
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            return "newer", f"schema version {version}, this xinf-watch knows up to {SCHEMA_VERSION}"
    except sqlite3.DatabaseError as exc:
        if is_damage(exc):
            return "corrupt", str(exc)
        raise
    return None


def create_schema(conn: sqlite3.Connection, *, outbox_from: int | None = None) -> None:
    """The tables (in the caller's transaction); `outbox_from`: a fresh outbox numbers its rows from
    there (a mirror that did not copy the file: its rows must not take the ids of the file's)."""
    schema = _SCHEMA
    if outbox_from is not None:
        schema = schema.replace("id INTEGER PRIMARY KEY,", "id INTEGER PRIMARY KEY AUTOINCREMENT,")
    for statement in filter(None, (s.strip() for s in schema.split(";"))):
        conn.execute(statement)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(outbox)")}
    if "grp" not in columns:  # a database of an earlier release: its rows group by themselves
        conn.execute("ALTER TABLE outbox ADD COLUMN grp TEXT NOT NULL DEFAULT ''")
    if outbox_from is not None and conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0:
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', ?)", (outbox_from,))
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already (full at COMMIT)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        raise
    return result
