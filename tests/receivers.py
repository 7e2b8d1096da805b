"""Real notification receivers for tests, all on 127.0.0.1: an HTTP server that records POSTs (and can
go down and come back on the same port), an SMTP server (aiosmtpd), and a real Alertmanager process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM to a process this module started, waited for; SIGKILL after 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_until(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@dataclass(frozen=True, slots=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived

    def json(self) -> Any:
        return json.loads(self.body)


class HTTPReceiver:
    """Records every POST; `stop()` then `start()` brings it back on the same port (an outage).
    `delay`: seconds it takes to answer (a slow receiver); `reply`: the body of its answers."""

    def __init__(self, status: int = 200, *, delay: float = 0.0, reply: bytes = b"") -> None:
        self.status = status
        self.delay = delay
        self.reply = reply
        self.requests: list[Request] = []
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append(Request(self.path, dict(self.headers), body, time.monotonic()))
                time.sleep(receiver.delay)
                self.send_response(receiver.status)
                self.send_header("Content-Length", str(len(receiver.reply)))
                self.end_headers()
                self.wfile.write(receiver.reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> HTTPReceiver:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join()
            self._server = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"


class SMTPReceiver:
    """An aiosmtpd server on a free loopback port; `messages` are parsed emails."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append(msg)
        return "250 OK"

    def start(self) -> SMTPReceiver:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


class Alertmanager:
    """A real Alertmanager on free loopback ports, routing everything to a receiver that does nothing;
    `resolve_timeout` (e.g. "3s"): how long it keeps an alert posted without endsAt (default 5m)."""

    def __init__(self, binary: str, workdir: Path, resolve_timeout: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "alertmanager.yml"
        settings = f"global: {{resolve_timeout: {resolve_timeout}}}\n" if resolve_timeout else ""
        config.write_text(settings + 'route: {receiver: "null"}\nreceivers: [{name: "null"}]\n')
        (workdir / "data").mkdir()
        self._log = (workdir / "alertmanager.log").open("wb")
        self._proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "HOME": str(workdir)},
        )  # fmt: skip
        self._logfile = workdir / "alertmanager.log"
        try:
            wait_until(self._ready, timeout=20, what="alertmanager /-/ready")
        except AssertionError:
            self.stop()
            raise AssertionError("alertmanager did not start:\n" + self._logfile.read_text()) from None

    def _ready(self) -> bool:
        if self._proc.poll() is not None:
            raise AssertionError("alertmanager exited:\n" + self._logfile.read_text())
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def alerts(self, **params: str) -> list[dict[str, Any]]:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts?{query}", timeout=5) as r:
            result: list[dict[str, Any]] = json.load(r)
            return result

    def stop(self) -> None:
        stop_process(self._proc)
        self._log.close()


class RedisServer:
    """A real redis-server on a free loopback port, its data in `workdir` (saved on a clean stop,
    as a packaged Redis does): `stop()` then `start()` is a restart on the same port. With a
    `password`, clients must give it (`requirepass`); `url` carries it."""

    def __init__(self, binary: str, workdir: Path, password: str | None = None) -> None:
        self.binary, self.workdir, self.password = binary, workdir, password
        self.port = free_port()
        self.url = f"redis://{f':{password}@' if password else ''}127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> RedisServer:
        self.starts += 1
        log = self.workdir / f"redis-{self.starts}.log"
        auth = ["--requirepass", self.password] if self.password else []
        self._proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
             "--save", "3600 1", "--appendonly", "no", "--logfile", str(log), *auth],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_until(self._ready, timeout=10, what="redis-server accepting connections")
        return self

    def _ready(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            log = self.workdir / f"redis-{self.starts}.log"
            raise AssertionError(f"redis-server exited:\n{log.read_text() if log.exists() else ''}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                auth = f"AUTH {self.password}\r\n".encode() if self.password else b""
                s.sendall(auth + b"PING\r\n")
                reply = b""
                while reply.count(b"\r\n") < (2 if auth else 1) and (chunk := s.recv(64)):
                    reply += chunk
                return reply.endswith(b"+PONG\r\n")
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM (Redis saves its data and exits), waited for."""
        if self._proc is None or self._proc.poll() is not None:
            return
        stop_process(self._proc)
