"""System-test harness: the real `xinf-watch` process, its systemd notifications, its /metrics,
and a writer that appends real gateway lines to a log file.

`DaemonProcess` runs `python -m xinf_watch --rules FILE --log-level debug` with `NOTIFY_SOCKET`
set to an AF_UNIX datagram socket the harness owns and drains (a thread reads every datagram: a
full queue would block the daemon's `sendall`). Tests wait for READY / RELOADING / STOPPING and
for metric values, never for a fixed time; on a timeout they fail with the child's stderr.

The writer uses the lines of `fixtures/nginx/access_combined_key.log` (recorded nginx traffic
in front of Xinference 4.1.0, `combined_key` format) as templates: each written line gets the
current time and a sequence number (in the referer field), so every line is distinct and real.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml
from paths import FIXTURES
from prometheus_client.parser import text_string_to_metric_families
from receivers import HTTPReceiver, free_port

from xinf_watch.delivery.text import alerts_in

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_LOG = FIXTURES / "nginx" / "access_combined_key.log"
FIXTURE_KEYS = ROOT / "examples" / "keys.yaml"  # the key metadata of that recording

Metrics = dict[tuple[str, frozenset[tuple[str, str]]], float]


# -- metrics ----------------------------------------------------------------------------------


def parse_metrics(text: str) -> Metrics:
    """The exposition as {(sample name, frozenset(labels)): value}."""
    out: Metrics = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def total(metrics: Metrics, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when there is none)."""
    want = set(labels.items())
    return sum(v for (n, lab), v in metrics.items() if n == name and want <= lab)


def parsed_lines(metrics: Metrics) -> int:
    return int(total(metrics, "xinf_watch_lines_total", result="parsed"))


# -- the daemon process -----------------------------------------------------------------------


