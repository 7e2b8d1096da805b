"""rules.yaml (docs/DESIGN.md section 3) as typed, frozen objects; parsed once, never read as a dict again.

`load_config(path)` reads the file, validates all of it and either returns a `Config` or raises
one `ConfigError` carrying every problem as a line `file:line: yaml.path: what (expected what)`.
Rules of the schema:

* Unknown fields are errors, with a "did you mean" (top-level `x-...` keys are ignored: a place
  for YAML anchors); so are values outside closed sets (formats, kinds, severities, filter
  values). A scalar where a list is allowed is a one-item list.
* Durations are `30s`, `5m`, `1h30m`, `250ms`, `7d`, `2w` or bare seconds, and must be positive
  (`learn`, `cooldown` and `delivery.group_interval` may be 0).
* Relative paths (sources, keys, state dir, apprise config files) are relative to the rules file.
  Key files are not opened here (`keys/files.py` does); `key_sites` says where each is named, so
  one that cannot be opened is reported at its line (`rules.yaml:25: keys[1]: ...`).
* Cross references are checked: rule `notify` groups, network names in `ip` / `ip_not_in`,
  source names in `when.source` and `absent.sources`, unique source and rule names. Network names
  are resolved to CIDRs at load; `internal` exists unless the file defines its own.
* `${VAR}` in notify URLs and `alertmanager.url` is taken from the environment (secrets live
  there); an unset variable is an error naming it. Messages quote the file, never the environment.

Checks that span several fields of one source or rule (options per format, spike baseline) run
once that object's own fields are valid; everything else is reported in one go. Objects built in
code rather than loaded (`SourceConfig(...)` for an ad-hoc replay source) skip the checks that need
the file: cross references and path resolution.

This module holds the top level (`Config`), the small sections (`scopes`, `metrics`, `state`) and
the loading, in steps: the checks of the file as a whole, validation, where the key files are named.
The other sections have their own modules: `sources` in config/sources.py, `rules` in
config/rules.py (their `when:` in config/filters.py), `notify`, `alertmanager` and `delivery` in
config/targets.py; the field types they share are in config/fields.py. The values and their checks:
config/values.py (durations, names, regexes), config/networks.py, config/locations.py (paths, URLs,
`${VAR}`), config/context.py (references to the rest of the file).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
)

from xinf_watch.config.context import each, load_context
from xinf_watch.config.errors import problems_from
from xinf_watch.config.fields import Frozen, Name, RedisUrl, ResolvedPath, Where
from xinf_watch.config.networks import INTERNAL_NETWORKS, Network, check_listen, check_network, parse_listen
from xinf_watch.config.rules import RuleConfig
from xinf_watch.config.sources import SourceConfig
from xinf_watch.config.targets import AlertmanagerConfig, DeliveryConfig, notify_target
from xinf_watch.config.values import check_key_name, check_method, check_route_path, check_text, listify
from xinf_watch.config.yamlsource import (
    ConfigError,
    Document,
    Expect,
    Problem,
    Problems,
    load_document,
    render_loc,
    show,
)

__all__ = [
    "Config", "ConfigError", "MetricsConfig", "ScopeRouteConfig", "StateConfig", "empty_config",
    "load_config",
]  # fmt: skip


class ScopeRouteConfig(Frozen):
    """An extra or overriding route: `{method: POST, path: /v1/chat/completions, scope: models:read}`."""

    method: Annotated[str, PlainValidator(check_method), Expect("an HTTP method, e.g. POST")]
    path: Annotated[str, PlainValidator(check_route_path), Expect("a path starting with /")]
    scope: Annotated[str, PlainValidator(check_text), Expect('a scope, e.g. "models:read"')]


class MetricsConfig(Frozen):
    listen: Annotated[str, PlainValidator(check_listen), Expect("host:port")] = "127.0.0.1:9877"

    @property
    def host(self) -> str:
        return parse_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return parse_listen(self.listen)[1]


class StateConfig(Frozen):
    dir: ResolvedPath = Path("/var/lib/xinf-watch")
    # rule state shared by a fleet (fleet/feed.py): a Redis URL; `${VAR}` takes a password from the env
    shared: RedisUrl | None = None
    instance: Name | None = None  # this instance in the fleet; default: the host name


def _mapping_of(check_values: Any, expect: str) -> Any:
    """A validator for a mapping of names (networks, notify groups) to lists."""

    def validate(value: Any, info: ValidationInfo) -> Mapping[str, Any]:
        if value is None:
            value = {}
        if not isinstance(value, dict | MappingProxyType):
            raise ValueError(f"{show(value)} is not a mapping (expected {expect})")
        out: dict[str, Any] = {}
        problems: list[tuple[Where, str]] = []
        for name, items in value.items():
            try:
                out[check_key_name(name)] = check_values(items, info)
            except Problems as exc:
                problems.extend(((name, *sub), message) for sub, message in exc.items)
            except ValueError as exc:
                problems.append(((name,), str(exc)))
        if problems:
            raise Problems(problems)
        return MappingProxyType(out)

    return PlainValidator(validate)


def _with_internal(networks: Mapping[str, tuple[Network, ...]]) -> Mapping[str, tuple[Network, ...]]:
    return MappingProxyType({"internal": INTERNAL_NETWORKS, **networks})


class Config(Frozen):
    path: Path = Field(exclude=True)  # the rules file, resolved; set by load_config
    sources: Annotated[
        tuple[Annotated[SourceConfig, Expect("a source: a mapping with name, path and format")], ...],
        Expect("a list of sources"),
    ] = ()
    keys: Annotated[tuple[ResolvedPath, ...], BeforeValidator(listify), Expect("a list of key files")] = ()
    networks: Annotated[
        Mapping[str, tuple[Network, ...]],
        _mapping_of(each(lambda v, ctx: check_network(v), empty=False), "names to CIDR lists"),
        AfterValidator(_with_internal),
    ] = Field(default_factory=lambda: MappingProxyType({}), validate_default=True)
    scopes: Annotated[tuple[ScopeRouteConfig, ...], Expect("a list of {method, path, scope}")] = ()
    metrics: MetricsConfig = MetricsConfig()
    state: StateConfig = StateConfig()
    notify: Annotated[
        Mapping[str, tuple[str, ...]],
        _mapping_of(each(notify_target, empty=True), "group names to lists of apprise URLs"),
    ] = Field(default_factory=lambda: MappingProxyType({}))  # a group may be empty: journal and metrics only
    alertmanager: AlertmanagerConfig | None = None
    delivery: DeliveryConfig = DeliveryConfig()
    rules: Annotated[tuple[RuleConfig, ...], Expect("a list of rules")] = ()
    _key_sites: tuple[str, ...] = PrivateAttr(default=())  # set by load_config

    @property
    def key_sites(self) -> tuple[str, ...]:
        """Where the file names each of `keys`, e.g. `rules.yaml:25: keys[1]` (empty if not loaded)."""
        return self._key_sites


def empty_config(path: Path | None = None) -> Config:
    """No sources, keys or rules (replay without --rules); relative paths against `path`'s dir."""
    return Config(path=path or Path.cwd() / "rules.yaml")


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a rules file; raise `ConfigError` with every problem found."""
    doc = load_document(Path(path), str(path))
    resolved = Path(path).resolve()
    data, whole_file = _check_whole_file(doc.data, resolved)
    problems: list[Problem] = [*doc.problems, *whole_file]
    config = None
    if data is not None:
        config, invalid = _validate(data, doc, resolved.parent, os.environ if environ is None else environ)
        problems.extend(invalid)
    if problems:
        raise ConfigError(doc.format(problems))
    assert config is not None  # validated without a problem
    config._key_sites = _key_sites(doc, data, config)
    return config


def _check_whole_file(data: Any, resolved: Path) -> tuple[Any, list[Problem]]:
    """The checks of the file as a whole, before validation: not empty, no `path` (load_config sets
    it to the file's own), unique source and rule names. Returns the data to validate, top-level
    `x-...` keys left out (a place for YAML anchors), and the problems."""
    if data is None:
        return None, [Problem((), "the file is empty (expected a mapping with sources and rules)")]
    if not isinstance(data, dict):
        return data, []  # validation says what is wrong with it
    problems = []
    if "path" in data:
        names = [n for n in Config.model_fields if n != "path"]
        problems.append(Problem(("path",), f"unknown field (expected one of {', '.join(names)})"))
    problems.extend(_duplicate_names(data))
    data = {key: value for key, value in data.items() if not key.startswith("x-")}  # anchors only
    data["path"] = resolved
    return data, problems


def _validate(
    data: Any, doc: Document, base_dir: Path, environ: Mapping[str, str]
) -> tuple[Config | None, list[Problem]]:
    """The file as a `Config`, or None and every problem pydantic found, at its line."""
    context = load_context(data, base_dir, environ)
    try:
        return Config.model_validate(data, context=context), []
    except ValidationError as exc:
        return None, problems_from(exc, doc, Config)


def _key_sites(doc: Document, data: Any, config: Config) -> tuple[str, ...]:
    """Where the file names each key file, e.g. `rules.yaml:25: keys[1]` (`keys:` a scalar: its line)."""
    listed = isinstance(data, dict) and isinstance(data.get("keys"), list)
    locs = [("keys", i) for i in range(len(config.keys))] if listed else [("keys",)] * len(config.keys)
    return tuple(f"{doc.name}:{doc.line_of(loc)}: {render_loc(loc)}" for loc in locs)


def _duplicate_names(data: dict[str, Any]) -> list[Problem]:
    out = []
    for section, what in (("sources", "source"), ("rules", "rule")):
        items = data.get(section)
        seen: set[str] = set()
        for index, item in enumerate(items if isinstance(items, list) else ()):
            name = item.get("name") if isinstance(item, dict) else None
            if isinstance(name, str) and name in seen:
                message = f'duplicate {what} name "{name}" (expected unique names)'
                out.append(Problem((section, index, "name"), message))
            if isinstance(name, str):
                seen.add(name)
    return out
