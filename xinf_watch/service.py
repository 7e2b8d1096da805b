"""The daemon's edges to the host: the /metrics HTTP server and systemd notifications.

`Notifier` speaks sd_notify through `sdnotify` and is a no-op without `NOTIFY_SOCKET`. READY is
sent once state is loaded and the port is open; WATCHDOG only from the main loop, so a stuck loop
stops the pings and systemd restarts the service.
"""

from __future__ import annotations

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
        self.address = f"[{bound_host}]:{self.port}" if ":" in str(bound_host) else f"{bound_host}:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Notifier:
    def __init__(self) -> None:
        self._notifier = sdnotify.SystemdNotifier()

    def _send(self, *lines: str) -> None:
        self._notifier.notify("\n".join(lines))

    def ready(self, status: str) -> None:
        self._send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        # systemd's Type=notify-reload wants the monotonic time of the reload request
        self._send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}", "STATUS=reloading")

    def status(self, status: str) -> None:
        self._send(f"STATUS={status}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1", "STATUS=stopping")
