"""The log parsers against the real fixture logs, cross-checked with what the recorder sent."""

from __future__ import annotations

import gzip
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from paths import FIXTURES

from xinf_watch.config.values import SOURCE_FORMATS
from xinf_watch.formats import FORMATS, JSON_PRESETS, NGINX_PRESETS, build_parser
from xinf_watch.model import LineResult, Record

NGINX_KEY: dict[str, Any] = {"format": "nginx", "preset": "combined_key"}
NGINX_JSON: dict[str, Any] = {"format": "json", "preset": "nginx-json"}
CADDY: dict[str, Any] = {"format": "json", "preset": "caddy"}
HAPROXY: dict[str, Any] = {"format": "haproxy"}
HAPROXY_CAPTURE_LEN = 256  # `capture request header Authorization len 256` in config/haproxy.cfg
HAPROXY_UA_LEN = 64

# (log file, parser settings, events file, selector of the requests the log holds, credentials logged)
LOGS: list[tuple[str, dict[str, Any], str, dict[str, str], str]] = [
    ("nginx/access_combined_key.log", NGINX_KEY, "events.jsonl", {"phase": "nginx"}, "full"),
    ("nginx/access_json.log", NGINX_JSON, "events.jsonl", {"phase": "nginx"}, "full"),
    ("caddy/access.log", CADDY, "events.jsonl", {"phase": "caddy"}, "none"),
    ("caddy/access_log_credentials.log", CADDY, "events.jsonl", {"phase": "caddy_creds"}, "full"),
    ("haproxy/haproxy.log", HAPROXY, "events.jsonl", {"phase": "haproxy"}, "capture"),
    ("haproxy/haproxy_stdout_raw.log", HAPROXY, "events.jsonl", {"phase": "haproxy"}, "capture"),
    (
        "xinference-legacy/text/nginx_access_combined_key.log",
        NGINX_KEY,
        "xinference-legacy/events.jsonl",
        {"run": "text", "via": "nginx"},
        "full",
    ),
    (
        "xinference-legacy/json/nginx_access_combined_key.log",
        NGINX_KEY,
        "xinference-legacy/events.jsonl",
        {"run": "json", "via": "nginx"},
        "full",
    ),
]


def read_lines(name: str) -> list[str]:
    path = FIXTURES / name
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="\n") as f:
        return f.read().splitlines()


def read_events(name: str, selector: dict[str, str]) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in read_lines(name)]
    return [e for e in events if all(e.get(k) == v for k, v in selector.items())]


def parse_all(lines: Iterable[str], settings: dict[str, Any]) -> list[Record | LineResult]:
    parse = build_parser(**settings)
    return [parse(line) for line in lines]


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def expected_credential(header: str | None, logged: str) -> str | None:
    if logged == "none" or header is None:
        return None
    return header[:HAPROXY_CAPTURE_LEN] if logged == "capture" else header


@pytest.mark.parametrize(("log", "settings", "events", "selector", "logged"), LOGS, ids=[x[0] for x in LOGS])
def test_every_line_parses_and_matches_what_was_sent(
    log: str, settings: dict[str, Any], events: str, selector: dict[str, str], logged: str
) -> None:
    results = parse_all(read_lines(log), settings)
    records = [r for r in results if isinstance(r, Record)]
    assert len(records) == len(results), Counter(r for r in results if not isinstance(r, Record))
    sent = read_events(events, selector)
    assert sent and len(records) == len(sent)

    got = Counter((r.ip, r.method, r.path, r.status, r.credential) for r in records)
    want = Counter(
        (e["src_ip"], e["method"], e["path"], e["status"], expected_credential(e["auth_header"], logged))
        for e in sent
    )
    assert got == want

    user_agents = Counter(r.user_agent for r in records)
    cut = HAPROXY_UA_LEN if logged == "capture" else None
    assert user_agents == Counter(e["user_agent"][:cut] for e in sent)

    # Same request key: the n-th record in time is the n-th request sent. nginx logs whole seconds at the
    # end of the request, Caddy and HAProxy the start with sub-second precision.
    times: defaultdict[tuple[Any, ...], list[float]] = defaultdict(list)
    spans: defaultdict[tuple[Any, ...], list[tuple[float, float]]] = defaultdict(list)
    for r in records:
        times[(r.ip, r.method, r.path, r.status)].append(r.ts)
    for e in sent:
        spans[(e["src_ip"], e["method"], e["path"], e["status"])].append(
            (epoch(e["t_sent"]), epoch(e["t_done"]))
        )
    for key, stamps in times.items():
        for ts, (t_sent, t_done) in zip(sorted(stamps), sorted(spans[key]), strict=True):
            assert t_sent - 1.0 <= ts <= t_done + 0.05, (key, ts, t_sent, t_done)

    assert all(r.ip_forwarded is False for r in records)
    assert all(r.duration is not None and 0 <= r.duration < 5 for r in records)
    assert all(r.bytes is not None and r.bytes >= 0 for r in records)


