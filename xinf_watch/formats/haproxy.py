"""HAProxy `option httplog` lines, with or without a syslog prefix.

Line: `client_ip:port [date] frontend backend/server TR/Tw/Tc/Tr/Ta status bytes req_cookie
res_cookie termination_state actconn/feconn/beconn/srv_conn/retries srv_queue/backend_queue
{captured request headers} {captured response headers} "METHOD uri HTTP/x"` (both capture blocks
optional). Accepted prefixes: none (`log stdout format raw`), RFC 3164 (`Nov 28 07:11:45 host
haproxy[123]: `, with or without `<PRI>` and host), rsyslog's RSYSLOG_FileFormat (`2026-11-28T07:11:45
+00:00 host haproxy[123]: `) and RFC 5424 (`<134>1 2026-11-28T07:11:45.123+00:00 host haproxy 123 - - `).

Rules:

* The date (`28/Nov/2026:07:11:45.037`) has no zone: it is the HAProxy host's local time. It is
  taken as UTC, unless the syslog prefix carries an offset (RFC 3339 timestamps of rsyslog and
  RFC 5424), whose offset is then applied: syslog and HAProxy normally share the host's clock and zone.
* IPv6 clients are logged without brackets (`::1:5678`): the address is all before the last `:`.
* Captured request headers are `{v1|v2|...}` in the order of the `capture request header` lines;
  `captures` names them (default `Authorization|User-Agent`); `Authorization` (or `X-Api-Key`
  when there is no Authorization) gives the credential, `User-Agent` the user agent, `X-Request-Id`
  the request id, others are ignored. Values are kept as logged, also when HAProxy cut them at the
  capture `len`; HAProxy's `#XX` escapes are undone. An empty capture is absent.
* Ta (the last timer, total time in ms) -> duration in seconds; a `+` (logasap) is ignored; `-1`
  means aborted: no duration. Status `-1` means no response was sent: without a request
  (`<BADREQ>`, a connection closed before sending one) the line is skipped; with one (the client
  gave up waiting) it becomes 499, nginx's status for the same event, so that it counts as a
  client error and not as allowed. Other request lines without method and URI (`<BADREQ>` with a
  400) give method "" and path "". A request cut short (log line truncated at HAProxy's `len`)
  keeps its partial URI.
* Skipped: HAProxy's own messages (`Proxy ft started.`, `Server bk/s is DOWN...`, `[NOTICE]...`),
  TCP-mode (`tcplog`) and connection-error lines, lines of other programs in the same syslog file,
  blank lines. Any other line is unparsed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from xinf_watch.formats.common import BYTE_DIGITS, Parser, split_request, unescape_haproxy
from xinf_watch.formats.timeparse import LastValueCache, parse_clf
from xinf_watch.model import LineResult, Record

DEFAULT_CAPTURES = "Authorization|User-Agent"
CLIENT_CLOSED = 499  # nginx's status for the same event; HAProxy logs -1

_PREFIX = re.compile(
    r"(?:<[0-9]{1,3}>)?(?:"
    # RFC 5424: VERSION TIMESTAMP HOST APP PROCID MSGID STRUCTURED-DATA
    r"1 (?P<ts5424>\S+) \S+ (?P<app5424>\S+) \S+ \S+ (?:-|(?>(?:\[(?>(?:[^\]\\]|\\.)*)\])+)) (?:\ufeff)?"
    # RFC 3164 or RFC 3339 timestamp, optional host, TAG[PID]:
    r"|(?:(?P<ts3339>[0-9]{4}-[0-9]{2}-[0-9]{2}T\S+)|[A-Z][a-z]{2} [ 0-9][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2})"
    r" (?:\S+ )?(?P<tag>[^\s:\[]+)(?:\[[0-9]+\])?: "
    r")"
)
# Groups: client ip, date to the second, its fraction, Ta (the last timer), status, bytes, captured
# request headers, request line.
_HTTPLOG = re.compile(
    r"(\S+):[0-9]+ \[([^\]\s.]*+)(\.[0-9]{1,6})?\] \S+ \S+ (?>(?:[-+0-9]+/)*)\+?(-?[0-9]+) (-?[0-9]{1,3})"
    r" \+?(-?[0-9]+) \S+ \S+ \S+ \S+ \S+ "
    r"(?:\{([^}]*+)\} )?(?:\{[^}]*+\} )?"
    r'"([^"]*+)"?'
)
# tcplog lines (3 timers, no request), connection errors (`fe/bind: SSL handshake failure`).
_CONNECTION = re.compile(r"\S+:[0-9]+ \[[^\]]*\] (?:\S+: |\S+ \S+ [-+0-9]+/[-+0-9]+/[-+0-9]+ )")
_OWN_MESSAGE = re.compile(
    r"(?:Proxy |Server |Backend |backend |Health check |Stopping |Pausing |Resuming |Starting |Connect from |"
    r"Loading |Exiting |Current worker|Reexecuting |A bogus |\[(?:NOTICE|WARNING|ALERT|NOTE|DEBUG)\])"
)
_OFFSET = re.compile(r"(?:Z|([+-])([0-9]{2}):?([0-9]{2}))\Z")

_CREDENTIAL_HEADERS = ("authorization", "x-api-key")


def _syslog_offset(timestamp: str | None) -> float:
    """Seconds to subtract from a local time: the UTC offset an RFC 3339 syslog timestamp carries."""
    if not timestamp:
        return 0.0
    m = _OFFSET.search(timestamp)
    if m is None or m.group(1) is None:
        return 0.0
    offset = int(m.group(2)) * 3600 + int(m.group(3)) * 60
    return float(offset if m.group(1) == "+" else -offset)


def compile_haproxy(fields: Mapping[str, str] | None = None) -> Parser:
    """A parser for `option httplog` lines; `fields={"captures": "Authorization|User-Agent"}`."""
    fields = dict(fields or {})
    captures = fields.pop("captures", DEFAULT_CAPTURES)
    if fields:
        raise ValueError(f"haproxy fields: unknown {', '.join(map(repr, fields))} (expected only 'captures')")
    if not isinstance(captures, str):
        raise ValueError(f"haproxy fields: captures: expected header names separated by |, got {captures!r}")
    names = [name.strip().lower() for name in captures.split("|")] if captures.strip() else []
    if any(not name or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9a-z-]+", name) for name in names):
        raise ValueError(
            f"haproxy fields: captures: {captures!r} is not a list of header names separated by |"
        )

    credential_at = [names.index(h) for h in _CREDENTIAL_HEADERS if h in names]
    user_agent_at = names.index("user-agent") if "user-agent" in names else -1
    request_id_at = names.index("x-request-id") if "x-request-id" in names else -1
    has_request_block = bool(names)
    seconds_of = LastValueCache(parse_clf)
    match_httplog = _HTTPLOG.fullmatch

    def capture(values: list[str], index: int) -> str | None:
        if index < 0 or index >= len(values):
            return None
        value = values[index]
        return unescape_haproxy(value) if value else None

    def parse(line: str) -> Record | LineResult:
        m = match_httplog(line)
        offset = 0.0
        if m is None:
            prefix = _PREFIX.match(line)
            if prefix is None:
                return _unmatched(line, 0)
            m = match_httplog(line, prefix.end())
            if m is None:
                tag = prefix.group("tag") or prefix.group("app5424") or ""
                # Lines of other programs may share the syslog file; HAProxy's own tag is "haproxy".
                return _unmatched(line, prefix.end()) if tag.startswith("haproxy") else LineResult.SKIPPED
            offset = _syslog_offset(prefix.group("ts3339") or prefix.group("ts5424"))
        ip, date, fraction, total_time, status_text, bytes_text, headers, request = m.groups()
        method, path = split_request(unescape_haproxy(request))
        status = int(status_text)
        if status < 0:
            if not method:
                return LineResult.SKIPPED
            status = CLIENT_CLOSED
        seconds = seconds_of(date)
        if seconds is None:
            return LineResult.UNPARSED
        ts = seconds + float(fraction) - offset if fraction else seconds - offset
        values = headers.split("|") if headers and has_request_block else []
        credential = None
        for index in credential_at:
            credential = capture(values, index)
            if credential is not None:
                break
        # Positional, in the order of Record's fields (keywords cost 3x as much: model.py)
        return Record(
            ts,
            ip,
            method,
            path,
            status,
            credential,
            int(bytes_text) if bytes_text.isdigit() and len(bytes_text) <= BYTE_DIGITS else None,
            int(total_time) / 1000 if total_time.isdigit() and len(total_time) < 20 else None,
            capture(values, user_agent_at),
            capture(values, request_id_at),
        )

    return parse


def _unmatched(line: str, body_start: int) -> LineResult:
    if not line.strip():
        return LineResult.SKIPPED
    if _OWN_MESSAGE.match(line, body_start) or _CONNECTION.match(line, body_start):
        return LineResult.SKIPPED
    return LineResult.UNPARSED
