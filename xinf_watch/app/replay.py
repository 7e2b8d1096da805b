"""`xinf-watch replay`: files read start to end through the same `Pipeline` as the daemon.

Rules:
- Files are read as bytes and decoded as UTF-8 with replacement, so no input can stop a replay.
  Lines follow the daemon's rules (`ingest.lines.read_blocks`): a line over `MAX_LINE_BYTES` is
  skipped (counted as skipped) without ever being held whole.
  gzip files (`access.log.2.gz`) are recognised by their magic bytes, not their name.
- The files of one source are read oldest first (`x.log.3.gz`, `x.log.2`, `x.log.1`, `x.log`;
  kubelet's `0.log.20261203-100000.gz`, `0.log.20261204-100000`, `0.log`).
- A wrapped source's lines (ingest/wrappers.py) are unwrapped per file: a file that ends inside a line
  gives what was joined as a line.
- Records of several files are merged by timestamp, so rules see one timeline whatever order
  the files were named in; lines that are not records are counted where they stand.
- Time is the log's own: after the last record, `advance` to the last time a source wrote flushes
  what the rules owe.
- Replay starts from empty state and never touches the daemon's state dir.
- `replay_summary` collects what `app/alertsummary.py` summarizes: the alerts, the line counts and the
  first and last record time.
"""

from __future__ import annotations

import gzip
import heapq
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from glob import glob
from pathlib import Path
from typing import BinaryIO, TextIO

from xinf_watch.app.alertsummary import DEFAULT_TOP, Summary, summarize
from xinf_watch.app.pipeline import Pipeline
from xinf_watch.config.schema import load_config
from xinf_watch.ingest.lines import read_blocks as blocks_of
from xinf_watch.keys.files import load_registry
from xinf_watch.model import Alert, Event, Record
from xinf_watch.visible import visible

PROGRESS_AFTER = 1.0  # seconds: files faster than this print no progress at all


@dataclass(frozen=True, slots=True)
class ReplayInput:
    source: str
    path: Path
    found: bool = False  # matched by a source's glob (not named): may be rotated away before it is read


def rotation_order(paths: Iterable[str | Path]) -> list[Path]:
    """Oldest first: numbered rotations by descending number, dated ones by date, the live file last."""

    def key(path: Path) -> tuple[str, str]:
        name = path.name.removesuffix(".gz")
        # kubelet's `0.log.20261204-100000` puts the time of day after a "-"
        if m := re.search(r"[.-](\d{8}|\d{4}-\d{2}-\d{2})(?:[.-](\d+))?$", name):
            base = name[: m.start()]
            return base, f"1 {m.group(1).replace('-', '')} {int(m.group(2) or 0):09d}"
        if m := re.search(r"\.(\d+)$", name):
            return name[: m.start()], f"0 {999_999_999 - int(m.group(1)):09d}"
        return name, "2"

    def where(path: Path) -> tuple[str, str, str]:
        real = Path(os.path.realpath(path))  # a link sorts with its target's rotations
        return (str(real.parent), *key(real))

    return sorted((Path(p) for p in paths), key=where)


def source_files(pattern: str) -> list[Path]:
    """The files a source's glob matches now, in rotation order (rotated siblings included, also
    those beside a symlink's target: /var/log/containers/x.log -> /var/log/pods/.../0.log.*)."""
    matches = set(glob(pattern))
    for path in list(matches):
        matches.update(glob(glob_escape(path) + ".*"))  # access.log -> access.log.1, access.log.2.gz
        real = os.path.realpath(path)
        if real != os.path.abspath(path):
            matches.update(glob(glob_escape(real) + ".*"))
    return rotation_order(p for p in matches if Path(p).is_file())


def glob_escape(path: str) -> str:
    return re.sub(r"([*?[])", r"[\1]", path)


def open_binary(path: Path) -> BinaryIO:
    with open(path, "rb") as probe:
        compressed = probe.read(2) == b"\x1f\x8b"
    if compressed:
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")  # noqa: SIM115 - handed to the caller, who closes it


