r"""Tail the files of one source: complete lines out, positions to checkpoint, nothing lost or read twice.

`SourceTailer.poll()` does all the work, synchronously, with `os.stat`/`os.pread`: the daemon calls
it when watchfiles wakes it and on a timer (so drained files get let go), hands the lines to the
pipeline, then commits `positions()` in the same transaction as everything else. A tailer built
from the last committed positions resumes exactly there. This docstring is the spec.

Identity. A file is (device, inode, fingerprint): the SHA-256 of its first `FINGERPRINT_BYTES`, or
of all it has while shorter, with `fingerprint_len` saying how many bytes; a candidate matches when
its first `fingerprint_len` bytes hash the same (an empty fingerprint matches nothing by content).
The fingerprint grows with the file. Names are never identity: a file is followed by the
descriptor we hold, under whatever name leads to it.

1. Discovery. The pattern is a glob, evaluated every poll, following symlinks (`stat`, not `lstat`).
   Files found by the first poll of a tailer built without positions start at `start_at`: "end"
   skips to just after the last newline, "beginning" reads all. Every other file is new and read
   from 0: files appearing later, a missing file or directory that comes back, and, on a restart,
   files the positions do not cover (so a daemon resuming a known source passes
   start_at="beginning" even when its saved positions are empty). A file starting with the gzip
   magic is a compressed rotation of content already read: ignored.
2. rename+create (logrotate, nginx, symlink swaps, Python's Rotating/TimedRotatingFileHandler):
   a name now leads to another inode. The old file stays open and is drained: read to its end
   every poll until `drain_grace` seconds after it was last seen growing (the writer keeps writing
   to it until it reopens), then its trailing partial line, if any, is returned (the writer is
   gone) and it is closed. A rotated file still matching the glob (`x.log.1` for `x.log*`) is the
   same file under a new name, never read twice. Files are read in the order they were first
   seen, so an old file's lines come before its successor's in the same poll.
3. copytruncate: the same inode is now shorter than our offset, or no longer starts with its
   fingerprint. Its lines past our offset live only in the copy: a file starting with our old
   fingerprint, at least `offset` long, on another inode, tracked or found in the file's
   directory. The copy is read from our offset to its end, then the file from 0. Without a copy
   the truncation is logged as possible data loss (`: > access.log` looks the same).
   Copies are never read on their own: a new file whose content so far is the start of a live
   file's (compared over up to `FINGERPRINT_BYTES`) follows that file's offset (a copy seen
   before the truncation, `cp` by hand), and is read only from where its original stood when the
   original was truncated.
4. delete+recreate: a deleted file we hold is drained like a renamed one. The same (device,
   inode) with another fingerprint is another file (inode reuse), read from 0 (or treated as a copy
   when it is one). Closed files are remembered (`RETIRED_MEMORY`): one coming back under a
   matching name (a symlink swapped back, a directory moved back) resumes where it was.
5. Lines are UTF-8 with replacement, without the "\n" and a "\r" before it. Bytes after the last
   newline are held, not returned and not in the offset, until their newline arrives. A line
   longer than `MAX_LINE_BYTES` is returned cut there and the rest of it skipped up to its newline
   (`long_lines` counts them); an offset that is not just after a newline means "inside a cut
   line", so a restart skips the rest too. Nothing is buffered beyond one read.
6. `positions()` after a `poll()` is exactly what that poll returned: every open file with the
   offset after its last returned line, in reading order, plus saved positions not found yet.
7. Restart. A saved position is looked up by (device, inode): at its path, then in its directory
   and its symlink target's directory (rotated while we were down); then as the file at its path
   if that has the same content on a new inode (restored, device renumbered). Found, it resumes at
   the saved offset and rules 2-4 apply as if we had been watching: drained if no name leads to it,
   copy recovery if truncated, read from 0 if its content changed. Not found while its directory
   exists: logged as possible data loss and forgotten; directory missing or unreadable: kept,
   looked for every poll.
8. Problems (directory missing or unreadable, permission denied, read errors) never raise out of
   `poll()`: each is logged once while it lasts, once more when it clears, and retried every poll.

Budget. `poll(budget_bytes)` stops after about that many bytes (it finishes the line it is in, so
every poll makes progress); `pending()` then says more is ready. `max_batch_bytes` bounds each read
and each `Batch` (a single longer line is a batch of its own).

Beyond any tailer, and logged where visible: lines written between logrotate's copy and its
truncate; a file rotated out of the glob and rotated again before a poll saw it; a file that was
empty at the last poll, then copied and truncated before the next one (its copy cannot be
recognised); a rotated file deleted before it was ever opened. Two different files sharing their
first bytes (identical first lines) would be taken for copies of each other.
"""

