"""The files of a source on disk: what makes a file the same file, and looking for them.

ingest/tail.py's rules decide; this module looks and reports. It owns the identity of a file (the
"Identity" paragraph of ingest/tail.py's spec), the saved `Position`, the record of a file the tailer
holds (`OpenFile`: a `LineReader` with an identity), the glob scan of rule 1, the directory lookups
that copy recovery (rule 3: the copy, and the later copies it cannot read) and restart (rule 7)
need, and the log-once reporting of problems (rule 8). It keeps nothing open on its own: a
descriptor it opens is handed back or closed.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import os
import re
import stat
from collections.abc import Callable, Container, Iterator
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Literal

from xinf_watch.ingest.lines import LineReader

FINGERPRINT_BYTES = 1024
GZIP_MAGIC = b"\x1f\x8b"

Key = tuple[int, int]
Found = dict[Key, tuple[list[str], os.stat_result]]  # what `scan` found: names and stat, per file


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


@dataclass(slots=True, eq=False)
class OpenFile(LineReader):
    """A file the tailer holds: its reader, its identity, and the state ingest/tail.py's rules keep."""

    _: KW_ONLY
    dev: int
    ino: int
    fp: str
    fp_len: int
    mtime_ns: int = -1  # at the last look
    current: bool = True  # a name matching the pattern leads here; else it is drained (rule 2)
    grown_at: float = 0.0  # when it was last seen growing: the drain grace counts from there
    leader: Key | None = None  # this file is a copy of `leader`, read through it (rule 3)

    @classmethod
    def opened(cls, path: str, fd: int, st: os.stat_result, head: bytes, now: float) -> OpenFile:
        return cls(
            path,
            fd,
            size=st.st_size,
            dev=st.st_dev,
            ino=st.st_ino,
            fp=fingerprint(head),
            fp_len=len(head),
            mtime_ns=st.st_mtime_ns,
            grown_at=now,
        )

    @property
    def key(self) -> Key:
        return (self.dev, self.ino)

    @property
    def identity(self) -> FileIdentity:
        return FileIdentity(self.dev, self.ino, self.fp, self.fp_len)

    def head_intact(self) -> bool:
        """True if the file still starts with its fingerprint, which grows with it up to its limit."""
        head = read_head(self.fd)
        if self.fp_len and not starts_with(head, self.identity):
            return False
        if len(head) > self.fp_len:
            self.fp, self.fp_len = fingerprint(head), len(head)
        return True


def fingerprint(head: bytes) -> str:
    return hashlib.sha256(head).hexdigest()


def starts_with(head: bytes, identity: FileIdentity) -> bool:
    """True if `head` (a file's first bytes) begins with the content `identity` fingerprinted."""
    n = identity.fingerprint_len
    return 0 < n <= len(head) and fingerprint(head[:n]) == identity.fingerprint


def read_head(fd: int) -> bytes:
    return os.pread(fd, FINGERPRINT_BYTES, 0)


def head_or_empty(fd: int) -> bytes:
    """`read_head`, or nothing when the file cannot be read now (a copy check then finds no copy)."""
    try:
        return read_head(fd)
    except OSError:
        return b""


def same_start(head: bytes, other: bytes) -> bool:
    """Both files start alike, as far as the shorter goes: one is a copy of the other."""
    n = min(len(head), len(other))
    return n > 0 and head[:n] == other[:n]


# A file gone between two calls: deleted (ENOENT), its process exited (ESRCH: /proc/PID/*), or
# deleted on the server (ESTALE: NFS). Not a problem to report: the file is simply not there.
VANISHED = frozenset({errno.ENOENT, errno.ESRCH, errno.ESTALE})


def vanished(e: OSError) -> bool:
    return e.errno in VANISHED


def rotation_rank(path: str) -> int:
    """Among files written in the same tick, x.log.2 is older than x.log.1, older than x.log."""
    m = re.search(r"\.(\d+)$", path)
    return -int(m.group(1)) if m else 0


class Problems:
    """Rule 8: a problem is reported by every poll that sees it, logged once while it lasts, and
    logged once more ("resolved") by the first poll that no longer sees it."""

    def __init__(self, source: str, log: Callable[[str], None]) -> None:
        self._source = source
        self._log = log
        self._open: dict[str, str] = {}
        self._seen: set[str] = set()

    def begin_poll(self) -> None:
        self._seen = set()

    def end_poll(self) -> None:
        for key in self._open.keys() - self._seen:
            self._log(f"{self._source}: resolved: {self._open.pop(key)}")

    def report(self, key: str, message: str) -> None:
        self._seen.add(key)
        if key not in self._open:
            self._open[key] = message
            self._log(f"{self._source}: {message}")

    def seen(self, key: str) -> bool:
        """Reported during this poll."""
        return key in self._seen

    @contextlib.contextmanager
    def guard(self, path: str) -> Iterator[None]:
        """An I/O error on one file is reported and retried next poll, never raised; a file that
        vanished is not reported (the scan no longer finds it, ingest/tail.py lets it go)."""
        try:
            yield
        except OSError as e:
            self.failed(path, e)

    def failed(self, path: str, e: OSError) -> None:
        if not vanished(e):
            self.report(f"io {path}", f"{path}: {e.strerror or e}; retrying every poll")