def test_haproxy_keeps_a_captured_header_cut_at_its_len() -> None:
    records = [r for r in parse_all(read_lines("haproxy/haproxy.log"), HAPROXY) if isinstance(r, Record)]
    long_jwt = [e["auth_header"] for e in read_events("events.jsonl", {"phase": "haproxy"})]
    long_jwt = [h for h in long_jwt if h and len(h) > HAPROXY_CAPTURE_LEN]
    assert long_jwt
    cut = [r.credential for r in records if r.credential and len(r.credential) == HAPROXY_CAPTURE_LEN]
    assert cut and all(c.startswith("Bearer eyJ") and long_jwt[0].startswith(c) for c in cut)


def test_caddy_default_log_has_no_credentials_but_joins_audit_log_by_request_id() -> None:
    records = [r for r in parse_all(read_lines("caddy/access.log"), CADDY) if isinstance(r, Record)]
    assert all(r.credential is None for r in records)
    audit_ids = {json.loads(line)["request_id"] for line in read_lines("xinference/audit.log")}
    ids = [r.request_id for r in records]
    assert len(set(ids)) == len(records) and set(ids) <= audit_ids


@pytest.mark.parametrize(
    ("log", "settings"),
    [
        ("caddy/caddy-process.log", CADDY),
        ("nginx/error.log.gz", NGINX_KEY),
        ("nginx/error.log.gz", {"format": "nginx", "log_format": NGINX_PRESETS["combined"]}),
        ("xinference-legacy/text/nginx_error.log.gz", NGINX_KEY),
    ],
)
def test_program_lines_that_are_not_access_records_are_skipped(log: str, settings: dict[str, Any]) -> None:
    results = parse_all(read_lines(log), settings)
    assert results and set(results) == {LineResult.SKIPPED}


def test_exact_values_of_one_request_in_each_format() -> None:
    # chatbot-prod -> POST /v1/models -> 403 (the example of the fixtures README)
    nginx = build_parser(**NGINX_KEY)(
        '127.0.1.22 - - [28/Nov/2026:07:06:41 +0000] "POST /v1/models HTTP/1.1" 403 73 "-" '
        '"OpenAI/Python 1.82.0" "Bearer sk-Yn9ggOg8DoIku" 0.035'
    )
    assert nginx == Record(
        ts=epoch("2026-11-28T07:06:41+00:00"),
        ip="127.0.1.22",
        method="POST",
        path="/v1/models",
        status=403,
        credential="Bearer sk-Yn9ggOg8DoIku",
        bytes=73,
        duration=0.035,
        user_agent="OpenAI/Python 1.82.0",
    )
    nginx_json = next(
        line for line in read_lines("nginx/access_json.log") if '"POST","request_uri":"/v1/models"' in line
    )
    assert build_parser(**NGINX_JSON)(nginx_json) == nginx

    caddy = next(
        line for line in read_lines("caddy/access.log") if "fb045a84-dbe4-4bf1-96ef-8b3b24def3e3" in line
    )
    assert build_parser(**CADDY)(caddy) == Record(
        ts=1795849757.5353775,
        ip="127.0.1.22",
        method="POST",
        path="/v1/models",
        status=403,
        credential=None,
        bytes=73,
        duration=0.052453547,
        user_agent="OpenAI/Python 1.82.0",
        request_id="fb045a84-dbe4-4bf1-96ef-8b3b24def3e3",
    )

    haproxy_raw = next(line for line in read_lines("haproxy/haproxy_stdout_raw.log") if ":43415 " in line)
    haproxy_syslog = next(line for line in read_lines("haproxy/haproxy.log") if ":43415 " in line)
    expected = Record(
        ts=epoch("2026-11-28T07:12:02.860+00:00"),
        ip="127.0.1.22",
        method="POST",
        path="/v1/models",
        status=403,
        credential="Bearer sk-Yn9ggOg8DoIku",
        bytes=305,
        duration=0.005,
        user_agent="OpenAI/Python 1.82.0",
    )
    assert build_parser(**HAPROXY)(haproxy_raw) == expected
    assert build_parser(**HAPROXY)(haproxy_syslog) == expected


def test_nginx_time_local_of_every_line_equals_strptime() -> None:
    lines = read_lines("nginx/access_combined_key.log")
    parse = build_parser(**NGINX_KEY)
    for line in lines:
        record = parse(line)
        assert isinstance(record, Record)
        logged = line.split("[", 1)[1].split("]", 1)[0]
        assert record.ts == datetime.strptime(logged, "%d/%b/%Y:%H:%M:%S %z").timestamp()
    first = parse(lines[0])
    assert isinstance(first, Record) and first.ts == epoch("2026-11-28T07:05:56+00:00")


