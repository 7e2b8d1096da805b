"""Every way a log gets rotated, against the real daemon process with a writer at full speed.

Each case: the daemon follows `logs/...`; a writer appends N real gateway lines as fast as it can;
the case rotates the log three times while it writes (at N/4, N/2, 3N/4 lines written). At the
end `xinf_watch_lines_total{result="parsed"}` must equal the lines written, exactly, except for
`: >` with the daemon behind, where the tailer spec (ingest/tail.py, rule 3) promises only that the
truncation is counted and logged as possible data loss.

The kubelet case is a container's log on Kubernetes: the daemon's glob is over
`containers/*.log`, symlinks into `pods/<ns>_<pod>_<uid>/<container>/0.log`, and the source has
`wrapper: cri`. The lines inside are the recorded nginx lines the other cases write; there is no
containerd or kubelet here, so the wrapping (`<time> stdout P|F <text>`, a line cut into parts at
random points, each part its own write) and the rotation (kubelet's rotateLog: gzip the older
rotated files through a `.tmp`, rename `0.log` to `0.log.<YYYYMMDD-HHMMSS>`, the runtime reopens
`0.log`) follow their documented behaviour.

Run with `-s` to see, per case, the lines written and read and the time it took.
"""

from __future__ import annotations

import gzip
import logging.handlers
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from harness import FileSink, LoggingSink, LogWriter, Metrics, Sink, Workspace, parsed_lines, total

pytestmark = pytest.mark.system

LINES = 24_000
ROTATIONS = 3
REOPEN_AFTER = 1000  # lines a writer goes on writing to the file it has before it reopens the name


@dataclass
class Run:
    """What a case works with: the workspace, the writer's sink, the daemon's glob."""

    ws: Workspace
    sink: Sink
    pattern: str
    writer: LogWriter | None = None

    def current(self) -> Path:
        """The file the writer writes to now."""
        if isinstance(self.sink, FileSink):
            return self.sink.path
        assert isinstance(self.sink, LoggingSink)
        return Path(self.sink.handler.baseFilename)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Case:
    name: str
    setup: Callable[[Workspace], Run]
    rotate: Callable[[Run, int], None]
    exact: bool = True
    same_file: bool = False  # rotation rewrites the file in place (its inode stays)
    wrapper: str | None = None  # the source's `wrapper` setting


def plain(ws: Workspace, pattern: str | None = None) -> Run:
    return Run(ws, FileSink(ws.log), pattern or str(ws.log))


def rename_create(run: Run, k: int) -> None:
    os.rename(run.ws.log, f"{run.ws.log}.{k}")  # logrotate's rename, then nginx's USR1 a moment later
    assert isinstance(run.sink, FileSink)
    run.sink.reopen_after(REOPEN_AFTER)


def copytruncate(run: Run, k: int) -> None:
    assert run.writer is not None
    # The writer is paused between two lines for the copy+truncate: logrotate itself loses what is
    # written between its copy and its truncate, which no reader can see; that is not under test.
    with run.writer.paused():
        shutil.copyfile(run.ws.log, f"{run.ws.log}.{k}")
        os.truncate(run.ws.log, 0)


def truncate_in_place(run: Run, k: int) -> None:
    assert run.writer is not None
    with run.writer.paused():
        os.truncate(run.ws.log, 0)  # `: > access.log`


def truncate_when_caught_up(run: Run, k: int) -> None:
    assert run.writer is not None
    with run.writer.paused():
        d = run.ws.daemons[-1]
        d.wait_until(lambda m: parsed_lines(m) == run.writer.count, timeout=20, what="catching up")  # type: ignore[union-attr]
        os.truncate(run.ws.log, 0)


def delete_recreate(run: Run, k: int) -> None:
    os.unlink(run.ws.log)
    assert isinstance(run.sink, FileSink)
    run.sink.reopen_after(REOPEN_AFTER)


def python_rotating(ws: Workspace) -> Run:
    # maxBytes=0: no rollover by size; the test calls the handler's doRollover (the same renames)
    # at its own pace, so that the daemon has seen each generation before it is rotated
    handler = logging.handlers.RotatingFileHandler(ws.log, maxBytes=0, backupCount=10)
    return Run(ws, LoggingSink(handler, "rotating"), str(ws.log))


def python_timed(ws: Workspace) -> Run:
    handler = logging.handlers.TimedRotatingFileHandler(ws.log, when="S", interval=3600, backupCount=10)
    return Run(ws, LoggingSink(handler, "timed"), str(ws.log))


