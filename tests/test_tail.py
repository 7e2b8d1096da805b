"""The tailer against real files: every kind of rotation live and while "down", partial and huge lines,
problems that must not raise, and a seeded random writer. No threads, no sleeps: `poll()` is called
directly and the drain grace is passed with a fake clock."""

from __future__ import annotations

import calendar
import collections
import logging
import logging.handlers
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from xinf_watch.ingest.lines import Batch, LineReader
from xinf_watch.ingest.tail import (
    MAX_LINE_BYTES,
    FileIdentity,
    Position,
    SourceTailer,
    fingerprint,
    starts_with,
)

GRACE = 5.0


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Harness:
    """One source's tailer as the daemon drives it: poll, take the lines, commit the positions."""

    def __init__(self, pattern: Path | str, **kwargs: Any) -> None:
        self.pattern = str(pattern)
        self.clock = Clock()
        self.messages: list[str] = []
        kwargs.setdefault("start_at", "beginning")
        self.kwargs = kwargs
        self.tailer = self._make(kwargs.pop("positions", ()))

    def _make(self, positions: list[Position] | tuple[()]) -> SourceTailer:
        return SourceTailer(
            "src",
            self.pattern,
            positions=positions,
            now=self.clock,
            drain_grace=GRACE,
            log=self.messages.append,
            **self.kwargs,
        )

    def lines(self, budget: int | None = None) -> list[str]:
        return [line for batch in self.tailer.poll(budget) for line in batch.lines]

    def drain(self) -> list[str]:
        """Everything left, including rotated files let go after the grace period."""
        out: list[str] = []
        for _ in range(3):
            self.clock.advance(GRACE + 1)
            out += self.lines()
        return out

    def restart(self, positions: list[Position] | None = None) -> None:
        """kill -9 and start again from `positions` (default: what a commit now would store)."""
        saved = self.tailer.positions() if positions is None else positions
        self.tailer.close()
        self.tailer = self._make(saved)

    def logged(self, text: str) -> int:
        return sum(text in message for message in self.messages)


def numbered(tag: str, numbers: range) -> list[str]:
    return [f"{tag} {i}" for i in numbers]


def append(path: Path, lines: list[str], tail_text: str = "") -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines) + tail_text)


