r"""Container log wrappers: the lines a program wrote, out of the lines its container runtime wrote.

On Kubernetes (and under Docker) what a program writes to stdout and stderr reaches the node's disk
wrapped, one runtime line per line the program wrote, or per part of one (a source's `wrapper`):

* `cri` (containerd, CRI-O: the files kubelet keeps under /var/log/pods/, linked from
  /var/log/containers/): `<time> <stream> <tag> <text>`, e.g.
  `2026-12-04T10:00:00.123456789Z stdout F 10.0.0.1 - - [04/Dec/2026:10:00:00 +0000] "GET / ...`.
  `<time>` is RFC 3339 with nanoseconds, `<stream>` stdout or stderr, `<tag>` `F` for a whole line
  (or the last part of one) and `P` for a part of a longer line (containerd cuts lines at 16 KiB);
  `<text>` is the rest of the line as the program wrote it, possibly empty.
* `docker` (Docker's json-file logging driver): `{"log": "<text>\n", "stream": "stdout", "time":
  "<RFC 3339>"}`; a `log` without its final "\n" is a part, continued by the next one of its stream.

Rules:

- Parts are joined until the last one, per file and per stream (a program's stdout and stderr are
  interleaved in one file). A rotation starts afresh: parts are never joined across two files. A
  file that ends inside a line (its writer gone, or the end of a replayed file) gives what was
  joined as a line (`end()`), as ingest/lines.py does with a last line without newline.
- A joined line is bounded like any line (lines.MAX_LINE_BYTES, in UTF-8 bytes): past it the
  parts are dropped as they come and the line, once its last part arrives, counts as one skipped
  line, as a plain line that long does. A runtime line over that bound (linereader hands it over as
  `OVERLONG_LINE`, a blank line) is skipped too.
- A line that is not of the wrapper's format (not a runtime line, an unknown stream or tag, not a
  JSON object with a string `log`) counts as unparsed; nothing here raises, whatever the line.
- The runtime's time is not the record's when the line has its own: every format reads the
  program's time (for an access log the request's), so a wrapped log gives the events the
  unwrapped one does. It is checked for shape only (a full parse per line would cost more than the
  unwrapping) and kept as `time`, the time of the last line `feed()` or `end()` gave (of its last
  part), which the pipeline reads (`runtime_time()`) for a line without a time of its own: a
  `regex` source without a `ts` group (formats/regex.py).
- Pending parts are state like a read position: `snapshot()` / `restore()` carry them over a
  restart (the daemon commits them with the positions) and a reload.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import orjson

from xinf_watch.formats.timeparse import parse_iso8601
from xinf_watch.ingest.lines import MAX_LINE_BYTES
from xinf_watch.model import LineResult

WRAPPERS: Final = ("cri", "docker")
_STREAMS = frozenset(("stdout", "stderr"))

# What `feed` gives: a whole line, a result to count for a wrapper line that is none, or None: a
# part, held until its line is whole (it is counted with its line).
Fed = str | LineResult | None


@dataclass(slots=True)
class _Pending:
    parts: list[str]
    size: int  # UTF-8 bytes joined so far
    over: bool  # past MAX_LINE_BYTES: parts dropped until the last
    time: str  # the runtime's time of the last part


class Unwrapper:
    """The lines of one source's files, unwrapped; `file` is whatever names a file for its reader
    (the daemon's (device, inode), replay's file number)."""

    def __init__(self, kind: str) -> None:
        if kind not in WRAPPERS:
            raise ValueError(f"unknown wrapper {kind!r} (expected one of {', '.join(WRAPPERS)})")
        self.kind = kind
        self._split = _cri if kind == "cri" else _docker
        self._pending: dict[tuple[Hashable, str], _Pending] = {}
        self.time = ""  # the runtime's time of the last line returned, as it wrote it

    def feed(self, file: Hashable, line: str) -> Fed:
        split = self._split(line)
        if type(split) is not tuple:
            return split  # type: ignore[return-value]
        time, stream, whole, text = split
        if not self._pending:  # the common case: whole lines, nothing held
            if whole:
                self.time = time
                return text
            self._hold((file, stream), text, time)
            return None
        key = (file, stream)
        if not whole:
            self._hold(key, text, time)
            return None
        pending = self._pending.pop(key, None)
        self.time = time
        if pending is None:
            return text
        if pending.over or pending.size + len(text.encode()) > MAX_LINE_BYTES:
            return LineResult.SKIPPED
        pending.parts.append(text)
        return "".join(pending.parts)

    def _hold(self, key: tuple[Hashable, str], text: str, time: str) -> None:
        pending = self._pending.get(key)
        size = len(text.encode())
        if pending is None:
            over = size > MAX_LINE_BYTES
            self._pending[key] = _Pending([] if over else [text], size, over, time)
            return
        pending.time = time
        if not pending.over:
            pending.size += size
            if pending.size > MAX_LINE_BYTES:
                pending.over = True
                pending.parts = []  # past the bound: nothing of this line is kept
            else:
                pending.parts.append(text)

    def has_pending(self) -> bool:
        return bool(self._pending)

    def pending_files(self) -> set[Hashable]:
        return {file for file, _ in self._pending}

    def end(self, file: Hashable) -> Iterator[str | LineResult]:
        """`file` ended (its writer is gone, or a replay read it to the end): what each of its
        streams had joined is a line."""
        for key in [k for k in self._pending if k[0] == file]:
            pending = self._pending.pop(key)
            self.time = pending.time
            yield LineResult.SKIPPED if pending.over else "".join(pending.parts)

    def snapshot(self) -> dict[str, Any]:
        """Pending parts, JSON-ready (file names are JSON values: a (device, inode) is a list)."""
        return {
            "kind": self.kind,
            "pending": [[file, stream, "".join(p.parts), p.size, p.over, p.time]
                        for (file, stream), p in self._pending.items()],
        }  # fmt: skip

    def restore(self, data: dict[str, Any] | None) -> None:
        """Take over what `snapshot()` saved, if it was this wrapper's; anything unreadable is dropped."""
        if not isinstance(data, dict) or data.get("kind") != self.kind:
            return
        for item in data.get("pending") or ():
            try:
                file, stream, text, size, over, time = item
                key = (tuple(file) if isinstance(file, list) else file, str(stream))
                self._pending[key] = _Pending([] if over else [str(text)], int(size), bool(over), str(time))
            except (TypeError, ValueError):
                continue