def open_regular(path: str, key: Key | None, problems: Problems) -> tuple[int, os.stat_result] | None:
    """A descriptor on the regular file at `path` (and only if it is `key`, when given)."""
    fd = -1
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        st = os.fstat(fd)
    except OSError as e:
        if fd >= 0:
            os.close(fd)
        if not vanished(e):
            problems.report(f"open {path}", f"{path}: cannot open ({e.strerror or e}); retrying every poll")
        return None
    if stat.S_ISREG(st.st_mode) and key in (None, (st.st_dev, st.st_ino)):
        return fd, st
    os.close(fd)
    return None


def glob_base(pattern: str) -> Path:
    """The fixed part of a glob: the directory every match is under."""
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), len(parts) - 1)
    return Path(*parts[:fixed]) if fixed else Path(".")


def nearest_directory(path: Path) -> Path:
    """`path` if it is a directory, else its nearest ancestor that is."""
    while not path.is_dir() and path != path.parent:
        path = path.parent
    return path


def scan(pattern: str, base: Path, problems: Problems) -> tuple[Found, bool]:
    """Regular files the pattern matches now, by (dev, ino), with every name leading to each;
    False if the answer may be incomplete (the directory or a file could not be looked at)."""
    try:
        os.scandir(base).close()
    except (FileNotFoundError, NotADirectoryError):
        problems.report("dir", f"{base}: directory missing; waiting for it to appear")
        return {}, True
    except OSError as e:
        problems.report("dir", f"{base}: cannot list ({e.strerror}); retrying every poll")
        return {}, False
    found: dict[Key, tuple[list[str], os.stat_result]] = {}
    complete = True
    for path in sorted(glob.glob(pattern)):
        try:
            st = os.stat(path)
        except OSError as e:
            if vanished(e):
                continue  # gone since the glob, or a dangling symlink
            problems.report(f"stat {path}", f"{path}: cannot stat ({e.strerror}); retrying every poll")
            complete = False
            continue
        if stat.S_ISREG(st.st_mode):
            found.setdefault((st.st_dev, st.st_ino), ([], st))[0].append(path)
    return found, complete


def names_near(path: str) -> list[str]:
    """Where a file saved as `path` may be now: the names in its directory and, for a symlink, in
    its target's directory (rotated beside the target). OSError if its directory cannot be listed."""
    folder = os.path.dirname(path) or "."
    names = [os.path.join(folder, n) for n in sorted(os.listdir(folder))]
    target = os.path.dirname(os.path.realpath(path))
    if target != os.path.realpath(folder):
        with contextlib.suppress(OSError):
            names += [os.path.join(target, n) for n in sorted(os.listdir(target))]
    return names


def find_key(paths: list[str], key: Key) -> str | None:
    """The first of `paths` leading to the file `key`."""
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == key:
            return path
    return None


def reopen(
    pos: Position, held: Container[Key], problems: Problems, now: float
) -> OpenFile | Literal["waiting", "gone"]:
    """Rule 7: the file of a saved position, opened and placed at its offset. Looked up by (device,
    inode) at its path, then beside it (`names_near`); else the file at its path if it has the same
    content on a new inode not in `held`. "waiting": it cannot be looked for now; "gone": not found."""
    ident = pos.identity
    try:
        names = names_near(pos.path)
    except OSError as e:
        problems.report(
            f"resume {pos.path}",
            f"{pos.path}: cannot look for the saved position ({e.strerror}); retrying every poll",
        )
        return "waiting"
    path = find_key([pos.path, *names], ident.key)
    if path is not None:
        opened = open_regular(path, ident.key, problems)
    else:
        path = pos.path
        opened = open_regular(path, None, problems)
        if opened and not (
            opened[1].st_size >= pos.offset
            and (opened[1].st_dev, opened[1].st_ino) not in held
            and starts_with(head_or_empty(opened[0]), ident)
        ):
            os.close(opened[0])
            opened = None
        if opened is None and not problems.seen(f"open {path}"):
            return "gone"
    if opened is None:
        return "waiting"
    fd, st = opened
    f = OpenFile(
        path,
        fd,
        dev=st.st_dev,
        ino=st.st_ino,
        fp=ident.fingerprint,
        fp_len=ident.fingerprint_len,
        grown_at=now,
    )
    with problems.guard(path):
        f.place(pos.offset)
    return f


def find_copy(
    folder: str, old: FileIdentity, size: int, exclude: Container[Key], now: float
) -> OpenFile | None:
    """A file in `folder`, not in `exclude`, at least `size` long, starting with `old`'s content:
    opened (not placed)."""
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        try:
            st = os.stat(path)
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if key in exclude or st.st_size < size or not stat.S_ISREG(st.st_mode):
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            head = read_head(fd)
        except OSError:
            os.close(fd)
            continue
        if (st.st_dev, st.st_ino) == key and starts_with(head, old):
            return OpenFile.opened(path, fd, st, head, now)
        os.close(fd)
    return None


def later_rotations(path: str, after_ns: int, exclude: Container[Key]) -> list[str]:
    """Files beside `path` named like its rotations (its name, then ".", "-" or "_" and a digit:
    app.log.1, app.log-20261128, app.log.2026-11-28_00-00-00, app.log.2.gz), modified after
    `after_ns`, and not in `exclude`."""
    folder, name = os.path.split(path)
    folder = folder or "."
    rotated = re.compile(re.escape(name) + r"[._-]\d")
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    later = []
    for n in names:
        if not rotated.match(n):
            continue
        candidate = os.path.join(folder, n)
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mtime_ns > after_ns and (st.st_dev, st.st_ino) not in exclude:
            later.append(candidate)
    return later
