"""The state database: one SQLite file, `state.db` in the state dir (keys/authdb.py only reads Xinference's).

It holds what a restart resumes from (docs/DESIGN.md section 8): the read positions of every source, named
JSON blobs (metric counters, rule state, ...), the outbox of alert deliveries and the set of firing
alerts. `StateStore.commit` writes them all in ONE transaction, so after a crash the positions, the
counters, the rule state and the alerts that follow from them always agree: a line is either fully
accounted for or re-read. The outbox and the firing set are kept by state/outbox.py (the senders'
side too), the schema and the connections by state/database.py.

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
- A state dir that cannot be written (disk full, read-only, I/O error: `is_storage_error`) never
  stops the daemon: the state goes on in memory (the mirror, state/mirror.py) and `recover()` writes
  it back when the file takes writes again.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson

from xinf_watch.model import Alert
from xinf_watch.state.database import DB_NAME, check_existing, connect, create_schema, transaction
from xinf_watch.state.mirror import copy_of, memory, prepare, read_only_copy, write_back
from xinf_watch.state.outbox import enqueue
from xinf_watch.state.storage_errors import describe, is_storage_error
from xinf_watch.visible import tell

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What the last commit left: the state a restart resumes from."""

    positions: Mapping[str, list[dict[str, Any]]]
    blobs: Mapping[str, Any]
    committed_at: float | None  # Unix time of the last commit; None for a fresh database


class StateStore:
    """The writing side: load what the last commit left, commit a batch atomically.

    `writable` is False while the state lives in the mirror (state/mirror.py); `error`
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
            reason = check_existing(self.path, checking)
            if reason is not None:
                self._move_aside(*reason)
        finally:
            # closed only now: closing the last connection may checkpoint and delete `state.db-wal`
            # by name, which must not happen to the WAL of a file being moved aside
            for checker in checking:
                checker.close()
        conn = connect(self.path, create=True, sync=self._sync)
        try:
            os.chmod(self.path, 0o600)
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                self._log(f"xinf-watch: state: {self.path}: WAL journal not available (got {mode})")
            conn.execute("BEGIN IMMEDIATE")
            create_schema(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

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
        self.error = describe(exc, self.path)
        mirror = read_only_copy(self.path)
        self.loaded = "empty" if mirror is None else "read-only"
        self._use_mirror(mirror or memory(), partial=mirror is None)

    def _use_mirror(self, mirror: sqlite3.Connection, *, partial: bool) -> None:
        prepare(mirror, partial=partial)
        self._mirror, self._partial = mirror, partial

    def hold(self, error: str) -> None:
        """Keep the state in memory from now on (the journal cannot be written: the file must not
        get ahead of it); `recover` ends it."""
        with self.lock:
            self.error = error
            if self._mirror is None:
                self._to_memory()

    def _to_memory(self) -> None:
        assert self._disk is not None
        mirror = copy_of(self._disk)  # None: the file cannot even be read: what comes is kept alone
        self._use_mirror(mirror or memory(), partial=mirror is None)

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
                write_back(mirror, self.path, sync=self._sync, partial=self._partial)
            except (OSError, sqlite3.Error) as exc:
                if not is_storage_error(exc):
                    raise
                self.write_errors += 1
                self.error = describe(exc, self.path)
                return False
            mirror.close()
            self._mirror, self._partial, self.error = None, False, None
            return True

    # -- reading and writing --------------------------------------------------------------------

    def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in one write transaction on the state: on the file, or, when the file refuses
        it (a storage error), rolled back there and run on the mirror from then on."""
        with self.lock:
            if self._mirror is None:
                assert self._disk is not None
                try:
                    return transaction(self._disk, work)
                except (OSError, sqlite3.Error) as exc:
                    if not is_storage_error(exc):
                        raise
                    self.write_errors += 1
                    self.error = describe(exc, self.path)
                    self._to_memory()
            assert self._mirror is not None
            return transaction(self._mirror, work)

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
            enqueue(conn, alerts)
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