from __future__ import annotations

import codecs
import contextlib
import glob
import hashlib
import logging
import os
import re
import stat
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

FINGERPRINT_BYTES = 1024
MAX_LINE_BYTES = 1 << 20
RETIRED_MEMORY = 1024  # closed files remembered, so a name swapped back is resumed, not re-read
_GZIP_MAGIC = b"\x1f\x8b"

Key = tuple[int, int]


@dataclass(frozen=True, slots=True)
class FileIdentity:
    dev: int
    ino: int
    fingerprint: str
    fingerprint_len: int

    @property
    def key(self) -> Key:
        return (self.dev, self.ino)


@dataclass(frozen=True, slots=True)
class Position:
    path: str
    identity: FileIdentity
    offset: int  # bytes consumed through the last complete line returned


@dataclass(frozen=True, slots=True)
class Batch:
    path: str
    lines: tuple[str, ...]
    start_offset: int
    end_offset: int


def fingerprint(head: bytes) -> str:
    return hashlib.sha256(head).hexdigest()


def starts_with(head: bytes, identity: FileIdentity) -> bool:
    """True if `head` (a file's first bytes) begins with the content `identity` fingerprinted."""
    n = identity.fingerprint_len
    return 0 < n <= len(head) and fingerprint(head[:n]) == identity.fingerprint


def _head(fd: int) -> bytes:
    return os.pread(fd, FINGERPRINT_BYTES, 0)


def _same_start(head: bytes, other: bytes) -> bool:
    """Both files start alike, as far as the shorter goes: one is a copy of the other."""
    n = min(len(head), len(other))
    return n > 0 and head[:n] == other[:n]


def _rotation_rank(path: str) -> int:
    """Among files written in the same tick, x.log.2 is older than x.log.1, older than x.log."""
    m = re.search(r"\.(\d+)$", path)
    return -int(m.group(1)) if m else 0


def _lines(data: bytes, end: int) -> list[str]:
    text = codecs.utf_8_decode(memoryview(data)[:end], "replace", True)[0]  # no copy of `data`
    lines = text.split("\n")
    lines.pop()
    if "\r" in text:
        lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    return lines


def _last_line_end(fd: int, size: int) -> int:
    """Offset just after the last newline; `size` if the last line is already too long to keep."""
    pos = size
    while pos > 0 and size - pos <= MAX_LINE_BYTES:
        start = max(0, pos - (1 << 16))
        nl = os.pread(fd, pos - start, start).rfind(b"\n")
        if nl >= 0:
            return start + nl + 1
        pos = start
    return 0 if pos == 0 else size


@dataclass(slots=True, eq=False)
class _File:
    path: str  # the name we last saw it by
    fd: int
    dev: int
    ino: int
    fp: str
    fp_len: int
    offset: int = 0
    size: int = -1  # at the last look; -1 makes the next poll check the head
    mtime_ns: int = -1
    skipping: bool = False  # inside a line cut at MAX_LINE_BYTES
    held: int = 0  # bytes of an incomplete last line
    current: bool = True  # a name matching the pattern leads here
    grown_at: float = 0.0
    leader: Key | None = None  # this file is a copy of `leader`, read through it

    @classmethod
    def opened(cls, path: str, fd: int, st: os.stat_result, head: bytes, now: float) -> _File:
        return cls(
            path,
            fd,
            st.st_dev,
            st.st_ino,
            fingerprint(head),
            len(head),
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            grown_at=now,
        )

    @property
    def key(self) -> Key:
        return (self.dev, self.ino)

    @property
    def identity(self) -> FileIdentity:
        return FileIdentity(self.dev, self.ino, self.fp, self.fp_len)

    def place(self, offset: int) -> None:
        self.offset = offset
        self.held = 0
        # an offset not just after a newline is inside a cut line: skip its rest
        self.skipping = offset > 0 and os.pread(self.fd, 1, offset - 1) != b"\n"


