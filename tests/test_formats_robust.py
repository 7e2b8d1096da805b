"""Every parser, any input (junk, binary, 1 MB, cut or damaged real lines): no exception, a typed result."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paths import FIXTURES
from test_formats_gateways import APISIX, KONG

from xinf_watch.formats import Parser, build_parser
from xinf_watch.formats.jsonlog import compile_path, getter, resolve
from xinf_watch.model import LineResult, Record

REGEX = (
    r"(?P<ip>\S+) - \S+ \[(?P<ts>[^\]]+)\] \"(?P<request>[^\"]*)\" (?P<status>\S+) (?P<bytes>\S+) \"[^\"]*\" "
    r"\"(?P<user_agent>[^\"]*)\" \"(?P<credential>[^\"]*)\" (?P<duration>\S+)"
)
CUSTOM_NGINX = (
    '$remote_addr:$remote_port $host [$time_iso8601] $msec "$request_method $request_uri" $status '
    "$bytes_sent $upstream_response_time $request_id $http_x_api_key $http_user_agent $uri$args"
)
TRAEFIK = (
    '{"ClientAddr":"10.0.0.7:51234","ClientHost":"10.0.0.7","DownstreamContentSize":27,"DownstreamStatus":200,'
    '"Duration":12345678,"OriginStatus":200,"RequestMethod":"GET","RequestPath":"/v1/models",'
    '"StartUTC":"2026-11-28T07:05:56.123456789Z","level":"info","msg":"",'
    '"request_Authorization":"Bearer sk-a",'
    '"request_User-Agent":"curl/8.5.0","time":"2026-11-28T07:05:57Z"}'
)

SETTINGS: dict[str, dict[str, Any]] = {
    "nginx-combined": {"format": "nginx", "preset": "combined"},
    "nginx-combined_key": {"format": "nginx", "preset": "combined_key"},
    "nginx-custom": {"format": "nginx", "log_format": CUSTOM_NGINX},
    "nginx-escape-json": {
        "format": "nginx",
        "log_format": 'escape=json {"a":"$remote_addr","t":"$time_local","r":"$request","s":$status,'
        '"k":"$http_authorization"}',
    },
    "json-nginx-json": {"format": "json", "preset": "nginx-json"},
    "json-caddy": {"format": "json", "preset": "caddy"},
    "json-traefik": {"format": "json", "preset": "traefik"},
    "json-kong": {"format": "json", "preset": "kong"},
    "json-apisix": {"format": "json", "preset": "apisix"},
    "json-fields": {
        "format": "json",
        "fields": {
            "ts": "a.t|b",
            "ip": "a.ip[0]",
            "request": "r",
            "status": "s.0",
            "duration": "d",
            "bytes": "n",
        },
    },
    "haproxy": {"format": "haproxy"},
    "haproxy-captures": {
        "format": "haproxy",
        "fields": {"captures": "User-Agent|X-Request-Id|Authorization"},
    },
    "regex": {"format": "regex", "pattern": REGEX},
}


def fixture_lines(name: str, count: int) -> list[str]:
    lines = (FIXTURES / name).read_text(encoding="utf-8").splitlines()
    step = max(1, len(lines) // count)
    return lines[::step][:count]


NGINX_LINES = fixture_lines("nginx/access_combined_key.log", 4)
REAL_LINES: dict[str, list[str]] = {
    "nginx-combined": [line.rsplit(' "', 1)[0] for line in NGINX_LINES],  # without Authorization and time
    "nginx-combined_key": NGINX_LINES,
    "nginx-custom": [
        '10.0.0.1:5555 xinf [2026-11-28T07:05:56+00:00] 1795849556.123 "GET /v1/models" 200 97 0.1, 0.2 abc '
        "sk-x curl/8.5.0 /v1/models?x=1"
    ],
    "nginx-escape-json": [
        '{"a":"1.2.3.4","t":"28/Nov/2026:07:05:56 +0000","r":"GET /x HTTP/1.1","s":200,'
        '"k":"Bearer \\"x\\" \\u00e4"}'
    ],
    "json-nginx-json": fixture_lines("nginx/access_json.log", 4),
    "json-caddy": fixture_lines("caddy/access_log_credentials.log", 3)
    + fixture_lines("caddy/caddy-process.log", 2),
    "json-traefik": [TRAEFIK],
    "json-kong": [orjson.dumps(KONG).decode()],
    "json-apisix": [orjson.dumps(APISIX).decode()],
    "json-fields": [
        '{"a":{"t":1795849556123,"ip":["10.0.0.1"]},"r":"GET /x HTTP/1.1","s":[200],"d":0.5,"n":"12"}'
    ],
    "haproxy": fixture_lines("haproxy/haproxy.log", 3) + fixture_lines("haproxy/haproxy_stdout_raw.log", 3),
    "haproxy-captures": fixture_lines("haproxy/haproxy_stdout_raw.log", 3),
    "regex": NGINX_LINES,
}
NAMES = sorted(SETTINGS)
PARSERS: dict[str, Parser] = {name: build_parser(**SETTINGS[name]) for name in NAMES}
STRUCTURE = ' "[]{}|:/\\-.,#x0123456789ZT+\t\x00\ufffdé€😀'

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(result: object) -> None:
    assert isinstance(result, Record | LineResult)
    if isinstance(result, Record):
        assert type(result.ts) is float and math.isfinite(result.ts)
        assert type(result.ip) is str and result.ip
        assert type(result.method) is str and type(result.path) is str
        assert type(result.status) is int and 0 <= result.status <= 999
        assert result.credential is None or (type(result.credential) is str and result.credential)
        assert result.bytes is None or type(result.bytes) is int
        assert result.duration is None or (type(result.duration) is float and math.isfinite(result.duration))
        assert result.user_agent is None or type(result.user_agent) is str
        assert result.request_id is None or type(result.request_id) is str
        assert result.ip_forwarded is False


@pytest.mark.parametrize("name", NAMES)
def test_real_lines_parse(name: str) -> None:
    results = [PARSERS[name](line) for line in REAL_LINES[name]]
    for result in results:
        check(result)
    assert any(isinstance(r, Record) for r in results)


@pytest.mark.parametrize("name", NAMES)
@FAST
@given(text=st.text(max_size=3000))
def test_any_text(name: str, text: str) -> None:
    check(PARSERS[name](text))


@pytest.mark.parametrize("name", NAMES)
@FAST
@given(raw=st.binary(max_size=3000))
def test_any_bytes_decoded_with_replacement(name: str, raw: bytes) -> None:
    check(PARSERS[name](raw.decode("utf-8", errors="replace")))


@pytest.mark.parametrize("name", NAMES)
@FAST
@given(data=st.data())
def test_damaged_real_lines(name: str, data: st.DataObject) -> None:
    line = data.draw(st.sampled_from(REAL_LINES[name]))
    start = data.draw(st.integers(0, len(line)))
    end = data.draw(st.integers(start, min(len(line), start + 40)))
    insert = data.draw(st.text(alphabet=st.sampled_from(STRUCTURE) | st.characters(), max_size=30))
    check(PARSERS[name](line[:start] + insert + line[end:]))


JSON_KEYS = [
    "request", "headers", "Authorization", "User-Agent", "remote_ip", "method", "uri", "status", "ts", "msg",
    "size", "duration", "resp_headers", "X-Request-Id", "time_iso8601", "remote_addr", "request_method",
    "request_uri", "ClientHost", "RequestMethod", "RequestPath", "DownstreamStatus", "OriginStatus",
    "StartUTC", "Duration", "a", "t", "ip", "r", "s", "0", "d", "n",
]  # fmt: skip
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from(
        [
            "handled request",
            "",
            "-",
            "GET",
            "/v1/models",
            "2026-11-28T07:05:56Z",
            "200",
            "1e999",
            "52ms",
            "REDACTED",
        ]
    )
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(JSON_KEYS), children, max_size=6)
    ),
    max_leaves=30,
)


@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith("json-")])
@FAST
@given(obj=st.dictionaries(st.sampled_from(JSON_KEYS), JSON_VALUES, max_size=12))
def test_json_objects_of_any_shape(name: str, obj: dict[str, Any]) -> None:
    check(PARSERS[name](orjson.dumps(obj).decode()))


def test_every_prefix_of_real_lines() -> None:
    for name in NAMES:
        parse = build_parser(**SETTINGS[name])
        for line in REAL_LINES[name][:2]:
            for end in range(len(line) + 1):
                check(parse(line[:end]))


MEGABYTE = 1 << 20


def huge_lines(line: str) -> list[str]:
    middle = len(line) // 2
    return [
        "a" * MEGABYTE,
        " " * MEGABYTE,
        '"' * MEGABYTE,
        "{" * MEGABYTE,
        "[" * MEGABYTE,
        "1" * MEGABYTE,
        "1.1.1.1:" * (MEGABYTE // 8),
        "a " * (MEGABYTE // 2),
        line[:middle] + "x" * MEGABYTE + line[middle:],
        line[:middle] + " -" * (MEGABYTE // 2) + line[middle:],
        line[:middle] + "|" * MEGABYTE + line[middle:],
        line * (MEGABYTE // max(1, len(line))),
        line + " " + "9" * MEGABYTE,
        line.replace("200", "2" * MEGABYTE, 1),
    ]


@pytest.mark.parametrize("name", NAMES)
def test_one_megabyte_lines(name: str) -> None:
    parse = build_parser(**SETTINGS[name])
    for line in huge_lines(REAL_LINES[name][0]):
        started = time.perf_counter()
        check(parse(line))
        assert time.perf_counter() - started < 1.0, (name, line[:80])


def test_no_parser_regex_repeats_a_group_possessively() -> None:
    """`(?:...)*+` is wrong before CPython 3.11.5 (gh-106052): on Debian 12's 3.11.2 the nginx
    parser matched no line at all. Atomic groups `(?>(?:...)*)` work on every 3.11."""
    import xinf_watch.formats as formats_package

    offenders = []
    for module in sorted(Path(formats_package.__file__).parent.glob("*.py")):
        for number, line in enumerate(module.read_text().splitlines(), 1):
            if re.search(r"\)[*+?]\+", line) and not line.lstrip().startswith("#"):
                offenders.append(f"{module.name}:{number}: {line.strip()}")
    assert offenders == []


BYTE_FIELD = {  # a real line of each format, and how to put a byte count into it
    "nginx-combined_key": (NGINX_LINES[0], re.compile(r'(?<=" \d{3} )\d+(?= ")')),
    "regex": (NGINX_LINES[0], re.compile(r'(?<=" \d{3} )\d+(?= ")')),
    "json-caddy": (
        (FIXTURES / "caddy" / "access.log").read_text().splitlines()[0],
        re.compile(r'(?<="size":)\d+'),
    ),
    "json-nginx-json": (
        (FIXTURES / "nginx" / "access_json.log").read_text().splitlines()[0],
        re.compile(r'(?<="body_bytes_sent":)"?\d+'),
    ),
}


@pytest.mark.parametrize("name", sorted(BYTE_FIELD))
def test_a_byte_count_no_response_has_is_dropped_so_sums_stay_inside_64_bits(name: str) -> None:
    """A line claiming 10 TB or more keeps its request but loses its byte count: summed over a
    flood of such lines, real-looking counts would outgrow what the state database keeps."""
    line, field = BYTE_FIELD[name]
    parse = build_parser(**SETTINGS[name])
    assert field.search(line), f"{name}: no byte count in the fixture line"
    for count, kept in ((10**13 - 1, True), (10**13, False), (10**19, False), (2**70, False)):
        quote = '"' if field.search(line).group().startswith('"') else ""  # type: ignore[union-attr]
        record = parse(field.sub(quote + str(count), line, 1))
        assert isinstance(record, Record), (name, count)
        assert record.bytes == (count if kept else None), (name, count)


def test_response_bytes_saturate_instead_of_outgrowing_the_state() -> None:
    from xinf_watch.metrics.store import COUNTER_MAX, MetricsStore
    from xinf_watch.model import CredentialKind, Event, KeyState, Outcome

    store = MetricsStore()
    event = Event(ts=0.0, source="gw", ip="10.0.0.1", ip_forwarded=False, method="GET", path="/v1/models",
                  status=200, outcome=Outcome.ALLOWED, reason=None, credential=CredentialKind.API_KEY,
                  key="k", owner=None, key_state=KeyState.VALID, scope="models:list", scope_allowed=True,
                  ip_allowed=None, duration=None, bytes=10**13 - 1, user_agent=None,
                  request_id=None)  # fmt: skip
    for _ in range(1_000_000):
        store.observe(event)
    assert store.response_bytes[("gw", "k", "models:list")] == COUNTER_MAX
    orjson.dumps(store.snapshot())  # raises on an int past 64 bits


_KEYS = st.sampled_from(["a", "b", "c", "0", "1"])
_LEAVES = st.one_of(st.none(), st.sampled_from(["", "-", "x", "GET"]), st.integers(-2, 2), st.floats(0, 1))
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_KEYS, inner, max_size=3)),
    max_leaves=8,
)
_DOTTED = st.lists(_KEYS, min_size=1, max_size=3).map(".".join)
_INDEXED = _KEYS.map(lambda k: f"a[{k}]" if k.isdigit() else k)
_PATHS = st.lists(_DOTTED | _INDEXED, min_size=1, max_size=3).map("|".join)


@settings(max_examples=400, deadline=None)
@given(obj=st.dictionaries(_KEYS | st.just("a.b"), _LEAVES | _VALUES, max_size=5), spec=_PATHS)
def test_a_compiled_json_getter_finds_what_resolve_finds(obj: dict[str, Any], spec: str) -> None:
    """The per-path getters the JSON parser is built with (plain keys looked up directly) give
    what walking the path gives, lists, empty values and alternatives included."""
    path = compile_path(spec, "field")
    assert getter(path)(obj) == resolve(obj, path)
