"""The state database: round trip, atomic commits, idempotent outbox, bad files moved aside, kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from xinf_watch.model import Alert, AlertStatus, Severity
from xinf_watch.state.outbox import BACKOFF_MAX, Outbox
from xinf_watch.state.store import StateStore

ROOT = Path(__file__).resolve().parents[1]


def make_alert(n: int = 1, status: AlertStatus = AlertStatus.FIRING, **extra: Any) -> Alert:
    return Alert(
        rule="denied-burst", kind="threshold", severity=Severity.CRITICAL, status=status,
        group={"ip": "203.0.113.7"}, key="unknown", count=23, first_ts=1_795_000_000.0,
        last_ts=1_795_000_030.5, summary="23 denied requests from 203.0.113.7 in 1m", source="gateway",
        id=f"alert{n}", extra=extra,
    )  # fmt: skip


class Messages(list[str]):
    def __call__(self, message: str) -> None:
        self.append(message)


def test_fresh_store_is_empty_and_private(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    cp = store.load()
    assert (dict(cp.positions), dict(cp.blobs), cp.committed_at) == ({}, {}, None)
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    store.commit({"s": [{"offset": 1}]}, {}, [])
    for name in ("state.db", "state.db-wal", "state.db-shm"):  # SQLite gives its side files the db's mode
        assert stat.S_IMODE((tmp_path / "state" / name).stat().st_mode) == 0o600
    store.close()


def test_commit_then_reopen(tmp_path: Path) -> None:
    positions = {"gateway": [{"dev": 2049, "inode": 11, "fingerprint": "ab" * 16, "offset": 4096}],
                 "audit": [{"dev": 2049, "inode": 12, "fingerprint": "cd" * 16, "offset": 0},
                           {"dev": 2049, "inode": 13, "fingerprint": "ef" * 16, "offset": 77}]}  # fmt: skip
    blobs = {
        "metrics": {"requests": [[["gateway", "alice", "models:read", "allowed"], 3]]},
        "rules": [1, "x"],
    }
    store = StateStore(tmp_path)
    store.commit(positions, blobs, [])
    store.commit(positions, {"rules": {"windows": {}}}, [])  # replaces only the blob it names
    store.close()

    cp = StateStore(tmp_path).load()
    assert cp.positions == positions
    assert cp.blobs == {"metrics": blobs["metrics"], "rules": {"windows": {}}}
    assert cp.committed_at is not None

    store = StateStore(tmp_path)
    store.commit({"gateway": positions["gateway"]}, {}, [])  # positions are replaced as a whole
    assert store.load().positions == {"gateway": positions["gateway"]}


def test_firing_set_follows_the_transitions_and_old_outboxes_gain_their_group(tmp_path: Path) -> None:
    """A database of the earlier release (outbox rows without a notification group) is taken over
    as it is; the firing set holds what fired and has not resolved, committed with the outbox."""
    conn = sqlite3.connect(tmp_path / "state.db")
    conn.execute(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY, alert_id TEXT NOT NULL, status TEXT NOT NULL,"
        " target TEXT NOT NULL, alert BLOB NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
        " next_attempt REAL NOT NULL DEFAULT 0, last_error TEXT, delivered_at REAL,"
        " UNIQUE (alert_id, status, target))"
    )
    conn.execute("INSERT INTO outbox (alert_id, status, target, alert) VALUES ('old', 'firing', 'ops', '{}')")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = StateStore(tmp_path)
    store.commit({}, {}, [(make_alert(1), ["ops"]), (make_alert(2), ["ops"])])
    store.commit({}, {}, [(make_alert(1, AlertStatus.RESOLVED), ["ops"])])
    outbox = Outbox(tmp_path)
    assert [(i.alert.get("id"), i.group) for i in outbox.due(0.0)] == [
        (None, ""), ("alert1", "denied-burst\0critical"), ("alert2", "denied-burst\0critical"),
        ("alert1", "denied-burst\0critical")]  # fmt: skip
    assert [a["id"] for a in outbox.firing()] == ["alert2"]
    skip = [("ops", "denied-burst\0critical")]
    assert [i.alert.get("id") for i in outbox.due(0.0, skip=skip)] == [None]
    outbox.close()
    store.close()


def test_outbox_is_idempotent_per_alert_status_target(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    firing, resolved = make_alert(1), make_alert(1, AlertStatus.RESOLVED)
    store.commit({}, {}, [(firing, ["ops", "alertmanager"])])
    store.commit({}, {}, [(firing, ["ops"]), (resolved, ["ops"])])
    store.commit({}, {}, [(resolved, ["ops", "ops"])])
    outbox = Outbox(tmp_path)
    items = outbox.due(now=0.0)
    assert [(i.target, i.alert["status"]) for i in items] == [
        ("ops", "firing"), ("alertmanager", "firing"), ("ops", "resolved")]  # fmt: skip
    assert items[0].alert == firing.to_json()
    assert outbox.pending() == 3

    outbox.delivered(items[0].id)
    store.commit({}, {}, [(firing, ["ops"])])  # already delivered: still not sent again
    assert outbox.pending() == 2
    assert [i.id for i in outbox.due(0.0)] == [items[1].id, items[2].id]


@pytest.mark.parametrize("shared", [True, False], ids=["store's connection", "own connection"])
def test_the_rows_of_one_message_are_marked_delivered_in_one_transaction(
    tmp_path: Path, shared: bool
) -> None:
    """A grouped message is several rows; a kill between their marks would repeat part of it."""
    store = StateStore(tmp_path)
    store.commit({}, {}, [(make_alert(n), ["ops"]) for n in range(3)])
    outbox = Outbox(tmp_path, store=store if shared else None)
    statements: list[str] = []
    outbox._conn.set_trace_callback(statements.append)
    outbox.delivered([item.id for item in outbox.due(0.0)], 5.0)
    assert [s for s in statements if s in ("BEGIN IMMEDIATE", "COMMIT")] == ["BEGIN IMMEDIATE", "COMMIT"]
    assert outbox.pending() == 0


def test_failed_rows_back_off_and_hold_back_their_target_only(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.commit(
        {}, {}, [(make_alert(1), ["ops", "am"]), (make_alert(1, AlertStatus.RESOLVED), ["ops", "am"])]
    )
    outbox = Outbox(tmp_path)
    first_ops = outbox.due(100.0)[0]
    delays = []
    for attempt in range(12):
        outbox.failed(first_ops.id, 100.0, f"refused {attempt}")
        (row,) = [i for i in outbox.due(1e12) if i.id == first_ops.id]
        delays.append(row.next_attempt - 100.0)
    assert delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, BACKOFF_MAX, BACKOFF_MAX, BACKOFF_MAX]
    assert row.attempts == 12
    # the resolution to ops waits behind its firing; the other target is not held back
    assert [(i.target, i.alert["status"]) for i in outbox.due(200.0)] == [
        ("am", "firing"),
        ("am", "resolved"),
    ]
    assert outbox.next_due() == 0.0
    for item in outbox.due(200.0):
        outbox.delivered(item.id)
    assert outbox.next_due() == 100.0 + BACKOFF_MAX
    assert outbox.pending() == 2


def test_commit_is_atomic(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.commit({"gateway": [{"offset": 1}]}, {"metrics": {"n": 1}}, [(make_alert(1), ["ops"])])
    unencodable = make_alert(2, detail=object())  # fails after positions and blobs were written
    with pytest.raises(TypeError):
        alerts = [(make_alert(3), ["ops"]), (unencodable, ["ops"])]
        store.commit({"gateway": [{"offset": 2}]}, {"metrics": {"n": 2}}, alerts)
    for cp in (store.load(), StateStore(tmp_path).load()):
        assert cp.positions == {"gateway": [{"offset": 1}]}
        assert cp.blobs == {"metrics": {"n": 1}}
    assert [i.alert["id"] for i in Outbox(tmp_path).due(0.0)] == ["alert1"]
    store.commit({"gateway": [{"offset": 3}]}, {}, [])  # the store is still usable
    assert store.load().positions == {"gateway": [{"offset": 3}]}


def test_garbage_file_is_moved_aside(tmp_path: Path) -> None:
    (tmp_path / "state.db").write_bytes(b"this is not a database\n" * 200)
    (tmp_path / "state.db-wal").write_bytes(b"stale")
    log = Messages()
    store = StateStore(tmp_path, log=log)
    assert len(log) == 1 and "corrupt" in log[0] and "state.db.corrupt-" in log[0]
    aside = sorted(p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name)
    assert aside[0] + "-wal" in aside and set(aside) <= {aside[0], aside[0] + "-wal", aside[0] + "-shm"}
    assert (tmp_path / aside[0]).read_bytes().startswith(b"this is not a database")
    store.commit({"s": [{"offset": 5}]}, {}, [(make_alert(), ["ops"])])
    assert StateStore(tmp_path, log=log).load().positions == {"s": [{"offset": 5}]}
    assert len(log) == 1


def test_damaged_pages_are_moved_aside(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.commit({f"s{i}": [{"offset": i, "pad": "x" * 500}] for i in range(200)}, {}, [])
    store.close()
    with sqlite3.connect(tmp_path / "state.db") as conn:  # fold the WAL into the file, then damage it
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with (tmp_path / "state.db").open("r+b") as f:
        f.seek(4096 * 2)
        f.write(os.urandom(4096 * 3))
    log = Messages()
    store = StateStore(tmp_path, log=log)
    assert len(log) == 1 and "corrupt" in log[0]
    assert store.load().positions == {}


def test_newer_schema_is_moved_aside(tmp_path: Path) -> None:
    StateStore(tmp_path).commit({"s": [{"offset": 1}]}, {}, [])
    with sqlite3.connect(tmp_path / "state.db") as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    log = Messages()
    store = StateStore(tmp_path, log=log)
    assert len(log) == 1 and "newer" in log[0] and "state.db.newer-" in log[0]
    assert store.load().positions == {}
    assert any(p.name.startswith("state.db.newer-") for p in tmp_path.iterdir())


COMMITTER = """
import sys
from pathlib import Path
from xinf_watch.model import Alert, AlertStatus, Severity
from xinf_watch.state.store import StateStore

