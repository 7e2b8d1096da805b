"""What a check may know of the whole rules file: `LoadContext`, and `each`, which hands it on.

Checks that need the rest of the file (network names, notify groups, source names, the rules file's
directory, the environment) get a `LoadContext`, built from the raw data before validation so that a
reference can be checked even when other sections have problems of their own. `each` applies a
check to every item of a list (a scalar is a one-item list) and reports bad items under their index.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationInfo

from xinf_watch.config.networks import INTERNAL_NETWORKS, Network, check_network
from xinf_watch.config.values import KEY_NAME, fail
from xinf_watch.config.yamlsource import Problems, did_you_mean, not_one_of, show

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LoadContext:
    base_dir: Path  # relative paths are relative to this (the rules file's directory)
    environ: Mapping[str, str]
    networks: Mapping[str, tuple[Network, ...]]
    notify_groups: tuple[str, ...] | None  # None: the notify section is broken, references not checked
    source_names: tuple[str, ...] | None  # the same for sources

    def notify_group(self, value: Any) -> str:
        return _reference(value, self.notify_groups, "a notify group", "notify")

    def source_name(self, value: Any) -> str:
        return _reference(value, self.source_names, "a source name", "sources")

    def network_ref(self, value: Any) -> tuple[Network, ...]:
        """A CIDR, or the name of a network from `networks:` (or the built-in `internal`)."""
        if isinstance(value, str) and value in self.networks:
            return self.networks[value]
        if isinstance(value, str) and KEY_NAME.match(value) and not value[0].isdigit():
            names = list(self.networks)
            return fail(
                f"{show(value)} is not a network name or CIDR (expected one of {', '.join(names)}, "
                f"or a CIDR such as 10.0.0.0/8{did_you_mean(value, names)})"
            )
        return (check_network(value),)


def _reference(value: Any, known: tuple[str, ...] | None, what: str, section: str) -> str:
    if not isinstance(value, str):
        return fail(f"{show(value)} is not {what} (expected a string)")
    if known is not None and value not in known:
        if not known:
            return fail(
                f"{show(value)} is not {what} (expected a name defined under {section}:, which has none)"
            )
        return fail(not_one_of(value, what, known))
    return value


def load_context(data: Any, base_dir: Path, environ: Mapping[str, str]) -> LoadContext:
    """What validators need to know about the whole file, read leniently from the raw data."""
    data = data if isinstance(data, dict) else {}
    networks: dict[str, tuple[Network, ...]] = {}
    raw_networks = data.get("networks")
    for name, cidrs in (raw_networks if isinstance(raw_networks, dict) else {}).items():
        parsed = []
        for cidr in cidrs if isinstance(cidrs, list) else [cidrs]:
            with contextlib.suppress(ValueError):  # reported where it is written
                parsed.append(check_network(cidr))
        networks[name] = tuple(parsed)
    networks.setdefault("internal", INTERNAL_NETWORKS)
    notify, sources = data.get("notify"), data.get("sources")
    notify_groups = tuple(notify) if isinstance(notify, dict) else (() if notify is None else None)
    source_names = None
    if isinstance(sources, list):
        source_names = tuple(
            s["name"] for s in sources if isinstance(s, dict) and isinstance(s.get("name"), str)
        )
    return LoadContext(base_dir, environ, networks, notify_groups, source_names)


def context_of(info: ValidationInfo | None) -> LoadContext:
    ctx = info.context if info is not None else None
    if isinstance(ctx, LoadContext):
        return ctx
    return LoadContext(Path.cwd(), os.environ, {"internal": INTERNAL_NETWORKS}, None, None)


def each(
    check: Callable[[Any, LoadContext], T],
    *,
    empty: bool,
    finish: Callable[[list[T]], Any] = tuple,
    optional: bool = False,
    default_all: bool = False,
) -> Callable[[Any, ValidationInfo | None], Any]:
    """A validator applying `check` to each item (a scalar is one item); bad items by index."""

    def validate(value: Any, info: ValidationInfo | None) -> Any:
        ctx = context_of(info)
        if value is None and optional:
            return None
        if default_all and isinstance(value, tuple) and not value:  # the default: all sources
            return ctx.source_names or ()
        is_list = isinstance(value, list | tuple)
        items = list(value) if is_list else ([] if value is None else [value])
        if not items and not empty:
            raise ValueError("the list is empty (expected at least one item)")
        out: list[T] = []
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for index, item in enumerate(items):
            where: tuple[str | int, ...] = (index,) if is_list else ()
            try:
                out.append(check(item, ctx))
            except Problems as exc:
                problems.extend((where + sub, message) for sub, message in exc.items)
            except ValueError as exc:
                problems.append((where, str(exc)))
        if problems:
            raise Problems(problems)
        return finish(out)

    return validate
