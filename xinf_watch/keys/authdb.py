"""Xinference's advanced-auth database (`auth.db`, SQLite, v2.9+) read as a source of keys and users.

Owns every contact with auth.db; `keys/files.py` turns what it returns into registry contributions.
Rules:
- Read-only, always: `mode=ro` URIs, `PRAGMA query_only`, only SELECTs of the columns used
  (never `key_encrypted` or `password_hash`), all of them in one read transaction, so users, keys
  and permissions come from one committed state.
- Xinference keeps auth.db in WAL mode and opens one connection per operation; the last one to
  close checkpoints and deletes `-wal` and `-shm`. So most of the time the file alone is the whole
  database. A `mode=ro` connection to a WAL database without `-wal`/`-shm` would have to create
  them (SQLite 3.40, Python 3.11): as a non-root user without write access to the directory it
  fails (`SQLITE_READONLY_DIRECTORY`); with write access it leaves empty sidecars owned by us,
  after which Xinference itself can no longer write its database ("attempt to write a readonly
  database"; SQLite only hands them to the database owner when we run as root). Hence:
  - WAL database and no `-wal`: open the file with `immutable=1` (no locks, no sidecars) and
    check afterwards that it was not modified meanwhile (device, inode, size, mtime, ctime); a
    checkpoint during the read (it is the only thing that writes the main file of a WAL database)
    makes the read transient-failed and it is retried once. The file is never copied.
  - WAL database with `-wal` (a connection is open): plain `mode=ro`. Readers see the last commit
    and are never blocked by a writer (BEGIN IMMEDIATE or EXCLUSIVE alike), also when `-shm` is
    not writable for us (SQLite >= 3.22 reads it read-only). We take only WAL read marks.
  - Rollback-journal database: `mode=ro`; a pending write (RESERVED) does not block us, a commit
    in progress (EXCLUSIVE) does: busy timeout 200 ms, then one retry, then a transient error.
- Mapping: an `api_keys` row is a key (`key_hash` = SHA-256 hex of the key, `key_prefix`, `name`,
  `expires_at` and `created_at` as naive UTC ISO-8601 like Xinference's `utcnow()` comparisons);
  it is disabled when `enabled` is false (NULL too: Xinference tests `bool(enabled)`) or its owner
  is. A key's permissions are its owner's `user_permissions`. Like Xinference (inner join), a key
  whose user row is gone is no key; nor is a row whose key_hash is not 64 hex. Both are counted in
  `skipped`. An unparsable `expires_at` means no expiry, as in Xinference.
- Schema tolerance: `users` (id, username) and `api_keys` (key_hash, user_id) must exist; other
  columns are optional, and a missing `user_permissions` table means permissions unknown. The
  user flag may be `enabled`, `is_active` or `disabled`.
- Errors are `AuthDbError` with one line that names no key; `transient` ones (locked, changed
  while read) may succeed on the next try.
"""

from __future__ import annotations

import os
import re
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from xinf_watch.keys.registry import UserEntry

SQLITE_MAGIC = b"SQLite format 3\x00"
BUSY_TIMEOUT_S = 0.2
_BUSY = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED (primary result codes)
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_Stat = tuple[int, int, int, int, int]
_Owner = tuple[str, bool, frozenset[str] | None]  # a user id's name, active, permissions (None: unknown)


class AuthDbError(Exception):
    """auth.db cannot be read; `transient`: it is being written, a later try may succeed."""

    def __init__(self, problem: str, *, transient: bool = False) -> None:
        super().__init__(problem)
        self.transient = transient


@dataclass(frozen=True, slots=True)
class AuthDbKey:
    sha256: str = field(repr=False)
    prefix: str | None
    name: str | None
    owner: str
    permissions: frozenset[str] | None  # the owner's; None: no user_permissions table
    disabled: bool  # the key or its owner
    expires_at: float | None
    created_at: float | None


