"""Rule 3 of tailing (the spec is ingest/tail.py's docstring): copies and copytruncate.

`CopyHandling` is the part of `SourceTailer` that tells what a truncated file, or a file opened
before its first bytes were there, now holds: a copy of another followed file (a follower: it
keeps its original's offset, `OpenFile.leader`, while it is the start of it), or content of its
own; and that reads what a truncated file lost from its copy, logging the loss when there is
none, and the files that may be a second copy it cannot tell from other files. `SourceTailer`
inherits these methods; they work on its followed files and counters, declared below. The
directory lookups they need are ingest/files.py's (`find_copy`, `later_rotations`).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable

from xinf_watch.ingest import files as sourcefiles
from xinf_watch.ingest.files import (
    FileIdentity,
    Key,
    OpenFile,
    fingerprint,
    head_or_empty,
    read_head,
    starts_with,
)

Truncated = list[tuple[OpenFile, FileIdentity, int]]  # a file, its identity and offset before


class CopyHandling:
    """Rule 3 for `SourceTailer`, which sets these attributes."""

    source: str
    rotations: int
    truncations: int
    _files: dict[Key, OpenFile]  # every followed file, in reading order
    _retired: OrderedDict[Key, tuple[FileIdentity, int]]
    _unverified: list[Key]
    _problems: sourcefiles.Problems
    _log: Callable[[str], None]

    def _restart_truncated(self, truncated: Truncated) -> None:
        """A truncated file holds new content: read from its start, classified like a new file."""
        for t, _, _ in truncated:
            with self._problems.guard(t.path):
                head = read_head(t.fd)
                t.fp, t.fp_len = fingerprint(head), len(head)
                t.place(0)
            t.leader = None
            for g in self._files.values():
                if g.leader == t.key:
                    g.leader = None  # a copy of the old content: _recover decides

    def _classify_changed(self, truncated: Truncated, now: float) -> None:
        """Files opened before their first bytes were there, and truncated ones: a copy of another
        file, or new content; a truncated one is then recovered."""
        cut = {t.key for t, _, _ in truncated}
        for u in [self._files[k] for k in self._unverified if k in self._files and k not in cut]:
            with self._problems.guard(u.path):
                if u.leader is None:
                    self._classify(u, read_head(u.fd), truncated)
        self._unverified.clear()
        for t, old, offset in truncated:
            with self._problems.guard(t.path):
                head = read_head(t.fd)
                if not starts_with(head, old):  # not merely shortened: maybe a copy of another file
                    self._classify(t, head, truncated)
                self._recover(t, old, offset, now)

    def _classify(self, f: OpenFile, head: bytes, truncated: Truncated) -> bool:
        """Place `f` if its content is a copy: of a truncated file (to recover from), or of a live one."""
        origin = next((off for t, old, off in truncated if t is not f and starts_with(head, old)), None)
        if origin is not None:
            f.place(min(origin, f.size))
            return True
        for g in self._files.values():
            if g is f or g.leader is not None or g.size < f.size:
                continue
            if sourcefiles.same_start(head, head_or_empty(g.fd)):
                f.leader = g.key
                f.place(min(g.offset, f.size))
                return True
        return False

    def _recover(self, t: OpenFile, old: FileIdentity, offset: int, now: float) -> None:
        """`t` was truncated (or rewritten) at `offset`: read what it lost from a copy, then `t` anew."""
        self.truncations += 1
        copies = sorted(
            (g for g in self._files.values() if g is not t and starts_with(head_or_empty(g.fd), old)),
            key=lambda g: g.size,
            reverse=True,
        )
        for g in copies[1:]:  # contained in the largest copy
            g.place(max(g.offset, g.size))
        copy = copies[0] if copies and copies[0].size >= offset else None
        if copy is not None:
            copy.leader = None
            copy.place(max(copy.offset, offset))
        elif old.fingerprint_len:
            copy = sourcefiles.find_copy(os.path.dirname(t.path) or ".", old, offset, self._files, now)
            if copy is None:
                self._log(
                    f"{self.source}: {t.path}: truncated at offset {offset} and no copy found; "
                    "lines written since the last read may have been lost"
                )
            else:
                copy.current = False  # read from `offset` to its end, then let go
                copy.place(offset)
                self._files[copy.key] = copy
        self._files[t.key] = self._files.pop(t.key)  # after its copy
        if copy is not None:
            self.rotations += 1
            self._check_later_copies(t, copy)

    def _check_later_copies(self, t: OpenFile, copy: OpenFile) -> None:
        """Rule 3, copied and truncated twice between two polls: the second copy cannot be told from
        any other file, so it is not read; files that may be it are logged as possible data loss."""
        held = self._files.keys() | self._retired.keys()
        try:
            copied_at = os.fstat(copy.fd).st_mtime_ns
        except OSError:
            return  # the copy is gone again: nothing to date later copies by
        later = sourcefiles.later_rotations(t.path, copied_at, held)
        if later:
            self._log(
                f"{self.source}: {t.path}: recovered from its copy {copy.path}, but {', '.join(later)} "
                "is newer and not followed: if it is a second copy (copied and truncated twice since the "
                "last read), its lines were not read and may have been lost"
            )

    def _sync_followers(self) -> None:
        for g in self._files.values():
            if g.leader is not None:
                leader = self._files.get(g.leader)
                with self._problems.guard(g.path):
                    original = b"" if leader is None else read_head(leader.fd)
                    if leader is not None and not sourcefiles.same_start(read_head(g.fd), original):
                        # it went on with lines of its own: never a copy, but another log that began
                        # alike (the same header, the same first request); all of it is its own
                        g.leader = None
                        g.place(0)
                    elif leader is None or g.size > leader.size:
                        g.leader = None  # not (or no longer) a copy: read on its own from here
                    else:
                        g.place(min(leader.offset, g.size))
