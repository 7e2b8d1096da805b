"""The state database: one SQLite file, `state.db` in the state dir (keys/authdb.py only reads Xinference's).

It holds what a restart resumes from (docs/DESIGN.md section 8): the read positions of every source, named
JSON blobs (metric counters, rule state, ...), the outbox of alert deliveries and the set of firing
alerts. `StateStore.commit` writes them all in ONE transaction, so after a crash the positions, the
counters, the rule state and the alerts that follow from them always agree: a line is either fully
accounted for or re-read.

Rules:
- WAL journal, `synchronous=NORMAL` by default. A WAL commit has written its frames to the WAL file
  (into the kernel's page cache) before COMMIT returns; only checkpoints fsync. A killed process
  (kill -9, OOM, crash) loses nothing the kernel holds, so every commit that returned survives; only an
  OS crash or power loss can drop the last commits, and then the database rolls back to an earlier,
  still consistent commit (positions and outbox together), so lines are re-read and the same alerts
  are made again (receivers de-duplicate by alert id). `synchronous=FULL` (an fsync per commit) is
  available for those who need power-loss durability.
- The schema version is `PRAGMA user_version`. A file that is not a database, fails
  `PRAGMA quick_check`, or was written by a newer schema is renamed aside
  (`state.db.corrupt-<UTC time>` / `state.db.newer-<UTC time>`, with its -wal/-shm) with a loud
  message, and a fresh database is created: a bad state file costs a re-read, never a crash loop.
- The outbox is idempotent: one row per (alert id, status, target), whatever is enqueued twice.
  Rows are never dropped on failure; delivered rows are kept for a while (`Outbox.prune`) so that a
  late re-enqueue of the same transition is still recognised.
- The firing set holds the latest firing transition of every alert not resolved yet (a resolution
  removes it in the same transaction that enqueues it): what the Alertmanager sender re-sends. It
  knows nothing of rule kinds; the sender forgets the alerts that no resolution will ever end.
- Each outbox row carries its notification group (`rule`, `severity`), so the sender can take the
  due rows of one group without reading the others (delivery/alerts.py groups notifications).
- `Outbox` is the delivery side: the sender threads share its own connection on the same file, or,
  given the store (the daemon), the store's connection and lock.
- A state dir that cannot be written (disk full, read-only, I/O error: `is_storage_error`) never
  stops the daemon. The first write that fails is rolled back, the database is copied into memory
  (the mirror) and everything goes on there: commits, the outbox's delivered and failed marks, the
  firing set, so delivery goes on too. `recover()` (the daemon calls it with backoff) writes what
  the mirror has that the file has not in one transaction, and the file takes over again. A store
  that cannot be opened for writing at startup loads the file read-only into the mirror (or starts
  empty when it cannot be read) and recovers the same way. While the daemon stays up nothing is
  lost; a kill while in memory loses what the disk did not get: the lines are read again, as after
  any crash.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson

from xinf_watch.model import Alert, AlertStatus
from xinf_watch.visible import tell

SCHEMA_VERSION = 1
DB_NAME = "state.db"
BACKOFF_MAX = 300.0  # seconds between retries of one outbox row, at most
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

# SQLite primary result codes that mean "this file is damaged", as opposed to "cannot open it"
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
# ... and those that mean "the storage refuses writes": SQLITE_PERM, READONLY, IOERR, FULL, CANTOPEN
_SQLITE_STORAGE = frozenset({3, 8, 10, 13, 14})
_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT,
                             errno.EFBIG, errno.EIO})  # fmt: skip
# the tables a recovery writes back, with their keys; positions are always replaced whole
_TABLES = (("positions", "source"), ("blobs", "name"), ("meta", "name"), ("outbox", "id"),
           ("firing", "alert_id"))  # fmt: skip
_PARTIAL_IDS = 1 << 40  # outbox ids of a mirror that could not copy the file start here: no clash

T = TypeVar("T")


def is_storage_error(exc: BaseException) -> bool:
    """True for an error of the storage under the state dir (full, read-only, I/O), which the
    daemon survives, as opposed to a bug or a damaged file."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code is not None and code & 0xFF in _SQLITE_STORAGE
    return isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What the last commit left: the state a restart resumes from."""

    positions: Mapping[str, list[dict[str, Any]]]
    blobs: Mapping[str, Any]
    committed_at: float | None  # Unix time of the last commit; None for a fresh database


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    target: str
    alert: dict[str, Any]  # the alert JSON (docs/DESIGN.md section 7)
    attempts: int
    next_attempt: float
    group: str  # notification group: rule and severity (`notification_group`)


def notification_group(alert: Alert | Mapping[str, Any]) -> str:
    """The notification group of an alert: the alerts of one rule and severity are told together."""
    if isinstance(alert, Alert):
        return f"{alert.rule}\0{alert.severity.value}"
    return f"{alert.get('rule')}\0{alert.get('severity')}"


def _connect(path: Path, *, create: bool, sync: str) -> sqlite3.Connection:
    uri = path.resolve().as_uri() + ("?mode=rwc" if create else "?mode=rw")
    # autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT)
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute(f"PRAGMA synchronous = {sync}")
    return conn


def _is_damage(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:  # pragma: no cover - Python < 3.11 keeps no error code
        return not isinstance(exc, sqlite3.OperationalError)
    return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


class StateStore:
    """The writing side: load what the last commit left, commit a batch atomically.

    `writable` is False while the state lives in the mirror (see the module docstring); `error`
    then says why (the path and the error), `write_errors` counts the writes that failed.
    """

    def __init__(
        self,
        directory: Path,
        log: Callable[[str], None] = tell,
        *,
        sync: Literal["NORMAL", "FULL"] = "NORMAL",
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / DB_NAME
        self._log = log
        self._sync = sync
        self.lock = threading.RLock()  # the connection in use: this thread's commits, the senders' outbox
        self._disk: sqlite3.Connection | None = None
        self._mirror: sqlite3.Connection | None = None
        self._partial = False  # the mirror did not start as a copy of the file
        self.error: str | None = None
        self.write_errors = 0
        self.loaded = "disk"  # where the state came from: disk, read-only (the file), empty
        try:
            self._disk = self._open()
        except (OSError, sqlite3.Error) as exc:
            if not is_storage_error(exc):
                raise
            self._start_in_memory(exc)

    @property
    def writable(self) -> bool:
        return self._mirror is None

    def connection(self) -> sqlite3.Connection:
        """The connection holding the state now (the file's, or the mirror); use it under `lock`."""
        conn = self._mirror or self._disk
        assert conn is not None
        return conn

    def _open(self) -> sqlite3.Connection:
        if not self.directory.is_dir():
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)  # mkdir's mode is filtered by the umask
        checking: list[sqlite3.Connection] = []
        try:
            reason = self._check_existing(checking)
            if reason is not None:
                self._move_aside(*reason)
        finally:
            # closed only now: closing the last connection may checkpoint and delete `state.db-wal`
            # by name, which must not happen to the WAL of a file being moved aside
            for checker in checking:
                checker.close()
        conn = _connect(self.path, create=True, sync=self._sync)
        try:
            os.chmod(self.path, 0o600)
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                self._log(f"xinf-watch: state: {self.path}: WAL journal not available (got {mode})")
            conn.execute("BEGIN IMMEDIATE")
            _create_schema(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_existing(self, opened: list[sqlite3.Connection], mode: str = "rw") -> tuple[str, str] | None:
        """Why the existing file cannot be used (kind, detail), or None when it can (or is absent).
        The connection it checks with goes to `opened`, for the caller to close."""
        if not self.path.exists():
            return None
        try:
            conn = sqlite3.connect(self.path.resolve().as_uri() + f"?mode={mode}", uri=True,
                                   isolation_level=None, check_same_thread=False)  # fmt: skip
        except sqlite3.DatabaseError as exc:
            if _is_damage(exc):
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
            if _is_damage(exc):
                return "corrupt", str(exc)
            raise
        return None

    def _move_aside(self, kind: str, detail: str) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.path.with_name(f"{DB_NAME}.{kind}-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{DB_NAME}.{kind}-{stamp}.{n}")
        os.replace(self.path, aside)
        # the -wal and -shm belong to the old file: left in place they would be replayed into the new one
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(DB_NAME + suffix)
            if side.exists():
                os.replace(side, aside.with_name(aside.name + suffix))
        self._log(
            f"xinf-watch: state: {self.path} is {'corrupt' if kind == 'corrupt' else 'from a newer version'}"
            f" ({detail}); moved it to {aside.name} and starting with fresh state: sources resume per"
            " their start_at, counters and rule state start over"
        )

    # -- the mirror: the state in memory while the file cannot be written ------------------------

    def _start_in_memory(self, exc: BaseException) -> None:
        """Startup without a writable file: the file's checkpoint read read-only, else empty state."""
        self.write_errors += 1
        self.error = self._describe(exc)
        mirror = _memory()
        # read-only; a WAL file closed cleanly has no -shm, which a read-only dir cannot get: then
        # immutable (no -wal either, so nothing is missed)
        for mode in ("ro", "ro&immutable=1"):
            checking: list[sqlite3.Connection] = []
            try:
                if self._check_existing(checking, mode=mode) is None and self.path.exists():
                    checking[0].backup(mirror)
                    self.loaded = "read-only"
                    break
            except sqlite3.Error:
                pass
            finally:
                for checker in checking:
                    checker.close()
        if self.loaded != "read-only":
            mirror.close()
            mirror, self.loaded = _memory(), "empty"
        self._use_mirror(mirror, partial=self.loaded == "empty")

    def _use_mirror(self, mirror: sqlite3.Connection, *, partial: bool) -> None:
        mirror.execute("BEGIN")
        _create_schema(mirror, outbox_from=_PARTIAL_IDS if partial else None)
        mirror.execute("COMMIT")
        self._mirror, self._partial = mirror, partial

    def hold(self, error: str) -> None:
        """Keep the state in memory from now on (the journal cannot be written: the file must not
        get ahead of it); `recover` ends it."""
        with self.lock:
            self.error = error
            if self._mirror is None:
                self._to_memory()

    def _to_memory(self) -> None:
        mirror = _memory()
        try:
            assert self._disk is not None
            self._disk.backup(mirror)
            partial = False
        except (OSError, sqlite3.Error):  # the file cannot even be read: what comes is kept alone
            mirror.close()
            mirror, partial = _memory(), True
        self._use_mirror(mirror, partial=partial)

    def recover(self) -> bool:
        """Write the mirror's state to the file in one transaction and use the file again; True when
        the file is in use (now or already). A storage error leaves everything in memory: False."""
        with self.lock:
            mirror = self._mirror
            if mirror is None:
                return True
            try:
                if self._disk is None:
                    self._disk = self._open()
                self._write_back(mirror)
            except (OSError, sqlite3.Error) as exc:
                if not is_storage_error(exc):
                    raise
                self.write_errors += 1
                self.error = self._describe(exc)
                return False
            mirror.close()
            self._mirror, self._partial, self.error = None, False, None
            return True

    def _write_back(self, mirror: sqlite3.Connection) -> None:
        """What the mirror has that the file has not, in one transaction on the file. The file has not
        changed since the mirror copied it, so rows missing from the mirror were deleted there (a
        partial mirror deletes nothing but positions, which every commit gives whole)."""
        mirror.execute("ATTACH DATABASE ? AS disk", (self.path.resolve().as_uri() + "?mode=rw",))
        try:
            mirror.execute(f"PRAGMA disk.synchronous = {self._sync}")
            mirror.execute("BEGIN IMMEDIATE")
            try:
                for table, key in _TABLES:
                    names = ", ".join(row[1] for row in mirror.execute(f"PRAGMA main.table_info({table})"))
                    if table == "positions" or not self._partial:
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

    def _describe(self, exc: BaseException) -> str:
        """The path and the error, with the OS's own word for it when SQLite has only its own
        ("database or disk is full"): a small file written in the state dir finds it out."""
        if isinstance(exc, OSError):
            return f"{exc.filename or self.path}: {exc.strerror or exc}"
        probe = self.directory / ".xinf-watch-probe"
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
        return f"{self.path}: {exc}{why}"

    # -- reading and writing --------------------------------------------------------------------

    def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in one write transaction on the state: on the file, or, when the file refuses
        it (a storage error), rolled back there and run on the mirror from then on."""
        with self.lock:
            if self._mirror is None:
                assert self._disk is not None
                try:
                    return _transaction(self._disk, work)
                except (OSError, sqlite3.Error) as exc:
                    if not is_storage_error(exc):
                        raise
                    self.write_errors += 1
                    self.error = self._describe(exc)
                    self._to_memory()
            assert self._mirror is not None
            return _transaction(self._mirror, work)

    def load(self) -> Checkpoint:
        with self.lock:
            conn = self.connection()
            positions = {
                src: orjson.loads(data) for src, data in conn.execute("SELECT source, data FROM positions")
            }
            blobs = {name: orjson.loads(data) for name, data in conn.execute("SELECT name, data FROM blobs")}
            row = conn.execute("SELECT value FROM meta WHERE name = 'committed_at'").fetchone()
        return Checkpoint(positions, blobs, None if row is None else float(row[0]))

    def commit(
        self,
        positions: Mapping[str, Sequence[Mapping[str, Any]]],
        blobs: Mapping[str, Any],
        alerts: Sequence[tuple[Alert, Sequence[str]]],
    ) -> bool:
        """In one transaction: replace all positions (a source left out is forgotten), replace the
        given blobs (others stay), enqueue each alert for each of its targets (idempotent), and
        keep the firing set: a firing alert enters it (or replaces itself), a resolution leaves it.
        True when it went to the file, False when to the mirror (`error` says why)."""

        def work(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM positions")
            conn.executemany(
                "INSERT INTO positions (source, data) VALUES (?, ?)",
                [(src, orjson.dumps(list(pos))) for src, pos in positions.items()],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO blobs (name, data) VALUES (?, ?)",
                [(name, orjson.dumps(value)) for name, value in blobs.items()],
            )
            rows: list[tuple[str, str, str, bytes, str]] = []
            for alert, targets in alerts:
                body = orjson.dumps(alert.to_json())
                group = notification_group(alert)
                rows.extend((alert.id, alert.status.value, target, body, group) for target in targets)
                if alert.status is AlertStatus.FIRING:
                    conn.execute("INSERT OR REPLACE INTO firing (alert_id, alert) VALUES (?, ?)",
                                 (alert.id, body))  # fmt: skip
                else:
                    conn.execute("DELETE FROM firing WHERE alert_id = ?", (alert.id,))
            conn.executemany(
                "INSERT OR IGNORE INTO outbox (alert_id, status, target, alert, grp) VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            conn.execute(
                "INSERT OR REPLACE INTO meta (name, value) VALUES ('committed_at', ?)", (time.time(),)
            )

        with self.lock:
            self.write(work)
            return self.writable

    def keep_firing(self, keep: Callable[[dict[str, Any]], bool]) -> int:
        """Take the alerts `keep` refuses out of the firing set (their rule is gone: no resolution
        will come); returns how many."""

        def work(conn: sqlite3.Connection) -> int:
            rows = conn.execute("SELECT alert_id, alert FROM firing").fetchall()
            gone = [(alert_id,) for alert_id, alert in rows if not keep(orjson.loads(alert))]
            conn.executemany("DELETE FROM firing WHERE alert_id = ?", gone)
            return len(gone)

        return self.write(work)

    def close(self) -> None:
        with self.lock:
            for conn in (self._mirror, self._disk):
                if conn is not None:
                    conn.close()


def _memory() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")  # for the file a recovery attaches
    return conn


def _create_schema(conn: sqlite3.Connection, *, outbox_from: int | None = None) -> None:
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


def _transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
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


class Outbox:
    """The delivery side of the outbox, on its own connection (safe to use from the sender thread).

    Per target, rows go out in the order they were enqueued: a row waiting for its retry holds back
    the later rows of the same target (so a resolution never overtakes its firing), never those of
    other targets.
    """

    def __init__(
        self, directory: Path, *, sync: Literal["NORMAL", "FULL"] = "NORMAL", store: StateStore | None = None
    ) -> None:
        """`store`: use the store's connection and lock, so the outbox follows it into memory and
        back (a state dir that cannot be written); else a connection of its own on the file."""
        self._store = store
        self._own = None if store else _connect(Path(directory) / DB_NAME, create=False, sync=sync)
        self._lock: threading.Lock | threading.RLock = threading.Lock() if store is None else store.lock

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._store is not None:
            return self._store.connection()
        assert self._own is not None
        return self._own

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._store is not None:
            return self._store.write(work)
        with self._lock:
            return work(self._conn)

    def pending(self) -> int:
        with self._lock:
            return int(
                self._conn.execute("SELECT count(*) FROM outbox WHERE delivered_at IS NULL").fetchone()[0]
            )

    def due(
        self,
        now: float,
        limit: int = 100,
        *,
        only: str | None = None,
        besides: str | None = None,
        skip: Collection[tuple[str, str]] = (),
        exclude: Collection[str] = (),
        groups: Collection[str] | None = None,
    ) -> list[OutboxItem]:
        """Due rows in order: of target `only` (if given), not of target `besides` nor of the targets
        in `exclude`, and not of the (target, group) pairs in `skip` (groups the sender holds back);
        of the notification `groups` only, if given."""
        where, params = self._lane("o", only, besides, skip, exclude)
        if groups is not None:
            where += " AND o.grp IN (" + ",".join(f":grp{n}" for n in range(len(groups))) + ")"
            params.update({f"grp{n}": group for n, group in enumerate(groups)})
        with self._lock:
            rows = self._conn.execute(
                f"""SELECT id, target, alert, attempts, next_attempt, grp FROM outbox AS o
                   WHERE delivered_at IS NULL AND next_attempt <= :now{where}
                     AND NOT EXISTS (SELECT 1 FROM outbox AS p
                                     WHERE p.target = o.target AND p.delivered_at IS NULL
                                       AND p.id < o.id AND p.next_attempt > :now)
                   ORDER BY id LIMIT :limit""",
                {**params, "now": now, "limit": limit},
            ).fetchall()
        return [OutboxItem(i, t, orjson.loads(a), n, nxt, g) for i, t, a, n, nxt, g in rows]

    def pending_groups(self, target: str) -> list[str]:
        """The notification groups that have pending rows for `target`."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT DISTINCT grp FROM outbox WHERE delivered_at IS NULL AND target = ?", (target,)
            ).fetchall()
        return [row[0] for row in rows]

    def due_targets(
        self,
        now: float,
        *,
        only: str | None = None,
        besides: str | None = None,
        skip: Collection[tuple[str, str]] = (),
        exclude: Collection[str] = (),
    ) -> list[str]:
        """The targets that have a due row (as `due` chooses them), each once."""
        with self._lock:
            pending = [row[0] for row in self._conn.execute(
                "SELECT DISTINCT target FROM outbox WHERE delivered_at IS NULL ORDER BY target")]  # fmt: skip
        chosen = [t for t in pending if (only is None or t == only) and t != besides and t not in exclude]
        return [t for t in chosen if self.due(now, 1, only=t, skip=skip)]

    @staticmethod
    def _lane(
        table: str,
        only: str | None,
        besides: str | None,
        skip: Collection[tuple[str, str]],
        exclude: Collection[str] = (),
    ) -> tuple[str, dict[str, Any]]:
        """An SQL condition (starting with AND) on the rows of `table` and its parameters."""
        where, params = "", dict[str, Any]()
        for n, target in enumerate(exclude):
            where += f" AND {table}.target != :x{n}"
            params[f"x{n}"] = target
        if only is not None:
            where, params["only"] = f" AND {table}.target = :only", only
        if besides is not None:
            where, params["besides"] = where + f" AND {table}.target != :besides", besides
        for n, (target, group) in enumerate(skip):
            where += f" AND NOT ({table}.target = :t{n} AND {table}.grp = :g{n})"
            params[f"t{n}"], params[f"g{n}"] = target, group
        return where, params

    def next_due(
        self,
        *,
        only: str | None = None,
        besides: str | None = None,
        skip: Collection[tuple[str, str]] = (),
        exclude: Collection[str] = (),
    ) -> float | None:
        """When the earliest row could become due (the oldest pending row of each target, leaving out
        the groups in `skip` and the targets in `exclude`), or None."""
        where, params = self._lane("o", only, besides, skip, exclude)
        inner, _ = self._lane("p", None, None, skip)
        with self._lock:
            row = self._conn.execute(
                f"""SELECT min(next_attempt) FROM outbox AS o
                   WHERE delivered_at IS NULL{where}
                     AND id = (SELECT min(id) FROM outbox AS p
                               WHERE p.target = o.target AND p.delivered_at IS NULL{inner})""",
                params,
            ).fetchone()
        return None if row[0] is None else float(row[0])

    def firing(self) -> list[dict[str, Any]]:
        """The firing set: the latest firing transition of every alert not resolved (or forgotten)."""
        with self._lock:
            rows = self._conn.execute("SELECT alert FROM firing ORDER BY rowid").fetchall()
        return [orjson.loads(row[0]) for row in rows]

    def forget_firing(self, alert_ids: Collection[str]) -> None:
        """Take alerts out of the firing set that no resolution will ever end (one-off events)."""
        rows = [(i,) for i in alert_ids]
        self._write(lambda conn: conn.executemany("DELETE FROM firing WHERE alert_id = ?", rows))

    def delivered(self, item_id: int, now: float | None = None) -> None:
        when = time.time() if now is None else now
        sql = "UPDATE outbox SET delivered_at = ?, last_error = NULL WHERE id = ?"
        self._write(lambda conn: conn.execute(sql, (when, item_id)))

    def failed(self, item_ids: int | Sequence[int], now: float, error: str) -> None:
        """Retry later: 1 s after the first failure, then 2 s, 4 s, ... at most BACKOFF_MAX. Never dropped.
        The rows of one failed message (several ids) come due again together, after the backoff of
        the most tried one: a message is retried whole."""
        ids = [item_ids] if isinstance(item_ids, int) else list(item_ids)
        marks = ",".join("?" * len(ids))

        def work(conn: sqlite3.Connection) -> None:
            (tried,) = conn.execute(f"SELECT max(attempts) FROM outbox WHERE id IN ({marks})", ids)
            delay = min(BACKOFF_MAX, float(1 << min(int(tried[0] or 0), 20)))
            conn.execute(
                f"""UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt = ?
                   WHERE id IN ({marks})""",
                [error[:1000], now + delay, *ids],
            )

        self._write(work)

    def prune(self, before: float) -> int:
        """Forget rows delivered before `before`; returns how many."""
        sql = "DELETE FROM outbox WHERE delivered_at IS NOT NULL AND delivered_at < ?"
        return self._write(lambda conn: conn.execute(sql, (before,)).rowcount)

    def close(self) -> None:
        """Closes its own connection (a store's is the store's to close)."""
        with self._lock:
            if self._own is not None:
                self._own.close()
