"""What `init` learns from a gateway's config: the block that proxies to Xinference and its log.

Owns the values the three config readers (`nginx.py`, `caddy.py`, `haproxy.py`) return and the
rule for which upstream is Xinference. Readers never touch the files `init` writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

XINFERENCE_PORT = 9997
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1", "ip6-localhost"})


class InitError(Exception):
    """A config that cannot be used or a file that will not be written: one line, `file[:line]: what`."""


@dataclass(frozen=True, slots=True)
class Upstream:
    """Xinference's address as the gateway dials it; `host` None matches any host on `port`."""

    host: str | None = None
    port: int = XINFERENCE_PORT

    @classmethod
    def parse(cls, text: str) -> Upstream:
        """`host:port`, `[v6]:port`, `:port` or `port`; InitError otherwise."""
        host, _, port = text.rpartition(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise InitError(f"--upstream {text!r}: not host:port (expected e.g. 127.0.0.1:9997)")
        return cls(host.strip("[]") or None, int(port))

    def matches(self, host: str, port: int) -> bool:
        if port != self.port:
            return False
        if self.host is None:
            return True
        wanted, seen = self.host.lower(), host.strip("[]").lower()
        return wanted == seen or (wanted in _LOOPBACK and seen in _LOOPBACK)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}" if self.host else f"port {self.port}"


def split_host_port(text: str, default_port: int) -> tuple[str, int] | None:
    """`host`, `host:port`, `[v6]:port` into (host, port); None when the port is not a number."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not port:
        return host, default_port
    return (host, int(port)) if port.isdigit() else None


@dataclass(frozen=True, slots=True)
class Fix:
    """A line to add to the gateway's config, and where."""

    where: str
    line: str


@dataclass(frozen=True, slots=True)
class GatewayLog:
    """One block that proxies to Xinference and the access log xinf-watch should read for it.

    `path` is the log file as the gateway's config names it, or the one `fix` makes it write;
    `source` holds the rules.yaml settings (format, log_format / preset / fields) that read it
    once `fix` is applied. `fix` is empty when the log already carries the Authorization header."""

    gateway: str  # nginx | caddy | haproxy
    where: str  # file:line of the block
    label: str  # short name of the block, e.g. its listen port
    path: str
    source: dict[str, object]
    fix: tuple[Fix, ...] = ()
    reload: str = ""  # how to apply `fix`
    notes: tuple[str, ...] = field(default_factory=tuple)