def runtime_time(text: str) -> float | None:
    """Unix seconds of a runtime's RFC 3339 time (`2026-12-04T10:00:00.123456789Z`), or None."""
    return parse_iso8601(text) if text else None


def _cri(line: str) -> tuple[str, str, bool, str] | LineResult:
    parts = line.split(" ", 3)
    if len(parts) == 3:
        parts.append("")  # `<time> stdout F` with nothing after: an empty line (its space cut)
    elif len(parts) != 4:
        return LineResult.SKIPPED if not line else LineResult.UNPARSED
    time, stream, tag, text = parts
    if stream not in _STREAMS or not _time_shaped(time):
        return LineResult.UNPARSED
    if tag == "F":
        return time, stream, True, text
    if tag == "P":
        return time, stream, False, text
    return LineResult.UNPARSED


def _docker(line: str) -> tuple[str, str, bool, str] | LineResult:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return LineResult.SKIPPED if not line else LineResult.UNPARSED
    if type(obj) is not dict:
        return LineResult.UNPARSED
    text, stream, time = obj.get("log"), obj.get("stream"), obj.get("time")
    if type(text) is not str or type(stream) is not str or type(time) is not str:
        return LineResult.UNPARSED
    if stream not in _STREAMS or not _time_shaped(time):
        return LineResult.UNPARSED
    if text.endswith("\n"):
        text = text[:-1]
        return time, stream, True, text[:-1] if text.endswith("\r") else text
    return time, stream, False, text


def _time_shaped(text: str) -> bool:
    """`YYYY-MM-DDTHH:MM:SS...`: checked for shape only, parsed when asked (`runtime_time`)."""
    return len(text) >= 20 and text[4] == "-" and text[10] == "T" and text[:4].isdigit()


def unwrapped(kind: str, lines: Iterable[str]) -> Iterator[str | LineResult]:
    """The lines of one whole file, unwrapped (tests and tools; the pipeline feeds line by line)."""
    unwrapper = Unwrapper(kind)
    for line in lines:
        fed = unwrapper.feed(0, line)
        if fed is not None:
            yield fed
    yield from unwrapper.end(0)
