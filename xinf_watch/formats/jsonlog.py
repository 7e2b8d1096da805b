"""JSON access logs (one object per line): a field mapping of paths into the object -> a record.

Rules:

* A field maps to a path: dotted keys (`request.headers.User-Agent`), list indexes (`a.b[0]` or
  `a.b.0`), and `|` between alternatives, the first present one wins (`DownstreamStatus|OriginStatus`).
  A path with dots also matches a flat key spelled with those dots (`"http.request.method": ...`).
  A list at the end of a path means its first element, an empty list means absent (Caddy writes
  every header as a list, and a redacted `Authorization` as `[]`). `null`, `""` and `"-"` are absent,
  except that a logged empty method or path (nginx's record of a request line it could not read)
  gives method "" and path "", as in the nginx text format.
* Fields: `ts`, `ip`, `method`, `path`, `status` (required; `request`, a whole `METHOD uri HTTP/x`
  line, may stand in for `method` and `path`), `credential`, `bytes`, `duration`, `user_agent`,
  `request_id`, `reason`, `forwarded_for` (accepted, informational only: the record's ip is never
  taken from it), and the pseudo-field `duration_unit` (`s` default, `ms`, `us`, `ns`).
  `fields` override a preset key by key; an empty path drops an optional field of the preset.
* `ts` may be an epoch number (seconds, or ms/us/ns detected by size) or a string (ISO 8601,
  epoch, `dd/Mon/yyyy:HH:MM:SS`). `duration` may be a number in `duration_unit` or a string, either
  a number or a Go duration (`52.4ms`), as Caddy's `duration_format string` writes it.
* A credential logged as `REDACTED` (Traefik's redact mode) counts as absent.
* A line that is not a JSON object is unparsed (a blank line is skipped). An object without a
  required field is unparsed, unless the preset recognises the program's own non-access lines:
  Caddy's lines whose `msg` is not "handled request" (which also keeps `http.log.error` lines,
  which repeat an access line's request, from being counted twice) and Traefik's lines without
  any request field are skipped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from xinf_watch.formats.common import (
    ABSENT,
    MAX_BYTES,
    Parser,
    byte_count,
    go_duration,
    json_object,
    split_request,
    to_float,
)
from xinf_watch.formats.jsonpresets import JSON_PRESETS, JsonPreset
from xinf_watch.formats.timeparse import LastValueCache, epoch_seconds, parse_any
from xinf_watch.model import LineResult, Record

REQUIRED_FIELDS = ("ts", "ip", "method", "path", "status")
OPTIONAL_FIELDS = (
    "request", "credential", "consumer", "bytes", "duration", "user_agent", "request_id", "reason",
    "forwarded_for",
)  # fmt: skip
DURATION_UNITS = MappingProxyType({"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9})

_ABSENT_CREDENTIALS = frozenset(("", "-", "REDACTED"))
_SEGMENT = re.compile(r"([^.\[\]]+)((?:\[-?[0-9]{1,9}\])*)")
_INDEX = re.compile(r"\[(-?[0-9]{1,9})\]")
_INTEGER = re.compile(r"-?[0-9]{1,9}")


Step = tuple[str, int | None]  # a dict key, and the same as a list index when it is one
Path = tuple[tuple[Step, ...], ...]  # alternatives


def compile_path(spec: str, field: str) -> Path:
    """`a.b[0]|c` -> alternatives of steps; ValueError for a malformed path."""
    alternatives: list[tuple[Step, ...]] = []
    for alternative in spec.split("|"):
        steps: list[Step] = []
        for segment in alternative.split("."):
            m = _SEGMENT.fullmatch(segment)
            if m is None:
                raise ValueError(
                    f"json fields: {field}: {spec!r} is not a path "
                    "(expected e.g. request.headers.Authorization)"
                )
            key = m.group(1)
            steps.append((key, int(key) if _INTEGER.fullmatch(key) else None))
            steps.extend((index, int(index)) for index in _INDEX.findall(m.group(2)))
        alternatives.append(tuple(steps))
        if "." in alternative and "[" not in alternative:
            alternatives.append(((alternative, None),))
    return tuple(alternatives)


def resolve(obj: dict[str, Any], path: Path) -> Any:
    """The value at the first alternative that is present; a list gives its first element.

    `""` and `"-"` count as absent, so that the next alternative is tried, but are returned when no
    alternative has more: a logged empty method differs from a missing `method` key.
    """
    empty = None
    for steps in path:
        value: Any = obj
        for key, index in steps:
            if type(value) is dict:
                value = value.get(key)
            elif type(value) is list and index is not None and -len(value) <= index < len(value):
                value = value[index]
            else:
                value = None
                break
        if type(value) is list:
            value = value[0] if value else None
        if value == "" or value == "-":
            empty = value
        elif value is not None:
            return value
    return empty


Getter = Callable[[dict[str, Any]], Any]


def getter(path: Path) -> Getter:
    """`resolve` for one path, made once: a path of plain keys (most presets' fields are one key
    at the top of the object) is looked up without walking steps."""
    if any(len(steps) != 1 for steps in path):
        return lambda obj: resolve(obj, path)
    if len(path) == 1:
        ((key, _),) = path[0]

        def one_key(obj: dict[str, Any]) -> Any:
            value = obj.get(key)
            if type(value) is list:
                return value[0] if value else None
            return value

        return one_key
    keys = tuple(steps[0][0] for steps in path)

    def first_key(obj: dict[str, Any]) -> Any:
        empty = None
        for key in keys:
            value = obj.get(key)
            if value is None:  # most alternatives of a preset are absent from a given log
                continue
            if type(value) is list:
                value = value[0] if value else None
            if value == "" or value == "-":
                empty = value
            elif value is not None:
                return value
        return empty

    return first_key


def _text(value: Any) -> str | None:
    if type(value) is str:
        return value
    if type(value) is int or type(value) is float:
        return str(value)
    return None


def _optional_text(value: Any) -> str | None:
    text = _text(value)
    return None if text in ABSENT else text


def _status(value: Any) -> int | None:
    if type(value) is int:
        return value if 0 <= value <= 999 else None
    if type(value) is str and value.isascii() and value.isdigit() and len(value) <= 3:
        return int(value)
    if type(value) is float and value.is_integer() and 0 <= value <= 999:
        return int(value)
    return None


def _bytes(value: Any) -> int | None:
    if type(value) is int or (type(value) is float and math.isfinite(value)):
        return int(value) if 0 <= value < MAX_BYTES else None
    if type(value) is str:
        return byte_count(value)
    return None


def compile_json(preset: str | None, fields: Mapping[str, str] | None) -> Parser:
    """A parser for JSON lines from a preset name and/or a field mapping; ValueError for bad settings."""
    if preset is None and not fields:
        raise ValueError(f"json format needs a preset ({', '.join(JSON_PRESETS)}) or fields")
    chosen = _preset(preset)
    mapping = dict(chosen.fields) if chosen else {}
    mapping.update(_checked_fields(fields or {}))
    _check_required(mapping)
    unit = mapping.pop("duration_unit", "") or "s"
    if unit not in DURATION_UNITS:
        raise ValueError(f"json fields: duration_unit {unit!r} (expected one of {', '.join(DURATION_UNITS)})")
    paths = {field: compile_path(spec, field) for field, spec in mapping.items() if spec}
    return _build_parser(paths, DURATION_UNITS[unit], chosen.own_line if chosen else None)


def _preset(name: str | None) -> JsonPreset | None:
    if name is None:
        return None
    chosen = JSON_PRESETS.get(name)
    if chosen is None:
        raise ValueError(f"unknown json preset {name!r} (expected one of {', '.join(JSON_PRESETS)})")
    return chosen


def _checked_fields(fields: Mapping[str, str]) -> dict[str, str]:
    """The `fields` setting, each a known field with a path string; ValueError at the first that is not."""
    for field, spec in fields.items():
        if field not in REQUIRED_FIELDS and field not in OPTIONAL_FIELDS and field != "duration_unit":
            known = ", ".join((*REQUIRED_FIELDS, *OPTIONAL_FIELDS, "duration_unit"))
            raise ValueError(f"json fields: unknown field {field!r} (expected one of {known})")
        if not isinstance(spec, str):
            raise ValueError(f"json fields: {field}: expected a path string, got {spec!r}")
    return dict(fields)


def _check_required(mapping: Mapping[str, str]) -> None:
    """ValueError naming the required fields without a path (`request` stands in for method and path)."""
    missing = [field for field in REQUIRED_FIELDS if not mapping.get(field)]
    if mapping.get("request"):
        missing = [field for field in missing if field not in ("method", "path")]
    if missing:
        raise ValueError(
            f"json fields: no path for {', '.join(missing)} (required: {', '.join(REQUIRED_FIELDS)})"
        )


def _build_parser(
    paths: dict[str, Path], scale: float, own_line: Callable[[dict[str, Any]], bool] | None
) -> Parser:
    ts_text = LastValueCache(parse_any)
    get = {field: getter(path) for field, path in paths.items()}
    p_ts, p_ip, p_status = get["ts"], get["ip"], get["status"]
    p_method, p_path, p_request = get.get("method"), get.get("path"), get.get("request")
    p_credential, p_consumer, p_bytes, p_duration, p_user_agent, p_request_id, p_reason = (
        get.get(field)
        for field in ("credential", "consumer", "bytes", "duration", "user_agent", "request_id", "reason")
    )

    def timestamp(value: Any) -> float | None:
        if type(value) is float or type(value) is int:
            return epoch_seconds(value)
        return ts_text(value) if type(value) is str else None

    def duration(value: Any) -> float | None:
        if type(value) is float or type(value) is int:
            seconds = value * scale
        elif type(value) is str:
            number = to_float(value)
            if number is None:
                return go_duration(value)
            seconds = number * scale
        else:
            return None
        return seconds if math.isfinite(seconds) else None

    def parse(line: str) -> Record | LineResult:
        obj = json_object(line)
        if isinstance(obj, LineResult):
            return obj
        if own_line is not None and own_line(obj):
            return LineResult.SKIPPED
        ts = timestamp(p_ts(obj))
        ip = _text(p_ip(obj))
        if ip in ABSENT:
            return LineResult.UNPARSED
        method = _text(p_method(obj)) if p_method else None
        path = _text(p_path(obj)) if p_path else None
        if p_request and (method is None or path is None):
            request = _text(p_request(obj))
            if request is not None:
                request_method, request_path = split_request(request)
                method = request_method if method is None else method
                path = request_path if path is None else path
        status = _status(p_status(obj))
        if ts is None or ip is None or method is None or path is None or status is None:
            return LineResult.UNPARSED
        # A request line nginx could not read is logged with an empty method and URI.
        method = "" if method == "-" else method
        path = "" if path == "-" else path
        credential = _text(p_credential(obj)) if p_credential else None
        # Positional, in the order of Record's fields (keywords cost 3x as much: model.py)
        return Record(
            ts,
            ip,
            method,
            path,
            status,
            None if credential in _ABSENT_CREDENTIALS else credential,
            _bytes(p_bytes(obj)) if p_bytes else None,
            duration(p_duration(obj)) if p_duration else None,
            _optional_text(p_user_agent(obj)) if p_user_agent else None,
            _optional_text(p_request_id(obj)) if p_request_id else None,
            False,  # ip_forwarded
            _optional_text(p_reason(obj)) if p_reason else None,
            None,  # key_hint
            _optional_text(p_consumer(obj)) if p_consumer else None,
        )

    return parse
