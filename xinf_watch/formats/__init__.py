"""Log formats: one pure function per source line -> `Record`, or a `LineResult` saying why not.

`build_parser(format, ...)` checks the settings of one source once and returns a `Parser`; the
parser never raises, whatever the line (binary junk, 1 MB, cut short): a line that should have
been an access record and is not gives `LineResult.UNPARSED`; a line of the program that is not
an access record (startup lines, error-log lines, blank lines) gives `LineResult.SKIPPED`.
Parsers keep only a small cache of the last timestamp they read (the audit.log parser also a
bounded memory of recent requests, to drop their second rows), so build one per source.

Formats: `nginx` (a `log_format` string or preset), `json` (a preset and/or a field mapping),
`haproxy` (`option httplog`, syslog prefix optional), `xinference` (the uvicorn access lines of
Xinference's xinference.log, any version), `xinference-audit` (Xinference's audit.log), `regex`
(named groups). Each module's docstring states its rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from xinf_watch.formats.audit import compile_audit
from xinf_watch.formats.common import Parser
from xinf_watch.formats.haproxy import compile_haproxy
from xinf_watch.formats.jsonlog import compile_json
from xinf_watch.formats.jsonpresets import JSON_PRESETS
from xinf_watch.formats.nginx import NGINX_PRESETS, compile_log_format
from xinf_watch.formats.regex import compile_regex
from xinf_watch.formats.xinference import compile_xinference

__all__ = ["FORMATS", "JSON_PRESETS", "NGINX_PRESETS", "Parser", "build_parser"]

_OPTIONS = ("log_format", "preset", "fields", "pattern")


def _nginx(log_format: str | None, preset: str | None) -> Parser:
    if log_format in NGINX_PRESETS and preset is None:
        log_format, preset = None, log_format  # rules.yaml names a preset in log_format
    if log_format is not None and preset is not None:
        raise ValueError("nginx: give log_format or preset, not both")
    if log_format is None:
        preset = preset or "combined"
        if preset not in NGINX_PRESETS:
            raise ValueError(f"unknown nginx preset {preset!r} (expected one of {', '.join(NGINX_PRESETS)})")
        log_format = NGINX_PRESETS[preset]
    return compile_log_format(log_format)


# format -> (builder, the options it takes, as keywords); the order of config.values.SOURCE_FORMATS.
_BUILDERS: dict[str, tuple[Callable[..., Parser], tuple[str, ...]]] = {
    "nginx": (_nginx, ("log_format", "preset")),
    "json": (compile_json, ("preset", "fields")),
    "haproxy": (compile_haproxy, ("fields",)),
    "xinference": (compile_xinference, ()),
    "xinference-audit": (compile_audit, ()),
    "regex": (compile_regex, ("pattern",)),
}
FORMATS = tuple(_BUILDERS)


def build_parser(
    format: str,
    *,
    log_format: str | None = None,
    preset: str | None = None,
    fields: Mapping[str, str] | None = None,
    pattern: str | None = None,
    wrapped: bool = False,
) -> Parser:
    """The parser for one source's settings; ValueError with a one-line message for bad settings.
    `wrapped`: the lines come out of a container log wrapper (a `regex` may then omit `ts`)."""
    entry = _BUILDERS.get(format)
    if entry is None:
        raise ValueError(f"unknown log format {format!r} (expected one of {', '.join(FORMATS)})")
    builder, accepted = entry
    given = {"log_format": log_format, "preset": preset, "fields": fields, "pattern": pattern}
    extra = [name for name in _OPTIONS if given[name] is not None and name not in accepted]
    if extra:
        raise ValueError(
            f"{format}: option {', '.join(extra)} does not apply (it reads {', '.join(accepted)})"
        )
    if format == "regex":
        return compile_regex(pattern, time_from_runtime=wrapped)
    return builder(**{name: given[name] for name in accepted})