class Writer:
    """A server's log file handle: O_APPEND, kept open across renames until `reopen()`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, lines: list[str]) -> None:
        os.write(self.fd, "".join(line + "\n" for line in lines).encode())

    def reopen(self) -> None:
        os.close(self.fd)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    d = tmp_path / "logs"
    d.mkdir()
    return d


# -- discovery and lines ----------------------------------------------------------------------


def test_start_at_end_skips_existing_content_up_to_the_last_newline(logs: Path) -> None:
    append(logs / "app.log", numbered("old", range(3)), tail_text="being wri")
    h = Harness(logs / "app.log", start_at="end")
    assert h.lines() == []
    append(logs / "app.log", numbered("new", range(2)), tail_text="")
    assert h.lines() == ["being wrinew 0", "new 1"]


def test_start_at_beginning_and_files_appearing_later_are_read_from_0(logs: Path) -> None:
    append(logs / "a.log", numbered("a", range(3)))
    h = Harness(logs / "*.log", start_at="end")
    assert h.lines() == []
    append(logs / "b.log", numbered("b", range(3)))  # new while running: from its beginning
    append(logs / "a.log", numbered("a", range(3, 5)))
    assert sorted(h.lines()) == numbered("a", range(3, 5)) + numbered("b", range(3))
    h2 = Harness(logs / "*.log", start_at="beginning")
    assert sorted(h2.lines()) == numbered("a", range(5)) + numbered("b", range(3))


def test_missing_file_and_directory_are_waited_for(tmp_path: Path) -> None:
    pattern = tmp_path / "var" / "log" / "app" / "*.log"
    h = Harness(pattern, start_at="end")
    assert h.tailer.watch_paths() == {tmp_path}
    assert h.lines() == [] and h.lines() == []
    assert h.logged("directory missing") == 1
    (tmp_path / "var" / "log").mkdir(parents=True)
    assert h.tailer.watch_paths() == {tmp_path / "var" / "log"}
    (tmp_path / "var" / "log" / "app").mkdir()
    append(pattern.parent / "x.log", numbered("x", range(4)))
    assert h.lines() == numbered("x", range(4))  # appeared after the start: all of it
    assert h.logged("resolved") == 1
    assert h.tailer.watch_paths() == {pattern.parent}


def test_partial_line_is_held_and_not_counted_in_the_offset(logs: Path) -> None:
    path = logs / "app.log"
    append(path, ["one"], tail_text="tw")
    h = Harness(path)
    assert h.lines() == ["one"]
    assert [p.offset for p in h.tailer.positions()] == [4]
    append(path, [], tail_text="o")
    assert h.lines() == []
    h.restart()
    append(path, [], tail_text="\nthree\n")
    assert h.lines() == ["two", "three"]
    assert h.tailer.positions()[0].offset == path.stat().st_size


def test_crlf_and_invalid_utf8(logs: Path) -> None:
    (logs / "app.log").write_bytes(b"a\r\nb\xff\xfe\r\nc\rd\n\xe2\x82")
    h = Harness(logs / "app.log")
    assert h.lines() == ["a", "b\ufffd\ufffd", "c\rd"]
    with open(logs / "app.log", "ab") as f:
        f.write(b"\xac\n")  # the euro sign completed across two polls
    assert h.lines() == ["\u20ac"]


def test_huge_line_is_skipped_whole(logs: Path) -> None:
    path = logs / "app.log"
    append(path, ["before"], tail_text="x" * 600_000)
    h = Harness(path)
    assert h.lines() == ["before"]
    append(path, [], tail_text="y" * 600_000)  # now longer than MAX_LINE_BYTES: skipped, even without newline
    assert h.lines() == [""]  # a blank line: counted as skipped by every parser
    assert h.tailer.long_lines == 1
    h.restart()  # the position is inside the cut line: its rest is still skipped
    append(path, ["z" * 10, "after"])
    assert h.lines() == ["after"]
    append(path, ["w" * (2 * MAX_LINE_BYTES + 7), "last"])  # complete huge line in one write
    assert h.lines() == ["", "last"]
    assert h.tailer.long_lines == 1  # counted by the new tailer


def test_line_of_exactly_max_bytes_is_kept_whole(logs: Path) -> None:
    append(logs / "app.log", ["m" * MAX_LINE_BYTES, "next"])
    h = Harness(logs / "app.log")
    assert h.lines() == ["m" * MAX_LINE_BYTES, "next"]
    assert h.tailer.long_lines == 0


def test_budget_bounds_a_poll_and_pending_says_more_is_ready(logs: Path) -> None:
    path = logs / "app.log"
    append(path, numbered("n", range(1000)))
    h = Harness(path)
    got = h.lines(budget=1000)
    assert 0 < len(got) < 200 and h.tailer.pending()
    assert h.tailer.lag_bytes() == path.stat().st_size - h.tailer.positions()[0].offset
    one = h.lines(budget=1)  # smaller than a line: still one line of progress
    assert len(one) == 1 and h.tailer.pending()
    got += one
    h.restart()
    while True:
        more = h.lines(budget=3000)
        got += more
        if not h.tailer.pending():
            break
    assert got == numbered("n", range(1000))
    assert h.tailer.lag_bytes() == 0


def test_batches_are_bounded_and_carry_their_offsets(logs: Path) -> None:
    path = logs / "app.log"
    append(path, numbered("n", range(3000)))
    h = Harness(path, max_batch_bytes=4096)
    batches = h.tailer.poll()
    assert len(batches) >= 5 and all(b.end_offset - b.start_offset <= 4096 for b in batches)
    assert [b.start_offset for b in batches[1:]] == [b.end_offset for b in batches[:-1]]
    assert batches[-1].end_offset == path.stat().st_size
    assert [line for b in batches for line in b.lines] == numbered("n", range(3000))


def test_lines_longer_than_a_read_are_returned_whole(logs: Path) -> None:
    lines = [f"{i} " + "y" * (i * 997 % 300_000) for i in range(40)]
    append(logs / "app.log", lines, tail_text="partial " + "z" * 200_000)
    h = Harness(logs / "app.log", max_batch_bytes=100)
    got = h.lines(budget=1)
    while h.tailer.pending():
        got += h.lines(budget=5000)
    assert got == lines
    assert h.tailer.positions()[0].offset == sum(len(line) + 1 for line in lines)


def test_line_reader_on_its_own(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"a\r\nb\n" + b"x" * 40 + b"\nc\nunfinish")
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = LineReader(str(path), fd)
        out: list[Batch] = []
        progress = reader.read(budget=1 << 20, chunk=16, out=out)
        assert [line for b in out for line in b.lines] == ["a", "b", "x" * 40, "c"]
        assert progress.at_end and progress.consumed == reader.offset == 48 and reader.held == 8
        assert reader.size == path.stat().st_size and progress.cut == 0
        reader.place(3)  # inside the first line: its rest is skipped
        out.clear()
        reader.read(budget=1 << 20, chunk=16, out=out)
        assert [line for b in out for line in b.lines] == ["b", "x" * 40, "c"]
        out.clear()
        reader.finish(out)  # the writer is gone: the partial line is a line
        assert [line for b in out for line in b.lines] == ["unfinish"]
        assert reader.offset == path.stat().st_size
    finally:
        os.close(fd)


# -- rotations while running ------------------------------------------------------------------


def test_rename_create_with_writer_appending_to_the_renamed_file(logs: Path) -> None:
    path = logs / "app.log"
    w = Writer(path)
    h = Harness(path)
    w.write(numbered("n", range(10)))
    assert h.lines() == numbered("n", range(10))
    w.write(numbered("n", range(10, 15)))
    path.rename(logs / "app.log.1")
    w.write(numbered("n", range(15, 20)))  # nginx keeps writing until it gets USR1
    assert h.lines() == numbered("n", range(10, 20))
    h.clock.advance(3)
    w.write(numbered("n", range(20, 25)))
    w.reopen()
    w.write(numbered("n", range(25, 30)))
    assert h.lines() == numbered("n", range(20, 30))  # the old file's lines first
    assert h.tailer.rotations == 1 and h.tailer.files_open() == 2
    h.clock.advance(GRACE - 1)
    append(logs / "app.log.1", [], tail_text="unfinished")  # a writer that died mid-line
    assert h.lines() == []
    h.clock.advance(GRACE - 1)
    assert h.lines() == [] and h.tailer.files_open() == 2  # grace counts from the last growth
    h.clock.advance(2)
    assert h.lines() == ["unfinished"]
    assert h.tailer.files_open() == 1
    w.write(["n 30"])
    assert h.lines() == ["n 30"]
    assert [p.path for p in h.tailer.positions()] == [str(path)]
    w.close()


def test_copytruncate_recovers_lines_written_since_the_last_poll(logs: Path) -> None:
    path = logs / "app.log"
    w = Writer(path)
    h = Harness(path)
    w.write(numbered("n", range(10)))
    assert h.lines() == numbered("n", range(10))
    w.write(numbered("n", range(10, 15)))
    shutil.copyfile(path, logs / "app.log.1")
    os.truncate(path, 0)
    w.write(numbered("n", range(15, 20)))
    assert h.lines() == numbered("n", range(10, 20))
    assert (h.tailer.rotations, h.tailer.truncations) == (1, 1)  # a rotation, and a file emptied in place
    assert h.logged("lost") == 0
    w.write(numbered("n", range(20, 22)))
    assert h.drain() == numbered("n", range(20, 22))
    assert h.tailer.files_open() == 1
    w.close()


@pytest.mark.parametrize("poll_between", [False, True])
def test_copytruncate_with_a_glob_that_matches_the_copy(logs: Path, poll_between: bool) -> None:
    path = logs / "app.log"
    w = Writer(path)
    h = Harness(logs / "app.log*")
    w.write(numbered("n", range(10)))
    assert h.lines() == numbered("n", range(10))
    w.write(numbered("n", range(10, 100)))
    got = h.lines(budget=100)  # behind when the copy is made
    shutil.copyfile(path, logs / "app.log.1")
    if poll_between:
        got += h.lines(budget=100)  # sees the copy before the truncation: it must not read it
    os.truncate(path, 0)
    w.write(numbered("n", range(100, 110)))
    got += h.lines()
    assert got == numbered("n", range(10, 110))
    w.write(numbered("n", range(110, 115)))
    assert h.drain() == numbered("n", range(110, 115))
    shutil.copyfile(path, logs / "app.log.2")  # a second cycle
    os.truncate(path, 0)
    w.write(["n 115"])
    assert h.lines() == ["n 115"]
    assert (h.tailer.rotations, h.tailer.truncations) == (2, 2)
    w.close()


def _copy_and_truncate(path: Path, copy: Path, made_at_ns: int) -> None:
    """logrotate's copytruncate, the copy dated `made_at_ns` (copies made at different times)."""
    shutil.copyfile(path, copy)
    os.utime(copy, ns=(made_at_ns, made_at_ns))
    os.truncate(path, 0)


