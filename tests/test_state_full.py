"""A state dir that is full or read-only, for real: a small tmpfs mounted as the state dir (filled
with a file until the kernel says ENOSPC), or a read-only bind mount of it. Needs root (mount); a
test that cannot mount fails when CI=true, and is skipped elsewhere.

Without threads: `StateStore` rolls a refused commit back (the file keeps the last checkpoint),
goes on in memory, outbox marks included, and one `recover()` writes everything once space is
back; `AlertJournal` never leaves part of a record and writes what it kept, in order. A read-only
state dir at startup loads the checkpoint read-only (or starts empty) and is written once it can be.
With the real daemon: it keeps tailing, counting and delivering on a full disk, says so in
`xinf_watch_state_writable` and once in its log, and once space returns, the state database and
the journal hold every line, counter and alert, each once (a kill -9 and restart show it).
"""

from __future__ import annotations

import collections
import errno
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Workspace, access_line, denied_line, json_url, parsed_lines, received_alerts, total
from receivers import HTTPReceiver, wait_until

from xinf_watch.delivery.journal import AlertJournal
from xinf_watch.model import Alert, AlertStatus, Severity
from xinf_watch.state.outbox import Outbox
from xinf_watch.state.store import StateStore

pytestmark = pytest.mark.system


# -- mounts -----------------------------------------------------------------------------------


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


def _cannot(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"cannot mount a test file system in CI: {why}")
    pytest.skip(f"cannot mount a test file system here: {why}")


def _mounted(path: Path, *args: str) -> None:
    try:
        _mount(*args, str(path))
    except FileNotFoundError as exc:
        _cannot(str(exc))
    except subprocess.CalledProcessError as exc:
        _cannot(exc.stderr.strip() or str(exc))


def _unmount(path: Path) -> None:
    # lazily if still busy (a failed test may leave a database open): never left mounted
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], check=True, capture_output=True)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, unmounted at the end."""
    path = tmp_path / "small"
    path.mkdir()
    _mounted(path, "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs")
    yield path
    _unmount(path)


@pytest.fixture
def read_only(small_fs: Path, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(writable path, read-only bind mount of it); `make_writable(view)` makes the view writable."""
    view = tmp_path / "view"
    view.mkdir()
    _mounted(view, "--bind", str(small_fs))
    yield small_fs, view
    _unmount(view)


def set_read_only(view: Path, read_only: bool) -> None:
    _mount("-o", f"remount,bind,{'ro' if read_only else 'rw'}", str(view))


