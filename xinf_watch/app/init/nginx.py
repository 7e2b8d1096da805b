"""nginx configs for `init`: the server block that proxies to Xinference, its access log and format.

The config is read by nginxconf.py (a file with its includes, or the dump of `nginx -T`).
`access_log` follows nginx's inheritance: a level that sets any access_log replaces all those it
would inherit (location, enclosing location, server, http); with none anywhere nginx writes
`logs/access.log` in the predefined `combined` format, which has no Authorization header.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from xinf_watch.app.init.gateway import Fix, GatewayLog, InitError, Upstream, split_host_port
from xinf_watch.app.init.nginxconf import Directive, load_dump, run_dump
from xinf_watch.formats.nginx import NGINX_PRESETS, compile_log_format

RELOAD = "nginx -t && systemctl reload nginx"
_CREDENTIAL = re.compile(r"\$\{?http_(?:authorization|x_api_key)\b", re.IGNORECASE)
_VARIABLE = re.compile(r"\$\{?\w+\}?")
_URL = re.compile(r"(?i)(https?)://([^/?]+)")


def from_command(command: Sequence[str], upstream: Upstream) -> list[GatewayLog]:
    """The blocks that proxy to `upstream` in what `nginx -T` (or `command`) prints."""
    origin = " ".join(command)
    directives, conf_dir = load_dump(run_dump(command), origin)
    return find_logs(directives, upstream, conf_dir, origin)


@dataclass(frozen=True, slots=True)
class _Level:
    """The access_log directives in force for a block, and the block that set them."""

    kind: str  # http | server | location | none
    block: Directive | None
    logs: tuple[Directive, ...]


def find_logs(
    directives: list[Directive], upstream: Upstream, conf_dir: str, origin: str
) -> list[GatewayLog]:
    """A GatewayLog for each location that proxies to `upstream`; InitError (naming `origin`) if none."""
    https = [d for d in directives if d.name == "http" and d.block is not None]
    if not https and any(d.name == "server" for d in directives):  # a lone server snippet
        https = [Directive("http", [], "", 0, directives)]
    found: list[GatewayLog] = []
    seen_passes: list[str] = []
    for http in https:
        found += _http_logs(http, upstream, conf_dir, seen_passes)
    if not found:
        what = "; proxy_pass seen: " + ", ".join(seen_passes[:5]) if seen_passes else ": no proxy_pass at all"
        raise InitError(f"{origin}: no server block proxies to Xinference ({upstream}){what}")
    return found


def _http_logs(
    http: Directive, upstream: Upstream, conf_dir: str, seen_passes: list[str]
) -> list[GatewayLog]:
    """find_logs for one http block; appends each proxy_pass met to `seen_passes`."""
    formats = {d.args[0]: d for d in http.children("log_format") if d.args}
    upstreams = _upstream_blocks(http)
    found: list[GatewayLog] = []
    http_level = _level("http", http, _Level("none", None, ()))
    for server in http.children("server"):
        server_level = _level("server", server, http_level)
        for level, proxy in _proxies(server, server_level):
            seen_passes.append(f"{proxy.args[0] if proxy.args else ''} at {proxy.where}")
            targets = _targets(proxy.args[0] if proxy.args else "", upstreams)
            if any(upstream.matches(host, port) for host, port in targets):
                found.append(_gateway_log(http, server, level, formats, conf_dir))
    return found


def _upstream_blocks(http: Directive) -> dict[str, list[tuple[str, int]]]:
    """The http block's `upstream` blocks: name -> their servers' (host, port)."""
    return {
        d.args[0]: [hp for s in d.children("server") if s.args and (hp := split_host_port(s.args[0], 80))]
        for d in http.children("upstream")
        if d.args
    }


def _level(kind: str, block: Directive, parent: _Level) -> _Level:
    logs = tuple(block.children("access_log"))
    return _Level(kind, block, logs) if logs else parent


def _proxies(block: Directive, level: _Level) -> Iterator[tuple[_Level, Directive]]:
    """(access_log level in force there, proxy_pass) for every proxy_pass under block."""
    for d in block.block or ():
        if d.name == "proxy_pass":
            yield level, d
        elif d.name in ("location", "if", "limit_except") and d.block is not None:
            yield from _proxies(d, _level("location", d, level))


def _targets(url: str, upstreams: dict[str, list[tuple[str, int]]]) -> list[tuple[str, int]]:
    m = _URL.match(url)
    if m is None or "$" in m.group(2) or m.group(2).startswith("unix:"):
        return []
    if m.group(2) in upstreams:
        return upstreams[m.group(2)]
    hp = split_host_port(m.group(2), 443 if m.group(1).lower() == "https" else 80)
    return [hp] if hp else []


def _format_of(log: Directive, formats: dict[str, Directive]) -> str | None:
    """The log_format string an access_log line uses (with `escape=` first, as rules.yaml takes it)."""
    name = log.args[1] if len(log.args) > 1 and "=" not in log.args[1] else "combined"
    if name == "combined":
        return NGINX_PRESETS["combined"]
    definition = formats.get(name)
    if definition is None:
        return None
    parts = definition.args[1:]
    escape = parts[0] if parts and parts[0].startswith("escape=") else ""
    body = "".join(parts[1:] if escape else parts)
    return f"{escape} {body}" if escape else body


def _readable(log_format: str) -> bool:
    try:
        compile_log_format(log_format)
    except ValueError:
        return False
    return True


def _file_path(log: Directive, conf_dir: str) -> tuple[str | None, str | None]:
    """(path or glob of the log file, a note); None when the log is not a file."""
    path = log.args[0] if log.args else "off"
    if path == "off" or path.startswith(("syslog:", "/dev/std")):
        return None, None
    note = None
    if "$" in path:
        path = _VARIABLE.sub("*", path)
        note = f"{log.where}: the access_log path has variables; read as the glob {path}"
    return os.path.join(conf_dir, path), note


def _gateway_log(
    http: Directive,
    server: Directive,
    level: _Level,
    formats: dict[str, Directive],
    conf_dir: str,
) -> GatewayLog:
    listen = next((d.args[0] for d in server.children("listen") if d.args), "80")
    label = listen.rpartition(":")[2] or listen
    notes: list[str] = []
    usable: list[tuple[str, str]] = []
    for log in level.logs:
        path, note = _file_path(log, conf_dir)
        notes += [note] if note else []
        fmt = _format_of(log, formats)
        problem = _unusable(log, path, fmt)
        if problem is not None:
            notes.append(problem)
        elif path is not None and fmt is not None:
            usable.append((path, fmt))
    if usable:
        path, fmt = usable[0]
        preset = next((name for name, text in NGINX_PRESETS.items() if text == fmt), fmt)
        notes += [f"also written to {p}: not read (the same requests)" for p, _ in usable[1:]]
        return GatewayLog(
            "nginx", server.where, label, path, {"format": "nginx", "log_format": preset}, notes=tuple(notes)
        )
    return _with_fix(http, server, level, formats, label, notes, conf_dir)


def _unusable(log: Directive, path: str | None, fmt: str | None) -> str | None:
    """Why xinf-watch cannot read the keys from this access_log (a note), or None if it can."""
    if path is None:
        what = "turns logging off here: remove it" if log.args[:1] == ["off"] else "is not a file"
        return f"{log.where}: access_log {log.args[0] if log.args else ''} {what}"
    if fmt is None:
        return f"{log.where}: log_format {log.args[1]!r} is not defined in the files read"
    if not _CREDENTIAL.search(fmt):
        return f"{log.where}: {path} does not log the Authorization header"
    if not _readable(fmt):
        return f"{log.where}: xinf-watch cannot read the log_format of {path}"
    return None


def _with_fix(
    http: Directive,
    server: Directive,
    level: _Level,
    formats: dict[str, Directive],
    label: str,
    notes: list[str],
    conf_dir: str,
) -> GatewayLog:
    """The log_format and access_log lines that make nginx log the key for this server."""
    wanted = NGINX_PRESETS["combined_key"]
    name = "combined_key"
    if name in formats and _format_of(Directive("access_log", ["", name], "", 0), formats) != wanted:
        name = "xinf_watch_key"
    fixes: list[Fix] = []
    if _format_of(Directive("access_log", ["", name], "", 0), formats) != wanted:
        quoted = wanted.replace("'", "\\'")
        where = f"the http block ({http.where})" if http.line else "the http block"
        fixes.append(Fix(where, f"log_format {name} '{quoted}';"))
    files = [p for log in level.logs if (p := _file_path(log, conf_dir)[0])]
    directory = os.path.dirname(files[0]) if files else "/var/log/nginx"
    path = os.path.join(directory, "xinference.access.log")
    target = level.block if level.kind in ("server", "location") and level.block is not None else server
    kind = "server" if target is server else "location"
    fixes.append(Fix(f"the {kind} block ({target.where})", f"access_log {path} {name};"))
    if level.kind == "http":
        notes.append(
            f"the access_log lines of the http block ({level.logs[0].where}) stop applying to this "
            "server once it has its own: repeat them in its server block to keep them"
        )
    elif level.kind == "none":
        notes.append("no access_log applies to this server: nginx writes logs/access.log (combined)")
    return GatewayLog(
        "nginx",
        server.where,
        label,
        path,
        {"format": "nginx", "log_format": "combined_key"},
        fix=tuple(fixes),
        reload=RELOAD,
        notes=tuple(notes),
    )
