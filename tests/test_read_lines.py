"""`ingest.lines.read_lines` (what `replay` reads files with) reads blocks and splits them; it must
give exactly the lines a readline() per line gives, by the same rules, wherever the blocks cut:
lines without "\\n" (and a "\\r" before it), a line over the limit as one `OVERLONG_LINE`, a last
line without newline as a line."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import BinaryIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xinf_watch.ingest import lines
from xinf_watch.ingest.lines import OVERLONG_LINE, read_lines


def by_readline(stream: BinaryIO, max_bytes: int) -> Iterator[str]:
    """The rules, one readline() per line: the reference."""
    while line := stream.readline(max_bytes + 1):
        if line.endswith(b"\n"):
            line = line[:-1]
        elif len(line) > max_bytes:
            while (rest := stream.readline(1 << 16)) and not rest.endswith(b"\n"):
                pass
            yield OVERLONG_LINE
            continue
        text = line.decode("utf-8", "replace")
        yield text[:-1] if text.endswith("\r") else text


pieces = st.lists(
    st.one_of(
        st.sampled_from([b"\n", b"\r\n", b"\r", b"", b"\xff", b"\xe2\x82", b"\xac", "é".encode()]),
        st.binary(min_size=0, max_size=40).filter(lambda b: b"\n" not in b),
        st.integers(0, 60).map(lambda n: b"x" * n),
    ),
    max_size=60,
)


@settings(max_examples=400, deadline=None)
@given(data=pieces.map(b"".join), block=st.integers(1, 50), max_bytes=st.integers(1, 30))
def test_blocks_give_what_readline_gives(data: bytes, block: int, max_bytes: int) -> None:
    original = lines.READ_BLOCK
    lines.READ_BLOCK = block
    try:
        got = list(read_lines(io.BytesIO(data), max_bytes))
    finally:
        lines.READ_BLOCK = original
    assert got == list(by_readline(io.BytesIO(data), max_bytes)), data


@pytest.mark.parametrize("size", [lines.MAX_LINE_BYTES, lines.MAX_LINE_BYTES + 1, 3 << 20])
def test_the_limit_at_its_edge_in_real_blocks(size: int) -> None:
    data = b"before\n" + b"a" * size + b"\nafter"
    expected = ["before", "a" * size if size <= lines.MAX_LINE_BYTES else OVERLONG_LINE, "after"]
    assert list(read_lines(io.BytesIO(data))) == expected
