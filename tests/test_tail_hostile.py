"""Following files the tailer must not be fooled or killed by: logs that begin alike (the same
header, the same first request from two gateways) are distinct files, not copies of each other;
files that vanish or fail between any two OS calls (/proc/PID/status of a process that exits) cost
nothing but themselves. The tailer is driven without threads (test_tail.py's Harness); the real
daemon and `replay` get the same globs.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import Workspace, access_line, parse_metrics, parsed_lines, total
from test_tail import GRACE, Harness, Writer, append, numbered

HEADER = "#Fields: date time c-ip cs-method cs-uri-stem sc-status"


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    d = tmp_path / "logs"
    d.mkdir()
    return d


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    w = Workspace(tmp_path)
    yield w
    w.close()


# -- logs that begin alike --------------------------------------------------------------------


def test_logs_with_the_same_first_line_are_all_read(logs: Path) -> None:
    """b.log is found holding only the first line a.log has too: it is not a copy of a.log."""
    append(logs / "a.log", [HEADER, *numbered("a", range(3))])
    h = Harness(logs / "*.log")
    assert h.lines() == [HEADER, *numbered("a", range(3))]
    append(logs / "b.log", [HEADER])
    append(logs / "c.log", [HEADER])
    got = h.lines()
    append(logs / "b.log", numbered("b", range(2)))  # shorter than a.log: still no bigger than it
    append(logs / "c.log", numbered("c", range(3)))
    got += h.lines()
    append(logs / "a.log", numbered("a", range(3, 5)))
    append(logs / "b.log", numbered("b", range(2, 3)))
    got += h.lines() + h.drain()
    assert sorted(got) == sorted(
        [HEADER, *numbered("b", range(3)), HEADER, *numbered("c", range(3)), *numbered("a", range(3, 5))]
    )
    assert h.tailer.files_open() == 3
    assert (h.tailer.rotations, h.tailer.truncations) == (0, 0)
    assert h.messages == []


def test_logs_found_together_with_the_same_first_lines_are_all_read(logs: Path) -> None:
    """Two gateways whose logs begin with the same request line, one found as a prefix of the other."""
    first = access_line(0)
    append(logs / "gw1.log", [first, *numbered("gw1", range(3))])
    append(logs / "gw2.log", [first])
    h = Harness(logs / "*.log")
    got = h.lines()
    append(logs / "gw2.log", numbered("gw2", range(2)))
    got += h.lines()
    assert sorted(got) == sorted([first, first, *numbered("gw1", range(3)), *numbered("gw2", range(2))])
    h.restart()  # the positions say everything was read
    append(logs / "gw2.log", ["gw2 2"])
    assert h.lines() == ["gw2 2"]


@pytest.mark.parametrize(
    "poll_between", [False, True], ids=["copy unseen", "copy seen before the truncation"]
)
def test_copytruncate_of_a_log_with_a_header(logs: Path, poll_between: bool) -> None:
    """The copy and the file after the truncation begin with the same header line: still one
    rotation, every line once (the header twice: each file has it)."""
    path = logs / "app.log"
    w = Writer(path)
    h = Harness(logs / "app.log*")
    w.write([HEADER, *numbered("n", range(10))])
    assert h.lines() == [HEADER, *numbered("n", range(10))]
    w.write(numbered("n", range(10, 20)))
    shutil.copyfile(path, logs / "app.log.1")
    got = h.lines() if poll_between else []
    os.truncate(path, 0)
    w.write([HEADER])
    got += h.lines()
    w.write(numbered("n", range(20, 25)))
    got += h.lines() + h.drain()
    assert got == numbered("n", range(10, 20)) + [HEADER, *numbered("n", range(20, 25))]
    assert (h.tailer.rotations, h.tailer.truncations) == (1, 1)
    assert h.logged("lost") == 0
    w.close()


def test_copy_by_hand_still_follows_its_original(logs: Path) -> None:
    """What the check on later content must not break: a copy that stays a copy is never read."""
    path = logs / "app.log"
    w = Writer(path)
    h = Harness(logs / "app.log*")
    w.write([HEADER])
    assert h.lines() == [HEADER]
    shutil.copyfile(path, logs / "app.log.bak")  # only the header so far, like a new log would have
    w.write(numbered("n", range(5)))
    assert h.lines() == numbered("n", range(5))
    assert h.drain() == [] and h.tailer.files_open() == 2


def _rules_with(ws: Workspace, pattern: str, extra_source: dict[str, Any] | None = None) -> None:
    ws.write_rules(path=pattern, start_at="beginning")
    if extra_source is not None:
        config = yaml.safe_load(ws.rules.read_text())
        config["sources"].append(extra_source)
        ws.rules.write_text(yaml.safe_dump(config, sort_keys=False))


def _replay_parsed(ws: Workspace) -> int:
    out = ws.root / "replay.prom"
    done = subprocess.run(
        [sys.executable, "-m", "xinf_watch", "replay", "--rules", str(ws.rules), "--metrics-out", str(out)],
        capture_output=True, text=True, timeout=120, cwd=ws.root,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return int(total(parse_metrics(out.read_text()), "xinf_watch_lines_total", result="parsed"))


@pytest.mark.system
def test_daemon_and_replay_read_gateways_that_begin_alike(ws: Workspace) -> None:
    """Three gateways' logs under one glob, all beginning with the same request line: the daemon
    counts every line of each, while they are written and after a restart, and replay agrees."""
    first = access_line(0)
    gateways = [ws.logs / f"gw{i}.log" for i in range(3)]
    append(gateways[0], [first, *(access_line(s) for s in range(1, 4))])
    _rules_with(ws, str(ws.logs / "gw*.log"))
    d = ws.daemon().start()
    d.wait_until(lambda m: parsed_lines(m) == 4, what="gw0's 4 lines")
    for g in gateways[1:]:
        append(g, [first])
    # so far each is the start of gw0.log, as a copy of it would be: known, not read on their own yet
    d.wait_until(lambda m: total(m, "xinf_watch_files_open") == 3, what="3 files open")
    append(gateways[1], [access_line(s) for s in range(10, 12)])
    append(gateways[2], [access_line(s) for s in range(20, 23)])
    m = d.wait_until(lambda m: parsed_lines(m) >= 11, timeout=20, what="all 11 lines")
    assert parsed_lines(m) == 11
    d.terminate()
    append(gateways[2], [access_line(23)])
    d.start()
    m = d.wait_until(lambda m: parsed_lines(m) >= 12, timeout=20, what="12 lines after the restart")
    assert parsed_lines(m) == 12
    assert total(m, "xinf_watch_rotations_total") == 0
    d.terminate()
    assert _replay_parsed(ws) == 12


# -- files that vanish or fail ----------------------------------------------------------------


def _raise(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def test_file_gone_between_glob_and_open_is_skipped_silently(
    logs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/proc/PID/status of a process that exits after the glob: open or fstat fail; the other
    files are read, nothing leaks, nothing is logged, and a file that comes back is read."""
    append(logs / "a.log", numbered("a", range(3)))
    append(logs / "b.log", numbered("b", range(3)))
    real_fstat, real_pread = os.fstat, os.pread
    closed: list[int] = []
    real_close = os.close

    def close(fd: int) -> None:
        closed.append(fd)
        real_close(fd)

    def fstat(fd: int) -> os.stat_result:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("b.log"):
            raise ProcessLookupError(errno.ESRCH, "No such process")
        return real_fstat(fd)

    monkeypatch.setattr(os, "close", close)
    monkeypatch.setattr(os, "fstat", fstat)
    h = Harness(logs / "*.log")
    assert h.lines() == numbered("a", range(3))
    assert len(closed) == 1 and h.tailer.files_open() == 1  # b.log's descriptor was closed
    monkeypatch.setattr(os, "fstat", real_fstat)

    def pread(fd: int, n: int, offset: int) -> bytes:  # opened, then gone before the first read
        if os.readlink(f"/proc/self/fd/{fd}").endswith("b.log"):
            raise ProcessLookupError(errno.ESRCH, "No such process")
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", pread)
    append(logs / "a.log", ["a 3"])
    assert h.lines() == ["a 3"]
    assert len(closed) == 2 and h.tailer.files_open() == 1
    monkeypatch.setattr(os, "pread", real_pread)
    assert h.lines() == numbered("b", range(3))
    assert h.messages == []


