"""Xinference's own `xinference.log`: the uvicorn access lines in it, in every layout it has used.

Xinference's RESTful API runs uvicorn with Xinference's logging config, so uvicorn's access lines
(logger `uvicorn.access`) land in `xinference.log` among the application's own lines. Layouts
(docs/xinference/FACTS.md 4.2):

* <= 2.8:  `2024-11-28 10:15:02,863 uvicorn.access 13543 INFO     <message>`
* 2.9:     `2026-05-25 10:15:02,863 uvicorn.access 13543 [local@0.0.0.0:9997] INFO     <message>`
* 2.10+ text: `2026-11-28T07:11:23.494Z INFO uvicorn.access pid:598 role:local address:127.0.0.1:9995
  node:vm <message>` (optionally followed by ` key=<json>` fields)
* 2.10+ JSON (`XINFERENCE_LOG_FORMAT=json`): `{"@timestamp": ..., "module": "uvicorn.access", ...,
  "message": "<message>"}` (optionally with extra top-level fields)

where `<message>` is uvicorn's `<client> - "<METHOD> <path?query> HTTP/<v>" <status>`.

Rules:

* The layout is recognised per line, so one parser reads any version (and a file that changed
  layout on upgrade). Times of <= 2.9 are the server's *local* time without a zone: they are taken
  as UTC (run Xinference with TZ=UTC, or expect the events shifted by the server's offset). 2.10+
  writes UTC with milliseconds.
* Only lines whose logger is `uvicorn.access` are records. Every other line (other loggers, the
  continuation lines of tracebacks, JSON objects of other modules, blank lines) is SKIPPED; a line
  whose logger field says `uvicorn.access` but that cannot be read is UNPARSED.
* The client is `ip:port`; IPv6 as `[::1]:port` or `::1:port` (both handled). uvicorn runs with
  `proxy_headers=True, forwarded_allow_ips="*"` since 2.8, so a request with an `X-Forwarded-For`
  header shows the header's leftmost address with **port 0**: such records have
  `ip_forwarded=True` (the address is whatever the client or proxy wrote). A client uvicorn could
  not name (Unix socket: empty address) is UNPARSED: a record needs an address.
* The path is as logged (URL-quoted, with the raw query string). There is no credential, user,
  byte count or latency in these lines; the status is the one the response started with (a
  streamed response logs 200 at its first byte). `request_id` is taken when Xinference attached
  one (a `request_id` JSON field or ` request_id="..."` text field); uvicorn itself never does.
* Gaps, by Xinference's choice: requests dropped before a response have no line; 3.2+ drops
  successful GETs of `.../progress`, `/replicas`, `/metrics`, `/status` unless
  `XINFERENCE_LOG_POLLING_ACCESS=true`; 4.1.0 writes none at all (its access log is filtered out:
  read audit.log).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import orjson

from xinf_watch.formats.common import ABSENT, Parser
from xinf_watch.formats.timeparse import LastValueCache, parse_iso8601
from xinf_watch.model import LineResult, Record

LOGGER = "uvicorn.access"

# 2.10+ text: ts level logger pid: role: address: node: message
_TEXT = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z?) [A-Z]+ uvicorn\.access pid:[0-9]+ "
    r"role:\S* address:\S* node:\S* (.*)",
    re.DOTALL | re.ASCII,
)
# <= 2.9: date time logger pid [role@address] level message (level padded to 8)
_TEXT_OLD = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(?:[,.][0-9]+)?) uvicorn\.access +[0-9]+ "
    r"(?:\[[^\]]*\] )?[A-Z]+ +(.*)",
    re.DOTALL | re.ASCII,
)
# uvicorn: '%s - "%s %s HTTP/%s" %d'. The path is greedy: the real suffix comes after anything a
# client put in the path, so a crafted path cannot choose the status. Xinference's ` key=<json>`
# fields may follow.
_MESSAGE = re.compile(
    r'(\S*) - "(\S+) (.*) HTTP/[0-9.]+" ([0-9]{3})((?: [A-Za-z_][A-Za-z0-9_.]*=.*)?)', re.DOTALL
)
_DIVISORS: tuple[int, ...] = tuple(10**n for n in range(10))  # by the number of digits after the second
_REQUEST_ID_FIELD = re.compile(r' request_id="([^"\\]{1,128})"')


def split_client(client: str) -> tuple[str, str] | None:
    """uvicorn's `ip:port` (`[::1]:51234` or `::1:51234` for IPv6) -> (ip, port); None if not one."""
    if client.startswith("["):
        host, sep, port = client[1:].partition("]:")
    else:
        host, sep, port = client.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or host in ABSENT:
        return None
    return host, port


def millisecond_timestamps() -> Callable[[str], float | None]:
    """`2026-11-28T07:11:23.494Z` / `2024-11-28 10:15:02,863` -> seconds, zone-less as UTC.

    Access lines rarely repeat a millisecond, so the cache keeps the whole-second part.
    """
    seconds = LastValueCache(parse_iso8601)

    def parse(text: str) -> float | None:
        base = seconds(text[:19])
        if base is None:
            return None
        rest = text[19:].removesuffix("Z")
        if not rest:
            return base
        digits = rest[1:]
        if rest[0] not in ".," or not digits.isascii() or not digits.isdigit() or len(digits) > 9:
            return parse_iso8601(text)  # an offset or another shape: the slow, general path
        return base + int(digits) / _DIVISORS[len(digits)]

    return parse


def compile_xinference() -> Parser:
    """A parser for `xinference.log` of any Xinference version (the layout is detected per line)."""
    loads = orjson.loads
    ts_of = millisecond_timestamps()
    text_match, old_match, message_match = _TEXT.fullmatch, _TEXT_OLD.fullmatch, _MESSAGE.fullmatch

    def record(ts_text: str, message: str, request_id: str | None) -> Record | LineResult:
        m = message_match(message)
        if m is None:
            return LineResult.UNPARSED
        client, method, path, status, fields = m.groups()
        address = split_client(client)
        ts = ts_of(ts_text)
        if address is None or ts is None:
            return LineResult.UNPARSED
        if request_id is None and fields:
            found = _REQUEST_ID_FIELD.search(fields)
            request_id = found.group(1) if found else None
        ip, port = address
        return Record(
            ts, ip, method, path, int(status), request_id=request_id or None, ip_forwarded=port == "0"
        )

    def parse_json(line: str) -> Record | LineResult:
        try:
            obj = loads(line)
        except orjson.JSONDecodeError:
            return LineResult.UNPARSED if f'"{LOGGER}"' in line else LineResult.SKIPPED
        if type(obj) is not dict or obj.get("module") != LOGGER:
            return LineResult.SKIPPED
        ts_text, message, request_id = obj.get("@timestamp"), obj.get("message"), obj.get("request_id")
        if type(ts_text) is not str or type(message) is not str:
            return LineResult.UNPARSED
        return record(ts_text, message, request_id if type(request_id) is str else None)

    def parse(line: str) -> Record | LineResult:
        if line[:1] == "{":
            return parse_json(line)
        if LOGGER not in line:
            return LineResult.SKIPPED  # the cheap test that dismisses most lines
        m = text_match(line) or old_match(line)
        if m is None:
            # A line of another logger (or a traceback line) that mentions uvicorn.access in its
            # text is not an access line; one whose logger field is uvicorn.access must have been.
            parts = line.split(" ", 3)
            return LineResult.UNPARSED if len(parts) > 3 and parts[2] == LOGGER else LineResult.SKIPPED
        return record(m.group(1), m.group(2), None)

    return parse
