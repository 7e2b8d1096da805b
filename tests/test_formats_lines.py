"""Edge cases of each log format, one line at a time (shapes taken from the programs' documentation)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import orjson
import pytest

from xinf_watch.formats import build_parser
from xinf_watch.formats.common import go_duration, split_request, sum_of_times
from xinf_watch.formats.nginx import AMBIGUOUS_MAX_LINE
from xinf_watch.formats.timeparse import LastValueCache, epoch_seconds, parse_any, parse_clf
from xinf_watch.model import LineResult, Record

T0 = datetime.fromisoformat("2026-11-28T07:05:56+00:00").timestamp()
SKIPPED, UNPARSED = LineResult.SKIPPED, LineResult.UNPARSED


def record(result: Record | LineResult) -> Record:
    assert isinstance(result, Record), result
    return result


# ---- nginx ---------------------------------------------------------------------------------------

KEY_LINE = (
    '{ip} - - [28/Nov/2026:07:05:56 +0000] "{request}" {status} 134 "-" "{ua}" "{auth}" 0.079'
)  # fmt: skip


def nginx_key(**parts: str) -> Record | LineResult:
    values = {"ip": "127.0.1.21", "request": "GET /v1/models HTTP/1.1", "status": "200", "ua": "curl/8.5.0"}
    values["auth"] = "Bearer sk-Yn9ggOg8DoIku"
    values.update(parts)
    return build_parser("nginx", preset="combined_key")(KEY_LINE.format(**values))


def test_nginx_dash_means_absent() -> None:
    r = record(nginx_key(auth="-", ua="-"))
    assert r.credential is None and r.user_agent is None


def test_nginx_default_escapes_are_undone() -> None:
    r = record(nginx_key(ua=r"evil \x22agent\x22 \xE4\xB8\xAD", auth=r"Bearer a\x5Cb"))
    assert r.user_agent == 'evil "agent" 中' and r.credential == "Bearer a\\b"


@pytest.mark.parametrize(
    ("request_line", "method", "path"),
    [
        ("-", "", ""),
        (r"\x16\x03\x01\x02\x00\x01\x00\x01\xFC\x03\x03", "", ""),
        ("GET /", "GET", "/"),
        ("GET /v1/models?limit=1&x=%20 HTTP/1.1", "GET", "/v1/models?limit=1&x=%20"),
        ("GET /a b HTTP/1.1", "GET", "/a b"),
        ("POST /v1/chat/completions HTTP/2.0", "POST", "/v1/chat/completions"),
    ],
)
def test_nginx_request_lines(request_line: str, method: str, path: str) -> None:
    r = record(nginx_key(request=request_line, status="400"))
    assert (r.method, r.path, r.status) == (method, path, 400)


def test_nginx_ipv6_and_unix_clients() -> None:
    assert record(nginx_key(ip="2001:db8::7")).ip == "2001:db8::7"
    assert record(nginx_key(ip="unix:")).ip == "unix:"


@pytest.mark.parametrize(
    "line",
    [
        "",
        "   ",
        '2026/11/28 07:05:15 [notice] 31037#31037: using the "epoll" event method',
        "2026/11/28 07:06:00 [info] 31040#31040: *5 client 127.0.0.1 closed keepalive connection",
        "2026/11/28 07:06:00 [error] 31040#31040: *9 connect() failed (111: Connection refused)",
        # klog lines of ingress-nginx's controller on the same container's stderr (klog's header:
        # Lmmdd hh:mm:ss.uuuuuu threadid file:line] msg)
        'I1204 10:00:00.123456       7 controller.go:190] "Configuration changes detected, backend '
        'reload required"',
        'W1204 10:00:01.000001      12 controller.go:1214] Service "default/xinference" does not have '
        "any active Endpoint.",
    ],
)
def test_nginx_blank_and_error_log_lines_are_skipped(line: str) -> None:
    assert build_parser("nginx", preset="combined_key")(line) is SKIPPED


@pytest.mark.parametrize(
    "line",
    [
        "hello",
        # a combined line, without the Authorization and time fields
        '127.0.1.21 - - [28/Nov/2026:07:05:56 +0000] "GET /v1/models HTTP/1.1" 200 134 "-" "curl"',
        '127.0.1.21 - - [28/Nov/2026:07:05:56 +0000] "GET /v1/models HTTP/1.1" 2000 134 "-" "c" "-" 0.1',
        '127.0.1.21 - - [28/Nov/2026:07:05:56 +0000] "GET /v1/models HTTP/1.1" - 134 "-" "c" "-" 0.1',
        '127.0.1.21 - - [31/Feb/2026:07:05:56 +0000] "GET /v1/models HTTP/1.1" 200 134 "-" "c" "-" 0.1',
        '127.0.1.21 - - [28/Xyz/2026:07:05:56 +0000] "GET /v1/models HTTP/1.1" 200 134 "-" "c" "-" 0.1',
        '- - - [28/Nov/2026:07:05:56 +0000] "GET /v1/models HTTP/1.1" 200 134 "-" "c" "-" 0.1',
    ],
)
def test_nginx_lines_that_do_not_fit_are_unparsed(line: str) -> None:
    assert build_parser("nginx", preset="combined_key")(line) is UNPARSED


def test_nginx_bad_numbers_cost_only_their_field() -> None:
    parse = build_parser("nginx", preset="combined_key")
    r = record(parse('1.2.3.4 - - [28/Nov/2026:07:05:56 +0000] "GET / HTTP/1.1" 200 - "-" "c" "-" -'))
    assert r.bytes is None and r.duration is None
    r = record(parse('1.2.3.4 - - [28/Nov/2026:07:05:56 +0000] "GET / HTTP/1.1" 200 1-2 "-" "c" "-" 1.2.3'))
    assert r.bytes is None and r.duration is None


def test_nginx_time_variants_and_typed_variables() -> None:
    parse = build_parser(
        "nginx",
        log_format="$msec $remote_addr $request_method $request_uri $status $bytes_sent "
        '$upstream_response_time "$http_x_api_key" "$http_x_forwarded_for" $request_id '
        '"$http_x_request_id" "$sent_http_x_request_id"',
    )
    r = record(parse(f"{T0 + 0.25:.3f} 10.0.0.9 DELETE /v1/models/x 400 97 0.5 : 0.25 \"sk-bare\" "
                     '"203.0.113.9, 10.0.0.1" 0123456789abcdef "-" "req-from-upstream"'))  # fmt: skip
    assert r.ts == pytest.approx(T0 + 0.25)
    assert (r.ip, r.method, r.path, r.status, r.bytes) == ("10.0.0.9", "DELETE", "/v1/models/x", 400, 97)
    assert r.duration == pytest.approx(0.75)
    assert r.credential == "sk-bare"  # X-Api-Key when there is no Authorization
    assert r.ip_forwarded is False  # X-Forwarded-For is informational only
    assert r.request_id == "req-from-upstream"  # the upstream's id is audit.log's request_id

    iso = build_parser("nginx", log_format='$remote_addr [$time_iso8601] "$request" $status')
    assert record(iso('::1 [2026-11-28T08:05:56+01:00] "GET / HTTP/1.1" 200')).ts == T0


def test_nginx_escape_json_format() -> None:
    parse = build_parser(
        "nginx",
        log_format='escape=json {"ip":"$remote_addr","t":"$time_local","r":"$request","s":$status,'
        '"ua":"$http_user_agent","auth":"$http_authorization"}',
    )
    r = record(parse('{"ip":"1.2.3.4","t":"28/Nov/2026:07:05:56 +0000","r":"GET /x HTTP/1.1","s":200,'
                     '"ua":"say \\"hi\\" \\u00e4","auth":""}'))  # fmt: skip
    assert r.user_agent == 'say "hi" ä' and r.credential is None and r.ts == T0


def test_nginx_unquoted_free_text_ends_at_the_next_literal_in_linear_time() -> None:
    parse = build_parser(
        "nginx",
        log_format="$remote_addr [$time_local] $status $http_referer $http_user_agent $request_method $uri",
    )
    r = record(parse("1.2.3.4 [28/Nov/2026:07:05:56 +0000] 200 - curl/8.5.0 GET /v1/models"))
    assert (r.status, r.user_agent, r.method, r.path) == (200, "curl/8.5.0", "GET", "/v1/models")
    # A client-chosen value full of the separators: quadratic/cubic with backtracking, linear here.
    for crafted in ("a " * 500_000 + '"', " " * 1_000_000, "a -" * 300_000):
        started = time.perf_counter()
        assert isinstance(parse("1.2.3.4 [28/Nov/2026:07:05:56 +0000] 200 " + crafted), (Record, LineResult))
        assert time.perf_counter() - started < 0.5
    assert parse("1.2.3.4 [28/Nov/2026:07:05:56 +0000] 200 " + "a " * 500_000 + '"') is UNPARSED


def test_nginx_typed_variable_backtracks_over_its_own_characters() -> None:
    parse = build_parser("nginx", log_format='$remote_addr:$remote_port [$time_local] "$request" $status')
    r = record(parse('2001:db8::1:4432 [28/Nov/2026:07:05:56 +0000] "GET / HTTP/1.1" 200'))
    assert (r.ip, r.status) == ("2001:db8::1", 200)


def test_nginx_touching_variables_bound_the_line_length() -> None:
    parse = build_parser("nginx", log_format='$remote_addr [$time_local] "$request" $status "$http_a$http_b"')
    r = record(parse('1.2.3.4 [28/Nov/2026:07:05:56 +0000] "GET / HTTP/1.1" 200 "xy"'))
    assert r.path == "/"
    long_line = '1.2.3.4 [28/Nov/2026:07:05:56 +0000] "GET / HTTP/1.1" 200 "' + "a" * AMBIGUOUS_MAX_LINE + '"'
    assert parse(long_line) is UNPARSED


def test_nginx_one_parser_per_source_caches_only_the_last_time() -> None:
    parse = build_parser("nginx", preset="combined")
    line = '1.2.3.4 - - [{}] "GET / HTTP/1.1" 200 1 "-" "c"'
    assert record(parse(line.format("28/Nov/2026:07:05:56 +0000"))).ts == T0
    assert record(parse(line.format("28/Nov/2026:07:05:57 +0000"))).ts == T0 + 1
    assert record(parse(line.format("28/Nov/2026:07:05:56 +0000"))).ts == T0
    assert record(parse(line.format("28/Nov/2026:08:05:56 +0100"))).ts == T0


# ---- json ----------------------------------------------------------------------------------------

CADDY_LINE: dict[str, Any] = {
    "level": "info",
    "ts": T0 + 0.5,
    "logger": "http.log.access.log0",
    "msg": "handled request",
    "request": {
        "remote_ip": "127.0.1.22",
        "remote_port": "59137",
        "proto": "HTTP/1.1",
        "method": "GET",
        "host": "127.0.0.1:8092",
        "uri": "/v1/models",
        "headers": {"User-Agent": ["curl/8.5.0"], "Authorization": []},
    },
    "user_id": "",
    "duration": 0.052453547,
    "size": 27,
    "status": 200,
    "resp_headers": {"X-Request-Id": ["fb045a84"], "Server": ["Caddy", "uvicorn"]},
}


def dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def with_changes(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out: dict[str, Any] = orjson.loads(orjson.dumps(base))
    out.update(changes)
    return out


def test_caddy_redacted_logged_and_newer_formats() -> None:
    parse = build_parser("json", preset="caddy")
    r = record(parse(dumps(CADDY_LINE)))
    assert (r.ts, r.ip, r.method, r.path, r.status, r.bytes) == (
        T0 + 0.5,
        "127.0.1.22",
        "GET",
        "/v1/models",
        200,
        27,
    )
    assert (r.credential, r.user_agent, r.request_id, r.duration) == (
        None,
        "curl/8.5.0",
        "fb045a84",
        0.052453547,
    )

    logged = with_changes(CADDY_LINE, duration="52.453547ms", ts="2026-11-28T07:05:56.5Z")
    logged["request"]["headers"]["Authorization"] = ["Bearer xf-abc"]
    r = record(parse(dumps(logged)))
    assert r.credential == "Bearer xf-abc" and r.duration == pytest.approx(0.052453547) and r.ts == T0 + 0.5


def test_caddy_own_lines_are_skipped_even_with_a_request() -> None:
    parse = build_parser("json", preset="caddy")
    error_line = with_changes(
        CADDY_LINE, level="error", logger="http.log.error", msg="dial tcp: connection refused"
    )
    assert parse(dumps(error_line)) is SKIPPED
    assert parse('{"level":"info","ts":1795849515.36976,"msg":"serving initial configuration"}') is SKIPPED
    missing_status = with_changes(CADDY_LINE)
    del missing_status["status"]
    assert parse(dumps(missing_status)) is UNPARSED


TRAEFIK_LINE: dict[str, Any] = {
    "ClientAddr": "10.0.0.7:51234",
    "ClientHost": "10.0.0.7",
    "ClientPort": "51234",
    "DownstreamContentSize": 27,
    "DownstreamStatus": 200,
    "Duration": 12345678,
    "OriginContentSize": 27,
    "OriginDuration": 11000000,
    "OriginStatus": 200,
    "RequestHost": "xinf.example",
    "RequestMethod": "GET",
    "RequestPath": "/v1/models",
    "RequestProtocol": "HTTP/1.1",
    "RouterName": "xinf@file",
    "StartUTC": "2026-11-28T07:05:56.123456789Z",
    "entryPointName": "web",
    "level": "info",
    "msg": "",
    "request_Authorization": "Bearer sk-abc",
    "request_User-Agent": "OpenAI/Python 1.82.0",
    "downstream_X-Request-Id": "rid-1",
    "time": "2026-11-28T07:05:57Z",
}


def test_traefik_access_lines() -> None:
    parse = build_parser("json", preset="traefik")
    r = record(parse(dumps(TRAEFIK_LINE)))
    assert r.ts == pytest.approx(T0 + 0.123456) and r.duration == pytest.approx(0.012345678)
    assert (r.ip, r.method, r.path, r.status, r.bytes) == ("10.0.0.7", "GET", "/v1/models", 200, 27)
    assert (r.credential, r.user_agent, r.request_id) == ("Bearer sk-abc", "OpenAI/Python 1.82.0", "rid-1")

    dropped = {
        k: v for k, v in TRAEFIK_LINE.items() if k not in ("request_Authorization", "DownstreamStatus")
    }
    r = record(parse(dumps(dropped)))
    assert r.credential is None and r.status == 200  # OriginStatus when DownstreamStatus is dropped
    assert (
        record(parse(dumps(with_changes(TRAEFIK_LINE, request_Authorization="REDACTED")))).credential is None
    )
    no_start = {k: v for k, v in TRAEFIK_LINE.items() if k != "StartUTC"}
    assert record(parse(dumps(no_start))).ts == T0 + 1


def test_traefik_own_lines_are_skipped() -> None:
    parse = build_parser("json", preset="traefik")
    assert (
        parse('{"level":"info","msg":"Configuration loaded from flags.","time":"2026-11-28T07:05:00Z"}')
        is SKIPPED
    )
    assert (
        parse('{"level":"info","time":"2026-11-28T07:05:00Z","message":"Traefik version 3.1.0"}') is SKIPPED
    )


def test_nginx_json_empty_strings_are_absent() -> None:
    parse = build_parser("json", preset="nginx-json")
    line = {
        "time_iso8601": "2026-11-28T07:05:56+00:00",
        "remote_addr": "127.0.1.90",
        "request_method": "GET",
        "request_uri": "/v1/models",
        "status": 401,
        "body_bytes_sent": 30,
        "request_time": 0.002,
        "http_authorization": "",
        "http_user_agent": "",
        "http_x_forwarded_for": "203.0.113.1",
    }
    r = record(parse(dumps(line)))
    assert (r.credential, r.user_agent, r.ip, r.ip_forwarded, r.ts) == (None, None, "127.0.1.90", False, T0)
    bad_request = dict(line, request_method="", request_uri="", status=400)
    r = record(parse(dumps(bad_request)))
    assert (r.method, r.path, r.status) == ("", "", 400)  # as the text format logs `"-"` / garbage


def test_json_field_mapping_paths() -> None:
    parse = build_parser(
        "json",
        fields={
            "ts": "@timestamp",
            "ip": "client.ip|client.address",
            "request": "http.request.line",
            "status": "http.response.status_code",
            "credential": "headers[1]",
            "duration": "latency_ms",
            "duration_unit": "ms",
            "bytes": "http.response.body.bytes",
            "reason": "status",
        },
    )
    line = {
        "@timestamp": 1795849556000,  # ms
        "client": {"address": "10.1.2.3"},
        "http.request.line": "POST /v1/embeddings HTTP/1.1",
        "http": {"response": {"status_code": "404", "body": {"bytes": "12"}}},
        "headers": ["X", ["Bearer a", "Bearer b"]],
        "latency_ms": 250,
        "status": "model_not_found",
    }
    r = record(parse(dumps(line)))
    assert (r.ts, r.ip, r.method, r.path, r.status) == (T0, "10.1.2.3", "POST", "/v1/embeddings", 404)
    assert (r.credential, r.duration, r.bytes, r.reason) == ("Bearer a", 0.25, 12, "model_not_found")


@pytest.mark.parametrize(
    ("line", "result"),
    [
        ("", SKIPPED),
        ("not json", UNPARSED),
        ("[1, 2]", UNPARSED),
        ('"x"', UNPARSED),
        ('{"time_iso8601":"2026-11-28T07:05:56Z","remote_addr":"1.2.3.4","request_method":"GET"}', UNPARSED),
        (
            '{"time_iso8601":"x","remote_addr":"1.2.3.4","request_method":"GET","request_uri":"/","status":200}',
            UNPARSED,
        ),
        (
            '{"time_iso8601":1,"remote_addr":"1.2.3.4","request_method":"GET","request_uri":"/","status":true}',
            UNPARSED,
        ),
        (
            '{"time_iso8601":1,"remote_addr":"1.2.3.4","request_method":"GET","request_uri":"/","status":1000}',
            UNPARSED,
        ),
        (
            '{"time_iso8601":1,"remote_addr":{},"request_method":"GET","request_uri":"/","status":200}',
            UNPARSED,
        ),
    ],
)
def test_json_lines_that_are_not_records(line: str, result: LineResult) -> None:
    assert build_parser("json", preset="nginx-json")(line) is result


# ---- haproxy -------------------------------------------------------------------------------------

HTTPLOG = (
    "127.0.1.22:43415 [28/Nov/2026:07:05:56.860] ft_xinference bk_xinference/xinf-a "
    "0/0/0/5/5 403 305 - - ---- "
    '1/1/0/0/0 0/0 {Bearer sk-Yn9ggOg8DoIku|OpenAI/Python 1.82.0} "POST /v1/models HTTP/1.1"'
)


@pytest.mark.parametrize(
    ("prefix", "offset"),
    [
        ("", 0),
        ("Nov 28 07:05:56 gw haproxy[123]: ", 0),
        ("<134>Nov 28 07:05:56 haproxy[123]: ", 0),
        ("Nov  8 07:05:56 gw haproxy[123]: ", 0),
        ("2026-11-28T07:05:56+00:00 localhost haproxy[31036]: ", 0),
        ("2026-11-28T07:05:56.123456+01:00 gw haproxy[31036]: ", 3600),
        ("2026-11-28T07:05:56-05:30 gw haproxy: ", -19800),
        ("<134>1 2026-11-28T07:05:56.860+02:00 gw haproxy 31036 - - ", 7200),
        ('<134>1 2026-11-28T07:05:56Z gw haproxy 31036 - [meta sequenceId="1"] ', 0),
    ],
)
def test_haproxy_syslog_prefixes(prefix: str, offset: int) -> None:
    r = record(build_parser("haproxy")(prefix + HTTPLOG))
    assert r.ts == pytest.approx(T0 + 0.86 - offset)
    assert (r.ip, r.method, r.path, r.status, r.bytes, r.duration) == (
        "127.0.1.22", "POST", "/v1/models", 403, 305, 0.005,
    )  # fmt: skip
    assert (r.credential, r.user_agent) == ("Bearer sk-Yn9ggOg8DoIku", "OpenAI/Python 1.82.0")


def haproxy(line: str, **fields: str) -> Record | LineResult:
    return build_parser("haproxy", fields=fields or None)(line)


def test_haproxy_ipv6_clients_and_special_values() -> None:
    r = record(haproxy(HTTPLOG.replace("127.0.1.22:43415", "::1:43415")))
    assert r.ip == "::1"
    r = record(haproxy(HTTPLOG.replace("127.0.1.22:43415", "::ffff:10.0.0.1:43415")))
    assert r.ip == "::ffff:10.0.0.1"
    r = record(haproxy(HTTPLOG.replace("0/0/0/5/5 403 305", "0/0/0/-1/-1 502 +305")))
    assert r.duration is None and r.bytes == 305 and r.status == 502
    r = record(haproxy(HTTPLOG.replace("0/0/0/5/5", "0/0/0/5/+1200")))
    assert r.duration == 1.2
    r = record(haproxy(HTTPLOG.replace("{Bearer sk-Yn9ggOg8DoIku|OpenAI/Python 1.82.0}", "{|}")))
    assert r.credential is None and r.user_agent is None
    r = record(haproxy(HTTPLOG.replace("OpenAI/Python 1.82.0", "say #22hi#22 #7B#7C#7D")))
    assert r.user_agent == 'say "hi" {|}'


def test_haproxy_aborted_requests() -> None:
    aborted = HTTPLOG.replace("0/0/0/5/5 403 305 - - ----", "0/0/0/-1/30002 -1 0 - - CH--")
    assert record(haproxy(aborted)).status == 499
    bad = (
        "127.0.0.1:42186 [28/Nov/2026:07:05:56.860] ft_xinference ft_xinference/<NOSRV> "
        "-1/-1/-1/-1/0 {} 0 - - "
        'CR-- 1/1/0/0/0 0/0 {{|}} "<BADREQ>"'
    )
    assert haproxy(bad.format("-1")) is SKIPPED
    r = record(haproxy(bad.format("400").replace("CR--", "PR--")))
    assert (r.method, r.path, r.status) == ("", "", 400)


def test_haproxy_capture_positions_and_blocks() -> None:
    line = HTTPLOG.replace(
        "{Bearer sk-Yn9ggOg8DoIku|OpenAI/Python 1.82.0}", "{curl/8.5.0|rid-7|Bearer sk-x} {application/json}"
    )
    r = record(haproxy(line, captures="User-Agent|X-Request-Id|Authorization"))
    assert (r.user_agent, r.request_id, r.credential) == ("curl/8.5.0", "rid-7", "Bearer sk-x")
    no_captures = HTTPLOG.replace("{Bearer sk-Yn9ggOg8DoIku|OpenAI/Python 1.82.0} ", "")
    r = record(haproxy(no_captures, captures=""))
    assert r.credential is None and r.path == "/v1/models"
    r = record(
        haproxy(HTTPLOG.replace("Bearer sk-Yn9ggOg8DoIku|", "sk-bare|"), captures="X-Api-Key|User-Agent")
    )
    assert (r.credential, r.user_agent) == ("sk-bare", "OpenAI/Python 1.82.0")


def test_haproxy_truncated_request_keeps_partial_uri() -> None:
    r = record(haproxy(HTTPLOG[: HTTPLOG.index("/v1/models") + 6]))
    assert (r.method, r.path) == ("POST", "/v1/mo")


@pytest.mark.parametrize(
    "line",
    [
        "",
        "Proxy ft_xinference started.",
        "Nov 28 07:05:56 gw haproxy[123]: Proxy bk_xinference started.",
        "2026-11-28T07:05:56+00:00 localhost haproxy[31036]: Server bk_xinference/xinf-a is DOWN, "
        'reason: Layer4 connection problem, info: "Connection refused", check duration: 0ms. '
        "0 active and 0 backup servers left.",
        "Nov 28 07:05:56 gw haproxy[123]: backend bk_xinference has no server available!",
        "[NOTICE]   (31036) : New worker (31038) forked",
        "[WARNING]  (31036) : Exiting Master process...",
        "127.0.0.1:34524 [28/Nov/2026:07:11:45.037] ft_tcp bk_tcp/srv1 0/0/5007 212 -- 0/0/0/0/3 0/0",
        "127.0.0.1:56059 [28/Nov/2026:07:11:45.037] ft_https/1: SSL handshake failure",
        '2026-11-28T07:05:56+00:00 localhost rsyslogd: [origin software="rsyslogd"] start',
        "Nov 28 07:05:56 gw sshd[99]: Accepted publickey for root",
    ],
)
def test_haproxy_lines_that_are_not_requests_are_skipped(line: str) -> None:
    assert haproxy(line) is SKIPPED


@pytest.mark.parametrize(
    "line",
    [
        "hello world",
        HTTPLOG.replace("[28/Nov/2026:07:05:56.860]", "[28/Nov/2026]"),
        HTTPLOG.replace("[28/Nov/2026:07:05:56.860]", "[31/Feb/2026:07:05:56.860]"),
        HTTPLOG[:60],
        "Nov 28 07:05:56 gw haproxy[123]: " + HTTPLOG[:60],
    ],
)
def test_haproxy_broken_access_lines_are_unparsed(line: str) -> None:
    assert haproxy(line) is UNPARSED


# ---- regex ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ts",
    [
        "2026-11-28T07:05:56Z",
        "2026-11-28 07:05:56",
        "1795849556",
        "1795849556000",
        "28/Nov/2026:07:05:56 +0000",
    ],
)
def test_regex_reads_timestamps_best_effort(ts: str) -> None:
    parse = build_parser(
        "regex",
        pattern=r"(?P<ts>.+?) (?P<ip>\S+) \"(?P<request>[^\"]*)\" (?P<status>\d+)(?: (?P<credential>\S+))?",
    )
    r = record(parse(f'{ts} 10.0.0.1 "GET /v1/models HTTP/1.1" 200 -'))
    assert (r.ts, r.ip, r.method, r.path, r.status, r.credential) == (
        T0,
        "10.0.0.1",
        "GET",
        "/v1/models",
        200,
        None,
    )
    assert parse('yesterday 10.0.0.1 "GET / HTTP/1.1" 200') is UNPARSED
    assert parse("") is SKIPPED
    assert parse("no") is UNPARSED


def test_regex_method_and_path_groups() -> None:
    parse = build_parser(
        "regex",
        pattern=r"(?P<ts>\S+) (?P<ip>\S+) (?P<method>\S+) (?P<path>\S+) (?P<status>\S+) "
        r"(?P<bytes>\S+) (?P<duration>\S+)",
    )
    r = record(parse("1795849556.5 10.0.0.1 GET /x 204 12 0.5"))
    assert (r.ts, r.method, r.path, r.status, r.bytes, r.duration) == (T0 + 0.5, "GET", "/x", 204, 12, 0.5)
    r = record(parse("1795849556.5 10.0.0.1 GET /x 204 - nan"))
    assert r.bytes is None and r.duration is None
    assert parse("1795849556.5 10.0.0.1 GET /x 2040 1 1") is UNPARSED
    assert parse("1795849556.5 10.0.0.1 GET /x ٢٠٠ 1 1") is UNPARSED


# ---- helpers -------------------------------------------------------------------------------------


def test_time_helpers() -> None:
    assert epoch_seconds(1795849556) == T0
    assert epoch_seconds(1795849556000) == T0
    assert epoch_seconds(1795849556000000) == T0
    assert epoch_seconds(1795849556000000000) == T0
    assert epoch_seconds(float("nan")) is None
    assert parse_clf("28/Nov/2026:07:05:56.250") == T0 + 0.25
    assert parse_clf("[28/Nov/2026:08:05:56 +0100]") == T0
    assert parse_clf("28/Nov/2026:07:05:56 -0030") == T0 + 1800
    assert parse_any("2026-11-28T07:05:56.000000001Z") == T0
    assert parse_any("2026-11-28 07:05:56,000") == T0
    assert parse_any("") is None and parse_any("x" * 100) is None and parse_any("1e999") is None
    calls: list[str] = []

    def counting(text: str) -> float | None:
        calls.append(text)
        return parse_clf(text)

    cached = LastValueCache(counting)
    for _ in range(3):
        assert cached("28/Nov/2026:07:05:56 +0000") == T0
    assert cached("bad") is None and cached("bad") is None
    assert calls == ["28/Nov/2026:07:05:56 +0000", "bad"]


def test_value_helpers() -> None:
    assert split_request("GET /x HTTP/1.1") == ("GET", "/x")
    assert split_request("GET") == ("", "") and split_request("") == ("", "")
    assert sum_of_times("0.1, 0.2 : 0.3") == pytest.approx(0.6) and sum_of_times("-") is None
    assert sum_of_times("-, -") is None
    assert go_duration("1m2.5s") == 62.5 and go_duration("345µs") == pytest.approx(0.000345)
    assert go_duration("-1.5h") == -5400 and go_duration("1x") is None and go_duration("-") is None