def handler_rollover(run: Run, k: int) -> None:
    """The handler's own rollover, as it does it at maxBytes or at its time, between two records."""
    assert isinstance(run.sink, LoggingSink)
    handler = run.sink.handler
    assert isinstance(
        handler, logging.handlers.RotatingFileHandler | logging.handlers.TimedRotatingFileHandler
    )
    if isinstance(handler, logging.handlers.TimedRotatingFileHandler):
        # Rotated names carry the time to the second; a second rollover within the same second
        # deletes the first rotated file (real schedules are hours apart): wait for a new second.
        time.sleep(1.02 - time.time() % 1)
    handler.acquire()
    try:
        handler.doRollover()
    finally:
        handler.release()


def symlinked(ws: Workspace) -> Run:
    data = ws.logs / "data"
    data.mkdir()
    (data / "access-0.log").touch()
    os.symlink(data / "access-0.log", ws.log)
    return Run(ws, FileSink(ws.log), str(ws.log))


def symlink_swap(run: Run, k: int) -> None:
    target = run.ws.logs / "data" / f"access-{k}.log"
    target.touch()
    tmp = run.ws.logs / "access.log.tmp"
    os.symlink(target, tmp)
    os.replace(tmp, run.ws.log)  # atomic swap of the link
    assert isinstance(run.sink, FileSink)
    run.sink.reopen_after(REOPEN_AFTER)  # the writer reopens the name, now leading to the new target


def dated(ws: Workspace) -> Run:
    first = ws.logs / "access-0.log"
    return Run(ws, FileSink(first), str(ws.logs / "access-*.log"))


def new_file(run: Run, k: int) -> None:
    assert isinstance(run.sink, FileSink)
    run.sink.reopen_after(0, run.ws.logs / f"access-{k}.log")  # the old file stays where it is


def dir_recreated(run: Run, k: int) -> None:
    shutil.rmtree(run.ws.logs)
    run.ws.logs.mkdir()
    assert isinstance(run.sink, FileSink)
    run.sink.reopen_after(REOPEN_AFTER)