def _default_log(message: str) -> None:
    logging.getLogger(__name__).warning("%s", message)


class SourceTailer:
    def __init__(
        self,
        source: str,
        pattern: str,
        *,
        start_at: Literal["end", "beginning"] = "end",
        positions: Sequence[Position] = (),
        now: Callable[[], float] = time.monotonic,
        max_batch_bytes: int = 1 << 20,
        drain_grace: float = 5.0,
        log: Callable[[str], None] = _default_log,
    ) -> None:
        self.source = source
        self.pattern = pattern
        self._start_at = start_at
        self._unresolved = list(positions)
        self._first_scan = not positions
        self._initial: set[Key] = set()  # found by the first scan of a fresh start: begin at start_at
        self._now = now
        self._chunk = max(1, min(max_batch_bytes, MAX_LINE_BYTES))
        self._grace = drain_grace
        self._log = log
        self._files: dict[Key, _File] = {}
        self._retired: OrderedDict[Key, tuple[FileIdentity, int]] = OrderedDict()
        self._ignored: set[Key] = set()
        self._names = {p.path for p in positions}  # every name a followed file had: reuse = rotation
        self._problems: dict[str, str] = {}
        self._seen_problems: set[str] = set()
        self._pending = False
        self._closed = False
        self._unverified: list[Key] = []  # resumed from an empty fingerprint: maybe a reused inode
        self.rotations = 0
        self.truncations = 0
        self.long_lines = 0
        parts = Path(pattern).parts
        fixed = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), len(parts) - 1)
        self._base = Path(*parts[:fixed]) if fixed else Path(".")

    # -- the daemon's side ------------------------------------------------------------------

    def poll(self, budget_bytes: int | None = None) -> list[Batch]:
        """Notice what changed, then return the complete lines now available, oldest file first."""
        if self._closed:
            raise RuntimeError(f"{self.source}: poll() after close()")
        now = self._now()
        self._seen_problems = set()
        if self._unresolved:
            self._resume(now)
        self._refresh(now)
        batches = self._read_all(now, sys.maxsize if budget_bytes is None else budget_bytes)
        for key in self._problems.keys() - self._seen_problems:
            self._log(f"{self.source}: resolved: {self._problems.pop(key)}")
        return batches

    def positions(self) -> list[Position]:
        """What to checkpoint after the lines of the last poll have been processed."""
        return [Position(f.path, f.identity, f.offset) for f in self._files.values()] + self._unresolved

    def watch_paths(self) -> set[Path]:
        """Directories whose changes mean "poll": the glob's fixed part (or its nearest existing
        ancestor) and the real directories of the files being followed (symlink targets)."""
        nearest = self._base
        while not nearest.is_dir() and nearest != nearest.parent:
            nearest = nearest.parent
        targets = {Path(os.path.realpath(f.path)).parent for f in self._files.values() if f.current}
        return {nearest} | targets

    def lag_bytes(self) -> int:
        return sum(max(0, f.size - f.offset) for f in self._files.values() if f.leader is None)

    def files_open(self) -> int:
        return len(self._files)

    def pending(self) -> bool:
        return self._pending

    def close(self) -> None:
        """Release every descriptor. `positions()` still answers; `poll()` no longer does."""
        if self._closed:
            return
        for f in self._files.values():
            os.close(f.fd)
        self._closed = True

    # -- finding files ----------------------------------------------------------------------

    def _problem(self, key: str, message: str) -> None:
        self._seen_problems.add(key)
        if key not in self._problems:
            self._problems[key] = message
            self._log(f"{self.source}: {message}")

    @contextlib.contextmanager
    def _guard(self, path: str) -> Iterator[None]:
        """An I/O error on one file is reported and retried next poll, never raised."""
        try:
            yield
        except OSError as e:
            self._problem(f"io {path}", f"{path}: {e.strerror or e}; retrying every poll")

    def _open(self, path: str, key: Key | None = None) -> tuple[int, os.stat_result] | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as e:
            self._problem(f"open {path}", f"{path}: cannot open ({e.strerror or e}); retrying every poll")
            return None
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and key in (None, (st.st_dev, st.st_ino)):
            return fd, st
        os.close(fd)
        return None

    def _scan(self) -> tuple[dict[Key, tuple[list[str], os.stat_result]], bool]:
        """Files the pattern matches now, by (dev, ino); False if the answer may be incomplete."""
        try:
            os.scandir(self._base).close()
        except (FileNotFoundError, NotADirectoryError):
            self._problem("dir", f"{self._base}: directory missing; waiting for it to appear")
            return {}, True
        except OSError as e:
            self._problem("dir", f"{self._base}: cannot list ({e.strerror}); retrying every poll")
            return {}, False
        found: dict[Key, tuple[list[str], os.stat_result]] = {}
        complete = True
        for path in sorted(glob.glob(self.pattern)):
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue  # gone since the glob, or a dangling symlink
            except OSError as e:
                self._problem(f"stat {path}", f"{path}: cannot stat ({e.strerror}); retrying every poll")
                complete = False
                continue
            if stat.S_ISREG(st.st_mode):
                found.setdefault((st.st_dev, st.st_ino), ([], st))[0].append(path)
        return found, complete

    def _resume(self, now: float) -> None:
        waiting = []
        for pos in self._unresolved:
            ident = pos.identity
            if ident.key in self._files:
                continue
            folder = os.path.dirname(pos.path) or "."
            try:
                names = [os.path.join(folder, n) for n in sorted(os.listdir(folder))]
            except OSError as e:
                self._problem(
                    f"resume {pos.path}",
                    f"{pos.path}: cannot look for the saved position ({e.strerror}); retrying every poll",
                )
                waiting.append(pos)
                continue
            target = os.path.dirname(os.path.realpath(pos.path))
            if target != os.path.realpath(folder):
                with contextlib.suppress(OSError):  # a symlinked name: the old target sits by the new
                    names += [os.path.join(target, n) for n in sorted(os.listdir(target))]
            opened = None
            for path in (pos.path, *names):
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) == ident.key:
                    opened = self._open(path, ident.key)
                    break
            else:
                path = pos.path
                opened = self._open(path)
                if opened and not (
                    opened[1].st_size >= pos.offset
                    and (opened[1].st_dev, opened[1].st_ino) not in self._files
                    and starts_with(_head(opened[0]), ident)
                ):
                    os.close(opened[0])
                    opened = None
                if opened is None and f"open {path}" not in self._seen_problems:
                    self._log(
                        f"{self.source}: {pos.path}: the file of the saved position is gone; "
                        f"lines after offset {pos.offset} may have been lost"
                    )
                    continue
            if opened is None:
                waiting.append(pos)
                continue
            fd, st = opened
            f = _File(path, fd, st.st_dev, st.st_ino, ident.fingerprint, ident.fingerprint_len, grown_at=now)
            with self._guard(path):
                f.place(pos.offset)
            self._files[f.key] = f
            self._names.add(path)
            if not ident.fingerprint_len:
                self._unverified.append(f.key)
        self._unresolved = waiting

    # -- noticing rotations -----------------------------------------------------------------

    def _refresh(self, now: float) -> None:
        found, complete = self._scan()
        if complete:
            self._ignored &= found.keys()
        truncated: list[tuple[_File, FileIdentity, int]] = []
        for f in list(self._files.values()):
            with self._guard(f.path):
                st = os.fstat(f.fd)
                if st.st_size != f.size or st.st_mtime_ns != f.mtime_ns:
                    old = f.identity
                    intact = st.st_size >= f.offset and self._head_intact(f)
                    if st.st_size != f.size:
                        f.grown_at = now
                    f.size, f.mtime_ns = st.st_size, st.st_mtime_ns
                    if not intact:
                        truncated.append((f, old, f.offset))
            if complete and f.key in found:
                paths = found[f.key][0]
                f.path = f.path if f.path in paths else paths[0]
                f.current = True
                self._names.add(f.path)
            elif complete and f.current:
                f.current = False
                f.grown_at = now

        for t, _, _ in truncated:  # new content: classified like a new file below
            head = _head(t.fd)
            t.fp, t.fp_len = fingerprint(head), len(head)
            t.place(0)
            t.leader = None
            for g in self._files.values():
                if g.leader == t.key:
                    g.leader = None  # a copy of the old content: _recover decides
        fresh = sorted(
            (st.st_mtime_ns, _rotation_rank(paths[0]), paths[0], key)
            for key, (paths, st) in found.items()
            if key not in self._files and key not in self._ignored
        )
        if self._first_scan:
            self._initial = {key for *_, key in fresh}
            self._first_scan = False
        for *_, path, key in fresh:
            with self._guard(path):
                self._adopt(path, key, now, truncated)
        cut = {t.key for t, _, _ in truncated}
        for u in [self._files[k] for k in self._unverified if k in self._files and k not in cut]:
            with self._guard(u.path):
                if u.leader is None:
                    self._classify(u, _head(u.fd), truncated)
        self._unverified.clear()
        for t, old, offset in truncated:
            with self._guard(t.path):
                head = _head(t.fd)
                if not starts_with(head, old):  # not merely shortened: maybe a copy of another file
                    self._classify(t, head, truncated)
                self._recover(t, old, offset, now)
        self._sync_followers()

    def _head_intact(self, f: _File) -> bool:
        """True if `f` still starts with its fingerprint, which grows with the file up to its limit."""
        head = _head(f.fd)
        if f.fp_len and not starts_with(head, f.identity):
            return False
        if len(head) > f.fp_len:
            f.fp, f.fp_len = fingerprint(head), len(head)
        return True

    def _adopt(
        self, path: str, key: Key, now: float, truncated: list[tuple[_File, FileIdentity, int]]
    ) -> None:
        opened = self._open(path, key)
        if opened is None:
            return
        fd, st = opened
        head = _head(fd)
        if head.startswith(_GZIP_MAGIC):
            os.close(fd)
            self._ignored.add(key)
            return
        f = _File.opened(path, fd, st, head, now)
        retired = self._retired.pop(key, None)
        if self._classify(f, head, truncated):
            pass
        elif retired and starts_with(head, retired[0]) and f.size >= retired[1]:
            f.place(retired[1])
        elif key in self._initial and self._start_at == "end":
            f.place(_last_line_end(fd, f.size))
        elif path in self._names:
            self.rotations += 1
        self._initial.discard(key)
        self._names.add(path)
        self._files[key] = f

    def _classify(self, f: _File, head: bytes, truncated: list[tuple[_File, FileIdentity, int]]) -> bool:
        """Place `f` if its content is a copy: of a truncated file (to recover from), or of a live one."""
        origin = next((off for t, old, off in truncated if t is not f and starts_with(head, old)), None)
        if origin is not None:
            f.place(min(origin, f.size))
            return True
        for g in self._files.values():
            if g is not f and g.leader is None and g.size >= f.size and _same_start(head, _head(g.fd)):
                f.leader = g.key
                f.place(min(g.offset, f.size))
                return True
        return False

    def _recover(self, t: _File, old: FileIdentity, offset: int, now: float) -> None:
        """`t` was truncated (or rewritten) at `offset`: read what it lost from a copy, then `t` anew."""
        self.truncations += 1
        copies = sorted(
            (g for g in self._files.values() if g is not t and starts_with(_head(g.fd), old)),
            key=lambda g: g.size,
            reverse=True,
        )
        for g in copies[1:]:  # contained in the largest copy
            g.place(max(g.offset, g.size))
        if copies and copies[0].size >= offset:
            copies[0].leader = None
            copies[0].place(max(copies[0].offset, offset))
        elif old.fingerprint_len and not self._adopt_copy(t, old, offset, now):
            self._log(
                f"{self.source}: {t.path}: truncated at offset {offset} and no copy found; "
                "lines written since the last read may have been lost"
            )
        self._files[t.key] = self._files.pop(t.key)  # after its copy

    def _adopt_copy(self, t: _File, old: FileIdentity, offset: int, now: float) -> bool:
        folder = os.path.dirname(t.path) or "."
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in self._files or st.st_size < offset or not stat.S_ISREG(st.st_mode):
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            except OSError:
                continue
            st = os.fstat(fd)
            head = _head(fd)
            if (st.st_dev, st.st_ino) != key or not starts_with(head, old):
                os.close(fd)
                continue
            f = _File.opened(path, fd, st, head, now)
            f.current = False  # read from `offset` to its end, then let go
            f.place(offset)
            self._files[key] = f
            return True
        return False

    def _sync_followers(self) -> None:
        for g in self._files.values():
            if g.leader is not None:
                leader = self._files.get(g.leader)
                if leader is None or g.size > leader.size:
                    g.leader = None  # not (or no longer) a copy: read on its own from here
                else:
                    with self._guard(g.path):
                        g.place(min(leader.offset, g.size))

    # -- reading ----------------------------------------------------------------------------

    def _read_all(self, now: float, budget: int) -> list[Batch]:
        batches: list[Batch] = []
        self._pending = False
        for f in list(self._files.values()):
            with self._guard(f.path):
                if f.leader is None:
                    if budget <= 0:
                        self._pending |= f.size > f.offset + f.held
                        continue
                    spent, done = self._read(f, budget, now, batches)
                    budget -= spent
                    if not done:
                        self._pending = True
                        continue
                if not f.current and now - f.grown_at >= self._grace:
                    self._let_go(f, now, batches)
        self._sync_followers()
        return batches

    def _read(self, f: _File, budget: int, now: float, out: list[Batch]) -> tuple[int, bool]:
        """Append batches of complete lines from `f.offset`; return (bytes consumed, reached the end)."""
        start = pos = f.offset
        done = False
        while pos - start < budget:
            want = min(self._chunk, budget - (pos - start))
            data = os.pread(f.fd, want, pos)
            at_end = len(data) < want
            begin = pos
            if f.skipping:
                nl = data.find(b"\n")
                if nl < 0:
                    pos += len(data)
                    if at_end:
                        done = True
                        break
                    continue
                f.skipping = False
                pos += nl + 1
                data = data[nl + 1 :]
            end = data.rfind(b"\n") + 1
            if not end and not at_end:
                # a line longer than this read: extend it alone, doubling, up to MAX_LINE_BYTES
                while not end and not at_end and len(data) <= MAX_LINE_BYTES:
                    searched = len(data)
                    asked = min(max(searched, 1 << 16), MAX_LINE_BYTES + 1 - searched)
                    more = os.pread(f.fd, asked, pos + searched)
                    at_end = len(more) < asked
                    data += more
                    end = data.find(b"\n", searched) + 1
                if not end and not at_end:
                    cut = data[:MAX_LINE_BYTES].decode("utf-8", "replace")
                    out.append(Batch(f.path, (cut,), begin, pos + MAX_LINE_BYTES))
                    pos += MAX_LINE_BYTES
                    f.skipping = True
                    self.long_lines += 1
                    continue
                at_end = not end
            if end:
                out.append(Batch(f.path, tuple(_lines(data, end)), begin, pos + end))
                pos += end
            if at_end:
                f.held = len(data) - end
                done = True
                break
        if done and pos + f.held > f.size:
            f.size = pos + f.held
            f.grown_at = now
        f.offset = pos
        return pos - start, done

    def _let_go(self, f: _File, now: float, out: list[Batch]) -> None:
        """Close a drained file; its trailing partial line is complete now that its writer is gone."""
        if f.leader is None:
            self._read(f, sys.maxsize, now, out)
            rest = os.pread(f.fd, MAX_LINE_BYTES, f.offset)
            if rest and not f.skipping:
                line = rest.decode("utf-8", "replace")
                out.append(Batch(f.path, (line.removesuffix("\r"),), f.offset, f.offset + len(rest)))
            f.offset += len(rest)
        for g in self._files.values():
            if g.leader == f.key:
                g.leader = None
        os.close(f.fd)
        del self._files[f.key]
        self._retired[f.key] = (f.identity, f.offset)
        if len(self._retired) > RETIRED_MEMORY:
            self._retired.popitem(last=False)
