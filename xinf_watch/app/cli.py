"""Command line: argv in, exit code out (docs/DESIGN.md section 2).

Every failure the user can cause ends as one clear line on stderr and exit code 2 (bad usage,
invalid config) or 1 (runtime failure); a traceback only with `--debug`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from enum import IntEnum
from pathlib import Path
from typing import TextIO

import orjson

from xinf_watch import __version__
from xinf_watch.app.alertsummary import DEFAULT_TOP, format_table, to_json
from xinf_watch.app.pipeline import Pipeline
from xinf_watch.app.replay import ReplayInput, replay, replay_summary, source_files
from xinf_watch.config.schema import Config, ConfigError, empty_config, load_config
from xinf_watch.config.sources import SourceConfig
from xinf_watch.ingest.wrappers import WRAPPERS
from xinf_watch.keys.audit import DEFAULT_MAX_AGE, DEFAULT_WITHIN, duration_arg, run_keys_audit, time_arg
from xinf_watch.keys.files import KeyFileError, load_registry
from xinf_watch.keys.registry import KeyRegistry
from xinf_watch.metrics.store import MetricsStore, StoreCollector, exposition
from xinf_watch.model import Severity


class Exit(IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2


# --format shorthands: a preset name stands for its format plus that preset.
FORMAT_SHORTHANDS: dict[str, tuple[str, str | None, str | None]] = {
    # name: (format, nginx log_format preset, json preset)
    "nginx": ("nginx", None, None),
    "combined": ("nginx", "combined", None),
    "combined_key": ("nginx", "combined_key", None),
    "ingress-nginx": ("nginx", "ingress-nginx", None),
    "ingress-nginx-key": ("nginx", "ingress-nginx-key", None),
    "nginx-json": ("json", None, "nginx-json"),
    "caddy": ("json", None, "caddy"),
    "traefik": ("json", None, "traefik"),
    "kong": ("json", None, "kong"),
    "apisix": ("json", None, "apisix"),
    "haproxy": ("haproxy", None, None),
    "xinference": ("xinference", None, None),
    "xinference-audit": ("xinference-audit", None, None),
}


class UsageError(Exception):
    """Bad arguments that argparse cannot see (an unknown source name...)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xinf-watch",
        description="Per-key monitoring and alerting for Xinference and the gateways in front of it.",
        epilog="Run `xinf-watch COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"xinf-watch {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    # --debug is accepted after the command too (`xinf-watch check --rules x --debug`)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks on errors")

    run = commands.add_parser(
        "run", parents=[common],
        help="run the daemon in the foreground (the default: `xinf-watch --rules FILE`)",
        description="Follow the configured log files, export metrics, raise alerts. Stops cleanly on "
        "SIGTERM/SIGINT; SIGHUP reloads rules.yaml and the key files (a broken new config is refused "
        "and the running one kept).",
    )
    run.add_argument("--rules", required=True, type=Path, metavar="FILE", help="the rules.yaml to run")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                     help="log verbosity on stderr (default: info)")

    check = commands.add_parser(
        "check", parents=[common],
        help="validate the config, key files and log formats",
        description="Validate rules.yaml, the key files it names and its log formats. "
        "Exit 0 when valid, 2 when not; every problem is one line naming file, line and field.",
    )
    check.add_argument("--rules", required=True, type=Path, metavar="FILE", help="the rules.yaml to check")

    demo = commands.add_parser(
        "demo", parents=[common], help="a live daemon on simulated gateway traffic, nothing to set up",
        description="Start the real daemon with the shipped rules on a temporary directory, append "
        "simulated nginx traffic with incidents, and print the alerts as they fire.",
    )
    demo.add_argument("--duration", type=float, default=45.0, metavar="SECONDS",
                      help="how long to run (default 45; Ctrl-C stops earlier)")
    demo.add_argument("--port", type=int, metavar="PORT", help="metrics port (default: a free one)")

    sim = commands.add_parser(
        "simulate", parents=[common], help="write a simulated week of gateway traffic with known incidents",
        description="Write DIR/access.log (nginx combined_key lines in front of Xinference), keys.yaml, "
        "rules.yaml (the shipped rules, or --rules, pointed at them) and truth.json (the injected "
        "incidents): the same files for the same --seed. "
        "Replay with `xinf-watch replay --rules DIR/rules.yaml`.",
    )
    sim.add_argument("--days", type=int, default=7, help="days from a Monday 00:00 UTC (default 7)")
    sim.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    sim.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory to write into")
    sim.add_argument("--rules", type=Path, metavar="FILE",
                     help="rules.yaml to point at the files (default: the shipped rules)")

    rp = commands.add_parser(
        "replay", parents=[common],
        help="process log files start to end and print the alerts",
        description="Read log files start to end through the same stages as the daemon, with the "
        "clock taken from the log timestamps. Prints alerts (or, with --events, every attributed "
        "event) as JSON lines on stdout; with --summary, how often each rule fired per day instead. "
        "Starts from empty state; never touches the state dir.",
    )
    rp.add_argument(
        "--rules",
        type=Path,
        metavar="FILE",
        help="rules.yaml (sources, keys, rules); without it: no keys, no rules, --format needed",
    )
    rp.add_argument(
        "--source",
        metavar="NAME",
        help="read FILEs as this configured source (or name the ad-hoc --format source)",
    )
    rp.add_argument(
        "--format",
        dest="log_format_name",
        metavar="F",
        choices=sorted(FORMAT_SHORTHANDS),
        help="read FILEs in this format: " + ", ".join(sorted(FORMAT_SHORTHANDS)),
    )
    rp.add_argument("--log-format", metavar="STRING", help="nginx log_format string for --format nginx")
    rp.add_argument("--wrapper", choices=WRAPPERS,
                    help="with --format: the FILEs are container logs, each line wrapped by the runtime")
    rp.add_argument("--events", action="store_true", help="print every attributed event instead of alerts")
    rp.add_argument(
        "--summary",
        action="store_true",
        help="instead of the alerts: per rule, how many it would have raised per UTC day, and its top "
        "groups (to tune rules before enabling them)",
    )
    rp.add_argument("--json", action="store_true", help="with --summary: a JSON object instead of the table")
    rp.add_argument(
        "--top", type=int, metavar="N", help=f"with --summary: groups shown per rule (default {DEFAULT_TOP})"
    )
    rp.add_argument(
        "--metrics-out", type=Path, metavar="FILE", help="write the final Prometheus text exposition to FILE"
    )
    rp.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    rp.add_argument(
        "files",
        nargs="*",
        type=Path,
        metavar="FILE",
        help="log files (gzip read transparently); default: the configured sources' files",
    )

    add_init_parser(commands, common)

    keys = commands.add_parser(
        "keys",
        help="reports on the key registry (keys audit)",
        description="Reports on the keys that rules.yaml's key files list.",
    )
    keys_commands = keys.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)
    audit = keys_commands.add_parser(
        "audit", parents=[common],
        help="key hygiene report: expired, expiring, no expiry, too old, admin, shared keys",
        description="Judge every key of rules.yaml's key files: expired, expiring, no expiry, too "
        "old, admin, shared (no owner), unknown permissions, no allowed_ips, revoked. A table on "
        "stdout (or JSON lines with --json), a summary on stderr; exit 1 when a finding is at or "
        "above --fail-on, else 0. Keys are named by alias only.",
    )
    audit.add_argument(
        "--rules", required=True, type=Path, metavar="FILE", help="rules.yaml (the keys: files are audited)"
    )
    audit.add_argument(
        "--at",
        type=time_arg,
        metavar="ISO",
        help="judge at this time instead of now, e.g. 2026-11-28T07:10:00Z (UTC if no offset)",
    )
    audit.add_argument(
        "--within",
        type=duration_arg,
        default=DEFAULT_WITHIN,
        metavar="DURATION",
        help="report keys that expire within this (default 7d)",
    )
    audit.add_argument(
        "--max-age",
        type=duration_arg,
        default=DEFAULT_MAX_AGE,
        metavar="DURATION",
        help="report keys created longer ago than this (default 90d)",
    )
    audit.add_argument(
        "--fail-on",
        type=Severity,
        default=Severity.CRITICAL,
        choices=list(Severity),
        metavar="SEVERITY",
        help="exit 1 when a finding is at or above this: info, warning, critical (default critical)",
    )
    audit.add_argument("--json", action="store_true", help="one JSON object per finding instead of the table")
    return parser