@dataclass(frozen=True, slots=True)
class AuthDb:
    keys: tuple[AuthDbKey, ...]
    users: tuple[UserEntry, ...]
    skipped: int  # api_keys rows that no token can match (bad key_hash, owner gone)


def wal_path(path: Path) -> Path:
    """Where SQLite keeps the database's write-ahead log (beside the symlink's target)."""
    return Path(f"{Path(path).resolve()}-wal")


def read_auth_db(path: Path) -> AuthDb:
    """Read keys and users from auth.db; one retry when it is being written. Raises AuthDbError."""
    try:
        return _read_once(Path(path))
    except AuthDbError as e:
        if not e.transient:
            raise
    return _read_once(Path(path))


def _read_once(path: Path) -> AuthDb:
    before = _stat(path)
    with_wal = wal_path(path).exists()
    if with_wal and not Path(f"{path.resolve()}-shm").exists():
        # After a crash: SQLite would create the -shm, and the -wal may hold commits not yet in
        # the file. Xinference's next connection recovers it.
        raise AuthDbError("auth.db has a -wal but no -shm (not read: we create nothing)", transient=True)
    try:
        with path.open("rb") as f:
            head = f.read(100)
    except OSError as e:
        raise AuthDbError(f"cannot read auth.db ({e.strerror or type(e).__name__})") from None
    if not head.startswith(SQLITE_MAGIC):
        raise AuthDbError("not an SQLite database")
    snapshot = len(head) > 19 and head[18] == 2 and not with_wal  # WAL mode, fully checkpointed
    uri = path.resolve().as_uri() + ("?mode=ro&immutable=1" if snapshot else "?mode=ro")
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as e:
        raise _failure(e, transient=False) from None
    try:
        with closing(conn):
            conn.execute("PRAGMA query_only = 1")
            conn.execute("PRAGMA trusted_schema = 0")
            conn.execute("BEGIN")
            result = _query(conn)
    except sqlite3.Error as e:
        # A checkpoint or a vanished -wal during the read explains any error: try again.
        moved = _stat(path) != before or wal_path(path).exists() != with_wal
        raise _failure(e, transient=moved) from None
    if snapshot and _stat(path) != before:  # a checkpoint wrote the file under our feet
        raise AuthDbError("auth.db changed while it was read", transient=True)
    return result


def _stat(path: Path) -> _Stat:
    try:
        st = os.stat(path)
    except OSError as e:
        raise AuthDbError(f"cannot read auth.db ({e.strerror or type(e).__name__})") from None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _failure(e: sqlite3.Error, *, transient: bool) -> AuthDbError:
    code = getattr(e, "sqlite_errorcode", None)
    name = getattr(e, "sqlite_errorname", None) or type(e).__name__
    if code is not None and code & 0xFF in _BUSY:
        ms = int(BUSY_TIMEOUT_S * 1000)
        return AuthDbError(f"auth.db is locked by a writer (still {name} after {ms} ms)", transient=True)
    detail = " ".join(str(e).split()) or "no detail"
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN")):
        return AuthDbError(
            f"cannot open auth.db read-only ({name}: {detail}; expected its -wal and -shm to exist"
            " while a connection is open, or neither)",
            transient=transient,
        )
    return AuthDbError(f"cannot read auth.db ({name}: {detail})", transient=transient)


def _query(conn: sqlite3.Connection) -> AuthDb:
    cols = _schema(conn)
    owners, users = _users(conn, cols["users"], _permissions(conn, cols))
    keys, skipped = _keys(conn, cols["api_keys"], owners)
    return AuthDb(tuple(keys), users, skipped)


