"""The alert journal: every alert transition, once, as a JSON line in `alerts.jsonl`."""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import orjson

from xinf_watch.model import Alert
from xinf_watch.state.storage_errors import is_storage_error


class AlertJournal:
    """Append-only JSON lines, one per alert transition, mode 0600; each transition once.

    The daemon journals a batch's alerts before it commits them, so a crash cannot leave a
    committed alert out of the journal; a batch read again after a crash makes the same alerts
    (same id and status), which are recognised among the last `REMEMBER` transitions (read back
    from the file's end when the journal is opened) and not written twice.
    The file is opened (append mode) for each batch, so a journal rotated by rename continues in a
    fresh file without a reopen signal.
    A write the storage refuses (disk full, read-only) never leaves part of a record: the file is cut
    back to where the batch began, and the records are kept (`unwritten`) and written, in order,
    by the next `append` or `flush` that can. A file found ending in part of a record (a crash in
    the middle of a write) is cut back to its last whole record before anything is added.
    """

    REMEMBER = 4096
    _TAIL_BYTES = 2 << 20
    _SCAN = 1 << 16  # bytes read at a time looking back for the last whole record

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._recent: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._unwritten: list[bytes] = []  # records the storage refused so far, in order
        self.error: str | None = None  # why they are not written (the path and the OS error)
        self.write_errors = 0
        for line in self._tail():
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
                alert = orjson.loads(line)
                self._remember((str(alert["id"]), str(alert["status"])))

    @property
    def unwritten(self) -> int:
        return len(self._unwritten)

    def _tail(self) -> list[bytes]:
        try:
            with self.path.open("rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - self._TAIL_BYTES))
                data = f.read()
        except OSError:
            return []
        lines = data.split(b"\n")
        return lines[1:] if len(data) == self._TAIL_BYTES else lines  # the first may be cut

    def _remember(self, key: tuple[str, str]) -> None:
        self._recent[key] = None
        if len(self._recent) > self.REMEMBER:
            self._recent.popitem(last=False)

    def append(self, alerts: Sequence[Alert]) -> bool:
        """Journal the transitions not journaled yet; False when the storage refused them (kept)."""
        for alert in alerts:
            key = (alert.id, alert.status.value)
            if key not in self._recent:
                self._unwritten.append(orjson.dumps(alert.to_json()) + b"\n")
                self._remember(key)
        return self.flush()

    def flush(self) -> bool:
        """Write the records kept from refused writes; True when none is left."""
        if not self._unwritten:
            return True
        try:
            self._write(b"".join(self._unwritten))
        except OSError as exc:
            if not is_storage_error(exc):
                raise
            self.write_errors += 1
            self.error = f"{exc.filename or self.path}: {exc.strerror or exc}"
            return False
        self._unwritten.clear()
        self.error = None
        return True

    def _write(self, data: bytes) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            end = self._whole_end(fd)
            view = memoryview(data)
            try:
                while view:  # one write for a batch, unless the kernel takes it in parts
                    view = view[os.write(fd, view) :]
            except OSError:
                with contextlib.suppress(OSError):  # no part of a record stays behind
                    os.ftruncate(fd, end)
                raise
        finally:
            os.close(fd)

    def _whole_end(self, fd: int) -> int:
        """The file's size, after cutting a last record that was written in part (a crash mid-write)."""
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return size
        end = size
        while end > 0:
            start = max(0, end - self._SCAN)
            newline = os.pread(fd, end - start, start).rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        os.ftruncate(fd, end)
        return end