class CriSink(FileSink):
    """containerd's side of a container's stdout: each line as CRI lines, cut into `P` parts at
    random points about one time in three, each part a write(2) of its own. A reopen (the runtime's
    ReopenContainerLog) comes between two lines, as it does between two of containerd's writes."""

    def __init__(self, path: Path, seed: int = 12) -> None:
        super().__init__(path)
        self.rng = random.Random(seed)

    def write(self, line: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".123456789Z"
        cuts = sorted(self.rng.sample(range(1, len(line)), 2)) if self.rng.random() < 1 / 3 else []
        parts = [line[a:b] for a, b in zip([0, *cuts], [*cuts, len(line)], strict=True)]
        super().write(f"{stamp} stdout {'P' if len(parts) > 1 else 'F'} {parts[0]}")  # reopens if due
        for k, part in enumerate(parts[1:], 2):
            data = f"{stamp} stdout {'P' if k < len(parts) else 'F'} {part}\n".encode()
            while data:
                data = data[os.write(self._fd, data) :]


def kubelet_pod(ws: Workspace) -> Run:
    container = ws.logs / "pods" / "ingress-nginx_controller-7d9f_0c1e8a" / "controller"
    container.mkdir(parents=True)
    (ws.logs / "containers").mkdir()
    sink = CriSink(container / "0.log")
    link = ws.logs / "containers" / "controller-7d9f_ingress-nginx_controller-0c1e.log"
    os.symlink(container / "0.log", link)
    return Run(ws, sink, str(ws.logs / "containers" / "*.log"))


def kubelet_rotate(run: Run, k: int) -> None:
    """kubelet's rotateLog: compress the rotated files not yet compressed, rotate the live one."""
    assert isinstance(run.sink, FileSink) and run.writer is not None
    live = run.sink.path
    # The writer waits while this thread compresses (else it would run to its last line meanwhile);
    # kubelet compresses while the container writes, which the daemon cannot tell: nobody writes
    # to the files compressed.
    with run.writer.paused():
        for old in sorted(live.parent.glob("0.log.*")):
            if old.suffix in (".gz", ".tmp"):
                continue
            tmp = Path(f"{old}.tmp")
            with old.open("rb") as src, gzip.open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.rename(tmp, f"{old}.gz")
            os.unlink(old)
    os.rename(live, f"{live}.2026120{k}-100000")
    run.sink.reopen_after(REOPEN_AFTER)  # ReopenContainerLog: a new 0.log, where the symlink points


CASES = [
    Case("rename+create", plain, rename_create),
    Case("rename+create, glob matches rotated", lambda ws: plain(ws, f"{ws.log}*"), rename_create),
    Case("copytruncate", plain, copytruncate, same_file=True),
    Case("truncate in place, daemon behind", plain, truncate_in_place, exact=False, same_file=True),
    Case("truncate in place, daemon caught up", plain, truncate_when_caught_up, same_file=True),
    Case("delete+recreate", plain, delete_recreate),
    Case("RotatingFileHandler", python_rotating, handler_rollover),
    Case("TimedRotatingFileHandler", python_timed, handler_rollover),
    Case("symlink swap", symlinked, symlink_swap),
    Case("new file matching the glob", dated, new_file),
    Case("log directory removed and recreated", plain, dir_recreated),
    Case(
        "kubelet rotate+compress, CRI-wrapped, via /var/log/containers symlink",
        kubelet_pod,
        kubelet_rotate,
        wrapper="cri",
    ),
]


def saw_truncations(n: int) -> Callable[[Metrics], bool]:
    return lambda m: parsed_lines(m) > 0 and total(m, "xinf_watch_truncations_total") >= n


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    w = Workspace(tmp_path)
    yield w
    w.close()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_rotation(ws: Workspace, case: Case) -> None:
    run = case.setup(ws)
    if not ws.log.exists() and case.setup is plain:
        ws.log.touch()
    ws.write_rules(path=run.pattern, start_at="beginning")
    if case.wrapper:
        rules = yaml.safe_load(ws.rules.read_text())
        rules["sources"][0]["wrapper"] = case.wrapper
        ws.rules.write_text(yaml.safe_dump(rules, sort_keys=False))
    d = ws.daemon().start()
    writer = run.writer = LogWriter(run.sink, total=LINES)
    began = time.monotonic()
    writer.start()
    for k in range(1, ROTATIONS + 1):
        writer.wait_count(k * LINES // (ROTATIONS + 1))
        # Real rotations are hours apart: the daemon knows the current file long before it is
        # rotated. A writer at full speed outruns the daemon, so the writer waits (if need be)
        # until the daemon has opened the current file, or, for truncations, has seen the last one
        # (and so the new content's first bytes). It is still behind when the rotation comes.
        with writer.paused():
            if case.same_file:
                d.wait_until(saw_truncations(k - 1), timeout=20, what="the daemon seeing the last truncation")
            else:
                d.wait_holds_open(run.current())
        case.rotate(run, k)
        if isinstance(run.sink, FileSink):
            run.sink.wait_reopened()
    writer.join()
    run.sink.close()
    written = writer.count
    write_time = writer.finished_at - writer.started_at

    if case.exact:
        m = d.wait_until(lambda m: parsed_lines(m) >= written, timeout=30, what=f"{written} lines")
        time.sleep(0.3)  # room for a line counted twice to show up
        m = d.metrics()
    else:
        # all three truncations seen, and the file as it is now read to its end
        m = d.wait_until(lambda m: total(m, "xinf_watch_truncations_total") >= ROTATIONS
                         and total(m, "xinf_watch_source_lag_bytes") == 0, timeout=30)  # fmt: skip
        time.sleep(0.5)
        m = d.metrics()
    read = parsed_lines(m)
    took = time.monotonic() - began
    print(f"\n{case.name}: written {written} in {write_time:.2f}s, read {read}, all counted after "
          f"{took:.2f}s; rotations {total(m, 'xinf_watch_rotations_total'):.0f}, "
          f"truncations {total(m, 'xinf_watch_truncations_total'):.0f}, "
          f"unparsed {total(m, 'xinf_watch_lines_total', result='unparsed'):.0f}")  # fmt: skip
    assert total(m, "xinf_watch_lines_total", result="unparsed") == 0
    if case.exact:
        assert read == written, f"{case.name}: {written} lines written, {read} counted"
    else:
        # ingest/tail.py rule 3: a truncation without a copy is counted and logged as possible data
        # loss; the lines not yet read when it came are gone, nothing is counted twice
        assert read <= written
        assert total(m, "xinf_watch_truncations_total") == ROTATIONS
        assert (
            d.stderr().count("no copy found; lines written since the last read may have been lost")
            == ROTATIONS
        )
        print(f"  lost to the truncations: {written - read} lines")
    d.terminate()
