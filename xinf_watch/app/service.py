"""The daemon's edges to the host: the /metrics HTTP server and systemd notifications.

`Notifier` speaks sd_notify through `sdnotify` and is a no-op without `NOTIFY_SOCKET`. READY is
sent once state is loaded and the port is open; WATCHDOG only from the main loop, so a stuck loop
stops the pings and systemd restarts the service.
"""

from __future__ import annotations

import os
import time

import sdnotify
from prometheus_client import start_http_server
from prometheus_client.registry import CollectorRegistry


class MetricsServer:
    """prometheus-client's HTTP server on a private registry, in a daemon thread."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry) -> None:
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        bound_host, bound_port = self._server.server_address[:2]
        self.port = int(bound_port)
        host = str(bound_host)
        host = f"[{host}]" if ":" in host else host
        self.address = f"{host}:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Notifier:
    """sd_notify messages. A send never blocks the loop for long: the socket has a timeout (a
    datagram socket blocks while the receiver's queue is full) and a failed send is dropped."""

    SEND_TIMEOUT = 1.0

    def __init__(self) -> None:
        # Without NOTIFY_SOCKET, sdnotify would open a socket it cannot connect and leak it.
        self._notifier = sdnotify.SystemdNotifier() if os.environ.get("NOTIFY_SOCKET") else None
        if self._notifier is not None and self._notifier.socket is not None:
            self._notifier.socket.settimeout(self.SEND_TIMEOUT)
        usec = os.environ.get("WATCHDOG_USEC", "")
        # systemd's advice: ping at half the watchdog interval; without one, once a second is plenty
        self._watchdog_every = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else 1.0
        self._last_watchdog = float("-inf")

    def _send(self, *lines: str) -> None:
        if self._notifier is not None:
            self._notifier.notify("\n".join(lines))

    def ready(self, status: str) -> None:
        self._send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        # systemd's Type=notify-reload wants the monotonic time of the reload request
        self._send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}", "STATUS=reloading")

    def status(self, status: str) -> None:
        self._send(f"STATUS={status}")

    def watchdog(self) -> None:
        """Called every turn of the loop; sent at most every half watchdog interval."""
        now = time.monotonic()
        if now - self._last_watchdog >= self._watchdog_every:
            self._last_watchdog = now
            self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1", "STATUS=stopping")