def _tail(path: Path, limit: int = 12_000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "<no stderr file>"
    return text if len(text) <= limit else "...\n" + text[-limit:]


class DaemonProcess:
    """The real daemon, (re)started as often as a test likes with the same rules, socket and port.

    Writes nothing but its own notify socket and the child's stderr files in `workdir`.
    """

    def __init__(self, rules: Path, workdir: Path, port: int, *, args: Sequence[str] = ()) -> None:
        self.rules = rules
        self.workdir = workdir
        self.port = port
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.messages: list[tuple[float, str]] = []  # (monotonic time, datagram), in arrival order
        self._cursor = 0  # wait_for consumes messages in order
        self._cond = threading.Condition()
        self._socket_path = self._notify_path(workdir)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self._socket_path))
        self._sock.settimeout(0.1)
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read_notifications, name="notify-reader", daemon=True)
        self._reader.start()

    @staticmethod
    def _notify_path(workdir: Path) -> Path:
        path = workdir / "notify.sock"
        if len(str(path)) < 100:  # sun_path holds 108 bytes
            return path
        return Path(tempfile.mkdtemp(prefix="xw-")) / "notify.sock"

    def _read_notifications(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._cond:
                self.messages.append((time.monotonic(), data.decode(errors="replace")))
                self._cond.notify_all()

    @property
    def stderr_path(self) -> Path:
        return self.workdir / f"daemon-{self.starts}.stderr"

    def stderr(self) -> str:
        return _tail(self.stderr_path, limit=10**9)

    def spawn(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        with self._cond:
            self._cursor = len(self.messages)
        env = {**os.environ, "NOTIFY_SOCKET": str(self._socket_path), "PYTHONUNBUFFERED": "1"}
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "xinf_watch", "--rules", str(self.rules), "--log-level", "debug",
                 *self.args],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=self.workdir,
            )  # fmt: skip

    def start(self, timeout: float = 20.0) -> DaemonProcess:
        self.spawn()
        self.wait_for("READY=1", timeout)
        return self

    def fail(self, why: str) -> None:
        code = None if self.proc is None else self.proc.poll()
        raise AssertionError(
            f"{why} (daemon exit code: {code})\n--- daemon stderr ---\n{_tail(self.stderr_path)}"
        )

    def wait_for(self, line: str, timeout: float = 10.0) -> float:
        """Wait for the next notification (after the last one waited for) carrying `line`; its time."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(self._cursor, len(self.messages)):
                    at, message = self.messages[i]
                    if line in message.split("\n"):
                        self._cursor = i + 1
                        return at
                self._cursor = len(self.messages)
                left = deadline - time.monotonic()
                exited = self.proc is not None and self.proc.poll() is not None
                if left <= 0 or exited:
                    break
                self._cond.wait(min(left, 0.05))
        if exited:  # the reader may still hold a last datagram: one more look
            time.sleep(0.05)
            with self._cond:
                for i in range(self._cursor, len(self.messages)):
                    if line in self.messages[i][1].split("\n"):
                        self._cursor = i + 1
                        return self.messages[i][0]
        self.fail(f"no {line} from the daemon within {timeout}s")
        raise AssertionError  # unreachable

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def metrics(self) -> Metrics:
        with urllib.request.urlopen(self.url, timeout=5) as response:
            return parse_metrics(response.read().decode())

    def wait_until(
        self, predicate: Callable[[Metrics], bool], timeout: float = 10.0, what: str = ""
    ) -> Metrics:
        """Poll /metrics every 20 ms until `predicate` holds; the metrics that satisfied it."""
        deadline = time.monotonic() + timeout
        last: Metrics = {}
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                self.fail(f"daemon exited while waiting for {what or 'a metrics condition'}")
            with contextlib.suppress(OSError):
                last = self.metrics()
                if predicate(last):
                    return last
            if time.monotonic() > deadline:
                interesting = {k: v for k, v in last.items() if k[0].startswith("xinf_watch_")}
                self.fail(f"timed out after {timeout}s waiting for {what or 'a metrics condition'}; "
                          f"xinf_watch_* now: {sorted(interesting.items())}")  # fmt: skip
            time.sleep(0.02)

    def holds_open(self, path: Path) -> bool:
        """True if the daemon has a descriptor on the file `path` leads to now (Linux /proc)."""
        assert self.proc is not None
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return False
        fds = Path(f"/proc/{self.proc.pid}/fd")
        for fd in fds.iterdir():
            with contextlib.suppress(OSError):
                held = os.stat(fd)
                if (held.st_dev, held.st_ino) == (st.st_dev, st.st_ino):
                    return True
        return False

    def wait_holds_open(self, path: Path, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.holds_open(path):
            if time.monotonic() > deadline:
                self.fail(f"the daemon did not open {path} within {timeout}s")
            time.sleep(0.005)

    def signal(self, signum: int) -> None:
        assert self.proc is not None and self.proc.poll() is None, "daemon not running"
        self.proc.send_signal(signum)

    def hup(self) -> None:
        self.signal(signal.SIGHUP)

    def terminate(self, timeout: float = 5.0) -> None:
        """SIGTERM; the daemon must say STOPPING and exit 0 within `timeout`."""
        assert self.proc is not None
        self.signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.fail(f"no exit within {timeout}s of SIGTERM")
        if code != 0:
            self.fail(f"exit code {code} after SIGTERM")
        self.wait_for("STOPPING=1", timeout=1.0)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        """Test teardown: kill a daemon still running, stop the notify reader."""
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        self._closed.set()
        self._sock.close()
        self._reader.join(timeout=1)


# -- config -----------------------------------------------------------------------------------


def rules_yaml(
    *,
    path: str,
    port: int,
    state_dir: Path,
    start_at: str = "beginning",
    keys: Sequence[Path] = (FIXTURE_KEYS,),
    notify: dict[str, list[str]] | None = None,
    rules: Sequence[dict[str, Any]] = (),
    networks: dict[str, list[str]] | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """A rules.yaml for one combined_key source (what the fixtures are); `extra`: more top-level
    sections (e.g. `delivery`, `alertmanager`)."""
    config: dict[str, Any] = {
        "sources": [{"name": "gateway", "path": path, "format": "nginx", "log_format": "combined_key",
                     "start_at": start_at}],
        "keys": [str(k) for k in keys],
        "metrics": {"listen": f"127.0.0.1:{port}"},
        "state": {"dir": str(state_dir)},
        "notify": notify or {"ops": []},
        "rules": list(rules),
    }  # fmt: skip
    if networks:
        config["networks"] = networks
    config.update(extra or {})
    return yaml.safe_dump(config, sort_keys=False)


def json_url(receiver: HTTPReceiver, path: str = "hook") -> str:
    """An apprise URL that POSTs each notification as JSON to `receiver`."""
    return f"json://{receiver.url}/{path}"


def received_copies(receiver: HTTPReceiver) -> list[tuple[dict[str, Any], float]]:
    """The alert JSON objects the receiver got, in order, each with the time.monotonic() its
    message arrived: the JSON lines that end each apprise JSON message body (one alert, or a group's)."""
    return [(alert, r.at) for r in list(receiver.requests) for alert in alerts_in(r.json()["message"])]


def received_alerts(receiver: HTTPReceiver) -> list[dict[str, Any]]:
    """The alert JSON objects the receiver got, in order (`received_copies` without the times)."""
    return [alert for alert, _ in received_copies(receiver)]


class Workspace:
    """A test's directories (logs/, state/), its metrics port and its rules.yaml; starts daemons."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.state = root / "state"
        self.log = self.logs / "access.log"
        self.rules = root / "rules.yaml"
        self.port = free_port()
        self.daemons: list[DaemonProcess] = []

    def write_rules(self, **kwargs: Any) -> Path:
        kwargs.setdefault("path", str(self.log))
        self.rules.write_text(rules_yaml(port=self.port, state_dir=self.state, **kwargs))
        return self.rules

    def daemon(self) -> DaemonProcess:
        d = DaemonProcess(self.rules, self.root, self.port)
        self.daemons.append(d)
        return d

    def journal(self) -> list[dict[str, Any]]:
        import json

        path = self.state / "alerts.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def close(self) -> None:
        for d in self.daemons:
            d.close()


# -- log lines --------------------------------------------------------------------------------

_LINE = re.compile(r'^(?P<ip>\S+) (?P<a>.*?) \[[^\]]+\] (?P<req>"[^"]*" \d+ \d+) "[^"]*" (?P<rest>.*)$')


@dataclass(frozen=True, slots=True)
class Template:
    ip: str
    middle: str
    request: str  # '"METHOD PATH PROTO" status bytes'
    rest: str  # '"user agent" "authorization" request_time'


def load_templates(path: Path = FIXTURE_LOG) -> list[Template]:
    out = []
    for line in path.read_text().splitlines():
        m = _LINE.match(line)
        if m:
            out.append(Template(m["ip"], m["a"], m["req"], m["rest"]))
    assert len(out) > 1000, f"{path}: fewer templates than expected"
    return out


TEMPLATES = load_templates()
_DENIED = next(t for t in TEMPLATES if '" 401 ' in t.request)


def now_local() -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())


def access_line(
    seq: int, template: Template | None = None, *, ip: str | None = None, when: str | None = None
) -> str:
    """A real gateway line with the current time and `seq` in its referer."""
    t = template or TEMPLATES[seq % len(TEMPLATES)]
    return (f"{ip or t.ip} {t.middle} [{when or now_local()}] {t.request} "
            f'"https://client.test/seq/{seq}" {t.rest}')  # fmt: skip


def denied_line(seq: int, ip: str) -> str:
    """A 401 of the recording (an unknown key), from `ip`."""
    return access_line(seq, _DENIED, ip=ip)


# -- the writer -------------------------------------------------------------------------------


class Sink(Protocol):
    def write(self, line: str) -> None: ...

    def close(self) -> None: ...


class FileSink:
    """Appends to a file like a web server: one write(2) per line on an O_APPEND descriptor.

    `reopen_after(lines)` is nginx's USR1 arriving a moment after the rename: it keeps writing to
    the descriptor it has (whatever name the file has now, or none) for that many lines, then
    opens the path again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = self._open()
        self._reopen_in: int | None = None
        self._next_path = path
        self.reopened = threading.Event()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def reopen_after(self, lines: int, path: Path | None = None) -> None:
        """Write `lines` more lines where we write, then open `path` (default: the same name)."""
        self.reopened.clear()
        self._next_path = path or self.path
        self._reopen_in = lines

    def wait_reopened(self, timeout: float = 10.0) -> None:
        """Until a requested reopen has happened (at once if none is pending)."""
        if self._reopen_in is not None:
            assert self.reopened.wait(timeout), "the writer did not reopen"

    def write(self, line: str) -> None:
        if self._reopen_in is not None:
            if self._reopen_in <= 0:
                os.close(self._fd)
                self.path = self._next_path
                self._fd = self._open()
                self._reopen_in = None
                self.reopened.set()
            else:
                self._reopen_in -= 1
        data = (line + "\n").encode()
        while data:
            data = data[os.write(self._fd, data) :]

    def close(self) -> None:
        os.close(self._fd)


class LoggingSink:
    """Lines through a real `logging` handler (Rotating/TimedRotatingFileHandler...)."""

    def __init__(self, handler: logging.Handler, name: str) -> None:
        handler.setFormatter(logging.Formatter("%(message)s"))
        self.handler = handler
        self.logger = logging.getLogger(f"xinf-watch-test.{name}")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(handler)

    def write(self, line: str) -> None:
        self.logger.info(line)  # FileHandler flushes every record

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        self.handler.close()


class LogWriter:
    """Appends numbered lines from a thread, at full speed or `rate` lines/s, until `total` or stop.

    `lock` is held around every line: a test holding it pauses the writer between two lines.
    `extra(seq)` may return lines to write after line `seq` (incidents); they are counted too.
    """

    def __init__(
        self,
        sink: Sink,
        total: int | None = None,
        rate: float | None = None,
        *,
        extra: Callable[[int], Sequence[str]] | None = None,
        record_times: bool = False,
    ) -> None:
        self.sink = sink
        self.total = total
        self.rate = rate
        self.extra = extra
        self.count = 0  # lines written, incidents included
        self.times: list[float] | None = [] if record_times else None  # monotonic time after each line
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.done = threading.Event()
        self.started_at = 0.0
        self.finished_at = 0.0
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)

    def start(self) -> LogWriter:
        self._thread.start()
        return self

    def _emit(self, line: str) -> None:
        self.sink.write(line)
        self.count += 1
        if self.times is not None:
            self.times.append(time.monotonic())

    def _run(self) -> None:
        self.started_at = time.monotonic()
        seq = 0
        try:
            while not self.stop_event.is_set() and (self.total is None or self.count < self.total):
                if self.rate is not None:
                    due = int((time.monotonic() - self.started_at) * self.rate) - seq
                    if due <= 0:
                        time.sleep(0.0005)
                        continue
                with self.lock:
                    self._emit(access_line(seq))
                    for line in self.extra(seq) if self.extra else ():
                        self._emit(line)
                seq += 1
        finally:
            self.finished_at = time.monotonic()
            self.done.set()

    def wait_count(self, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.count < n and not self.done.is_set():
            if time.monotonic() > deadline:
                raise AssertionError(f"writer wrote only {self.count} of {n} lines in {timeout}s")
            time.sleep(0.001)

    def stop(self) -> None:
        self.stop_event.set()
        self.join()

    def join(self, timeout: float = 60.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "writer did not finish"

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        with self.lock:
            yield


__all__ = ["DaemonProcess", "FileSink", "HTTPReceiver", "LogWriter", "LoggingSink", "free_port"]