def test_the_xinference_jwt_accepted_after_exp_is_logged_in_full() -> None:
    records = [
        r for r in parse_all(read_lines("xinference-legacy/text/nginx_access_combined_key.log"), NGINX_KEY)
        if isinstance(r, Record) and r.ts >= epoch("2026-11-28T07:12:28+00:00") and r.ip == "127.0.1.55"
    ]  # fmt: skip
    assert [(r.method, r.path, r.status) for r in records][:3] == [
        ("GET", "/v1/models", 200),
        ("GET", "/v1/models/glm4-chat", 400),
        ("DELETE", "/v1/models/glm4-chat", 400),
    ]
    assert all(r.credential and r.credential.startswith("Bearer eyJ") for r in records[:3])


# ---- settings ------------------------------------------------------------------------------------


def test_formats_and_presets_are_exported() -> None:
    # config validates `format:` against its own list: the two must name the same formats
    assert set(FORMATS) == set(SOURCE_FORMATS) == {
        "nginx", "json", "haproxy", "xinference", "xinference-audit", "regex"
    }
    assert set(NGINX_PRESETS) == {"combined", "combined_key", "ingress-nginx", "ingress-nginx-key"}
    assert set(JSON_PRESETS) == {"nginx-json", "caddy", "traefik", "kong", "apisix"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"format": "apache"}, "unknown log format 'apache'"),
        ({"format": "nginx", "preset": "main"}, "unknown nginx preset 'main'"),
        ({"format": "nginx", "preset": "combined", "log_format": "$remote_addr"}, "not both"),
        ({"format": "nginx", "log_format": '$remote_addr [$time_local] "$request"'}, "is missing $status"),
        ({"format": "nginx", "log_format": "$remote_addr $status $request"}, "is missing a time"),
        ({"format": "nginx", "log_format": "$status [$time_local] $request"}, "is missing $remote_addr"),
        ({"format": "nginx", "log_format": "$remote_addr [$time_local] $status $uri"}, "the request"),
        ({"format": "nginx", "log_format": "   "}, "empty"),
        ({"format": "nginx", "pattern": "x"}, "option pattern does not apply"),
        ({"format": "json"}, "needs a preset"),
        ({"format": "json", "preset": "envoy"}, "unknown json preset 'envoy'"),
        ({"format": "json", "fields": {"ip": "a"}}, "no path for ts, method, path, status"),
        ({"format": "json", "preset": "caddy", "fields": {"useragent": "x"}}, "unknown field 'useragent'"),
        ({"format": "json", "preset": "caddy", "fields": {"ip": "a..b"}}, "is not a path"),
        ({"format": "json", "preset": "caddy", "fields": {"ip": ""}}, "no path for ip"),
        ({"format": "json", "preset": "caddy", "fields": {"duration_unit": "days"}}, "duration_unit 'days'"),
        ({"format": "json", "preset": "caddy", "log_format": "x"}, "option log_format does not apply"),
        ({"format": "haproxy", "fields": {"capture": "Authorization"}}, "unknown 'capture'"),
        (
            {"format": "haproxy", "fields": {"captures": "Authorization||User-Agent"}},
            "not a list of header names",
        ),
        ({"format": "haproxy", "preset": "x"}, "option preset does not apply"),
        ({"format": "regex"}, "needs a pattern"),
        ({"format": "regex", "pattern": r"(?P<ip>\S+) (?P<status>\d+"}, "does not compile"),
        (
            {"format": "regex", "pattern": r"(?P<ip>\S+) (?P<ts>\S+) (?P<status>\d+)"},
            "no named group path (or request)",
        ),
        ({"format": "regex", "pattern": r"(?P<ts>\S+) (?P<path>\S+) (?P<status>\d+)"}, "no named group ip"),
        ({"format": "regex", "pattern": r"(?P<ts>\S+) (?P<ip>\S+) (?P<path>\S+)"}, "no named group status"),
        (
            {
                "format": "regex",
                "pattern": r"(?P<ts>\S+) (?P<ip>\S+) (?P<path>\S+) (?P<status>\d+) (?P<agent>.*)",
            },
            "unknown group(s) agent",
        ),  # fmt: skip
    ],
)
def test_bad_settings_are_one_line_value_errors(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        build_parser(**settings)
    text = str(caught.value)
    assert message in text and "\n" not in text


def test_unknown_nginx_variables_are_matched_and_ignored() -> None:
    parse = build_parser(
        "nginx",
        log_format='$remote_addr $host:$server_port [$time_local] "$request" $status $upstream_cache_status '
        '"${http_authorization}" $ssl_protocol/$ssl_cipher $upstream_response_time',
    )
    record = parse(
        '10.0.0.1 xinf.example:443 [28/Nov/2026:07:05:56 +0000] "GET /v1/models?x=1 HTTP/2.0" 200 MISS '
        '"Bearer sk-abc" TLSv1.3/TLS_AES_128_GCM_SHA256 0.010, 0.020'
    )
    assert isinstance(record, Record)
    assert (record.ip, record.method, record.path, record.status) == (
        "10.0.0.1",
        "GET",
        "/v1/models?x=1",
        200,
    )
    assert record.credential == "Bearer sk-abc" and record.duration == pytest.approx(0.03)


def test_fixture_dir_exists() -> None:
    assert isinstance(FIXTURES, Path) and (FIXTURES / "events.jsonl").is_file()
