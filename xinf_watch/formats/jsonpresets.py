"""The JSON log presets: the field paths of each gateway's own JSON access log (nginx's
`escape=json`, Caddy, Traefik, Kong, APISIX), and how to tell the program's other lines. The rules
for paths and fields are jsonlog.py's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any


def _caddy_own_line(obj: dict[str, Any]) -> bool:
    return obj.get("msg") != "handled request"


def _traefik_own_line(obj: dict[str, Any]) -> bool:
    return not any(key in obj for key in ("RequestMethod", "ClientHost", "DownstreamStatus", "OriginStatus"))


@dataclass(frozen=True, slots=True)
class JsonPreset:
    fields: Mapping[str, str]
    own_line: Callable[[dict[str, Any]], bool] | None = None  # the program's non-access lines: skipped


JSON_PRESETS: Mapping[str, JsonPreset] = MappingProxyType(
    {
        "nginx-json": JsonPreset(
            {
                "ts": "time_iso8601|msec|time_local",
                "ip": "remote_addr",
                "method": "request_method",
                "path": "request_uri|uri",
                "status": "status",
                "bytes": "body_bytes_sent|bytes_sent",
                "duration": "request_time",
                "credential": "http_authorization|http_x_api_key",
                "user_agent": "http_user_agent",
                "request_id": (
                    "sent_http_x_request_id|upstream_http_x_request_id|request_id|http_x_request_id"
                ),
                "forwarded_for": "http_x_forwarded_for",
            }
        ),
        "caddy": JsonPreset(
            {
                "ts": "ts",
                "ip": "request.remote_ip",
                "method": "request.method",
                "path": "request.uri",
                "status": "status",
                "bytes": "size",
                "duration": "duration",
                "credential": "request.headers.Authorization|request.headers.X-Api-Key",
                "user_agent": "request.headers.User-Agent",
                "request_id": "resp_headers.X-Request-Id|request.headers.X-Request-Id",
                "forwarded_for": "request.headers.X-Forwarded-For",
            },
            _caddy_own_line,
        ),
        "traefik": JsonPreset(
            {
                "ts": "StartUTC|time",
                "ip": "ClientHost",
                "method": "RequestMethod",
                "path": "RequestPath",
                "status": "DownstreamStatus|OriginStatus",
                "bytes": "DownstreamContentSize",
                "duration": "Duration",
                "duration_unit": "ns",
                "credential": "request_Authorization|request_X-Api-Key",
                "user_agent": "request_User-Agent",
                "request_id": "downstream_X-Request-Id|request_X-Request-Id",
                "forwarded_for": "request_X-Forwarded-For",
            },
            _traefik_own_line,
        ),
        # Kong's log plugins (file-log, http-log, tcp-log...): its documented log object. The
        # consumer name stands in for the credential when key-auth hid the header (hide_credentials).
        "kong": JsonPreset(
            {
                "ts": "started_at",
                "ip": "client_ip",
                "method": "request.method",
                "path": "request.uri",
                "status": "response.status",
                "bytes": "response.size",
                "duration": "latencies.request",
                "duration_unit": "ms",
                "credential": (
                    "request.headers.authorization|request.headers.apikey|request.headers.x-api-key"
                ),
                "consumer": "consumer.username",
                "user_agent": "request.headers.user-agent",
                "request_id": "response.headers.x-kong-request-id|request.headers.x-request-id",
                "forwarded_for": "request.headers.x-forwarded-for",
            }
        ),
        # Apache APISIX's loggers (file-logger, http-logger...), their default log format.
        "apisix": JsonPreset(
            {
                "ts": "start_time",
                "ip": "client_ip",
                "method": "request.method",
                "path": "request.uri",
                "status": "response.status",
                "bytes": "response.size",
                "duration": "latency",
                "duration_unit": "ms",
                "credential": "request.headers.authorization|request.headers.apikey",
                "consumer": "consumer.username",
                "user_agent": "request.headers.user-agent",
                "request_id": "request.headers.x-request-id|response.headers.x-request-id",
                "forwarded_for": "request.headers.x-forwarded-for",
            }
        ),
    }
)
