"""`xinf-watch init`: find the gateway and Xinference's keys, write rules.yaml and keys.yaml.

Gateways come from the configs given (`--nginx-config`, `--caddy-config`, `--haproxy-config`),
else from this host: `nginx -T` when nginx is installed, /etc/caddy/Caddyfile,
/etc/haproxy/haproxy.cfg (with the rsyslog rules of /etc/rsyslog.conf and /etc/rsyslog.d). A
config given that has no block proxying to Xinference is an error; one found on the host is only
noted. Each block found becomes one source; `--path-map FROM=TO` reads a log whose config names
it under FROM at the same place under TO (a container's log volume, logs copied elsewhere).
Everything found is printed, with the exact lines to add to a gateway that does not log the
Authorization header yet; the config written is the one that works once they are added. The
caller (app/cli.py) then runs `check` on the rules.yaml written.
"""

from __future__ import annotations

import grp
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from xinf_watch import SHIPPED_RULES
from xinf_watch.app.init import auth, caddy, haproxy, nginx, nginxconf
from xinf_watch.app.init.gateway import GatewayLog, InitError, Upstream
from xinf_watch.app.init.write import Source, rules_yaml, state_dir, write_files

ETC_DIR = Path("/etc/xinf-watch")
_HOST_CADDYFILE = Path("/etc/caddy/Caddyfile")
_HOST_HAPROXY = Path("/etc/haproxy/haproxy.cfg")
_HOST_RSYSLOG = (Path("/etc/rsyslog.conf"), Path("/etc/rsyslog.d"))
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True, slots=True)
class InitOptions:
    out: Path | None = None  # default: /etc/xinf-watch as root, else the current directory
    force: bool = False
    nginx_config: Path | None = None
    nginx_command: Sequence[str] | None = None
    caddy_config: Path | None = None
    haproxy_config: Path | None = None
    rsyslog_config: Path | None = None
    upstream: Upstream = Upstream()
    path_map: Sequence[tuple[str, str]] = ()
    auth_config: Path | None = None
    xinference_home: Path | None = None
    state_dir: Path | None = None
    group: str | None = None  # the files readable by this group (the service's), else keys.yaml 0600


def default_out() -> Path:
    return ETC_DIR if os.geteuid() == 0 else Path.cwd()


def run_init(opts: InitOptions, out: TextIO) -> Path:
    """Find, print, write; returns the rules.yaml written (InitError or KeyFileError otherwise)."""
    logs = _gateways(opts, out)
    sources = _sources(logs, opts.path_map, out)
    found_auth = auth.find_auth(opts.auth_config, opts.xinference_home)
    entries = auth.registry_entries(found_auth)
    for a in found_auth:
        out.write(f"found Xinference {a.kind}: {a.path} ({a.how})\n")
    if not found_auth:
        out.write(
            "found no Xinference auth config or auth.db (looked in "
            f"{auth.xinference_home(opts.xinference_home)}"
            "/auth/auth.db; give --auth-config FILE or --xinference-home DIR): keys.yaml lists no key\n"
        )
    directory = (opts.out or default_out()).resolve()
    rules_path, keys_path = directory / "rules.yaml", directory / "keys.yaml"
    state = state_dir(opts.state_dir)
    now = datetime.now(UTC)
    header = (
        f"# Written by `xinf-watch init` on {now:%Y-%m-%d}: sources, keys, metrics and state found on this\n"
        "# host; everything else as shipped.\n#\n"
    )
    keys = [(str(a.path), f"Xinference {a.kind} (read-only, never copied)") for a in found_auth]
    keys.append((str(keys_path), "xinf-watch key metadata: alias, owner, expiry, allowed_ips"))
    rules_text = rules_yaml(SHIPPED_RULES.read_text(encoding="utf-8"), sources, keys, state, header)
    # With --group the service's group reads both; without, keys.yaml is for its owner alone.
    rules_mode, keys_mode = (0o640, 0o640) if opts.group else (0o644, 0o600)
    write_files(
        [
            (rules_path, rules_text, rules_mode),
            (keys_path, auth.keys_yaml(entries, found_auth, now), keys_mode),
        ],
        opts.force,
        _gid(opts.group),
    )
    out.write(
        f"wrote {rules_path}: {len(sources)} source(s), {len(keys)} key file(s), state.dir {state}, "
        "metrics on 127.0.0.1:9877, the shipped rules\n"
    )
    aliases = ", ".join(auth.aliases(entries)) or "none"
    out.write(
        f"wrote {keys_path} (mode {keys_mode:04o}): {len(entries)} key(s) by alias ({aliases}); "
        "fill in expires_at and allowed_ips\n"
    )
    pending = [log for log in logs if log.fix]
    if pending:
        out.write(
            "then: add the lines printed above for "
            f"{', '.join(f'{log.gateway} {log.where}' for log in pending)}"
            ", reload, and xinf-watch sees the keys\n"
        )
    return rules_path


