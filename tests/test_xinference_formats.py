"""Xinference's own logs: xinference.log (format `xinference`) and audit.log (`xinference-audit`).

Real lines first: every line of the recordings (fixtures/README.md: set A, Xinference 4.1.0,
audit.log and xinference.log.gz; set B, Xinference 2.11.0, text and JSON xinference.log) is read,
and what the parsers make of them is checked against what the recorder sent (events.jsonl). Then
the layouts the recordings do not have (<= 2.9, IPv6, audit rows of 2.10-3.x), built from the
format strings of Xinference's source (docs/xinference/FACTS.md 4.2, 4.3), and the events the pipeline makes.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from paths import FIXTURES

from xinf_watch.app import cli
from xinf_watch.app.pipeline import Pipeline
from xinf_watch.attribution.attribute import reason_from_status
from xinf_watch.config.schema import load_config
from xinf_watch.formats import build_parser
from xinf_watch.formats.audit import RECENT_REQUEST_IDS, STATUS_CODES
from xinf_watch.formats.xinference import split_client
from xinf_watch.keys.files import load_registry
from xinf_watch.keys.registry import Attribution, KeyRegistry
from xinf_watch.model import CredentialKind, Event, KeyHint, KeyState, LineResult, Record

REPO = Path(__file__).resolve().parents[1]
SKIPPED, UNPARSED = LineResult.SKIPPED, LineResult.UNPARSED


def read_lines(name: str) -> list[str]:
    path = FIXTURES / name
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="\n") as f:
        return f.read().splitlines()


def read_jsonl(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in read_lines(name)]


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def record(result: Record | LineResult) -> Record:
    assert isinstance(result, Record), result
    return result


def results(fmt: str, name: str) -> list[Record | LineResult]:
    parse = build_parser(fmt)
    return [parse(line) for line in read_lines(name)]


def phase_of(ts: float, phases: list[dict[str, Any]]) -> str:
    """The set-A phase a time belongs to (phases are >= 3 s apart; an audit row follows its request)."""
    for phase in phases:
        if epoch(phase["start"]) - 1 <= ts <= epoch(phase["end"]) + 2:
            return str(phase["phase"])
    raise AssertionError(f"{ts} is in no phase")


# ---- xinference.log: the recordings --------------------------------------------------------------

XINFERENCE_LOGS = [
    # (file, uvicorn.access lines: fixtures/README.md "Requests sent vs. log lines"; set-B run)
    ("xinference/xinference.log.gz", 0, None),  # 4.1.0 writes no access lines
    ("xinference-legacy/text/xinference.log", 176, "text"),
    ("xinference-legacy/json/xinference.log", 151, "json"),
]


@pytest.mark.parametrize(
    ("name", "access_lines", "run"), XINFERENCE_LOGS, ids=[x[0] for x in XINFERENCE_LOGS]
)
def test_xinference_log_access_lines_parse_and_the_rest_is_skipped(
    name: str, access_lines: int, run: str | None
) -> None:
    out = results("xinference", name)
    counts = Counter(r.value if isinstance(r, LineResult) else "parsed" for r in out)
    assert counts == Counter({"parsed": access_lines, "skipped": len(out) - access_lines})
    if run is None:
        return
    # Each access line is one request the recorder sent (via nginx or direct), with its status.
    sent = [e for e in read_jsonl("xinference-legacy/events.jsonl") if e["run"] == run]
    got = Counter((r.ip, r.method, r.path, r.status, r.ip_forwarded) for r in out if isinstance(r, Record))
    want = Counter((e["src_ip"], e["method"], e["path"], e["status"], e["via"] == "nginx") for e in sent)
    assert got == want
    # Behind nginx (X-Forwarded-For set): port 0, forwarded; the three direct requests: real port.
    assert Counter(r.ip_forwarded for r in out if isinstance(r, Record)) == {
        True: sum(e["via"] == "nginx" for e in sent),
        False: 3,
    }
    records = [r for r in out if isinstance(r, Record)]
    assert all(r.credential is None and r.key_hint is None and r.duration is None for r in records)
    # Times are UTC and follow the requests: each line within the run's time range.
    timeline = json.loads((FIXTURES / f"xinference-legacy/timeline-{run}.json").read_text())
    assert all(epoch(timeline["start"]) <= r.ts <= epoch(timeline["end"]) + 1 for r in records)


def test_xinference_log_exact_values_of_real_lines() -> None:
    parse = build_parser("xinference")
    text = record(
        parse(
            "2026-11-28T07:11:23.494Z INFO uvicorn.access pid:598 role:local address:127.0.0.1:9995 "
            'node:vm 127.0.1.81:0 - "POST /v1/models HTTP/1.1" 403'
        )
    )
    assert text == Record(
        epoch("2026-11-28T07:11:23.494+00:00"), "127.0.1.81", "POST", "/v1/models", 403, ip_forwarded=True
    )
    direct = record(
        parse(
            "2026-11-28T07:12:51.318Z INFO uvicorn.access pid:598 role:local address:127.0.0.1:9995 "
            'node:vm 127.0.1.71:60031 - "GET /v1/models HTTP/1.1" 200'
        )
    )
    assert (direct.ip, direct.ip_forwarded, direct.status) == ("127.0.1.71", False, 200)
    as_json = record(
        parse(
            '{"@timestamp": "2026-11-28T07:13:48.096Z", "level": "INFO", "module": "uvicorn.access", '
            '"pid": 1316, "role": "local", "address": "127.0.0.1:9995", "node": "vm", '
            '"message": "127.0.1.81:0 - \\"POST /v1/models HTTP/1.1\\" 403"}'
        )
    )
    assert as_json == Record(
        epoch("2026-11-28T07:13:48.096+00:00"), "127.0.1.81", "POST", "/v1/models", 403, ip_forwarded=True
    )


# ---- xinference.log: every layout, line by line --------------------------------------------------

MESSAGE = '10.0.0.7:51234 - "POST /v1/chat/completions HTTP/1.1" 200'
LAYOUTS = {
    "<=2.8": f"2024-11-28 10:15:02,863 uvicorn.access 13543 INFO     {MESSAGE}",
    "2.9": f"2026-05-25 10:15:02,863 uvicorn.access 13543 [local@0.0.0.0:9997] INFO     {MESSAGE}",
    "2.10 text": (
        "2026-08-23T02:15:02.863Z INFO uvicorn.access pid:13543 role:local address:0.0.0.0:9997 "
        f"node:gpu-01 {MESSAGE}"
    ),
    "2.10 json": json.dumps(
        {
            "@timestamp": "2026-08-23T02:15:02.863Z",
            "level": "INFO",
            "module": "uvicorn.access",
            "pid": 13543,
            "role": "local",
            "address": "0.0.0.0:9997",
            "node": "gpu-01",
            "message": MESSAGE,
        }
    ),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_gives_the_same_record(layout: str) -> None:
    r = record(build_parser("xinference")(LAYOUTS[layout]))
    assert (r.ip, r.method, r.path, r.status, r.ip_forwarded) == (
        "10.0.0.7", "POST", "/v1/chat/completions", 200, False,
    )  # fmt: skip
    # <= 2.9 write local time without a zone: taken as UTC (the module docstring says so).
    when = "2024-11-28T10:15:02.863" if layout == "<=2.8" else "2026-05-25T10:15:02.863"
    if layout.startswith("2.10"):
        when = "2026-08-23T02:15:02.863"
    assert r.ts == pytest.approx(epoch(when + "+00:00"))


@pytest.mark.parametrize(
    ("client", "ip", "forwarded"),
    [
        ("127.0.1.81:0", "127.0.1.81", True),
        ("127.0.1.71:60031", "127.0.1.71", False),
        ("[::1]:51234", "::1", False),
        ("::1:51234", "::1", False),
        ("[2001:db8::7]:0", "2001:db8::7", True),
        ("2001:db8::7:0", "2001:db8::7", True),
    ],
)
def test_clients_ipv4_and_both_ipv6_spellings(client: str, ip: str, forwarded: bool) -> None:
    line = LAYOUTS["2.10 text"].replace("10.0.0.7:51234", client)
    r = record(build_parser("xinference")(line))
    assert (r.ip, r.ip_forwarded) == (ip, forwarded)


def test_split_client_refuses_what_is_not_ip_port() -> None:
    assert split_client("10.0.0.7") is None
    assert split_client(":0") is None
    assert split_client("[::1]") is None
    assert split_client("10.0.0.7:x") is None


@pytest.mark.parametrize(
    ("request_line", "path"),
    [
        ("GET /v1/models?limit=1&x=%20 HTTP/1.1", "/v1/models?limit=1&x=%20"),
        ('GET /v1/a"b HTTP/1.1" 200 a=1 HTTP/1.1', '/v1/a"b HTTP/1.1" 200 a=1'),  # a crafted path
        ("GET / HTTP/2", "/"),
    ],
)
def test_paths_keep_their_query_and_cannot_fake_the_status(request_line: str, path: str) -> None:
    line = LAYOUTS["2.10 text"].replace(MESSAGE, f'10.0.0.7:51234 - "{request_line}" 404')
    r = record(build_parser("xinference")(line))
    assert (r.method, r.path, r.status) == ("GET", path, 404)


def test_xinference_fields_after_the_message_give_a_request_id() -> None:
    parse = build_parser("xinference")
    r = record(parse(LAYOUTS["2.10 text"] + ' request_id="3b20b953" elapsed_ms=0.025'))
    assert (r.status, r.request_id) == (200, "3b20b953")
    obj = json.loads(LAYOUTS["2.10 json"]) | {"request_id": "3b20b953"}
    assert record(parse(json.dumps(obj))).request_id == "3b20b953"


@pytest.mark.parametrize(
    "line",
    [
        "",
        "Traceback (most recent call last):",
        '  File "/srv/venv/lib/python3.11/site-packages/uvicorn/protocols/http/httptools_impl.py", line 1',
        "ValueError: Model not found in the model list, uid: glm4-chat",
        "2026-11-28T07:05:52.923Z INFO uvicorn.error pid:31026 role:local address:127.0.0.1:59512 "
        "node:vm Started server process [31026]",
        "2026-11-28T07:05:52.923Z ERROR xinference.api.restful_api pid:1 role:local address:a:1 node:vm "
        'logger uvicorn.access said 10.0.0.7:1 - "GET / HTTP/1.1" 200',
        "2024-11-28 10:15:02,863 xinference.core.supervisor 13543 INFO     Xinference supervisor started",
        '{"@timestamp": "2026-11-28T07:13:21.395Z", "level": "INFO", "module": "xinference.deploy.local", '
        '"message": "10.0.0.7:1 - \\"GET / HTTP/1.1\\" 200"}',
        "[1, 2]",
        '{"truncated": "uvicorn.error',
    ],
)
def test_lines_of_other_loggers_are_skipped(line: str) -> None:
    assert build_parser("xinference")(line) is SKIPPED


@pytest.mark.parametrize(
    "line",
    [
        LAYOUTS["2.10 text"].replace(MESSAGE, "something else entirely"),
        LAYOUTS["2.10 text"].replace('" 200', '" 20'),
        LAYOUTS["2.10 text"].replace("10.0.0.7:51234", ""),  # no client (Unix socket): no address
        LAYOUTS["2.10 text"].replace("2026-08-23T02:15:02.863Z", "2026-13-45T02:15:02.863Z"),
        LAYOUTS["<=2.8"].replace("13543 INFO", "pid INFO"),
        LAYOUTS["2.10 json"].replace('"message"', '"msg"'),
        LAYOUTS["2.10 json"][:120],  # cut short, still naming uvicorn.access
        LAYOUTS["2.10 json"].replace(MESSAGE.replace('"', '\\"'), "hello"),
    ],
)
def test_lines_claiming_to_be_access_lines_that_cannot_be_read_are_unparsed(line: str) -> None:
    assert build_parser("xinference")(line) is UNPARSED


# ---- audit.log: the recording --------------------------------------------------------------------


def test_every_audit_row_of_the_recording_is_one_request_sent() -> None:
    """4.1.0 writes one row per request: 2865 rows, 2865 requests, each phase and each
    (method, path, status) as sent. No row shares a request_id, so the dedupe drops nothing."""
    out = results("xinference-audit", "xinference/audit.log")
    assert all(isinstance(r, Record) for r in out)
    records = [record(r) for r in out]
    sent = read_jsonl("events.jsonl")
    phases = json.loads((FIXTURES / "timeline.json").read_text())["phases"]
    got = Counter((phase_of(r.ts, phases), r.method, r.path, r.status) for r in records)
    want = Counter((e["phase"], e["method"], e["path"], e["status"]) for e in sent)
    assert got == want
    assert Counter(phase for phase, *_ in got.elements()) == {
        "nginx": 1613, "caddy": 313, "caddy_creds": 313, "haproxy": 313, "direct": 313,
    }  # fmt: skip
    assert len({r.request_id for r in records}) == len(records) == 2865
    assert all(r.credential is None and r.key_hint is not None for r in records)
    assert all(r.duration is not None and 0 < r.duration < 5 for r in records)


def test_audit_statuses_become_reasons() -> None:
    records = [record(r) for r in results("xinference-audit", "xinference/audit.log")]
    rows = read_jsonl("xinference/audit.log")
    assert [r.reason for r in records] == [
        None if row["status"] == "success" else row["status"] for row in rows
    ]
    assert Counter((r.reason, r.status) for r in records if r.reason) == {
        ("model_not_found", 404): 842,
        ("error", 400): 212,
        ("no_credentials", 401): 175,
        ("ip_banned", 429): 75,
        ("invalid_key", 401): 50,
        ("invalid_token", 401): 40,
        ("insufficient_scope", 403): 30,
        ("key_disabled", 401): 15,
        ("key_expired", 401): 10,
    }


def test_audit_row_values() -> None:
    line = read_lines("xinference/audit.log")[0]
    assert build_parser("xinference-audit")(line) == Record(
        ts=epoch("2026-11-28T07:05:56.429+00:00"),
        ip="127.0.1.21",
        method="POST",
        path="/v1/chat/completions",
        status=404,
        duration=45.9 / 1000,
        request_id="3b20b953-9869-4a60-abc0-30c1ba6f9ed8",
        reason="model_not_found",
        key_hint=KeyHint("chatbot", "migrated-sk-Yn9g", "sk-Yn9g", "api_key"),
    )


# ---- audit.log: rows of other versions, and the dedupe -------------------------------------------


def audit_row(**fields: Any) -> str:
    """A row as 2.10-3.x write it (audit.py record_audit_event: no request_id, method, status_code)."""
    row: dict[str, Any] = {
        "@timestamp": "2026-08-23T02:15:02.000Z", "event_type": "api_call", "category": "admin",
        "auth_type": "api_key", "user": "chatbot", "api_key_name": "ci-bot", "api_key_prefix": "sk-Yn9g",
        "model_id": "", "model_name": "", "model_type": "", "endpoint": "/v1/models", "status": "success",
        "latency_ms": 0.0, "client_ip": "10.0.0.7", "node": "gpu-01", "address": "",
    }  # fmt: skip
    row.update(fields)
    return json.dumps(row)


@pytest.mark.parametrize(("status", "code"), sorted(STATUS_CODES.items()))
def test_rows_without_status_code_get_one_from_their_status(status: str, code: int) -> None:
    r = record(build_parser("xinference-audit")(audit_row(status=status)))
    assert (r.status, r.reason, r.method, r.request_id) == (
        code,
        None if status == "success" else status,
        "",
        None,
    )


def test_status_code_wins_and_unknown_statuses_need_one() -> None:
    parse = build_parser("xinference-audit")
    assert record(parse(audit_row(status="error", status_code=400))).status == 400
    assert record(parse(audit_row(status="brand_new", status_code=418))).reason == "brand_new"
    assert parse(audit_row(status="brand_new")) is UNPARSED


def test_other_event_types_count_when_they_are_requests() -> None:
    parse = build_parser("xinference-audit")
    login = record(parse(audit_row(event_type="login", category="auth", endpoint="/token", auth_type="none")))
    assert (login.path, login.status) == ("/token", 200)
    assert (
        parse(json.dumps({"@timestamp": "2026-08-23T02:15:02.000Z", "event_type": "config_reload"}))
        is SKIPPED
    )
    assert parse(audit_row(endpoint="")) is UNPARSED  # an api_call row must say what was called


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        "[1]",
        audit_row(client_ip=""),
        audit_row(**{"@timestamp": "yesterday"}),
        audit_row(status=None),
    ],
)
def test_unreadable_audit_rows_are_unparsed(line: str) -> None:
    assert build_parser("xinference-audit")(line) is UNPARSED


def test_a_second_row_of_a_request_id_is_dropped_with_bounded_memory() -> None:
    parse = build_parser("xinference-audit")
    first = audit_row(request_id="r-1", status_code=200, latency_ms=3.1)
    assert isinstance(parse(first), Record)
    assert (
        parse(audit_row(request_id="r-1", status_code=200, category="inference", latency_ms=9.0)) is SKIPPED
    )
    for i in range(RECENT_REQUEST_IDS):
        assert isinstance(parse(audit_row(request_id=f"other-{i}", latency_ms=1.0)), Record)
    assert isinstance(parse(first), Record)  # long forgotten: memory stays bounded


def t(seconds: float) -> str:
    return (
        datetime.fromtimestamp(epoch("2026-08-23T02:15:00+00:00") + seconds).strftime("%Y-%m-%dT%H:%M:%S.%f")[
            :-3
        ]
        + "Z"
    )


# 2.10-3.x traffic, row by row as Xinference writes it: (request, row). The auth check
# writes latency 0, the middleware a measured latency (docs/xinference/FACTS.md 4.3 "Gaps and duplicates").
KEY = {"auth_type": "api_key", "user": "chatbot", "api_key_name": "ci-bot", "api_key_prefix": "sk-Yn9g"}
MIDDLEWARE = {"auth_type": "jwt", "user": "", "api_key_name": "", "api_key_prefix": ""}
JWT = {"auth_type": "jwt", "user": "platform", "api_key_name": "", "api_key_prefix": ""}
NOBODY = {"auth_type": "", "user": "", "api_key_name": "", "api_key_prefix": ""}
OLD_ROWS: list[tuple[str, dict[str, Any]]] = [
    ("key lists models", {**KEY, "@timestamp": t(0.0)}),
    ("key lists models", {**MIDDLEWARE, "@timestamp": t(0.012), "latency_ms": 12.3}),
    ("jwt lists models", {**JWT, "@timestamp": t(1.0), "client_ip": "10.0.0.10"}),
    ("jwt lists models", {**JWT, "@timestamp": t(1.008), "latency_ms": 8.1, "client_ip": "10.0.0.10"}),
    ("unknown key", {**KEY, "user": "", "api_key_name": "", "@timestamp": t(2.0), "status": "invalid_key"}),
    ("unknown key", {**MIDDLEWARE, "@timestamp": t(2.003), "status": "error", "latency_ms": 2.6}),
    ("no credentials", {**NOBODY, "@timestamp": t(3.0), "status": "no_credentials"}),
    ("public route with a token", {**MIDDLEWARE, "@timestamp": t(4.0), "endpoint": "/v1/models/prompts",
                                   "latency_ms": 3.0}),
    ("messages call", {**KEY, "@timestamp": t(5.0), "endpoint": "/v1/messages"}),
    ("messages call", {**KEY, "@timestamp": t(5.9), "endpoint": "/v1/messages", "category": "inference",
                       "status": "model_not_found", "latency_ms": 900.0, "model_id": "qwen3"}),
    ("chat call", {**KEY, "@timestamp": t(6.0), "endpoint": "/v1/chat/completions", "category": "inference",
                   "latency_ms": 812.4, "model_id": "qwen3"}),
    ("jwt cluster info", {**JWT, "@timestamp": t(7.0), "endpoint": "/v1/cluster/info"}),
    ("login", {**NOBODY, "auth_type": "none", "user": "platform", "@timestamp": t(8.0), "endpoint": "/token",
               "category": "auth"}),
    # two clients at once: their rows interleave
    ("a lists models", {**KEY, "@timestamp": t(9.0), "client_ip": "10.0.0.21"}),
    ("b lists models", {**KEY, "@timestamp": t(9.001), "client_ip": "10.0.0.22"}),
    ("b lists models", {**MIDDLEWARE, "@timestamp": t(9.010), "latency_ms": 9.0, "client_ip": "10.0.0.22"}),
    ("a lists models", {**MIDDLEWARE, "@timestamp": t(9.030), "latency_ms": 30.0, "client_ip": "10.0.0.21"}),
    # banned without a token: no middleware row follows; a later token-only row is not its pair
    ("banned", {**NOBODY, "@timestamp": t(20.0), "status": "ip_banned", "client_ip": "203.0.113.9"}),
    ("token only, much later", {**MIDDLEWARE, "@timestamp": t(40.0), "latency_ms": 5.0,
                                "endpoint": "/v1/models", "status": "error", "client_ip": "203.0.113.9"}),
]  # fmt: skip


def test_rows_of_2_10_to_3_x_count_each_request_once() -> None:
    parse = build_parser("xinference-audit")
    kept = [
        (request, record(r))
        for request, fields in OLD_ROWS
        if isinstance(r := parse(audit_row(**fields)), Record)
    ]
    assert [request for request, _ in kept] == list(dict.fromkeys(request for request, _ in OLD_ROWS))
    by_request = dict(kept)
    # The auth check's row is the one kept: it names the key; the middleware's latency is lost.
    assert by_request["key lists models"].key_hint == KeyHint("chatbot", "ci-bot", "sk-Yn9g", "api_key")
    assert by_request["key lists models"].duration is None
    assert by_request["unknown key"].reason == "invalid_key"
    assert by_request["messages call"].status == 200  # the auth check's verdict; the 404 is lost
    assert by_request["chat call"].duration == pytest.approx(0.8124)
    assert by_request["token only, much later"].status == 500  # `error` without status_code


# ---- events through the pipeline -----------------------------------------------------------------


def write_rules(tmp_path: Path, sources: list[dict[str, Any]], keys: list[Path]) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"sources": sources, "keys": [str(k) for k in keys], "rules": []}))
    return path


def pipeline_events(pipeline: Pipeline, source: str, lines: list[str]) -> Iterator[Event]:
    for line in lines:
        r = pipeline.parse(source, line)
        if r is not None:
            yield pipeline.process(source, r)[0]


@pytest.fixture(scope="module")
def audit_events(tmp_path_factory: pytest.TempPathFactory) -> list[Event]:
    keys = [FIXTURES / "keys.yaml"]
    source = {"name": "audit", "path": str(FIXTURES / "xinference/audit.log"), "format": "xinference-audit"}
    config = load_config(write_rules(tmp_path_factory.mktemp("audit"), [source], keys))
    pipeline = Pipeline.build(config, load_registry(keys))
    return list(pipeline_events(pipeline, "audit", read_lines("xinference/audit.log")))


def test_audit_events_disabled_key_is_revoked(audit_events: list[Event]) -> None:
    disabled = [e for e in audit_events if e.reason == "key_disabled"]
    assert len(disabled) == 15  # 3 per phase
    assert {(e.key, e.key_state, e.credential, e.status) for e in disabled} == {
        ("analyst-old-laptop", KeyState.REVOKED, CredentialKind.API_KEY, 401)
    }


def test_audit_events_expired_key_is_expired(audit_events: list[Event]) -> None:
    expired = [e for e in audit_events if e.reason == "key_expired"]
    assert len(expired) == 10
    assert {(e.key, e.key_state, e.status) for e in expired} == {("mlops-2025-q3", KeyState.EXPIRED, 401)}


def test_audit_events_unknown_keys_stay_unknown(audit_events: list[Event]) -> None:
    invalid = [e for e in audit_events if e.reason == "invalid_key"]
    assert len(invalid) == 50  # 10 per phase before the spraying address is banned
    assert {(e.key, e.key_state, e.credential) for e in invalid} == {
        ("unknown", KeyState.UNKNOWN, CredentialKind.API_KEY)
    }
    assert len({e.fingerprint for e in invalid}) == len({e.ip for e in invalid}) * 10  # distinct keys


def test_audit_events_keep_their_reasons_and_request_ids(audit_events: list[Event]) -> None:
    assert len(audit_events) == 2865
    assert Counter(e.reason for e in audit_events if e.outcome.value == "denied") == {
        "no_credentials": 175, "invalid_key": 50, "invalid_token": 40, "insufficient_scope": 30,
        "key_disabled": 15, "key_expired": 10,
    }  # fmt: skip
    assert all(e.request_id for e in audit_events)


@pytest.fixture(scope="module")
def legacy_text_events(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Event]]:
    keys = [FIXTURES / "xinference-legacy/keys.yaml", FIXTURES / "config/legacy/auth.json"]
    sources = [
        {"name": "gateway", "path": str(FIXTURES / "xinference-legacy/text/nginx_access_combined_key.log"),
         "format": "nginx", "log_format": "combined_key", "xinference_version": "2.11"},
        {"name": "xinference", "path": str(FIXTURES / "xinference-legacy/text/xinference.log"),
         "format": "xinference", "xinference_version": "2.11"},
    ]  # fmt: skip
    config = load_config(write_rules(tmp_path_factory.mktemp("legacy"), sources, keys))
    pipeline = Pipeline.build(config, load_registry(keys))
    return {
        "gateway": list(pipeline_events(pipeline, "gateway", read_lines(sources[0]["path"]))),
        "xinference": list(pipeline_events(pipeline, "xinference", read_lines(sources[1]["path"]))),
    }


def test_expired_jwt_accepted_by_2_11_is_seen_at_the_gateway(
    legacy_text_events: dict[str, list[Event]],
) -> None:
    timeline = json.loads((FIXTURES / "xinference-legacy/timeline-text.json").read_text())
    exp = epoch(timeline["jwt_exp"])
    jwt = [e for e in legacy_text_events["gateway"] if e.credential is CredentialKind.JWT]
    assert {e.key for e in jwt} == {"jwt:deployer"}
    late = [e for e in jwt if e.ts > exp]
    # x_expired_jwt: GET /v1/models 200, GET and DELETE /v1/models/glm4-chat 400 (auth passed)
    assert sorted((e.method, e.path, e.status) for e in late) == [
        ("DELETE", "/v1/models/glm4-chat", 400),
        ("GET", "/v1/models", 200),
        ("GET", "/v1/models/glm4-chat", 400),
    ]
    assert all(e.key_state is KeyState.EXPIRED for e in late)
    accepted = [e for e in late if e.outcome.value == "allowed"]
    assert [(e.credential, e.key_state, e.path) for e in accepted] == [
        (CredentialKind.JWT, KeyState.EXPIRED, "/v1/models")
    ]
    assert all(e.key_state is KeyState.VALID for e in jwt if e.ts <= exp)


def test_gateway_reasons_from_status_in_the_legacy_run(legacy_text_events: dict[str, list[Event]]) -> None:
    gateway = legacy_text_events["gateway"]
    denied = Counter((e.status, e.credential, e.reason) for e in gateway if e.status in (401, 403))
    assert denied == {
        (401, CredentialKind.API_KEY, "invalid_key"): 45,  # b_denied_burst: unknown sk- keys
        (401, CredentialKind.NONE, "no_credentials"): 4,  # e_no_auth
        (403, CredentialKind.API_KEY, "insufficient_scope"): 10,  # dashboard-ro (6 + 3), rag-prod (1)
    }


def test_xinference_log_events_have_no_key_and_no_guessed_reason(
    legacy_text_events: dict[str, list[Event]],
) -> None:
    events = legacy_text_events["xinference"]
    assert len(events) == 176
    assert {(e.key, e.credential, e.key_state) for e in events} == {
        ("none", CredentialKind.NONE, KeyState.NONE)
    }
    # xinference.log never shows a credential, so a 401 there says nothing about why
    assert {e.reason for e in events} == {None}
    assert Counter(e.ip_forwarded for e in events) == {True: 173, False: 3}
    direct = sorted((e.ip, e.status) for e in events if not e.ip_forwarded)
    assert direct == [("127.0.1.71", 200), ("127.0.1.71", 401), ("127.88.70.1", 401)]  # z_direct


# ---- reason_from_status --------------------------------------------------------------------------


def who(kind: CredentialKind, state: KeyState) -> Attribution:
    return Attribution(kind, "k", None, state, None, (), None, kind is CredentialKind.API_KEY)


@pytest.mark.parametrize(
    ("status", "kind", "state", "scope_allowed", "logged", "reason"),
    [
        (401, CredentialKind.NONE, KeyState.NONE, None, True, "no_credentials"),
        (401, CredentialKind.NONE, KeyState.NONE, None, False, None),  # a log without credentials
        (401, CredentialKind.API_KEY, KeyState.UNKNOWN, None, True, "invalid_key"),
        (401, CredentialKind.API_KEY, KeyState.EXPIRED, True, True, "key_expired"),
        (401, CredentialKind.API_KEY, KeyState.REVOKED, True, True, "key_disabled"),
        (401, CredentialKind.API_KEY, KeyState.VALID, True, True, None),
        (401, CredentialKind.JWT, KeyState.EXPIRED, True, True, "invalid_token"),
        (401, CredentialKind.JWT, KeyState.REVOKED, True, True, "user_disabled"),
        (401, CredentialKind.OTHER, KeyState.UNKNOWN, None, True, None),
        (403, CredentialKind.API_KEY, KeyState.VALID, False, True, "insufficient_scope"),
        (403, CredentialKind.JWT, KeyState.VALID, False, True, "insufficient_scope"),
        (403, CredentialKind.API_KEY, KeyState.VALID, True, True, None),  # allowlist? model access?
        (403, CredentialKind.API_KEY, KeyState.EXPIRED, False, True, None),
        (403, CredentialKind.NONE, KeyState.NONE, None, True, None),
        (429, CredentialKind.API_KEY, KeyState.UNKNOWN, None, True, None),  # banned IP, key, or model limit
    ],
)
def test_reason_from_status_only_where_one_cause_fits(
    status: int,
    kind: CredentialKind,
    state: KeyState,
    scope_allowed: bool | None,
    logged: bool,
    reason: str | None,
) -> None:
    assert reason_from_status(status, who(kind, state), scope_allowed, credentials_logged=logged) == reason


# ---- the shipped example configs -----------------------------------------------------------------

SHIPPED = sorted((REPO / "rules").glob("*.yaml"))
# Key files of the examples -> the recording's files of the same kind (auth.db: its content as
# Xinference's legacy JSON; keys/files.py detects a key file by content, not by name).
KEY_FILES = {
    "/var/lib/xinference/auth/auth.db": FIXTURES / "config/auth.json",
    "/etc/xinf-watch/keys.yaml": FIXTURES / "keys.yaml",
    "/etc/xinference/auth.json": FIXTURES / "config/auth.json",
}


def test_the_examples_are_shipped() -> None:
    names = {p.name for p in SHIPPED}
    assert {"rules.yaml", "nginx-xinference.yaml", "legacy-auth-config.yaml", "xinference-only.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_rules_file_loads_and_builds(path: Path) -> None:
    config = load_config(path)
    assert config.sources and config.rules
    Pipeline.build(config, KeyRegistry(()))  # every source's format and options are accepted


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_rules_file_passes_check_with_its_key_files(
    path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = path.read_text()
    for shipped, recorded in KEY_FILES.items():
        text = text.replace(shipped, str(recorded))
    copy = tmp_path / path.name
    copy.write_text(text)
    assert cli.main(["check", "--rules", str(copy)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{copy}: ok: ")
    assert all("matches no file yet" in line for line in err.splitlines())  # only missing logs noted
