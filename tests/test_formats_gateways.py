"""The Kong and APISIX presets of the json format.

No recording of these gateways exists in tests/fixtures, so the lines here follow the log
objects their documentation shows (Kong: the log plugins' sample object; APISIX: the loggers'
default format), cut to the fields that matter and with the keys of the recorded set A, so that
attribution is checked against the real key registry.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from paths import FIXTURES

from xinf_watch.app.pipeline import Pipeline
from xinf_watch.config.schema import load_config
from xinf_watch.formats import build_parser
from xinf_watch.keys.files import load_registry
from xinf_watch.model import KeyState, LineResult, Outcome, Record

KONG = {
    "request": {
        "method": "POST", "uri": "/v1/chat/completions?stream=false", "size": 139,
        "url": "http://gw.internal:8000/v1/chat/completions", "querystring": {"stream": "false"},
        "headers": {"authorization": "Bearer sk-Yn9ggOg8DoIku", "user-agent": "OpenAI/Python 1.82.0",
                    "host": "gw.internal:8000"},
    },
    "response": {
        "status": 404, "size": 322,
        "headers": {"content-length": "134", "x-kong-request-id": "2f6946328ffc4946b8c9120704a4a155"},
    },
    "upstream_uri": "/v1/chat/completions", "client_ip": "127.0.1.21", "started_at": 1795849556429,
    "latencies": {"proxy": 44, "kong": 1, "request": 46, "receive": 1},
    "consumer": {"username": "chatbot-prod", "id": "f1b7c2a0-2b2e-4c3e-9a4e-6f0e4f1d0c11"},
    "source": "upstream", "tries": [{"ip": "127.0.0.1", "port": 9997, "balancer_latency": 0}],
}  # fmt: skip
APISIX = {
    "client_ip": "127.0.1.66", "start_time": 1795849601088, "latency": 18.5, "upstream_latency": 17,
    "apisix_latency": 1.5, "route_id": "1", "server": {"hostname": "gw", "version": "3.9.0"},
    "request": {
        "method": "GET", "uri": "/v1/models", "url": "http://gw:9080/v1/models", "size": 98,
        "querystring": {}, "headers": {"apikey": "xf-WBrciG0k56XwiR809SuB0Q2FKURe0FXO1C86UawWvj4W3sQx",
                                       "user-agent": "curl/8.5.0", "x-request-id": "d2c6f289"},
    },
    "response": {"status": 200, "size": 305, "headers": {"content-type": "application/json"}},
    "consumer": {"username": "finance-bot"},
}  # fmt: skip


def line(obj: dict[str, object]) -> str:
    return orjson.dumps(obj).decode()


def test_kong_log_object() -> None:
    record = build_parser("json", preset="kong")(line(KONG))
    assert isinstance(record, Record)
    assert (record.ip, record.method, record.path, record.status) == (
        "127.0.1.21", "POST", "/v1/chat/completions?stream=false", 404
    )
    assert record.ts == pytest.approx(1795849556.429)  # started_at is in milliseconds
    assert record.duration == pytest.approx(0.046)  # latencies.request, milliseconds
    assert record.bytes == 322
    assert record.credential == "Bearer sk-Yn9ggOg8DoIku"
    assert record.request_id == "2f6946328ffc4946b8c9120704a4a155"
    assert record.user_agent == "OpenAI/Python 1.82.0"


def test_apisix_log_object() -> None:
    record = build_parser("json", preset="apisix")(line(APISIX))
    assert isinstance(record, Record)
    assert (record.ip, record.method, record.path, record.status) == ("127.0.1.66", "GET", "/v1/models", 200)
    assert record.ts == pytest.approx(1795849601.088)
    assert record.duration == pytest.approx(0.0185)
    assert record.credential == "xf-WBrciG0k56XwiR809SuB0Q2FKURe0FXO1C86UawWvj4W3sQx"  # the apikey header
    assert record.request_id == "d2c6f289"


@pytest.mark.parametrize("preset", ["kong", "apisix"])
def test_not_an_access_object_is_unparsed(preset: str) -> None:
    parse = build_parser("json", preset=preset)
    assert parse(line({"level": "info", "msg": "worker started"})) is LineResult.UNPARSED
    assert parse("") is LineResult.SKIPPED


@pytest.mark.parametrize(("preset", "obj", "header", "alias"), [
    ("kong", KONG, "authorization", "chatbot-prod"),
    ("apisix", APISIX, "apikey", "finance-bot"),
])  # fmt: skip
def test_key_from_the_header_or_else_from_the_consumer_name(
    tmp_path: Path, preset: str, obj: dict[str, object], header: str, alias: str
) -> None:
    """With the header, the key itself is resolved; when the gateway hid it (Kong's
    hide_credentials), the consumer name is the credential, resolved as the key's alias."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"sources: [{{name: gw, path: {tmp_path}/x.log, format: json, preset: {preset}}}]\n"
        f"keys: [{FIXTURES / 'keys.yaml'}]\n"
    )
    pipeline = Pipeline.build(load_config(rules), load_registry([FIXTURES / "keys.yaml"]))
    hidden = orjson.loads(line(obj))
    del hidden["request"]["headers"][header]
    for variant in (obj, hidden):
        record = pipeline.parse("gw", line(variant))
        assert record is not None
        event, _ = pipeline.process("gw", record)
        assert (event.key, event.key_state) == (alias, KeyState.VALID)
    unknown = orjson.loads(line(hidden))
    unknown["consumer"]["username"] = "someone-else"
    record = pipeline.parse("gw", line(unknown))
    assert record is not None
    event, _ = pipeline.process("gw", record)
    assert event.key == "unknown" and event.outcome in (Outcome.ALLOWED, Outcome.CLIENT_ERROR)
