"""`xinf-watch check` (its arguments and what it does): rules.yaml, its key files and its pipeline
loaded, every error reported together.

`load_everything` is the loading `check` validates, shared by `replay` (and the benchmarks): the
config, the key registry, and the pipeline built once from both, so that a bad format setting is
found too. `cmd_check` adds notes (not errors) for what the daemon would survive: a source that
matches no file yet, a state.dir this user cannot write.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TextIO

from xinf_watch.app.exits import Exit
from xinf_watch.app.pipeline import Pipeline
from xinf_watch.app.replay import source_files
from xinf_watch.config.schema import Config, ConfigError, load_config
from xinf_watch.keys.files import KeyFileError, load_registry
from xinf_watch.keys.registry import KeyRegistry


def add_check_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """`check`: its arguments."""
    check = commands.add_parser(
        "check",
        parents=[common],
        help="validate the config, key files and log formats",
        description="Validate rules.yaml, the key files it names and its log formats. "
        "Exit 0 when valid, 2 when not; every problem is one line naming file, line and field.",
    )
    check.add_argument("--rules", required=True, type=Path, metavar="FILE", help="the rules.yaml to check")


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