store = StateStore(Path(sys.argv[1]), sync=sys.argv[2])
for n in range(1, 10**9):
    alert = Alert("r", "match", Severity.INFO, AlertStatus.FIRING, {}, "k", n, 0.0, 0.0, "s", None, f"a{n}")
    store.commit({"src": [{"offset": n}]}, {"metrics": {"n": n, "pad": "x" * 2000}}, [(alert, ["ops"])])
    print(n, flush=True)
"""


@pytest.mark.parametrize("sync", ["NORMAL", "FULL"])
def test_kill_9_keeps_every_reported_commit(tmp_path: Path, sync: str) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", COMMITTER, str(tmp_path), sync], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        reported = 0
        for line in proc.stdout:  # kill it in full flight, well past the first WAL checkpoint
            reported = int(line)
            if reported >= 1500:
                proc.send_signal(signal.SIGKILL)
                break
        reported = max([reported, *(int(line) for line in proc.stdout)])
    assert proc.returncode == -signal.SIGKILL

    cp = StateStore(tmp_path).load()
    committed = cp.positions["src"][0]["offset"]
    assert committed in (reported, reported + 1)  # the commit after the last print may have landed too
    assert cp.blobs["metrics"]["n"] == committed
    outbox = Outbox(tmp_path)
    assert outbox.pending() == committed
    assert [i.alert["count"] for i in outbox.due(0.0, limit=committed + 10)] == list(range(1, committed + 1))
