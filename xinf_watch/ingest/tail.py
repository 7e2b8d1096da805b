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
   magic is a compressed rotation of content already read: ignored. So is a file of size 0 that
   has content (made when read, as in /proc and /sys: nothing is appended to it), logged once per
   source.
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
   original was truncated. It stays a copy only while it is the start of its original (checked
   every poll): once it is not (another log that began alike, with the same header or the same
   first request, and went on with lines of its own), it never was one, and is read from 0.
   Copied and truncated twice between two polls (the daemon polls at least every 250 ms: two
   rotations within that time, or while it is down): the first copy is found by our fingerprint;
   the second starts with content we never saw, so nothing but its name and time tells it from
   another file (another log named alike, a copy made by hand), and reading the wrong file would
   count another log's lines or lines twice. So it is not looked for: a glob that matches it
   (`x.log*`) reads it as a new file, in time order, and nothing is lost; otherwise its lines are
   lost, and logged as possible data loss naming the files that may hold them: beside the file,
   named like its rotations (its name, then ".", "-" or "_" and a digit: x.log.1, x.log-20261128),
   modified after the copy we recovered from, and not followed (a copy named otherwise or kept in
   another directory goes unnoticed).
4. delete+recreate: a deleted file we hold is drained like a renamed one. The same (device,
   inode) with another fingerprint is another file (inode reuse), read from 0 (or treated as a copy
   when it is one). Closed files are remembered (`RETIRED_MEMORY`): one coming back under a
   matching name (a symlink swapped back, a directory moved back) resumes where it was.