COMMANDS = ("run", "check", "replay", "demo", "simulate", "keys", "init")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--rules" in argv and not any(a in COMMANDS for a in argv):
        argv.insert(0, "run")  # `xinf-watch --rules rules.yaml` runs the daemon
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return Exit.USAGE
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "check":
            return cmd_check(args, sys.stdout)
        if args.command == "demo":
            from xinf_watch.app.demo import run_demo

            return run_demo(args.duration, args.port)
        if args.command == "simulate":
            from xinf_watch.simulate.run import run_simulate

            return run_simulate(args.days, args.seed, args.out, args.rules, sys.stdout)
        if args.command == "init":
            return cmd_init(args, sys.stdout)
        if args.command == "keys":
            return run_keys_audit(
                args.rules,
                at=args.at,
                within=args.within,
                max_age=args.max_age,
                fail_on=args.fail_on,
                as_json=args.json,
                out=sys.stdout,
                err=sys.stderr,
            )
        return cmd_replay(args, sys.stdout)
    except BrokenPipeError:
        # stdout closed early (`| head`): not an error; keep Python from complaining at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return Exit.OK
    except KeyboardInterrupt:
        return 130
    except (ConfigError, KeyFileError, UsageError, OSError) as exc:
        if args.debug:
            raise
        message, code = describe_error(exc)
        print(message, file=sys.stderr)
        return code


