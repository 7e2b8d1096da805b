"""Command line: argv in, exit code out (docs/DESIGN.md section 2).

`build_parser` puts the subcommands together in the order `--help` lists them, one `add_*_parser`
each; `main` runs the chosen one (`COMMANDS`). A command with a module of its own here defines its
arguments there (`app/checkcmd.py`, `app/replaycmd.py`); the arguments of the others (run, demo,
simulate, init, keys audit) are defined below and handed to the stage that implements them.

Every failure the user can cause ends as one clear line on stderr and exit code 2 (bad usage,
invalid config) or 1 (runtime failure); a traceback only with `--debug` (`app/exits.py`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO, TypeAlias

from xinf_watch import __version__
from xinf_watch.app.checkcmd import add_check_parser, cmd_check
from xinf_watch.app.exits import Exit, UsageError, describe_error
from xinf_watch.app.replaycmd import add_replay_parser, cmd_replay
from xinf_watch.config.schema import ConfigError
from xinf_watch.keys.audit import DEFAULT_MAX_AGE, DEFAULT_WITHIN, duration_arg, run_keys_audit, time_arg
from xinf_watch.keys.files import KeyFileError
from xinf_watch.model import Severity

Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


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
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors"
    )
    for add in (
        add_run_parser,
        add_check_parser,
        add_demo_parser,
        add_simulate_parser,
        add_replay_parser,
        add_init_parser,
        add_keys_parser,
    ):
        add(commands, common)
    return parser


def add_run_parser(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    """`run`: the daemon in the foreground."""
    run = commands.add_parser(
        "run",
        parents=[common],
        help="run the daemon in the foreground (the default: `xinf-watch --rules FILE`)",
        description="Follow the configured log files, export metrics, raise alerts. Stops cleanly on "
        "SIGTERM/SIGINT; SIGHUP reloads rules.yaml and the key files (a broken new config is refused "
        "and the running one kept).",
    )
    run.add_argument("--rules", required=True, type=Path, metavar="FILE", help="the rules.yaml to run")
    run.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity on stderr (default: info)",
    )


def add_demo_parser(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    """`demo`: a live daemon on simulated traffic (app/demo.py)."""
    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="a live daemon on simulated gateway traffic, nothing to set up",
        description="Start the real daemon with the shipped rules on a temporary directory, append "
        "simulated nginx traffic with incidents, and print the alerts as they fire.",
    )
    demo.add_argument(
        "--duration",
        type=float,
        default=45.0,
        metavar="SECONDS",
        help="how long to run (default 45; Ctrl-C stops earlier)",
    )
    demo.add_argument("--port", type=int, metavar="PORT", help="metrics port (default: a free one)")


def add_simulate_parser(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    """`simulate`: a simulated week of traffic (simulate/run.py)."""
    sim = commands.add_parser(
        "simulate",
        parents=[common],
        help="write a simulated week of gateway traffic with known incidents",
        description="Write DIR/access.log (nginx combined_key lines in front of Xinference), keys.yaml, "
        "rules.yaml (the shipped rules, or --rules, pointed at them) and truth.json (the injected "
        "incidents): the same files for the same --seed. "
        "Replay with `xinf-watch replay --rules DIR/rules.yaml`.",
    )
    sim.add_argument("--days", type=int, default=7, help="days from a Monday 00:00 UTC (default 7)")
    sim.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    sim.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory to write into")
    sim.add_argument(
        "--rules",
        type=Path,
        metavar="FILE",
        help="rules.yaml to point at the files (default: the shipped rules)",
    )


def add_init_parser(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    """`init`: a starter rules.yaml and keys.yaml (app/init/)."""
    init = commands.add_parser(
        "init",
        parents=[common],
        help="write a starter rules.yaml and keys.yaml from the gateway and Xinference found here",
        description="Find the gateway block that proxies to Xinference (nginx -T, or the configs "
        "given), its access log and format, and Xinference's auth config or auth.db; print what was "
        "found and the lines to add when the Authorization header is not logged; write rules.yaml "
        "(the shipped rules) and keys.yaml (mode 0600, keys by alias and SHA-256), then check them.",
    )
    init.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="where to write (default: /etc/xinf-watch as root, else the current directory)",
    )
    init.add_argument("--force", action="store_true", help="overwrite rules.yaml and keys.yaml in DIR")
    init.add_argument(
        "--group",
        metavar="GROUP",
        help="give both files to GROUP, mode 0640: the service's group "
        "(default: keys.yaml 0600, rules.yaml 0644)",
    )
    init.add_argument(
        "--nginx-config", type=Path, metavar="FILE", help="read this nginx.conf (includes followed)"
    )
    init.add_argument(
        "--nginx-command",
        metavar="CMD",
        help='how to get `nginx -T` output, e.g. "docker exec gw nginx -T" (default: nginx -T)',
    )
    init.add_argument("--caddy-config", type=Path, metavar="FILE", help="read this Caddyfile")
    init.add_argument("--haproxy-config", type=Path, metavar="FILE", help="read this haproxy.cfg")
    init.add_argument(
        "--rsyslog-config",
        type=Path,
        metavar="FILE",
        help="the rsyslog config that writes HAProxy's log (default: /etc/rsyslog.conf, /etc/rsyslog.d)",
    )
    init.add_argument(
        "--upstream",
        metavar="HOST:PORT",
        default=":9997",
        help="Xinference's address as the gateway dials it (default: any host, port 9997)",
    )
    init.add_argument(
        "--path-map",
        action="append",
        default=[],
        metavar="FROM=TO",
        help="read logs the gateway writes under FROM at TO (a container's log volume); repeatable",
    )
    init.add_argument("--auth-config", type=Path, metavar="FILE", help="Xinference's --auth-config JSON file")
    init.add_argument(
        "--xinference-home",
        type=Path,
        metavar="DIR",
        help="Xinference's home, for auth/auth.db (default: $XINFERENCE_HOME or ~/.xinference)",
    )
    init.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="state.dir to write (default: /var/lib/xinf-watch when creatable, else "
        "~/.local/state/xinf-watch)",
    )


def add_keys_parser(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    """`keys audit`: the key hygiene report (keys/audit.py)."""
    keys = commands.add_parser(
        "keys",
        help="reports on the key registry (keys audit)",
        description="Reports on the keys that rules.yaml's key files list.",
    )
    keys_commands = keys.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)
    audit = keys_commands.add_parser(
        "audit",
        parents=[common],
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
        return COMMANDS[args.command](args)
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


def cmd_run(args: argparse.Namespace) -> int:
    from xinf_watch.app.daemon import run_daemon  # the daemon's imports (watchfiles, threads) only here
    from xinf_watch.visible import LogFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogFormatter("%(levelname)s %(message)s"))  # text from logs and files, escaped
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # it logs every change at INFO
    return run_daemon(args.rules)


def cmd_demo(args: argparse.Namespace) -> int:
    from xinf_watch.app.demo import run_demo

    return run_demo(args.duration, args.port)


def cmd_simulate(args: argparse.Namespace) -> int:
    from xinf_watch.simulate.run import run_simulate

    return run_simulate(args.days, args.seed, args.out, args.rules, sys.stdout)


def cmd_keys(args: argparse.Namespace) -> int:
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


def cmd_init(args: argparse.Namespace, out: TextIO) -> int:
    import shlex

    from xinf_watch.app.init.command import InitOptions, run_init
    from xinf_watch.app.init.gateway import InitError, Upstream

    try:
        path_map = [tuple(item.split("=", 1)) for item in args.path_map]
        if any(len(pair) != 2 or not all(pair) for pair in path_map):
            raise InitError("--path-map: expected FROM=TO, e.g. /var/log/nginx=/srv/gw/logs")
        options = InitOptions(
            out=args.out,
            force=args.force,
            nginx_config=args.nginx_config,
            nginx_command=shlex.split(args.nginx_command) if args.nginx_command else None,
            caddy_config=args.caddy_config,
            haproxy_config=args.haproxy_config,
            rsyslog_config=args.rsyslog_config,
            upstream=Upstream.parse(args.upstream),
            path_map=[(a, b) for a, b in path_map],
            auth_config=args.auth_config,
            xinference_home=args.xinference_home,
            state_dir=args.state_dir,
            group=args.group,
        )
        rules = run_init(options, out)
    except InitError as exc:
        raise UsageError(str(exc)) from None
    out.write(f"checking {rules} (as `xinf-watch check --rules {rules}`):\n")
    out.flush()
    return cmd_check(argparse.Namespace(rules=rules), out)


# what runs each command (sys.stdout looked up when it runs: tests replace it)
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "check": lambda args: cmd_check(args, sys.stdout),
    "replay": lambda args: cmd_replay(args, sys.stdout),
    "demo": cmd_demo,
    "simulate": cmd_simulate,
    "keys": cmd_keys,
    "init": lambda args: cmd_init(args, sys.stdout),
}