def test_followed_file_that_vanishes_is_let_go(logs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A followed file whose process exits: its reads fail with ESRCH and its name is gone. It is
    closed without a word; the other file goes on being read."""
    append(logs / "a.log", numbered("a", range(3)))
    append(logs / "b.log", numbered("b", range(3)))
    h = Harness(logs / "*.log")
    assert sorted(h.lines()) == sorted(numbered("a", range(3)) + numbered("b", range(3)))
    b_fd = next(fd for fd in range(3, 1024) if _is(fd, logs / "b.log"))
    real_fstat, real_pread = os.fstat, os.pread

    def fstat(fd: int) -> os.stat_result:
        if fd == b_fd:
            raise ProcessLookupError(errno.ESRCH, "No such process")
        return real_fstat(fd)

    def pread(fd: int, n: int, offset: int) -> bytes:
        if fd == b_fd:
            raise ProcessLookupError(errno.ESRCH, "No such process")
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "fstat", fstat)
    monkeypatch.setattr(os, "pread", pread)
    append(logs / "a.log", ["a 3"])
    assert h.lines() == ["a 3"]  # b.log still has its name: kept
    (logs / "b.log").unlink()
    append(logs / "a.log", ["a 4"])
    assert h.lines() == ["a 4"]
    assert h.tailer.files_open() == 1 and [p.path for p in h.tailer.positions()] == [str(logs / "a.log")]
    assert h.messages == []


def test_errors_on_one_file_do_not_stop_the_others(logs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EIO on b.log's every read, while a.log is truncated and new files are classified (each
    looks at the other files' first bytes): reported once, for b.log only; the rest goes on."""
    append(logs / "a.log", numbered("a", range(3)))
    append(logs / "b.log", numbered("b", range(3)))
    h = Harness(logs / "*.log")
    assert len(h.lines()) == 6
    b_fd = next(fd for fd in range(3, 1024) if _is(fd, logs / "b.log"))
    real_pread = os.pread

    def pread(fd: int, n: int, offset: int) -> bytes:
        if fd == b_fd:
            raise _raise(errno.EIO)
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", pread)
    append(logs / "b.log", ["b 3"])
    os.truncate(logs / "a.log", 0)
    append(logs / "a.log", ["x 0"])
    append(logs / "c.log", ["c 0"])
    assert sorted(h.lines()) == ["c 0", "x 0"]
    assert sorted(h.lines() + h.lines()) == []
    assert h.logged("Input/output error") == 1 and h.logged(str(logs / "b.log")) >= 1
    assert not any(str(logs / "a.log") in m and "Input/output" in m for m in h.messages)
    monkeypatch.setattr(os, "pread", real_pread)
    assert h.lines() == ["b 3"]
    assert h.logged("resolved") == 1


def test_read_error_midway_returns_no_line_twice(logs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read that fails after some batches are out: positions() covers those batches (rule 6), so
    the retry goes on after them."""
    append(logs / "app.log", numbered("n", range(100)))  # 6-7 bytes a line: many 64-byte reads
    h = Harness(logs / "app.log", max_batch_bytes=64)
    real_pread = os.pread
    calls = {"n": 0}

    def pread(fd: int, n: int, offset: int) -> bytes:
        if offset >= 200:
            calls["n"] += 1
            raise _raise(errno.EIO)
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", pread)
    got = h.lines()
    assert calls["n"] and 20 < len(got) < 100 and got == numbered("n", range(len(got)))
    assert h.tailer.positions()[0].offset == sum(len(line) + 1 for line in got)
    monkeypatch.setattr(os, "pread", real_pread)
    got += h.lines()
    assert got == numbered("n", range(100))
    assert h.logged("Input/output error") == 2 and h.logged("resolved") == 1  # reported, then cleared


def test_proc_status_files_neither_kill_nor_flood(monkeypatch: pytest.MonkeyPatch) -> None:
    """`/proc/*/status`: files with size 0 made when read, for processes that come and go. Not logs:
    ignored, logged once for the source; no exception, whatever exits when."""
    h = Harness("/proc/*/status")
    children = []
    for _ in range(20):
        children.append(subprocess.Popen(["sleep", "0.02"]))
        assert h.lines() == []
        for c in children:
            c.poll()
    for c in children:
        c.wait()
    h.clock.advance(GRACE + 1)
    assert h.lines() == [] and h.tailer.files_open() == 0
    assert len(h.messages) == 1 and "not a log file" in h.messages[0]


def _is(fd: int, path: Path) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == str(path)
    except OSError:
        return False


@pytest.mark.system
def test_daemon_with_a_proc_glob_beside_a_log(ws: Workspace) -> None:
    """The real daemon with a source over /proc/*/status while processes start and exit: it keeps
    running, keeps counting the log's lines, and exits cleanly on SIGTERM. replay does not crash."""
    _rules_with(ws, str(ws.log), {"name": "procs", "path": "/proc/*/status", "format": "nginx",
                                  "log_format": "combined_key", "start_at": "beginning"})  # fmt: skip
    append(ws.log, [access_line(s) for s in range(10)])
    d = ws.daemon().start()
    children: list[subprocess.Popen[bytes]] = []
    for k in range(40):
        children.append(subprocess.Popen(["sleep", "0.05"]))
        append(ws.log, [access_line(100 + k)])
        d.wait_until(lambda m, k=k: parsed_lines(m) == 11 + k, what=f"{11 + k} lines")  # type: ignore[misc]
        for c in children:
            c.poll()
    for c in children:
        c.wait()
    m = d.metrics()
    assert total(m, "xinf_watch_lines_total", source="procs") == 0
    assert total(m, "xinf_watch_truncations_total") == 0
    d.terminate()
    assert d.stderr().count("not a log file") == 1
    assert "Traceback" not in d.stderr()
    out = ws.root / "replay.prom"
    done = subprocess.run(
        [sys.executable, "-m", "xinf_watch", "replay", "--rules", str(ws.rules), "--metrics-out", str(out)],
        capture_output=True, text=True, timeout=120, cwd=ws.root,
    )  # fmt: skip
    assert "Traceback" not in done.stderr
    if done.returncode != 0:
        # replay lists its files, then reads them: a process of this busy machine exiting in between
        # ends it with a one-line error, "no such file" or "No such process" (app/replay.py, not the tailer)
        assert done.returncode in (1, 2) and len(done.stderr.splitlines()) == 1, done.stderr
        assert "/proc/" in done.stderr or "No such process" in done.stderr, done.stderr
        return
    assert (
        total(parse_metrics(out.read_text()), "xinf_watch_lines_total", source="gateway", result="parsed")
        == 50
    )