class Progress:
    """One line on stderr per second for a file that takes longer than `PROGRESS_AFTER`."""

    def __init__(self, path: Path, stream: TextIO, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.stream = stream
        self.clock = clock
        self.size = path.stat().st_size
        self.started = self.last = clock()
        self.shown = False

    def update(self, lines: int, position: int) -> None:
        now = self.clock()
        if now - self.started < PROGRESS_AFTER or now - self.last < 1.0:
            return
        self.last = now
        self.shown = True
        rate = lines / (now - self.started)
        share = f"{100 * position / self.size:3.0f}%" if self.size else "   "
        self.stream.write(f"replay: {self.path.name}: {share} {lines:,} lines, {rate:,.0f} lines/s\n")
        self.stream.flush()

    def done(self, lines: int) -> None:
        if self.shown:
            elapsed = self.clock() - self.started
            self.stream.write(
                f"replay: {self.path.name}: done, {lines:,} lines in {elapsed:.1f} s "
                f"({lines / elapsed:,.0f} lines/s)\n"
            )


def read_blocks(path: Path, progress_stream: TextIO | None) -> Iterator[list[str]]:
    """The lines of the file a block at a time (`ingest.lines.read_blocks`), with progress."""
    with open_binary(path) as stream:
        raw = getattr(stream, "fileobj", stream)  # the compressed file, for progress by bytes
        progress = Progress(path, progress_stream) if progress_stream is not None else None
        n = 0
        for block in blocks_of(stream):
            yield block
            n += len(block)
            if progress is not None:
                progress.update(n, raw.tell())
        if progress is not None:
            progress.done(n)


def _blocks(item: ReplayInput, progress: TextIO | None) -> Iterator[list[str]]:
    """The blocks of one input; none from a file that was found by a glob and rotated away since."""
    try:
        yield from read_blocks(item.path, progress)  # only its open can fail with FileNotFoundError
    except FileNotFoundError:
        if not item.found:
            raise
        print(f"replay: note: {visible(str(item.path))} vanished before it was read (rotated away?): "
              "skipped", file=sys.stderr)  # fmt: skip


def _records(
    pipeline: Pipeline, item: ReplayInput, seq: int, progress: TextIO | None
) -> Iterator[tuple[float, int, str, Record]]:
    for block in _blocks(item, progress):
        for line in block:
            record = pipeline.parse(item.source, line, seq)
            if record is not None:
                yield record.ts, seq, item.source, record
    for record in pipeline.end_file(item.source, seq):  # a wrapped line its file ended inside
        yield record.ts, seq, item.source, record


def replay(
    pipeline: Pipeline,
    inputs: Iterable[ReplayInput],
    on_event: Callable[[Event], None] | None = None,
    on_alert: Callable[[Alert], None] | None = None,
    progress: TextIO | None = sys.stderr,
) -> int:
    """Feed every input through `pipeline`; returns the number of records processed."""
    on_alert = on_alert or (lambda alert: None)
    inputs = list(inputs)
    if len(inputs) == 1 and on_event is None:
        count = _replay_in_blocks(pipeline, inputs[0], on_alert, progress)
    else:
        count = _replay_merged(pipeline, inputs, on_event, on_alert, progress)
    last_write = pipeline.engine.last_write
    if count and last_write is not None:
        for alert in pipeline.advance(last_write):
            on_alert(alert)
    return count


def _replay_in_blocks(
    pipeline: Pipeline, item: ReplayInput, on_alert: Callable[[Alert], None], progress: TextIO | None
) -> int:
    """One input, and no one to see each event: nothing to merge, so its lines go to
    `Pipeline.process_lines` a block at a time (the same stages and order, less work per line)."""
    count = 0
    for block in _blocks(item, progress):
        records, alerts = pipeline.process_lines(item.source, block, 0)
        count += records
        for alert in alerts:
            on_alert(alert)
    for record in pipeline.end_file(item.source, 0):
        count += 1
        for alert in pipeline.process(item.source, record)[1]:
            on_alert(alert)
    return count


def _replay_merged(
    pipeline: Pipeline,
    inputs: list[ReplayInput],
    on_event: Callable[[Event], None] | None,
    on_alert: Callable[[Alert], None],
    progress: TextIO | None,
) -> int:
    """The records of every input, merged by time, one at a time."""
    streams = [_records(pipeline, item, seq, progress) for seq, item in enumerate(inputs)]
    merged = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=lambda r: (r[0], r[1]))
    count = 0
    for _ts, _seq, source, record in merged:
        event, alerts = pipeline.process(source, record)
        count += 1
        if on_event is not None:
            on_event(event)
        for alert in alerts:
            on_alert(alert)
    return count


def replay_summary(
    pipeline: Pipeline,
    inputs: Iterable[ReplayInput],
    top: int = DEFAULT_TOP,
    progress: TextIO | None = sys.stderr,
) -> Summary:
    """Replay `inputs` and summarize what each rule would have raised (`app/alertsummary.py`)."""
    alerts: list[Alert] = []
    span: list[float] = []  # first and last record time

    def seen(event: Event) -> None:
        if not span:
            span[:] = [event.ts, event.ts]
        elif event.ts < span[0] or event.ts > span[1]:  # records merge by time, but a file may step back
            span[:] = [min(span[0], event.ts), max(span[1], event.ts)]

    replay(pipeline, inputs, on_event=seen, on_alert=alerts.append, progress=progress)
    lines: dict[str, int] = {}
    for (_source, result), n in pipeline.store.lines.items():
        lines[result] = lines.get(result, 0) + n
    first_last = (span[0], span[1]) if span else None
    return summarize(pipeline.config.rules, alerts, lines, first_last, top)


def replay_alerts(rules: Path) -> list[dict[str, object]]:
    """The alerts `xinf-watch replay --rules RULES` prints, as dicts (the same stages, in process)."""
    config = load_config(rules)
    pipeline = Pipeline.build(config, load_registry(config.keys, config.key_sites))
    inputs = [ReplayInput(s.name, f) for s in config.sources for f in source_files(s.path)]
    alerts: list[dict[str, object]] = []
    replay(pipeline, inputs, on_alert=lambda a: alerts.append(a.to_json()), progress=None)
    return alerts