def describe_error(exc: Exception) -> tuple[str, Exit]:
    """The user-facing lines for an error the user can cause, and the exit code."""
    if isinstance(exc, ConfigError | KeyFileError):
        return str(exc), Exit.USAGE  # already `file:line: path: what (expected ...)`, a line each
    if isinstance(exc, UsageError):
        return f"xinf-watch: {exc}", Exit.USAGE
    assert isinstance(exc, OSError)
    return f"xinf-watch: {exc.filename or ''}: {exc.strerror or exc}", Exit.FAILURE

def load_everything(rules: Path) -> tuple[Config, KeyRegistry]:
    """Config and key registry, with the errors of both reported together."""
    errors: list[str] = []
    config = load_config(rules)
    try:
        registry = load_registry(config.keys, config.key_sites)
    except KeyFileError as exc:
        errors.append(str(exc))
        registry = KeyRegistry(())
    try:
        Pipeline.build(config, registry)
    except ConfigError as exc:
        errors.extend(exc.errors)
    if errors:
        raise ConfigError(tuple(errors))
    return config, registry


def cmd_run(args: argparse.Namespace) -> int:
    from xinf_watch.app.daemon import run_daemon  # the daemon's imports (watchfiles, threads) only here
    from xinf_watch.visible import LogFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogFormatter("%(levelname)s %(message)s"))  # text from logs and files, escaped
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # it logs every change at INFO
    return run_daemon(args.rules)


def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    config, registry = load_everything(args.rules)
    for source in config.sources:
        if not source_files(source.path):
            print(
                f"{args.rules}: note: source {source.name!r}: {source.path} matches no file yet",
                file=sys.stderr,
            )
    problem = state_dir_problem(config.state.dir)
    if problem:
        print(
            f"{args.rules}: note: state.dir {config.state.dir}: {problem}; run as this user, the daemon "
            "would keep its state and alerts in memory until it can write there",
            file=sys.stderr,
        )
    out.write(
        f"{args.rules}: ok: {len(config.sources)} sources, {len(registry)} keys, {len(config.rules)} rules\n"
    )
    return Exit.OK