@pytest.mark.parametrize("restart", [False, True], ids=["running", "down"])
@pytest.mark.parametrize("naming", ["numbered", "dateext"])
@pytest.mark.parametrize("pattern", ["app.log", "app.log*"])
def test_two_copytruncates_between_two_polls(logs: Path, pattern: str, naming: str, restart: bool) -> None:
    """Rule 3: the second copy starts with lines never seen, so nothing tells it from another file.
    A glob that matches it reads it as a new file; otherwise its lines are lost, and logged."""
    path = logs / "app.log"
    w = Writer(path)
    h = Harness(logs / pattern)
    w.write(numbered("n", range(100)))
    assert h.lines() == numbered("n", range(100))
    committed = h.tailer.positions()
    now = time.time_ns()
    w.write(numbered("n", range(100, 200)))
    first = logs / ("app.log.1" if naming == "numbered" else "app.log-20261127")
    _copy_and_truncate(path, first, now - 2 * 10**9)
    w.write(numbered("n", range(200, 300)))
    if naming == "numbered":  # logrotate shifts the older copy: the middle one is the newest name
        first.rename(logs / "app.log.2")
        middle = logs / "app.log.1"
    else:
        middle = logs / "app.log-20261128"
    _copy_and_truncate(path, middle, now - 10**9)
    w.write(numbered("n", range(300, 400)))
    if restart:
        h.restart(committed)
    got = h.lines() + h.drain()
    if pattern == "app.log*":
        assert got == numbered("n", range(100, 400))
        assert h.logged("lost") == 0
    else:
        assert got == numbered("n", range(100, 200)) + numbered("n", range(300, 400))
        assert h.logged(f"{middle} is newer and not followed") == 1
        assert h.logged("may have been lost") == 1
        assert (h.tailer.rotations, h.tailer.truncations) == (1, 1)
    w.close()