def _gid(name: str | None) -> int:
    if name is None:
        return -1
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise InitError(f"--group {name}: no such group") from None


def _gateways(opts: InitOptions, out: TextIO) -> list[GatewayLog]:
    given = [p for p in (opts.nginx_config, opts.caddy_config, opts.haproxy_config) if p is not None]
    logs: list[GatewayLog] = []
    if opts.nginx_config is not None:
        logs += nginx.find_logs(
            nginxconf.load_file(opts.nginx_config),
            opts.upstream,
            str(opts.nginx_config.parent),
            str(opts.nginx_config),
        )
    if opts.caddy_config is not None:
        logs += caddy.find_logs(caddy.load_file(opts.caddy_config), opts.upstream, str(opts.caddy_config))
    if opts.haproxy_config is not None:
        logs += haproxy.find_logs(haproxy.load_file(opts.haproxy_config), opts.upstream, _rsyslog(opts))
    if opts.nginx_command is not None:
        logs += nginx.from_command(opts.nginx_command, opts.upstream)
    elif not given:
        logs += _detect(opts, out)
    if not logs:
        raise InitError(
            "found no gateway in front of Xinference on this host: give --nginx-config, "
            "--caddy-config or --haproxy-config (and --upstream HOST:PORT if Xinference is not on port 9997)"
        )
    return logs


def _detect(opts: InitOptions, out: TextIO) -> list[GatewayLog]:
    """The gateways installed here; one without a proxy to Xinference is only noted."""
    found: list[GatewayLog] = []
    caddyfile, haproxy_cfg = _HOST_CADDYFILE, _HOST_HAPROXY
    attempts: list[tuple[str, Callable[[], list[GatewayLog]]]] = []
    if shutil.which("nginx"):
        attempts.append(("nginx -T", lambda: nginx.from_command(["nginx", "-T"], opts.upstream)))
    if caddyfile.is_file():
        attempts.append(
            (
                str(caddyfile),
                lambda: caddy.find_logs(caddy.load_file(caddyfile), opts.upstream, str(caddyfile)),
            )
        )
    if haproxy_cfg.is_file():
        attempts.append(
            (
                str(haproxy_cfg),
                lambda: haproxy.find_logs(haproxy.load_file(haproxy_cfg), opts.upstream, _rsyslog(opts)),
            )
        )
    for what, attempt in attempts:
        try:
            found += attempt()
        except InitError as e:
            out.write(f"note: {what}: {e}\n")
    return found


def _rsyslog(opts: InitOptions) -> tuple[str, str] | None:
    if opts.rsyslog_config is not None:
        return haproxy.rsyslog_file(opts.rsyslog_config)
    main, directory = _HOST_RSYSLOG
    for path in [*sorted(directory.glob("*.conf")), main] if directory.is_dir() else [main]:
        if path.is_file():
            try:
                found = haproxy.rsyslog_file(path)
            except InitError:
                continue
            if found:
                return found
    return None


def _sources(logs: list[GatewayLog], path_map: Sequence[tuple[str, str]], out: TextIO) -> list[Source]:
    sources: list[Source] = []
    by_path: dict[str, str] = {}
    for log in logs:
        path = _mapped(log.path, path_map)
        name = "gateway" if len(logs) == 1 else _NAME_CHARS.sub("-", f"{log.gateway}-{log.label}")
        out.write(f"found {log.gateway}: {log.where} proxies to Xinference\n")
        shown = f"{log.path} (read as {path})" if path != log.path else path
        settings = ", ".join(f"{k} {_shown(v)}" for k, v in log.source.items() if k != "format")
        out.write(f"  access log: {shown}, {log.source['format']} {settings}\n")
        for note in log.notes:
            out.write(f"  note: {note}\n")
        if log.fix:
            out.write(
                "  this log does not carry the Authorization header yet "
                "(xinf-watch needs it to name the key); add:\n"
            )
            for fix in log.fix:
                out.write(f"    in {fix.where}:\n")
                out.write("".join(f"      {line}\n" for line in fix.line.splitlines()))
            out.write(f"    then: {log.reload}\n")
        if path in by_path:
            out.write(f"  (the same file as source {by_path[path]!r})\n")
            continue
        by_path[path] = name
        comments = [f"{log.gateway}: {log.where} proxies to Xinference"]
        if log.fix:
            comments.append("no keys in this log until the lines `xinf-watch init` printed are added")
        settings_out: dict[str, object] = {"name": name, "path": path, **log.source}
        sources.append(Source(settings_out, tuple(comments)))
    return sources


def _shown(value: object) -> str:
    return " ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, dict) else str(value)


def _mapped(path: str, path_map: Sequence[tuple[str, str]]) -> str:
    for before, after in path_map:
        before = before.rstrip("/")
        if path == before or path.startswith(before + "/"):
            return str(Path(after).resolve()) + path[len(before) :]
    return path
