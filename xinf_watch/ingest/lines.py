r"""Complete lines from an open file descriptor: the reading half of the tailer.

A `LineReader` reads one file with `os.pread`, from `offset` on. It knows nothing of names,
identity or rotation: ingest/tail.py decides where a reader is placed, when it is read, and when its
writer is gone (`finish()`). Rule 5 of ingest/tail.py's spec is what this module does:

- Lines are UTF-8 with replacement, without the "\n" and a "\r" before it.
- `offset` is always just after the last line returned, also when a read fails midway (the
  batches already out stay read). Bytes after the last newline are held (`held` counts them):
  not returned and not in the offset, until their newline arrives.
- A line longer than `MAX_LINE_BYTES` (without its newline) is returned as an empty line, so the
  pipeline counts it as skipped and no parser or decoder ever sees more than `MAX_LINE_BYTES`;
  the rest of it is skipped up to its newline. `replay` reads files with `read_lines`, which
  applies the same rule. An offset that is not just after a newline means "inside a cut line": `place()` makes
  the reader skip the rest of it, so a tailer restarted at that offset skips it too.
- Nothing is buffered beyond one read: a line longer than a read is read again, alone, doubling,
  up to `MAX_LINE_BYTES`.
- `finish()` is for a file whose writer is gone: its trailing partial line is a line.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

MAX_LINE_BYTES = 1 << 20
READ_BLOCK = 1 << 20  # bytes `read_blocks` reads at a time
OVERLONG_LINE = ""  # what a line longer than MAX_LINE_BYTES becomes: blank, counted as skipped


@dataclass(frozen=True, slots=True)
class Batch:
    path: str
    lines: tuple[str, ...]
    start_offset: int
    end_offset: int
    file: tuple[int, int] | None = None  # the (device, inode) read, where known: `path` may be shared


@dataclass(frozen=True, slots=True)
class Progress:
    """What one `LineReader.read()` did."""

    consumed: int  # bytes, from the offset the read started at
    at_end: bool  # reached the end of the file; False: stopped by the budget
    cut: int  # lines cut at MAX_LINE_BYTES


@dataclass(slots=True, eq=False)
class LineReader:
    path: str  # the name batches carry
    fd: int
    offset: int = 0  # bytes consumed through the last complete line returned
    size: int = -1  # as far as known (last look or read); -1 makes the tailer check the head
    skipping: bool = False  # inside a line cut at MAX_LINE_BYTES
    held: int = 0  # bytes of an incomplete last line

    @property
    def key(self) -> tuple[int, int] | None:
        """What names the file in the batches (files.OpenFile: its device and inode)."""
        return None

    def place(self, offset: int) -> None:
        self.offset = offset
        self.held = 0
        # an offset not just after a newline is inside a cut line: skip its rest
        self.skipping = offset > 0 and os.pread(self.fd, 1, offset - 1) != b"\n"

    def read(self, budget: int, chunk: int, out: list[Batch]) -> Progress:
        """Append batches of complete lines from `offset`, reading `chunk` bytes at a time, until the
        end of the file or about `budget` bytes (the line in progress is finished)."""
        start = pos = self.offset
        done = False
        cut = 0
        try:
            while pos - start < budget:
                want = min(chunk, budget - (pos - start))
                data = os.pread(self.fd, want, pos)
                at_end = len(data) < want
                begin = pos
                if self.skipping:
                    nl = data.find(b"\n")
                    if nl < 0:
                        pos += len(data)
                        if at_end:
                            done = True
                            break
                        continue
                    self.skipping = False
                    pos += nl + 1
                    data = data[nl + 1 :]
                end = data.rfind(b"\n") + 1
                if not end and not at_end:
                    # a line longer than this read: extend it alone, doubling, up to MAX_LINE_BYTES
                    while not end and not at_end and len(data) <= MAX_LINE_BYTES:
                        searched = len(data)
                        asked = min(max(searched, 1 << 16), MAX_LINE_BYTES + 1 - searched)
                        more = os.pread(self.fd, asked, pos + searched)
                        at_end = len(more) < asked
                        data += more
                        end = data.find(b"\n", searched) + 1
                    if not end and not at_end:
                        out.append(Batch(self.path, (OVERLONG_LINE,), begin, pos + MAX_LINE_BYTES, self.key))
                        pos += MAX_LINE_BYTES
                        self.skipping = True
                        cut += 1
                        continue
                    at_end = not end
                if end:
                    out.append(Batch(self.path, tuple(_lines(data, end)), begin, pos + end, self.key))
                    pos += end
                if at_end:
                    self.held = len(data) - end
                    done = True
                    break
        finally:
            self.offset = pos  # also after an error: the batches already out are read
        if done:
            self.size = max(self.size, pos + self.held)
        return Progress(pos - start, done, cut)

    def finish(self, out: list[Batch]) -> None:
        """The writer is gone: what follows the last newline (after a `read()` to the end) is a line."""
        rest = os.pread(self.fd, MAX_LINE_BYTES, self.offset)
        if rest and not self.skipping:
            line = rest.decode("utf-8", "replace")
            out.append(
                Batch(self.path, (line.removesuffix("\r"),), self.offset, self.offset + len(rest), self.key)
            )
        self.offset += len(rest)


def last_line_end(fd: int, size: int) -> int:
    """Offset just after the last newline; `size` if the last line is already too long to keep."""
    pos = size
    while pos > 0 and size - pos <= MAX_LINE_BYTES:
        start = max(0, pos - (1 << 16))
        nl = os.pread(fd, pos - start, start).rfind(b"\n")
        if nl >= 0:
            return start + nl + 1
        pos = start
    return 0 if pos == 0 else size


def read_lines(stream: BinaryIO, max_bytes: int = MAX_LINE_BYTES) -> Iterator[str]:
    """The lines of `stream`, start to end, by this module's rules (for `replay`): never more than
    `max_bytes` of one line in memory, a longer line is `OVERLONG_LINE`, a last line without
    newline a line."""
    for block in read_blocks(stream, max_bytes):
        yield from block


def read_blocks(stream: BinaryIO, max_bytes: int = MAX_LINE_BYTES) -> Iterator[list[str]]:
    """`read_lines`, a block at a time: the lines that end in each `READ_BLOCK` bytes read (a list,
    empty when none does). A block is decoded and split as a whole: a readline() or a decode per
    line cost more than the rest of reading."""
    rest = b""  # the start of a line whose newline is not read yet
    overlong = False  # inside a line past `max_bytes`: dropped up to its newline
    while block := stream.read(READ_BLOCK):
        end = block.rfind(b"\n") + 1  # after the last newline; 0: none in this block
        if not end:
            if overlong or len(rest) + len(block) > max_bytes:
                overlong, rest = True, b""  # what it read of an overlong line is dropped
            else:
                rest += block
            yield []
            continue
        lines: list[str] = []
        body = block[:end]  # the lines that end in this block, the first one without `rest`
        if overlong or len(rest) + body.index(b"\n") > max_bytes:
            lines.append(OVERLONG_LINE)
            body = body[body.index(b"\n") + 1 :]
        elif rest:
            body = rest + body
        if len(body) > max_bytes and max(map(len, body.split(b"\n"))) > max_bytes:
            lines += [OVERLONG_LINE if len(raw) > max_bytes else _text(raw) for raw in body.split(b"\n")[:-1]]
        else:
            lines += _lines(body, len(body))
        tail = block[end:]
        overlong, rest = (True, b"") if len(tail) > max_bytes else (False, tail)
        yield lines
    if overlong:
        yield [OVERLONG_LINE]
    elif rest:
        yield [_text(rest)]


def _text(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    return text[:-1] if text.endswith("\r") else text


def _lines(data: bytes, end: int) -> list[str]:
    text = codecs.utf_8_decode(memoryview(data)[:end], "replace", True)[0]  # no copy of `data`
    lines = text.split("\n")
    lines.pop()
    if "\r" in text:
        lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    return lines