class Filler:
    """A file that takes every free byte of a file system, until `free()`."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "filler"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (1 << 20, 1 << 16, 4096, 512, 1):
                try:
                    while True:
                        os.write(fd, bytes(size))
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
        finally:
            os.close(fd)
        with pytest.raises(OSError) as full:
            (directory / "probe").write_bytes(b"x")
        assert full.value.errno == errno.ENOSPC

    def free(self) -> None:
        self.path.unlink()


# -- StateStore and AlertJournal, no threads ---------------------------------------------------


def make_alert(n: int, status: AlertStatus = AlertStatus.FIRING) -> Alert:
    return Alert(
        rule="denied-burst", kind="threshold", severity=Severity.CRITICAL, status=status,
        group={"ip": f"203.0.113.{n}"}, key="unknown", count=23, first_ts=1_795_000_000.0,
        last_ts=1_795_000_030.5, summary=f"23 denied requests from 203.0.113.{n} in 1m", source="gateway",
        id=f"alert{n}",
    )  # fmt: skip


def blob(n: int) -> dict[str, Any]:
    """Rule state of some size (hundreds of KiB: a commit that must grow the file or its WAL)."""
    return {"n": n, "data": os.urandom(150_000).hex()}


def on_disk(directory: Path) -> dict[str, Any]:
    """What the file holds, read by a connection of its own (read-only)."""
    conn = sqlite3.connect((directory / "state.db").resolve().as_uri() + "?mode=ro", uri=True)
    try:
        positions = dict(conn.execute("SELECT source, data FROM positions").fetchall())
        blobs = {name: json.loads(data) for name, data in conn.execute("SELECT name, data FROM blobs")}
        outbox = conn.execute(
            "SELECT alert_id, status, target, delivered_at IS NOT NULL, attempts FROM outbox ORDER BY id"
        ).fetchall()
        firing = sorted(row[0] for row in conn.execute("SELECT alert_id FROM firing"))
    finally:
        conn.close()
    return {"positions": {k: json.loads(v) for k, v in positions.items()}, "rules": blobs.get("rules"),
            "outbox": outbox, "firing": firing}  # fmt: skip


def test_full_disk_commit_rolls_back_goes_on_in_memory_and_recovers_whole(small_fs: Path) -> None:
    store = StateStore(small_fs)
    outbox = Outbox(small_fs, store=store)
    assert store.commit({"gateway": [{"offset": 100}]}, {"rules": blob(1)}, [(make_alert(1), ["ops[1]"])])
    assert store.writable and store.write_errors == 0
    before = on_disk(small_fs)

    filler = Filler(small_fs)
    # a commit the disk cannot take: rolled back on disk, kept in memory
    assert not store.commit({"gateway": [{"offset": 200}]}, {"rules": blob(2)}, [(make_alert(2), ["ops[1]"])])
    assert not store.writable and store.write_errors == 1
    assert store.error is not None and str(small_fs / "state.db") in store.error
    assert "No space left on device" in store.error
    assert on_disk(small_fs) == before  # the file still holds the last checkpoint, whole
    # the delivery side follows: the new alert is due, and marks are kept (in memory)
    due = outbox.due(time.time())
    assert [(i.alert["id"], i.target) for i in due] == [("alert1", "ops[1]"), ("alert2", "ops[1]")]
    outbox.delivered(due[0].id)
    outbox.failed(due[1].id, time.time(), "receiver down")
    assert outbox.pending() == 1
    # more batches while full: each only in memory
    assert not store.commit({"gateway": [{"offset": 300}]}, {"rules": blob(3)},
                            [(make_alert(1, AlertStatus.RESOLVED), ["ops[1]"])])  # fmt: skip
    assert not store.recover()  # still full: nothing changes, counted
    assert store.write_errors == 2 and on_disk(small_fs) == before

    filler.free()
    assert store.recover()
    assert store.writable and store.error is None
    after = on_disk(small_fs)
    assert after["positions"] == {"gateway": [{"offset": 300}]}
    assert after["rules"]["n"] == 3
    assert after["outbox"] == [("alert1", "firing", "ops[1]", 1, 0), ("alert2", "firing", "ops[1]", 0, 1),
                               ("alert1", "resolved", "ops[1]", 0, 0)]  # fmt: skip
    assert after["firing"] == ["alert2"]
    # the file is in use again: the next commit and mark go to it
    outbox.delivered(due[1].id)
    assert store.commit({"gateway": [{"offset": 400}]}, {}, [])
    assert on_disk(small_fs)["positions"] == {"gateway": [{"offset": 400}]}
    assert on_disk(small_fs)["outbox"][1][3] == 1
    store.close()
    store = StateStore(small_fs)
    cp = store.load()
    store.close()
    assert cp.positions == {"gateway": [{"offset": 400}]} and cp.blobs["rules"]["n"] == 3


def test_journal_never_keeps_part_of_a_record_and_writes_what_it_kept(small_fs: Path) -> None:
    path = small_fs / "alerts.jsonl"
    journal = AlertJournal(path)
    assert journal.append([make_alert(1)])
    # a torn record left by a crash in the middle of a write (or an older release on a full disk)
    whole = path.read_bytes()
    with path.open("ab") as f:
        f.write(b'{"rule": "denied-burst", "kind": "thr')
    filler = Filler(small_fs)
    # the batch is bigger than what is left of the file's last page: the kernel takes a part of it
    big = [make_alert(n) for n in range(2, 40)]
    assert not journal.append(big)
    assert path.read_bytes() == whole  # torn record cut, the refused batch cut back to its start
    assert journal.unwritten == len(big) and journal.write_errors == 1
    assert journal.error is not None and "No space left on device" in journal.error
    assert not journal.append([make_alert(40), make_alert(2)])  # alert2 is kept already: once
    assert journal.unwritten == len(big) + 1
    assert path.read_bytes() == whole

    filler.free()
    assert journal.flush()
    ids = [json.loads(line)["id"] for line in path.read_text().splitlines()]
    assert ids == [f"alert{n}" for n in range(1, 41)]
    assert journal.unwritten == 0 and journal.error is None
    # a journal opened again knows them all
    assert AlertJournal(path).append([make_alert(n) for n in range(1, 41)])
    assert len(path.read_text().splitlines()) == 40


def test_read_only_state_dir_at_startup_loads_the_checkpoint_and_writes_once_it_can(
    read_only: tuple[Path, Path],
) -> None:
    directory, view = read_only
    store = StateStore(directory)
    store.commit({"gateway": [{"offset": 100}]}, {"metrics": {"n": 1}}, [(make_alert(1), ["ops[1]"])])
    store.close()

    set_read_only(view, True)
    store = StateStore(view)
    assert not store.writable and store.loaded == "read-only"
    assert store.error is not None and "Read-only file system" in store.error
    cp = store.load()
    assert cp.positions == {"gateway": [{"offset": 100}]} and cp.blobs == {"metrics": {"n": 1}}
    outbox = Outbox(view, store=store)
    committed = store.commit(
        {"gateway": [{"offset": 150}]}, {"metrics": {"n": 2}}, [(make_alert(2), ["ops[1]"])]
    )
    assert committed is False  # kept in memory
    for item in outbox.due(time.time()):
        outbox.delivered(item.id)
    assert not store.recover()

    set_read_only(view, False)
    assert store.recover()
    store.close()
    after = on_disk(directory)
    assert after["positions"] == {"gateway": [{"offset": 150}]}
    assert after["outbox"] == [("alert1", "firing", "ops[1]", 1, 0), ("alert2", "firing", "ops[1]", 1, 0)]


def test_read_only_state_dir_without_a_database_starts_empty(read_only: tuple[Path, Path]) -> None:
    directory, view = read_only
    set_read_only(view, True)
    store = StateStore(view / "state")  # cannot even be created
    assert not store.writable and store.loaded == "empty"
    assert store.load().positions == {}
    store.commit({"gateway": [{"offset": 10}]}, {}, [(make_alert(1), ["ops[1]"])])
    set_read_only(view, False)
    assert store.recover()
    store.close()
    assert on_disk(directory / "state")["outbox"] == [("alert1", "firing", "ops[1]", 0, 0)]


def test_check_notes_a_read_only_state_dir(read_only: tuple[Path, Path], tmp_path: Path) -> None:
    _, view = read_only
    set_read_only(view, True)
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"sources: []\nstate: {{dir: {view / 'state'}}}\n")
    done = subprocess.run(
        [sys.executable, "-m", "xinf_watch", "check", "--rules", str(rules)], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout == f"{rules}: ok: 0 sources, 0 keys, 0 rules\n"
    assert done.stderr == (
        f"{rules}: note: state.dir {view}/state: {view} is not writable by uid {os.getuid()}; run as "
        "this user, the daemon would keep its state and alerts in memory until it can write there\n"
    )


# -- the real daemon ----------------------------------------------------------------------------

# a 10 minute window: no resolution comes within a test, so what arrives is exactly known
DENIED_BURST = {
    "name": "denied-burst", "kind": "threshold", "when": {"outcome": "denied", "ip": ["203.0.113.0/24"]},
    "by": ["ip"], "count": 5, "window": "10m", "cooldown": "0s", "severity": "critical", "notify": ["ops"],
}  # fmt: skip


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    w = Workspace(tmp_path)
    yield w
    w.close()


def append(path: Path, lines: list[str]) -> None:
    with path.open("a") as f:
        f.write("".join(line + "\n" for line in lines))


def burst(ip: str, seq: int) -> list[str]:
    return [denied_line(seq + i, ip) for i in range(6)]


def writable(m: dict[Any, float]) -> float:
    return total(m, "xinf_watch_state_writable")


def journal_lines(state: Path) -> list[dict[str, Any]]:
    path = state / "alerts.jsonl"
    text = path.read_text() if path.exists() else ""
    assert not text or text.endswith("\n"), "a torn record at the journal's end"
    return [json.loads(line) for line in text.splitlines()]


def test_daemon_on_a_full_disk_keeps_counting_and_delivering_and_saves_it_all_when_space_returns(
    ws: Workspace, small_fs: Path
) -> None:
    receiver = HTTPReceiver().start()
    try:
        ws.state = small_fs
        ws.log.touch()
        ws.write_rules(rules=[DENIED_BURST], notify={"ops": [json_url(receiver)]},
                       extra={"delivery": {"group_interval": "0s"}})  # fmt: skip
        d = ws.daemon().start()
        written = 2000
        append(ws.log, [access_line(n) for n in range(written)])
        m = d.wait_until(lambda m: parsed_lines(m) == written, what=f"{written} lines")
        assert writable(m) == 1 and total(m, "xinf_watch_state_write_errors_total") == 0

        filler = Filler(small_fs)
        # lines and an incident while full: counted, the alert delivered, the daemon says so
        lines = [access_line(n) for n in range(written, written + 3000)]
        append(ws.log, lines + burst("203.0.113.1", 10_000))
        written += 3000 + 6
        m = d.wait_until(lambda m: parsed_lines(m) == written and writable(m) == 0, what="lines while full")
        assert total(m, "xinf_watch_state_write_errors_total") >= 1
        wait_until(lambda: len(received_alerts(receiver)) == 1, what="the alert made while full")
        append(ws.log, [access_line(n) for n in range(written, written + 500)] + burst("203.0.113.3", 20_000))
        written += 500 + 6
        wait_until(lambda: len(received_alerts(receiver)) == 2, what="a second alert made while full")
        m = d.wait_until(lambda m: parsed_lines(m) == written, what="lines while full")
        assert writable(m) == 0 and d.proc is not None and d.proc.poll() is None
        assert journal_lines(small_fs) == []  # not written yet, and no part of a record either
        d.wait_until(lambda m: total(m, "xinf_watch_outbox_pending") == 0, what="marks kept in memory")

        filler.free()
        m = d.wait_until(lambda m: writable(m) == 1, timeout=20, what="writable again")
        errors = total(m, "xinf_watch_state_write_errors_total")
        d.kill()  # what the daemon held in memory must be on disk now, not only after a clean stop
        d.start()
        m = d.wait_until(lambda m: parsed_lines(m) == written, what="the saved counters")
        assert total(m, "xinf_requests_total") == written
        assert writable(m) == 1 and total(m, "xinf_watch_state_write_errors_total") == errors
        assert total(m, "xinf_watch_notifications_total", result="sent") == 2
        time.sleep(1.0)  # room for a repeat that must not come
        alerts = received_alerts(receiver)
        d.terminate()
    finally:
        receiver.stop()
    journal = journal_lines(small_fs)
    assert [(a["group"]["ip"], a["status"]) for a in alerts] == [("203.0.113.1", "firing"),
                                                                   ("203.0.113.3", "firing")]  # fmt: skip
    assert collections.Counter((a["id"], a["status"]) for a in journal) == collections.Counter(
        (a["id"], a["status"]) for a in alerts
    )
    log = ws.daemons[0].stderr_path.with_name("daemon-1.stderr").read_text()
    warnings = [line for line in log.splitlines() if "state: cannot write" in line]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING"), warnings
    assert str(small_fs) in warnings[0] and "No space left on device" in warnings[0]
    assert sum("can be written again" in line for line in log.splitlines()) == 1


def test_daemon_with_a_read_only_state_dir_starts_from_its_checkpoint_and_writes_once_it_can(
    ws: Workspace, read_only: tuple[Path, Path]
) -> None:
    directory, view = read_only
    receiver = HTTPReceiver().start()
    try:
        ws.state = view
        ws.log.touch()
        ws.write_rules(rules=[DENIED_BURST], notify={"ops": [json_url(receiver)]},
                       extra={"delivery": {"group_interval": "0s"}})  # fmt: skip
        d = ws.daemon().start()
        append(ws.log, [access_line(n) for n in range(1000)])
        d.wait_until(lambda m: parsed_lines(m) == 1000, what="1000 lines")
        d.terminate()

        set_read_only(view, True)
        d.start()  # not an exit: READY, from the checkpoint read read-only
        m = d.metrics()
        assert parsed_lines(m) == 1000 and writable(m) == 0
        append(ws.log, [access_line(n) for n in range(1000, 1500)] + burst("203.0.113.2", 20_000))
        m = d.wait_until(lambda m: parsed_lines(m) == 1506, what="counting read-only")
        wait_until(lambda: len(received_alerts(receiver)) == 1, what="the alert made read-only")

        set_read_only(view, False)
        d.wait_until(lambda m: writable(m) == 1, timeout=20, what="writable again")
        d.kill()
        d.start()
        m = d.wait_until(lambda m: parsed_lines(m) == 1506, what="the saved counters")
        assert total(m, "xinf_requests_total") == 1506
        time.sleep(1.0)
        alerts = received_alerts(receiver)
        d.terminate()
    finally:
        receiver.stop()
    assert [(a["group"]["ip"], a["status"]) for a in alerts] == [("203.0.113.2", "firing")]
    assert [(a["id"], a["status"]) for a in journal_lines(directory)] == [(alerts[0]["id"], "firing")]
    log = (ws.root / "daemon-2.stderr").read_text()
    assert "Read-only file system" in log and "loaded the last saved state read-only" in log
