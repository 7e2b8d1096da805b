"""`xinf-watch replay` from the command line: its arguments, which files as which source, which output.

The arguments are defined and checked here (what argparse cannot see: options that go together, a source
that is not configured, files that are not there), then `app/replay.py` does the reading and
`app/alertsummary.py` the `--summary`. `--format` replays files without a rules.yaml source: an
ad-hoc source named by `--source` (default "replay") in one of the `FORMAT_SHORTHANDS`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

import orjson

from xinf_watch.app.alertsummary import DEFAULT_TOP, format_table, to_json
from xinf_watch.app.checkcmd import load_everything
from xinf_watch.app.exits import Exit, UsageError
from xinf_watch.app.pipeline import Pipeline
from xinf_watch.app.replay import ReplayInput, replay, replay_summary, source_files
from xinf_watch.config.schema import Config, empty_config
from xinf_watch.config.sources import SourceConfig
from xinf_watch.ingest.wrappers import WRAPPERS
from xinf_watch.keys.registry import KeyRegistry
from xinf_watch.metrics.store import MetricsStore, StoreCollector, exposition

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


def add_replay_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """`replay`: its arguments."""
    rp = commands.add_parser(
        "replay",
        parents=[common],
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
    rp.add_argument(
        "--wrapper",
        choices=WRAPPERS,
        help="with --format: the FILEs are container logs, each line wrapped by the runtime",
    )
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


def cmd_replay(args: argparse.Namespace, out: TextIO) -> int:
    check_outputs(args)
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
    progress = None if args.quiet else sys.stderr
    if args.summary:
        summary = replay_summary(pipeline, inputs, args.top or DEFAULT_TOP, progress=progress)
        if args.json:
            _write_json(out, to_json(summary))
        else:
            out.write(format_table(summary))
    else:
        replay(
            pipeline,
            inputs,
            on_event=(lambda e: _write_json(out, e.to_json())) if args.events else None,
            on_alert=None if args.events else (lambda a: _write_json(out, a.to_json())),
            progress=progress,
        )
    if args.metrics_out is not None:
        collector = StoreCollector(store, pipeline.current_registry, now=lambda: store.last_event_ts)
        args.metrics_out.write_bytes(exposition([collector]))
    return Exit.OK


def check_outputs(args: argparse.Namespace) -> None:
    """The output options go together: --summary or --events, --json and --top with --summary."""
    if args.summary and args.events:
        raise UsageError("--summary and --events are two different outputs: choose one")
    if not args.summary and (args.json or args.top is not None):
        raise UsageError(f"{'--json' if args.json else '--top'} goes with --summary")
    if args.top is not None and args.top < 1:
        raise UsageError(f"--top {args.top}: expected at least 1")


def _write_json(out: TextIO, obj: dict[str, object]) -> None:
    out.write(orjson.dumps(obj).decode() + "\n")


def replay_inputs(args: argparse.Namespace, config: Config) -> tuple[list[ReplayInput], list[SourceConfig]]:
    """Which files to read as which source; an ad-hoc source when --format names one."""
    names = [s.name for s in config.sources]
    if args.log_format_name:
        return _adhoc_inputs(args, names)
    if args.wrapper:
        raise UsageError("--wrapper goes with --format (a configured source has its own wrapper setting)")
    if args.source is not None and args.source not in names:
        raise UsageError(
            f"--source {args.source!r} is not in {config.path.name} (sources: {', '.join(names)})"
        )
    if args.files:
        return _named_files(args, names), []
    return _configured_files(args, config), []


def _adhoc_inputs(args: argparse.Namespace, names: list[str]) -> tuple[list[ReplayInput], list[SourceConfig]]:
    """--format: the FILEs as a source of that format, under a name no configured source has."""
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


def _named_files(args: argparse.Namespace, names: list[str]) -> list[ReplayInput]:
    """FILEs given with a configured source: --source, or the only source there is."""
    if args.source is None and len(names) != 1:
        raise UsageError(
            "say which source the files are with --source NAME (or their format with --format F)"
            if names
            else "no source configured: say the files' format with --format F"
        )
    return [ReplayInput(args.source or names[0], f) for f in args.files]


def _configured_files(args: argparse.Namespace, config: Config) -> list[ReplayInput]:
    """No FILEs: what the configured sources' paths match now (--source's only, with it)."""
    selected = [s for s in config.sources if args.source in (None, s.name)]
    inputs = [ReplayInput(s.name, f, found=True) for s in selected for f in source_files(s.path)]
    if not inputs:
        raise UsageError("no file to replay: the sources' paths match nothing; name FILEs")
    return inputs
