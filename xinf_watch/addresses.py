"""Client addresses as logged, parsed once: the one parser every stage uses.

An IPv4-mapped IPv6 address (`::ffff:10.1.2.3`, as dual-stack servers log IPv4 clients) is its
IPv4 address, so `allowed_ips`, `known` networks and `ip` filters agree on it. Parsing is cached
in a bounded dict: an attacker's flood of new addresses starts it over rather than growing it.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from xinf_watch.caches import remember

_IP_CACHE: dict[str, IPv4Address | IPv6Address | None] = {}
_IP_CACHE_MAX = 16384  # addresses; beyond, a flood of new ones: start over


def parse_ip(text: str) -> IPv4Address | IPv6Address | None:
    """The address in `text`; an IPv4-mapped IPv6 address is returned as its IPv4 address."""
    addr = _IP_CACHE.get(text, False)
    if addr is False:
        try:
            addr = ip_address(text)
        except ValueError:
            addr = None
        if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        remember(_IP_CACHE, text, addr, _IP_CACHE_MAX)
    return addr  # type: ignore[return-value]


def ip_in(text: str, networks: Iterable[IPv4Network | IPv6Network]) -> bool:
    """Whether the address in `text` is inside any of `networks` (no address: inside none)."""
    addr = parse_ip(text)
    return addr is not None and any(addr in net for net in networks)
