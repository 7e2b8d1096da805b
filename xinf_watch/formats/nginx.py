"""nginx access logs: a `log_format` string compiled into one anchored regex and a record builder.

Rules of the compiled format:

* Any `$variable` or `${variable}` may appear (names are case-insensitive, as in nginx), with any
  literal text between them. A leading `escape=default|json|none` (as in nginx's `log_format`
  directive) selects how values were escaped; the default escaping writes `"` and bytes >= 0x7f as
  `\\xHH`, so no value ever contains a `"`, and the escapes are undone in the string fields.
* Each variable matches up to the next literal: known variables by their own character set
  (`$status` digits, `$remote_addr` an address, `$time_local` the date...), free-text variables
  (`$request`, `$http_*`, unknown ones) as "anything but `"`" when quoted. An unquoted free-text
  variable ends at the first occurrence of the literal after it (an unquoted `$http_user_agent `
  cannot hold a space; `$remote_user [` can). These matches never backtrack, so a line that does
  not fit, even one crafted by a client, fails in linear time. Only two variables with no literal
  between them need backtracking: such formats skip lines longer than `AMBIGUOUS_MAX_LINE`
  (counted as unparsed) to bound the cost.
* Known variables feed the record (see `_VARIABLES`); unknown ones are matched and ignored. `-`
  (and the empty string) mean absent. `$http_authorization` is the credential, `$http_x_api_key`
  the fallback; `$http_x_forwarded_for` is informational only: the record's ip is `$remote_addr`.
* A format must give the client address, the status, a time and the request (`$request`, or
  `$request_method` with `$request_uri`/`$uri`); otherwise `compile_log_format` raises ValueError.
* Lines that do not match are unparsed, except blank lines and nginx *error log* lines
  (`2026/11/28 07:05:15 [notice] ...`), which are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from types import MappingProxyType

import orjson

from xinf_watch.formats.common import (
    ABSENT,
    BYTE_DIGITS,
    Parser,
    split_request,
    sum_of_times,
    to_float,
    unescape_nginx,
)
from xinf_watch.formats.timeparse import LastValueCache, parse_clf, parse_iso8601
from xinf_watch.model import LineResult, Record

COMBINED = (
    '$remote_addr - $remote_user [$time_local] "$request" '
    '$status $body_bytes_sent "$http_referer" "$http_user_agent"'
)
# ingress-nginx's default `log-format-upstream` (its ConfigMap key; README "Kubernetes" adds the key)
INGRESS_NGINX = (
    COMBINED + " $request_length $request_time [$proxy_upstream_name] [$proxy_alternative_upstream_name] "
    "$upstream_addr $upstream_response_length $upstream_response_time $upstream_status $req_id"
)
NGINX_PRESETS = MappingProxyType(
    {
        "combined": COMBINED,
        "combined_key": COMBINED + ' "$http_authorization" $request_time',
        "ingress-nginx": INGRESS_NGINX,
        "ingress-nginx-key": INGRESS_NGINX + ' "$http_authorization"',
    }
)
AMBIGUOUS_MAX_LINE = 8192

_DIGITS = "[-0-9]"
_DECIMAL = "[-0-9.]"
_ADDRESS = "[-0-9A-Za-z.:%_]"
_TOKEN = r'[^\s"]'
_TIME_LOCAL = "[-0-9A-Za-z/: +]"
# One value per upstream tried, `, ` between servers and ` : ` between internal redirects.
_UPSTREAMS = r'(?:[^\s",]|, | : )'
_FREE = {"default": '[^"]', "json": r'(?:[^"\\]|\\.)', "none": "."}

# name -> (character class of its value or None for free text, the record role it feeds or "")
_VARIABLES: dict[str, tuple[str | None, str]] = {
    "remote_addr": (_ADDRESS, "ip"),
    "time_local": (_TIME_LOCAL, "time_local"),
    "time_iso8601": (_TOKEN, "time_iso8601"),
    "msec": (_DECIMAL, "msec"),
    "request": (None, "request"),
    "request_method": (_TOKEN, "method"),
    "request_uri": (_TOKEN, "request_uri"),
    "uri": (None, "uri"),
    "status": (_DIGITS, "status"),
    "body_bytes_sent": (_DIGITS, "body_bytes_sent"),
    "bytes_sent": (_DIGITS, "bytes_sent"),
    "request_time": (_DECIMAL, "request_time"),
    "upstream_response_time": (_UPSTREAMS, "upstream_response_time"),
    "http_authorization": (None, "authorization"),
    "http_x_api_key": (None, "api_key"),
    "http_user_agent": (None, "user_agent"),
    "http_x_forwarded_for": (None, "forwarded_for"),
    # The upstream's X-Request-Id response header is what Xinference's audit.log calls request_id.
    "sent_http_x_request_id": (None, "sent_request_id"),
    "upstream_http_x_request_id": (None, "upstream_request_id"),
    "request_id": (_TOKEN, "nginx_request_id"),
    "req_id": (_TOKEN, "nginx_request_id"),  # ingress-nginx's name for it (sent upstream as X-Request-ID)
    "http_x_request_id": (None, "client_request_id"),
    # Not used, but their shape makes neighbouring free-text variables unambiguous.
    "remote_port": (_DIGITS, ""),
    "server_port": (_DIGITS, ""),
    "request_length": (_DIGITS, ""),
    "connection": (_DIGITS, ""),
    "connection_requests": (_DIGITS, ""),
    "pid": (_DIGITS, ""),
    "scheme": (_TOKEN, ""),
    "server_protocol": (_TOKEN, ""),
    "host": (_TOKEN, ""),
    "args": (_TOKEN, ""),
    "query_string": (_TOKEN, ""),
    "pipe": (_TOKEN, ""),
    "gzip_ratio": (_DECIMAL, ""),
    "upstream_addr": (_UPSTREAMS, ""),
    "upstream_status": (_UPSTREAMS, ""),
    "upstream_response_length": (_UPSTREAMS, ""),
}
_REQUEST_ID_ROLES = ("sent_request_id", "upstream_request_id", "nginx_request_id", "client_request_id")

_VARIABLE = re.compile(r"\$(?:\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")
_ESCAPE_OPTION = re.compile(r"\s*escape=(default|json|none)\s+")
# Lines of nginx's error log, and of the Go programs that run nginx (ingress-nginx's controller
# writes klog lines, `I1204 10:00:00.123456       7 controller.go:190] ...`, to the container's stderr,
# which a `wrapper` source reads with the access lines): not access records, skipped.
_ERROR_LOG = re.compile(
    r"[0-9]{4}/[0-9]{2}/[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2} "
    r"\[(?:debug|info|notice|warn|error|crit|alert|emerg)\] "
    r"|[IWEF][0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6} +[0-9]+ [^ \]]+:[0-9]+\] "
)


def _unescape_json(text: str) -> str:
    if "\\" not in text:
        return text
    try:
        value = orjson.loads('"' + text + '"')
    except orjson.JSONDecodeError:
        return text
    return value if isinstance(value, str) else text


def _compile_pattern(body: str, escape: str) -> tuple[str, list[str], bool]:
    """The regex source, the variable name of each group, and whether two variables touch."""
    tokens: list[tuple[bool, str]] = []  # (is_variable, name or literal text)
    pos = 0
    for m in _VARIABLE.finditer(body):
        if m.start() > pos:
            tokens.append((False, body[pos : m.start()]))
        tokens.append((True, (m.group(1) or m.group(2)).lower()))
        pos = m.end()
    if pos < len(body):
        tokens.append((False, body[pos:]))

    parts: list[str] = []
    names: list[str] = []
    adjacent = False
    for index, (is_variable, text) in enumerate(tokens):
        if not is_variable:
            parts.append(re.escape(text))
            continue
        typed = _VARIABLES.get(text, (None, ""))[0]
        char_class = typed or _FREE[escape]
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        if following is None or not re.fullmatch(char_class, following[1][0], re.DOTALL):
            group = f"(?>{char_class}*)"
        elif following[0]:
            group = f"{char_class}*?"
            adjacent = True
        elif typed:
            group = f"{typed}*"  # backtracks over its own characters only (`$remote_addr:$remote_port`)
        else:
            # Free text, which a client controls: it ends at the first occurrence of the next literal,
            # atomically, as letting it backtrack would let a crafted line cost cubic time. An atomic
            # group, not the possessive `(?:...)*+`: before 3.11.5 (gh-106052), CPython's possessive repeat
            # of a group is wrong, and on Debian 12's 3.11.2 one that starts with a lookahead never matches.
            group = f"(?>(?:(?!{re.escape(following[1])}){char_class})*)"
        parts.append(f"({group})")
        names.append(text)
    # One trailing empty group: roles the format lacks read it, and "" means absent.
    return "".join(parts) + "()", names, adjacent


def compile_log_format(log_format: str) -> Parser:
    """Compile an nginx `log_format` string into a parser; ValueError if it cannot give a record."""
    option = _ESCAPE_OPTION.match(log_format)
    escape = option.group(1) if option else "default"
    body = log_format[option.end() :] if option else log_format
    if not body.strip():
        raise ValueError("nginx log_format is empty")
    source, names, ambiguous = _compile_pattern(body, escape)

    roles: dict[str, int] = {}
    for index, name in enumerate(names):
        role = _VARIABLES.get(name, (None, ""))[1]
        if role and role not in roles:
            roles[role] = index
    missing = [
        what
        for what, ok in (
            ("$remote_addr", "ip" in roles),
            ("$status", "status" in roles),
            (
                "a time ($time_local, $time_iso8601 or $msec)",
                roles.keys() & {"time_local", "time_iso8601", "msec"},
            ),
            (
                "the request ($request, or $request_method with $request_uri or $uri)",
                "request" in roles or ("method" in roles and roles.keys() & {"request_uri", "uri"}),
            ),
        )
        if not ok
    ]
    if missing:
        raise ValueError(f"nginx log_format {log_format!r} is missing {'; '.join(missing)}")
    return _build_parser(re.compile(source, re.DOTALL), roles, len(names), escape, ambiguous)


def _build_parser(
    pattern: re.Pattern[str], roles: dict[str, int], empty: int, escape: str, ambiguous: bool
) -> Parser:
    fullmatch = pattern.fullmatch
    unescapes: dict[str, Callable[[str], str]] = {
        "default": unescape_nginx,
        "json": _unescape_json,
        "none": str,
    }
    unescape = unescapes[escape]
    max_line = AMBIGUOUS_MAX_LINE if ambiguous else None

    def at(role: str) -> int:
        return roles.get(role, empty)

    i_ip, i_status, i_request, i_method = at("ip"), at("status"), at("request"), at("method")
    i_path = roles.get("request_uri", at("uri"))
    i_bytes = roles.get("body_bytes_sent", at("bytes_sent"))
    i_duration, i_upstream_time = at("request_time"), at("upstream_response_time")
    i_authorization, i_api_key, i_user_agent = at("authorization"), at("api_key"), at("user_agent")
    request_id_indexes = tuple(roles[role] for role in _REQUEST_ID_ROLES if role in roles)
    ts_of: Callable[[str], float | None]
    if "time_local" in roles:
        i_ts, ts_of = roles["time_local"], LastValueCache(parse_clf)
    elif "time_iso8601" in roles:
        i_ts, ts_of = roles["time_iso8601"], LastValueCache(parse_iso8601)
    else:
        i_ts, ts_of = roles["msec"], to_float

    def parse(line: str) -> Record | LineResult:
        if max_line is not None and len(line) > max_line:
            return LineResult.UNPARSED
        m = fullmatch(line)
        if m is None:
            if not line.strip() or _ERROR_LOG.match(line):
                return LineResult.SKIPPED
            return LineResult.UNPARSED
        g = m.groups()
        status_text = g[i_status]
        if not status_text.isdigit() or len(status_text) > 3:
            return LineResult.UNPARSED
        ip = g[i_ip]
        ts = ts_of(g[i_ts])
        if ts is None or ip in ABSENT:
            return LineResult.UNPARSED
        if i_request != empty:
            request = g[i_request]
            method, path = split_request(unescape(request)) if request not in ABSENT else ("", "")
        else:
            method, path = g[i_method], unescape(g[i_path])
        bytes_text = g[i_bytes]
        duration = to_float(g[i_duration]) if i_duration != empty else sum_of_times(g[i_upstream_time])
        credential = g[i_authorization]
        if credential in ABSENT:
            credential = g[i_api_key]
        request_id = ""
        for index in request_id_indexes:
            request_id = g[index]
            if request_id not in ABSENT:
                break
        user_agent = g[i_user_agent]
        # Positional, in the order of Record's fields (keywords cost 3x as much: model.py)
        return Record(
            ts,
            ip,
            method,
            path,
            int(status_text),
            None if credential in ABSENT else unescape(credential),
            int(bytes_text) if bytes_text.isdigit() and len(bytes_text) <= BYTE_DIGITS else None,
            duration,
            None if user_agent in ABSENT else unescape(user_agent),
            None if request_id in ABSENT else unescape(request_id),
        )

    return parse