def test_copytruncate_among_older_rotations_is_not_taken_for_a_loss(logs: Path) -> None:
    import gzip

    path = logs / "app.log"
    day = 86400 * 10**9
    yesterday = time.time_ns() - day
    (logs / "app.log.1").write_text("old 1\n")
    os.utime(logs / "app.log.1", ns=(yesterday, yesterday))
    (logs / "app.log.2.gz").write_bytes(gzip.compress(b"old 0\n"))  # logrotate keeps a copy's time
    os.utime(logs / "app.log.2.gz", ns=(yesterday - day, yesterday - day))
    w = Writer(path)
    h = Harness(path)
    w.write(numbered("n", range(10)))
    assert h.lines() == numbered("n", range(10))
    w.write(numbered("n", range(10, 15)))
    (logs / "app.log.2.gz").rename(logs / "app.log.3.gz")
    (logs / "app.log.1").rename(logs / "app.log.2")
    _copy_and_truncate(path, logs / "app.log.1", time.time_ns())
    w.write(numbered("n", range(15, 20)))
    assert h.lines() == numbered("n", range(10, 20))
    assert h.logged("lost") == 0
    assert (h.tailer.rotations, h.tailer.truncations) == (1, 1)
    w.close()


def test_plain_truncation_reads_from_0_and_warns(logs: Path) -> None:
    path = logs / "app.log"
    append(path, numbered("a", range(5)))
    h = Harness(path)
    assert h.lines() == numbered("a", range(5))
    os.truncate(path, 0)
    append(path, numbered("b", range(2)))
    assert h.lines() == numbered("b", range(2))
    assert (h.tailer.rotations, h.tailer.truncations) == (0, 1)  # no copy: not a rotation
    assert h.logged("may have been lost") == 1


def test_truncated_and_rewritten_past_the_offset_is_caught_by_the_fingerprint(logs: Path) -> None:
    path = logs / "app.log"
    append(path, numbered("a", range(3)))
    h = Harness(path)
    assert h.lines() == numbered("a", range(3))
    path.write_text("".join(line + "\n" for line in numbered("bbbbbb", range(50))))  # same inode
    assert h.lines() == numbered("bbbbbb", range(50))


def test_delete_and_recreate_drains_the_deleted_file(logs: Path) -> None:
    path = logs / "app.log"
    w = Writer(path)
    h = Harness(path)
    w.write(numbered("n", range(10)))
    assert h.lines() == numbered("n", range(10))
    w.write(numbered("n", range(10, 15)))
    path.unlink()
    w.write(numbered("n", range(15, 17)))  # into the deleted file we still hold
    w.reopen()
    w.write(numbered("n", range(17, 20)))
    assert h.lines() == numbered("n", range(10, 20))
    assert h.drain() == [] and h.tailer.files_open() == 1
    w.close()


def test_inode_reuse_is_a_new_file(logs: Path) -> None:
    path = logs / "app.log"
    append(path, numbered("old", range(5)))
    h = Harness(path)
    assert h.lines() == numbered("old", range(5))
    saved = h.tailer.positions()
    h.tailer.close()
    ino = path.stat().st_ino
    for _ in range(200):  # most file systems hand a freed inode straight back
        path.unlink()
        append(path, numbered("new", range(8)))
        if path.stat().st_ino == ino:
            break
    h.restart(saved)
    assert h.lines() == numbered("new", range(8))
    # and without relying on the file system: the same (dev, ino) with another fingerprint
    st = path.stat()
    other = FileIdentity(st.st_dev, st.st_ino, fingerprint(b"something else\n"), 15)
    h.restart([Position(str(path), other, 15)])
    assert h.lines() == numbered("new", range(8))
    assert h.logged("may have been lost") >= 1


def test_fingerprint_is_a_prefix_match() -> None:
    short = FileIdentity(1, 2, fingerprint(b"abc"), 3)
    assert starts_with(b"abcdef", short)
    assert not starts_with(b"ab", short)
    assert not starts_with(b"abX", short)
    assert not starts_with(b"anything", FileIdentity(1, 2, fingerprint(b""), 0))


