"""Network values of rules.yaml: CIDRs (`10.0.0.0/8`, `2001:db8::/32`), the built-in `internal`
networks, and `host:port` listen addresses.

The checks follow `config/values.py`'s conventions. Network *names* (from `networks:`, or the
built-in `internal`) are resolved to their CIDRs by `LoadContext.network_ref` (config/context.py).
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from typing import Any

from xinf_watch.config.values import fail
from xinf_watch.config.yamlsource import show

Network = IPv4Network | IPv6Network

INTERNAL_NETWORKS: tuple[Network, ...] = tuple(
    ip_network(cidr)
    for cidr in ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "::1/128", "fc00::/7")
)


def check_network(value: Any) -> Network:
    if isinstance(value, IPv4Network | IPv6Network):
        return value
    text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None
    try:
        return ip_network(text) if text is not None else fail("")
    except ValueError as exc:
        if text is not None and "host bits set" in str(exc):
            net = ip_network(text, strict=False)
            return fail(f"{show(value)} has host bits set (expected the network address {net})")
    return fail(f"{show(value)} is not a network (expected a CIDR such as 10.0.0.0/8 or 2001:db8::/32)")


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ip_address(host)  # ValueError unless an IPv6 address
    elif ":" in host or not host:
        raise ValueError(text)
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(text)
    return host, int(port)


def check_listen(value: Any) -> str:
    try:
        parse_listen(value if isinstance(value, str) else "")
    except ValueError:
        return fail(
            f"{show(value)} is not a listen address (expected host:port, e.g. 127.0.0.1:9877 or [::1]:9877)"
        )
    return value  # type: ignore[no-any-return]