def _schema(conn: sqlite3.Connection) -> dict[str, set[str]]:
    """Columns of users, api_keys and user_permissions (when it exists); raises if a needed one is missing."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    cols = {t: _columns(conn, t) for t in ("users", "api_keys", "user_permissions") if t in tables}
    for table, needed in (("users", ("id", "username")), ("api_keys", ("user_id", "key_hash"))):
        missing = [c for c in needed if c not in cols.get(table, ())]
        if table not in cols:
            raise AuthDbError(f"not Xinference's auth database (no {table} table)")
        if missing:
            raise AuthDbError(f"unexpected auth.db schema: {table} has no {', '.join(missing)} column")
    return cols


def _permissions(conn: sqlite3.Connection, cols: dict[str, set[str]]) -> dict[int, set[str]] | None:
    """Each user id's permissions; None when the schema has no user_permissions (unknown)."""
    if not {"user_id", "permission"} <= cols.get("user_permissions", set()):
        return None
    perms: dict[int, set[str]] = {}
    for user_id, perm in conn.execute("SELECT user_id, permission FROM user_permissions"):
        if isinstance(perm, str) and perm.strip():
            perms.setdefault(user_id, set()).add(perm.strip())
    return perms


def _users(
    conn: sqlite3.Connection, user_cols: set[str], perms: dict[int, set[str]] | None
) -> tuple[dict[int, _Owner], tuple[UserEntry, ...]]:
    """Each user id's owner row, and the users by name."""
    owners: dict[int, _Owner] = {}
    by_name: dict[str, list[tuple[bool, frozenset[str] | None]]] = {}
    for user_id, username, active in conn.execute(
        f"SELECT id, username, {_active(user_cols)} FROM users ORDER BY id"
    ):
        if not isinstance(username, str) or not username.strip():
            continue
        granted = None if perms is None else frozenset(perms.get(user_id, ()))
        owners[user_id] = (username.strip(), bool(active), granted)
        by_name.setdefault(username.strip(), []).append((bool(active), granted))
    users = tuple(
        # One name can be a local and an OIDC user: disabled only if every one of them is.
        UserEntry(name, _union([g for _, g in rows]), disabled=not any(a for a, _ in rows))
        for name, rows in by_name.items()
    )
    return owners, users


def _keys(
    conn: sqlite3.Connection, key_cols: set[str], owners: dict[int, _Owner]
) -> tuple[list[AuthDbKey], int]:
    """The keys a token can match, and how many rows were skipped (bad key_hash, owner gone)."""
    keys: list[AuthDbKey] = []
    skipped = 0
    select = ", ".join(_col(key_cols, c) for c in ("key_prefix", "name", "expires_at", "created_at"))
    for user_id, key_hash, enabled, prefix, name, expires_at, created_at in conn.execute(
        f"SELECT user_id, key_hash, {_col(key_cols, 'enabled', missing='1')}, {select} FROM api_keys"
        f" ORDER BY {'id' if 'id' in key_cols else 'rowid'}"
    ):
        owner = owners.get(user_id)
        if owner is None or not isinstance(key_hash, str) or not _HEX64.fullmatch(key_hash):
            skipped += 1
            continue
        keys.append(
            AuthDbKey(
                sha256=key_hash.lower(),
                prefix=_name(prefix),
                name=_name(name),
                owner=owner[0],
                permissions=owner[2],
                disabled=not (bool(enabled) and owner[1]),
                expires_at=_utc(expires_at),
                created_at=_utc(created_at),
            )
        )
    return keys, skipped


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')}


def _col(columns: set[str], name: str, *, missing: str = "NULL") -> str:
    """The column, or a constant when this schema has none (older or newer Xinference)."""
    return f'"{name}"' if name in columns else missing


def _active(columns: set[str]) -> str:
    if "enabled" in columns:
        return '"enabled"'
    if "is_active" in columns:
        return '"is_active"'
    if "disabled" in columns:
        return 'NOT coalesce("disabled", 0)'
    return "1"


def _union(granted: list[frozenset[str] | None]) -> frozenset[str] | None:
    known = [g for g in granted if g is not None]
    return frozenset().union(*known) if known else None


def _name(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _utc(value: object) -> float | None:
    """Xinference's timestamps: ISO-8601, naive meaning UTC (CURRENT_TIMESTAMP, utcnow())."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