def state_dir_problem(directory: Path) -> str | None:
    """Why this user could not create or write `directory`, or None when it can."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):  # also false on a read-only mount, even for root
        return f"{existing} is not writable by uid {os.getuid()}"
    return None


def add_init_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser],
                    common: argparse.ArgumentParser) -> None:
    init = commands.add_parser(
        "init", parents=[common],
        help="write a starter rules.yaml and keys.yaml from the gateway and Xinference found here",
        description="Find the gateway block that proxies to Xinference (nginx -T, or the configs "
        "given), its access log and format, and Xinference's auth config or auth.db; print what was "
        "found and the lines to add when the Authorization header is not logged; write rules.yaml "
        "(the shipped rules) and keys.yaml (mode 0600, keys by alias and SHA-256), then check them.",
    )
    init.add_argument("--out", type=Path, metavar="DIR",
                      help="where to write (default: /etc/xinf-watch as root, else the current directory)")
    init.add_argument("--force", action="store_true", help="overwrite rules.yaml and keys.yaml in DIR")
    init.add_argument("--group", metavar="GROUP",
                      help="give both files to GROUP, mode 0640: the service's group "
                      "(default: keys.yaml 0600, rules.yaml 0644)")
    init.add_argument("--nginx-config", type=Path, metavar="FILE",
                      help="read this nginx.conf (includes followed)")
    init.add_argument("--nginx-command", metavar="CMD",
                      help='how to get `nginx -T` output, e.g. "docker exec gw nginx -T" (default: nginx -T)')
    init.add_argument("--caddy-config", type=Path, metavar="FILE", help="read this Caddyfile")
    init.add_argument("--haproxy-config", type=Path, metavar="FILE", help="read this haproxy.cfg")
    init.add_argument("--rsyslog-config", type=Path, metavar="FILE",
                      help="the rsyslog config that writes HAProxy's log "
                      "(default: /etc/rsyslog.conf, /etc/rsyslog.d)")
    init.add_argument("--upstream", metavar="HOST:PORT", default=":9997",
                      help="Xinference's address as the gateway dials it (default: any host, port 9997)")
    init.add_argument("--path-map", action="append", default=[], metavar="FROM=TO",
                      help="read logs the gateway writes under FROM at TO (a container's log volume); "
                      "repeatable")
    init.add_argument("--auth-config", type=Path, metavar="FILE", help="Xinference's --auth-config JSON file")
    init.add_argument("--xinference-home", type=Path, metavar="DIR",
                      help="Xinference's home, for auth/auth.db (default: $XINFERENCE_HOME or ~/.xinference)")
    init.add_argument("--state-dir", type=Path, metavar="DIR",
                      help="state.dir to write (default: /var/lib/xinf-watch when creatable, else "
                      "~/.local/state/xinf-watch)")


def cmd_init(args: argparse.Namespace, out: TextIO) -> int:
    import shlex

    from xinf_watch.app.init.command import InitOptions, run_init
    from xinf_watch.app.init.gateway import InitError, Upstream

    try:
        path_map = [tuple(item.split("=", 1)) for item in args.path_map]
        if any(len(pair) != 2 or not all(pair) for pair in path_map):
            raise InitError("--path-map: expected FROM=TO, e.g. /var/log/nginx=/srv/gw/logs")
        options = InitOptions(
            out=args.out, force=args.force, nginx_config=args.nginx_config,
            nginx_command=shlex.split(args.nginx_command) if args.nginx_command else None,
            caddy_config=args.caddy_config, haproxy_config=args.haproxy_config,
            rsyslog_config=args.rsyslog_config, upstream=Upstream.parse(args.upstream),
            path_map=[(a, b) for a, b in path_map], auth_config=args.auth_config,
            xinference_home=args.xinference_home, state_dir=args.state_dir, group=args.group,
        )
        rules = run_init(options, out)
    except InitError as exc:
        raise UsageError(str(exc)) from None
    out.write(f"checking {rules} (as `xinf-watch check --rules {rules}`):\n")
    out.flush()
    return cmd_check(argparse.Namespace(rules=rules), out)


def replay_inputs(args: argparse.Namespace, config: Config) -> tuple[list[ReplayInput], list[SourceConfig]]:
    """Which files to read as which source; an ad-hoc source when --format names one."""
    names = [s.name for s in config.sources]
    if args.log_format_name:
        fmt, nginx_preset, json_preset = FORMAT_SHORTHANDS[args.log_format_name]
        name = args.source or "replay"
        if name in names:
            raise UsageError(f"--source {name!r} is a configured source; drop --format to use its settings")
        if not args.files:
            raise UsageError("--format reads the FILEs given on the command line; name at least one")
        adhoc = SourceConfig(
            name=name,
            path="",
            format=fmt,
            log_format=args.log_format or nginx_preset,
            preset=json_preset,
            wrapper=args.wrapper,
        )
        return [ReplayInput(name, f) for f in args.files], [adhoc]
    if args.wrapper:
        raise UsageError("--wrapper goes with --format (a configured source has its own wrapper setting)")
    if args.source is not None and args.source not in names:
        raise UsageError(
            f"--source {args.source!r} is not in {config.path.name} (sources: {', '.join(names)})"
        )
    if args.files:
        if args.source is None and len(names) != 1:
            raise UsageError(
                "say which source the files are with --source NAME (or their format with --format F)"
                if names
                else "no source configured: say the files' format with --format F"
            )
        return [ReplayInput(args.source or names[0], f) for f in args.files], []
    selected = [s for s in config.sources if args.source in (None, s.name)]
    inputs = [ReplayInput(s.name, f, found=True) for s in selected for f in source_files(s.path)]
    if not inputs:
        raise UsageError("no file to replay: the sources' paths match nothing; name FILEs")
    return inputs, []


def cmd_replay(args: argparse.Namespace, out: TextIO) -> int:
    if args.summary and args.events:
        raise UsageError("--summary and --events are two different outputs: choose one")
    if not args.summary and (args.json or args.top is not None):
        raise UsageError(f"{'--json' if args.json else '--top'} goes with --summary")
    if args.top is not None and args.top < 1:
        raise UsageError(f"--top {args.top}: expected at least 1")
    if args.rules is not None:
        config, registry = load_everything(args.rules)
    else:
        config, registry = empty_config(), KeyRegistry(())
    inputs, extra = replay_inputs(args, config)
    for item in inputs:
        if not item.found and not item.path.is_file():
            raise UsageError(f"{item.path}: no such file")
    store = MetricsStore()
    pipeline = Pipeline.build(config, registry, store, extra_sources=extra)

    def write(obj: dict[str, object]) -> None:
        out.write(orjson.dumps(obj).decode() + "\n")

    progress = None if args.quiet else sys.stderr
    if args.summary:
        summary = replay_summary(pipeline, inputs, args.top or DEFAULT_TOP, progress=progress)
        if args.json:
            write(to_json(summary))
        else:
            out.write(format_table(summary))
    else:
        replay(
            pipeline,
            inputs,
            on_event=(lambda e: write(e.to_json())) if args.events else None,
            on_alert=None if args.events else (lambda a: write(a.to_json())),
            progress=progress,
        )
    if args.metrics_out is not None:
        collector = StoreCollector(store, pipeline.current_registry, now=lambda: store.last_event_ts)
        args.metrics_out.write_bytes(exposition([collector]))
    return Exit.OK