def _handler_lines(
    handler: logging.Handler,
    records: range,
    h: Harness,
    every: int,
    rollover: Callable[[int], None] | None = None,
) -> list[str]:
    logger = logging.getLogger(f"test_tail.{id(handler)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    got: list[str] = []
    try:
        for i in records:
            if rollover:
                rollover(i)
            logger.info("rec %d", i)
            if i % every == 0:
                got += h.lines()
        got += h.drain()
    finally:
        logger.removeHandler(handler)
        handler.close()
    return got


@pytest.mark.parametrize("pattern", ["app.log", "app.log*"])
def test_rotating_file_handler(logs: Path, pattern: str) -> None:
    h = Harness(logs / pattern)
    handler = logging.handlers.RotatingFileHandler(logs / "app.log", maxBytes=120, backupCount=3)
    got = _handler_lines(handler, range(300), h, every=4)
    assert got == numbered("rec", range(300))
    assert h.tailer.rotations >= 20
    assert h.tailer.files_open() == (1 if pattern == "app.log" else 4)


@pytest.mark.parametrize("pattern", ["app.log", "app.log*"])
def test_timed_rotating_file_handler(logs: Path, pattern: str) -> None:
    h = Harness(logs / pattern)
    handler = logging.handlers.TimedRotatingFileHandler(logs / "app.log", when="D", utc=True, backupCount=4)
    day0 = calendar.timegm((2026, 11, 27, 0, 0, 0))

    def rollover(i: int) -> None:
        if i and i % 25 == 0:
            handler.rolloverAt = day0 + (i // 25) * 86400  # names the rotated file app.log.2026-11-..
            handler.doRollover()

    got = _handler_lines(handler, range(300), h, every=7, rollover=rollover)
    assert got == numbered("rec", range(300))
    assert (logs / "app.log.2026-12-07").exists()


def test_symlink_swap_is_a_rename(tmp_path: Path) -> None:
    (tmp_path / "releases").mkdir()
    (tmp_path / "logs").mkdir()
    a, b = tmp_path / "releases" / "a.log", tmp_path / "releases" / "b.log"
    link = tmp_path / "logs" / "current.log"
    wa = Writer(a)
    link.symlink_to(a)
    h = Harness(link)
    wa.write(numbered("a", range(5)))
    assert h.lines() == numbered("a", range(5))
    assert tmp_path / "releases" in h.tailer.watch_paths()
    wa.write(numbered("a", range(5, 10)))
    append(b, numbered("b", range(3)))
    (tmp_path / "logs" / "tmp").symlink_to(b)
    (tmp_path / "logs" / "tmp").replace(link)
    wa.write(numbered("a", range(10, 12)))
    append(b, numbered("b", range(3, 5)))
    assert h.lines() == numbered("a", range(5, 12)) + numbered("b", range(5))
    assert h.tailer.rotations == 1
    assert h.drain() == [] and h.tailer.files_open() == 1
    wa.close()


def test_copy_made_by_hand_is_not_read_again(logs: Path) -> None:
    path = logs / "app.log"
    w = Writer(path)
    h = Harness(logs / "app.log*")
    w.write(numbered("n", range(30)))
    assert h.lines() == numbered("n", range(30))
    shutil.copyfile(path, logs / "app.log.bak")
    w.write(numbered("n", range(30, 40)))
    assert h.lines() == numbered("n", range(30, 40))
    assert h.drain() == [] and h.tailer.files_open() == 2
    w.close()


def test_compressed_rotation_is_ignored(logs: Path) -> None:
    import gzip

    append(logs / "app.log", numbered("n", range(3)))
    (logs / "app.log.1.gz").write_bytes(gzip.compress(b"old 0\nold 1\n"))
    h = Harness(logs / "app.log*")
    assert h.lines() == numbered("n", range(3))


def test_symlink_swapped_back_resumes_the_file_it_left(logs: Path) -> None:
    a, b, link = logs / "a.log", logs / "b.log", logs / "current.log"
    append(a, numbered("a", range(3)))
    append(b, numbered("b", range(2)))
    link.symlink_to(a)
    h = Harness(link)
    assert h.lines() == numbered("a", range(3))
    link.unlink()
    link.symlink_to(b)
    assert h.drain() == numbered("b", range(2)) and h.tailer.files_open() == 1
    append(a, numbered("a", range(3, 5)))
    link.unlink()
    link.symlink_to(a)
    append(b, numbered("b", range(2, 3)))
    assert h.drain() == numbered("b", range(2, 3)) + numbered("a", range(3, 5))


def test_file_matched_by_two_names_is_read_once(logs: Path) -> None:
    append(logs / "a.log", numbered("a", range(4)))
    (logs / "current.log").symlink_to(logs / "a.log")
    h = Harness(logs / "*.log")
    assert h.lines() == numbered("a", range(4))
    assert h.tailer.files_open() == 1


def test_unreadable_file_is_reported_once_and_picked_up_when_readable(
    logs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = logs / "app.log"
    append(path, numbered("n", range(3)))
    path.chmod(0)
    try:
        blocked = True
        with open(path, "rb"):
            blocked = False  # root: permissions do not stop reads
    except PermissionError:
        pass
    if not blocked:
        real_open = os.open
        denials = iter([True, True])

        def deny_twice(p: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            if str(p) == str(path) and next(denials, False):
                raise PermissionError(13, "Permission denied", str(p))
            return real_open(p, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", deny_twice)
    h = Harness(path)
    assert h.lines() == [] and h.lines() == []
    assert h.logged("cannot open (Permission denied)") == 1
    path.chmod(0o644)
    assert h.lines() == numbered("n", range(3))
    assert h.logged("resolved") == 1


def test_read_error_is_reported_once_and_retried(logs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    append(logs / "app.log", numbered("n", range(3)))
    h = Harness(logs / "app.log")
    assert h.lines() == numbered("n", range(3))
    append(logs / "app.log", numbered("n", range(3, 6)))
    real_pread = os.pread

    def failing_pread(fd: int, n: int, offset: int) -> bytes:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "pread", failing_pread)
    assert h.lines() == [] and h.lines() == []
    assert h.logged("Input/output error") == 1
    monkeypatch.setattr(os, "pread", real_pread)
    assert h.lines() == numbered("n", range(3, 6))
    assert h.logged("resolved") == 1


def test_log_directory_disappears_and_comes_back(logs: Path, tmp_path: Path) -> None:
    path = logs / "app.log"
    append(path, numbered("a", range(3)))
    h = Harness(path)
    assert h.lines() == numbered("a", range(3))
    logs.rename(tmp_path / "moved")
    assert h.lines() == [] and h.logged("directory missing") == 1
    h.clock.advance(GRACE + 1)
    assert h.lines() == [] and h.tailer.files_open() == 0
    (tmp_path / "moved").rename(logs)  # the same file again: resumed, not re-read
    append(path, numbered("a", range(3, 5)))
    assert h.lines() == numbered("a", range(3, 5))
    shutil.rmtree(logs)
    assert h.lines() == []
    logs.mkdir()
    append(path, numbered("b", range(2)))  # a new directory with a new file: from 0
    assert h.drain() == numbered("b", range(2))


# -- restarts ---------------------------------------------------------------------------------


def _rename_chain(logs: Path, base: str = "app.log") -> None:
    numbers = sorted((int(p.name.rsplit(".", 1)[1]) for p in logs.glob(base + ".*")), reverse=True)
    for n in numbers:
        (logs / f"{base}.{n}").rename(logs / f"{base}.{n + 1}")
    (logs / base).rename(logs / f"{base}.1")


@pytest.mark.parametrize(
    "kind,pattern",
    [
        ("none", "app.log"),
        ("rename", "app.log"),
        ("rename", "app.log*"),
        ("rename_twice", "app.log*"),
        ("copytruncate", "app.log"),
        ("copytruncate", "app.log*"),
        ("crash_before_commit", "app.log"),
        ("directory_away_at_restart", "app.log"),
    ],
)
def test_restart_after_rotation_while_down(logs: Path, tmp_path: Path, kind: str, pattern: str) -> None:
    path = logs / "app.log"
    w = Writer(path)
    h = Harness(logs / pattern)
    w.write(numbered("a", range(10)))
    assert h.lines() == numbered("a", range(10))
    w.write(numbered("a", range(10, 15)))
    committed = h.tailer.positions()
    expected = numbered("a", range(10, 15))
    if kind == "crash_before_commit":
        assert h.lines() == expected  # returned but never committed: must come again
    h.tailer.close()
    if kind.startswith("rename"):
        _rename_chain(logs)
        w.write(numbered("a", range(15, 18)))  # before the writer reopens
        expected += numbered("a", range(15, 18))
        w.reopen()
        w.write(numbered("b", range(5)))
        expected += numbered("b", range(5))
        if kind == "rename_twice":
            _rename_chain(logs)
            w.reopen()
            w.write(numbered("c", range(3)))
            expected += numbered("c", range(3))
    elif kind == "copytruncate":
        shutil.copyfile(path, logs / "app.log.1")
        os.truncate(path, 0)
        w.write(numbered("b", range(5)))
        expected += numbered("b", range(5))
    else:
        w.write(numbered("a", range(15, 18)))
        expected += numbered("a", range(15, 18))
    if kind == "directory_away_at_restart":
        logs.rename(tmp_path / "away")
    h.restart(committed)
    got = h.lines()
    if kind == "directory_away_at_restart":
        assert got == [] and h.logged("cannot look for the saved position") == 1
        assert h.tailer.positions() == committed  # still to be found: kept in the checkpoint
        (tmp_path / "away").rename(logs)
        got += h.lines()
    got += h.drain()
    assert got == expected
    assert h.logged("lost") == 0
    if kind == "copytruncate":
        assert (h.tailer.rotations, h.tailer.truncations) == (1, 1)
    w.close()


def test_restart_after_symlink_swap_while_down(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    a, b, link = tmp_path / "logs" / "a.log", tmp_path / "logs" / "b.log", tmp_path / "logs" / "current.log"
    append(a, numbered("a", range(5)))
    link.symlink_to(a)
    h = Harness(link)
    assert h.lines() == numbered("a", range(5))
    saved = h.tailer.positions()
    h.tailer.close()
    append(a, numbered("a", range(5, 8)))
    append(b, numbered("b", range(3)))
    link.unlink()
    link.symlink_to(b)
    h.restart(saved)
    assert h.lines() + h.drain() == numbered("a", range(5, 8)) + numbered("b", range(3))


@pytest.mark.parametrize("kind", ["truncate", "delete", "copytruncate_copy_gone"])
def test_restart_after_losing_rotation_while_down_is_logged(logs: Path, kind: str) -> None:
    path = logs / "app.log"
    append(path, numbered("a", range(10)))
    h = Harness(path)
    assert h.lines() == numbered("a", range(10))
    saved = h.tailer.positions()
    h.tailer.close()
    append(path, numbered("a", range(10, 12)))  # unread, and about to go
    if kind == "truncate":
        os.truncate(path, 0)
    elif kind == "delete":
        path.unlink()
    else:
        shutil.copyfile(path, logs / "app.log.1")
        os.truncate(path, 0)
        (logs / "app.log.1").unlink()  # compressed away, say
    append(path, numbered("b", range(4)))
    h.restart(saved)
    assert h.lines() == numbered("b", range(4))
    assert h.logged("may have been lost") == 1
    if kind != "delete":  # (a deleted file's inode may come back: a truncation too)
        assert (h.tailer.rotations, h.tailer.truncations) == (0, 1)


def test_restart_with_all_files_gone_forgets_them(logs: Path) -> None:
    append(logs / "app.log", numbered("a", range(3)))
    h = Harness(logs / "app.log")
    assert h.lines() == numbered("a", range(3))
    saved = h.tailer.positions()
    h.tailer.close()
    (logs / "app.log").unlink()
    h.restart(saved)
    assert h.lines() == [] and h.tailer.positions() == []
    assert h.logged("the file of the saved position is gone") == 1


def test_restart_finds_a_copy_on_a_new_inode_at_the_same_path(logs: Path) -> None:
    path = logs / "app.log"
    append(path, numbered("a", range(40)))
    h = Harness(path)
    assert h.lines() == numbered("a", range(40))
    saved = h.tailer.positions()
    h.tailer.close()
    shutil.copyfile(path, logs / "tmp")  # restored from a backup, or moved across devices
    (logs / "tmp").replace(path)
    append(path, numbered("a", range(40, 42)))
    h.restart(saved)
    assert h.lines() == numbered("a", range(40, 42))


# -- randomized -------------------------------------------------------------------------------


class RandomWorld:
    """A server writing numbered lines through a random mix of rotations, and a daemon that polls,
    commits, crashes and restarts at random points. Rotations that would lose lines for any tailer
    (renaming twice a file no commit has seen, with a glob that does not match the renamed one;
    deleting or truncating lines never read) are preceded by a poll, as any daemon would have done.
    With `symlink`, app.log is a link into releases/ and a rename rotation is a swap of the link."""

    def __init__(self, logs: Path, pattern: str, rng: random.Random, symlink: bool) -> None:
        self.logs, self.rng, self.path = logs, rng, logs / "app.log"
        self.h = Harness(logs / pattern)
        self.rotated_unseen = "*" not in pattern or symlink  # the glob does not match rotated files
        self.releases = logs.parent / "releases" if symlink else None
        self.targets = 0
        if self.releases:
            self.releases.mkdir()
            self.path.symlink_to(self.releases / "app-0.log")
        self.w = Writer(self.path)
        self.gen, self.seq, self.partial = 0, 0, b""
        self.written: list[str] = []
        self.delivered: list[str] = []
        self.committed: list[Position] = []
        self.committed_count = 0
        self.gen_committed = -1  # the newest generation a commit has seen
        self.content_committed = -1  # ... and seen with some content: its fingerprint finds its copy
        self.has_content = False
        self.reopen_in: int | None = None
        self.done: collections.Counter[str] = collections.Counter()

    def write_lines(self) -> None:
        data = self.partial
        for _ in range(self.rng.randint(1, 4)):
            line = f"g{self.gen} n{self.seq} " + "x" * self.rng.randint(0, 60)
            self.written.append(line)
            data += line.encode() + b"\n"
            self.seq += 1
        self.partial = b""
        if self.rng.random() < 0.2:
            cut = self.rng.randint(1, len(data) - 1)
            if data.rfind(b"\n", 0, cut) >= 0:  # hold back part of the last line only
                data, self.partial = data[:cut], data[cut:]
        os.write(self.w.fd, data)
        self.has_content = True

    def finish_line(self) -> None:
        os.write(self.w.fd, self.partial)
        self.partial = b""

    def poll(self, commit: bool = True, full: bool = False) -> None:
        while True:
            budget = None if full else self.rng.choice([None, 60, 400, 5000])
            self.delivered += self.h.lines(budget)
            if not (full and self.h.tailer.pending()):
                break
        if commit:
            self.committed = self.h.tailer.positions()
            self.committed_count = len(self.delivered)
            self.gen_committed = self.gen
            if self.has_content:
                self.content_committed = self.gen

    def restart(self) -> None:
        del self.delivered[self.committed_count :]
        self.h.restart(self.committed)

    def new_generation(self, reopen: bool) -> None:
        if reopen:
            self.w.reopen()
        self.gen += 1
        self.has_content = False

    def step(self) -> None:
        if self.reopen_in is not None:
            if self.reopen_in == 0:
                self.finish_line()
                self.new_generation(reopen=True)
                self.reopen_in = None
            else:
                self.reopen_in -= 1
        op = self.rng.choices(
            ["write", "poll", "crash", "restart", "tick", "rename", "copytruncate", "truncate", "delete"],
            [40, 20, 3, 4, 8, 6, 5, 2, 3],
        )[0]
        if op not in ("rename", "copytruncate", "truncate", "delete", "tick") or self.reopen_in is None:
            self.done[op] += 1
        if op == "write":
            self.write_lines()
        elif op == "poll":
            self.poll()
        elif op == "crash":  # killed between taking lines and committing them
            self.poll(commit=False)
            self.restart()
        elif op == "restart":
            self.restart()
        elif op == "tick" and self.reopen_in is None:  # the grace is never passed before a reopen
            self.h.clock.advance(self.rng.uniform(0.5, 3))
        elif op in ("rename", "copytruncate", "truncate", "delete") and self.reopen_in is None:
            self.finish_line()
            if op in ("truncate", "delete"):
                self.poll(full=True)
            elif self.rotated_unseen and (
                self.gen_committed < self.gen
                or (op == "copytruncate" and self.has_content and self.content_committed < self.gen)
            ):
                self.poll()
            if op == "rename":
                if self.releases:
                    self.targets += 1
                    (self.logs / "link").symlink_to(self.releases / f"app-{self.targets}.log")
                    (self.logs / "link").replace(self.path)
                else:
                    _rename_chain(self.logs)
                self.reopen_in = self.rng.randint(0, 2)
            elif op == "copytruncate":
                _rename_chain_copies(self.logs)
                shutil.copyfile(self.path, self.logs / "app.log.1")
                if self.rng.random() < 0.3:
                    self.poll()
                os.truncate(self.path, 0)
                self.new_generation(reopen=False)
            elif op == "truncate":
                os.truncate(self.path, 0)
                self.new_generation(reopen=False)
            else:
                self.path.resolve().unlink()
                self.new_generation(reopen=True)

    def finish(self) -> None:
        self.finish_line()
        self.delivered += self.h.drain()
        self.w.close()
        self.h.tailer.close()


def _rename_chain_copies(logs: Path) -> None:
    numbers = sorted((int(p.name.rsplit(".", 1)[1]) for p in logs.glob("app.log.*")), reverse=True)
    for n in numbers:
        (logs / f"app.log.{n}").rename(logs / f"app.log.{n + 1}")


def _by_generation(lines: list[str]) -> Iterator[tuple[str, list[int]]]:
    groups: dict[str, list[int]] = collections.defaultdict(list)
    for line in lines:
        gen, seq = line.split()[:2]
        groups[gen].append(int(seq[1:]))
    return iter(groups.items())


@pytest.mark.parametrize("seed", range(8))
def test_random_writes_rotations_polls_and_restarts(logs: Path, seed: int) -> None:
    pattern = "app.log*" if seed % 2 else "app.log"
    world = RandomWorld(logs, pattern, random.Random(seed), symlink=seed % 4 > 1)
    for _ in range(500):
        world.step()
    world.finish()
    counts = collections.Counter(world.delivered)
    assert [line for line, n in counts.items() if n > 1] == []
    assert sorted(set(world.written) - set(counts)) == []
    assert sorted(counts.keys() - set(world.written)) == []
    for gen, seqs in _by_generation(world.delivered):
        assert seqs == sorted(seqs), gen
    assert min(world.done.values()) > 0 and len(world.done) == 9, world.done