5. Lines (ingest/lines.py): UTF-8 with replacement, without "\n" or "\r\n". Bytes after the last
   newline are held, not returned and not in the offset, until their newline arrives. A line
   longer than `MAX_LINE_BYTES` is returned as an empty line (the pipeline counts it as skipped)
   and its rest skipped, also after a restart; `replay` does the same.
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
   Every OS call on a file (open, fstat, read) is guarded for that file alone: an error while
   looking at another file's first bytes (rule 3) costs that look, not this file. A file that
   vanishes (ENOENT, ESRCH: /proc/PID/* of a process that exited, ESTALE) is no problem and not
   logged: gone between the glob and a read, it is closed and not followed; followed, it is
   closed once no name leads to it and its reads fail so (its content is gone with it).

Counters (exported by the daemon as `xinf_watch_rotations_total`, `xinf_watch_truncations_total`).
`rotations`: rotations followed, a new file under a name a followed file had (rules 2, 4) or a
truncation recovered from its copy (rule 3, copytruncate). `truncations`: followed files found
shorter or rewritten in place (rule 3), copy or not. So a copytruncate counts in both; a truncation
without a copy only in `truncations`, and is logged as possible data loss. `long_lines`: lines longer
than `MAX_LINE_BYTES`, skipped (rule 5).

Budget. `poll(budget_bytes)` stops after about that many bytes (it finishes the line it is in, so
every poll makes progress); `pending()` then says more is ready. `max_batch_bytes` bounds each read
and each `Batch` (a single longer line is a batch of its own).

Beyond any tailer, and logged where visible: lines written between logrotate's copy and its
truncate; a file rotated out of the glob and rotated again before a poll saw it (the second copy of
two copytruncates between two polls, rule 3, is one); a file that was empty at the last poll, then
copied and truncated before the next one (its copy cannot be recognised); a rotated file deleted
before it was ever opened. Two different files identical over their first `FINGERPRINT_BYTES`
are taken for copies of each other (rule 3); files that begin alike and differ within them are
told apart, except that a restart resumes a file that was still the start of another (a copy so
far) past the part it shares with it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from xinf_watch.ingest import files as sourcefiles
from xinf_watch.ingest.copies import CopyHandling, Truncated
from xinf_watch.ingest.files import (
    FileIdentity,
    Found,
    Key,
    OpenFile,
    Position,
    fingerprint,
    read_head,
    starts_with,
)
from xinf_watch.ingest.lines import MAX_LINE_BYTES, Batch, last_line_end

__all__ = [
    "MAX_LINE_BYTES",
    "Batch",
    "FileIdentity",
    "Position",
    "SourceTailer",
    "fingerprint",
    "starts_with",
]

RETIRED_MEMORY = 1024  # closed files remembered, so a name swapped back is resumed, not re-read


def _default_log(message: str) -> None:
    logging.getLogger(__name__).warning("%s", message)


class SourceTailer(CopyHandling):
    """Rules 1-8 above; what rule 3 does with copies and truncated files is ingest/copies.py."""

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
        self._problems = sourcefiles.Problems(source, log)
        self._files: dict[Key, OpenFile] = {}
        self._retired: OrderedDict[Key, tuple[FileIdentity, int]] = OrderedDict()
        self._ignored: set[Key] = set()
        self._names = {p.path for p in positions}  # every name a followed file had: reuse = rotation
        self._pending = False
        self._closed = False
        self._told_generated = False
        self._unverified: list[Key] = []  # resumed from an empty fingerprint: maybe a reused inode
        self.rotations = 0
        self.truncations = 0
        self.long_lines = 0
        self._base = sourcefiles.glob_base(pattern)

    # -- the daemon's side ------------------------------------------------------------------

    def poll(self, budget_bytes: int | None = None) -> list[Batch]:
        """Notice what changed, then return the complete lines now available, oldest file first."""
        if self._closed:
            raise RuntimeError(f"{self.source}: poll() after close()")
        now = self._now()
        self._problems.begin_poll()
        if self._unresolved:
            self._resume(now)
        self._refresh(now)
        batches = self._read_all(now, sys.maxsize if budget_bytes is None else budget_bytes)
        self._problems.end_poll()
        return batches

    def positions(self) -> list[Position]:
        """What to checkpoint after the lines of the last poll have been processed."""
        return [Position(f.path, f.identity, f.offset) for f in self._files.values()] + self._unresolved

    def watch_paths(self) -> set[Path]:
        """Directories whose changes mean "poll": the glob's fixed part (or its nearest existing
        ancestor) and the real directories of the files being followed (symlink targets)."""
        targets = {Path(os.path.realpath(f.path)).parent for f in self._files.values() if f.current}
        return {sourcefiles.nearest_directory(self._base)} | targets

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

    def _resume(self, now: float) -> None:
        waiting = []
        for pos in self._unresolved:
            if pos.identity.key in self._files:
                continue
            f = sourcefiles.reopen(pos, self._files, self._problems, now)
            if f == "gone":
                self._log(
                    f"{self.source}: {pos.path}: the file of the saved position is gone; "
                    f"lines after offset {pos.offset} may have been lost"
                )
            elif f == "waiting":
                waiting.append(pos)
            else:
                self._files[f.key] = f
                self._names.add(f.path)
                if not f.fp_len:
                    self._unverified.append(f.key)
        self._unresolved = waiting

    # -- noticing rotations -----------------------------------------------------------------

    def _refresh(self, now: float) -> None:
        """Notice what changed since the last poll: files grown, truncated, renamed or gone, and
        files new under the pattern; then work out what each truncated or new file is."""
        found, complete = sourcefiles.scan(self.pattern, self._base, self._problems)
        if complete:
            self._ignored &= found.keys()
        truncated = self._check_open_files(found, complete, now)
        self._restart_truncated(truncated)
        self._adopt_new(found, now, truncated)
        self._classify_changed(truncated, now)
        self._sync_followers()

    def _check_open_files(self, found: Found, complete: bool, now: float) -> Truncated:
        """Sizes and names of the files held open; those whose content was cut or replaced."""
        truncated: Truncated = []
        for f in list(self._files.values()):
            with self._problems.guard(f.path):
                st = os.fstat(f.fd)
                if st.st_size != f.size or st.st_mtime_ns != f.mtime_ns:
                    old = f.identity
                    intact = st.st_size >= f.offset and f.head_intact()
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
        return truncated

    def _adopt_new(self, found: Found, now: float, truncated: Truncated) -> None:
        """Open the files the pattern matches that are not followed yet, oldest first."""
        fresh = sorted(
            (st.st_mtime_ns, sourcefiles.rotation_rank(paths[0]), paths[0], key)
            for key, (paths, st) in found.items()
            if key not in self._files and key not in self._ignored
        )
        if self._first_scan:
            self._initial = {key for *_, key in fresh}
            self._first_scan = False
        for *_, path, key in fresh:
            with self._problems.guard(path):
                self._adopt(path, key, now, truncated)

    def _adopt(self, path: str, key: Key, now: float, truncated: Truncated) -> None:
        opened = sourcefiles.open_regular(path, key, self._problems)
        if opened is None:
            return
        fd, st = opened
        try:
            head = read_head(fd)
            generated = bool(head) and not st.st_size and not os.fstat(fd).st_size  # not grown since: no size
            if head.startswith(sourcefiles.GZIP_MAGIC) or generated:
                os.close(fd)
                self._ignored.add(key)
                if generated and not self._told_generated:
                    self._told_generated = True
                    self._log(
                        f"{self.source}: {path}: not a log file (size 0 with content: made when read, "
                        "as in /proc or /sys); ignored, like every such file of this source"
                    )
                return
            f = OpenFile.opened(path, fd, st, head, now)
            retired = self._retired.get(key)
            rotated = False
            if self._classify(f, head, truncated):
                pass
            elif retired and starts_with(head, retired[0]) and f.size >= retired[1]:
                f.place(retired[1])
            elif key in self._initial and self._start_at == "end":
                f.place(last_line_end(fd, f.size))
            else:
                rotated = path in self._names
        except OSError:
            os.close(fd)  # gone or unreadable since it was opened: the next scan finds it again, or not
            raise
        self.rotations += rotated
        self._retired.pop(key, None)
        self._initial.discard(key)
        self._names.add(path)
        self._files[key] = f

    # -- reading ----------------------------------------------------------------------------

    def _read_all(self, now: float, budget: int) -> list[Batch]:
        batches: list[Batch] = []
        self._pending = False
        for f in list(self._files.values()):
            try:
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
            except OSError as e:
                if sourcefiles.vanished(e) and not f.current:
                    self._close(f)  # no name leads to it and its content is gone with it (/proc/PID)
                else:
                    self._problems.failed(f.path, e)
        self._sync_followers()
        return batches

    def _read(self, f: OpenFile, budget: int, now: float, out: list[Batch]) -> tuple[int, bool]:
        """Append batches of complete lines from `f.offset`; return (bytes consumed, reached the end)."""
        size = f.size
        progress = f.read(budget, self._chunk, out)
        self.long_lines += progress.cut
        if f.size > size:
            f.grown_at = now
        return progress.consumed, progress.at_end

    def _let_go(self, f: OpenFile, now: float, out: list[Batch]) -> None:
        """Close a drained file; its trailing partial line is complete now that its writer is gone."""
        if f.leader is None:
            self._read(f, sys.maxsize, now, out)
            f.finish(out)
        self._close(f)

    def _close(self, f: OpenFile) -> None:
        for g in self._files.values():
            if g.leader == f.key:
                g.leader = None
        os.close(f.fd)
        del self._files[f.key]
        self._retired[f.key] = (f.identity, f.offset)
        if len(self._retired) > RETIRED_MEMORY:
            self._retired.popitem(last=False)
