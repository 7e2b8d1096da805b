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
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from xinf_watch.config.context import LoadContext, each, load_context
from xinf_watch.config.errors import problems_from
from xinf_watch.config.filters import FilterConfig, StatusSet
from xinf_watch.config.locations import (
    check_env,
    check_glob,
    check_notify_target,
    check_path,
    check_redis_url,
    check_url,
)
from xinf_watch.config.networks import INTERNAL_NETWORKS, Network, check_listen, check_network, parse_listen
from xinf_watch.config.values import (
    EVENT_FIELDS,
    HAPROXY_FIELDS,
    JSON_FIELDS,
    JSON_PRESETS,
    SOURCE_FORMATS,
    check_duration,
    check_key_name,
    check_log_format,
    check_method,
    check_name,
    check_regex_source,
    check_route_path,
    check_text,
    check_value_field,
    check_version,
    format_duration,
    listify,
    one_of,
    parse_duration,
)
from xinf_watch.config.yamlsource import (
    ConfigError,
    Expect,
    Problem,
    Problems,
    TagNoun,
    load_document,
    not_one_of,
    render_loc,
    show,
)
from xinf_watch.ingest.wrappers import WRAPPERS
from xinf_watch.model import Severity

__all__ = [
    "AbsentRule", "AlertmanagerConfig", "Config", "ConfigError", "DeliveryConfig", "DistinctRule",
    "FilterConfig", "KeyExpiryRule", "MatchRule", "MetricsConfig", "Network", "NewValueRule", "RULE_KINDS",
    "RuleConfig", "ScopeRouteConfig", "SourceConfig", "SpikeRule", "StateConfig", "StatusSet",
    "ThresholdRule", "empty_config", "load_config", "parse_duration",
]  # fmt: skip

RULE_KINDS = ("match", "threshold", "new_value", "spike", "key_expiry", "absent", "distinct")
_DURATION = Expect("a duration, e.g. 30s, 5m, 1h")
Where = tuple[str | int, ...]

Duration = Annotated[float, PlainValidator(check_duration(positive=True)), _DURATION]
DurationOrZero = Annotated[float, PlainValidator(check_duration(positive=False)), _DURATION]
Count = Annotated[int, Strict(), Field(ge=1), Expect("an integer >= 1")]
CountOrZero = Annotated[int, Strict(), Field(ge=0), Expect("an integer >= 0")]
Name = Annotated[str, PlainValidator(check_name), Expect("a name without spaces, e.g. gateway")]
EventFields = Annotated[
    tuple[str, ...],
    PlainValidator(each(one_of("an event field", EVENT_FIELDS), empty=True)),
    Expect("a list of event fields, e.g. [ip] or [key]"),
]
ValueField = Annotated[
    str, PlainValidator(check_value_field), Expect("an event field or ip/<prefix>, e.g. ip or ip/24")
]
ResolvedPath = Annotated[Path, PlainValidator(check_path), Expect("a file path")]
RedisUrl = Annotated[
    str, PlainValidator(check_redis_url), Expect("a Redis URL, e.g. redis://127.0.0.1:6379/0")
]


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _regex_pattern(value: Any, info: ValidationInfo) -> str | None:
    # `wrapper` is declared before `pattern`, so it is validated first: with one, `ts` may be left out
    return check_regex_source(value, time_optional=info.data.get("wrapper") is not None)


class SourceConfig(Frozen):
    name: Name
    path: Annotated[str, PlainValidator(check_glob), Expect("a file path or glob")]  # absolute
    format: Annotated[
        str,
        PlainValidator(one_of("a source format", SOURCE_FORMATS)),
        Expect("one of " + ", ".join(SOURCE_FORMATS)),
    ]
    # nginx: a log_format string; a preset name ("combined", "combined_key") means that preset
    log_format: Annotated[str | None, PlainValidator(check_log_format)] = None
    preset: Annotated[str | None, PlainValidator(one_of("a json preset", JSON_PRESETS, optional=True))] = None
    # json: record field -> dotted path in the object; haproxy: {captures: "Authorization|User-Agent"}
    fields: Annotated[
        Mapping[str, str] | None, AfterValidator(lambda m: None if m is None else MappingProxyType(dict(m)))
    ] = None
    # the container runtime's wrapping of each line (ingest/wrappers.py): cri or docker; None: plain lines
    wrapper: Annotated[str | None, PlainValidator(one_of("a wrapper", WRAPPERS, optional=True))] = None
    pattern: Annotated[str | None, PlainValidator(_regex_pattern), Expect("a regular expression")] = None
    start_at: Annotated[
        Literal["end", "beginning"], BeforeValidator(one_of("a start position", ("end", "beginning")))
    ] = "end"
    xinference_version: Annotated[
        str | None, PlainValidator(check_version), Expect('a version, e.g. "4"')
    ] = None

    @model_validator(mode="before")
    @classmethod
    def _nginx_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("format") == "nginx" and data.get("log_format") is None:
            return {**data, "log_format": "combined_key"}
        return data

    @field_validator("fields", mode="before")
    @classmethod
    def _field_names(cls, value: Any, info: ValidationInfo) -> Any:
        known = {"json": JSON_FIELDS, "haproxy": HAPROXY_FIELDS}.get(info.data.get("format", ""))
        if isinstance(value, dict) and known:
            bad = [((key,), not_one_of(key, "a field", known)) for key in value if key not in known]
            if bad:
                raise Problems(bad)
        return value

    @model_validator(mode="after")
    def _per_format(self) -> Self:
        wrong: list[tuple[Where, str]] = []
        uses = {
            "log_format": ("nginx",),
            "preset": ("json",),
            "pattern": ("regex",),
            "fields": ("json", "haproxy"),
        }
        for option, formats in uses.items():
            if getattr(self, option) is not None and self.format not in formats:
                only = " or ".join(formats)
                wrong.append(
                    ((option,), f"not used by format {self.format} (expected it only with format {only})")
                )
        if self.format == "json" and not self.preset:
            required = JSON_FIELDS[:5]
            missing = [f for f in required if not (self.fields or {}).get(f)]
            if not self.fields:
                presets = ", ".join(JSON_PRESETS)
                message = (
                    f"a json source needs a preset or fields (expected preset: {presets}, and/or fields)"
                )
                wrong.append(((), message))
            elif missing:
                message = f"no path for {', '.join(missing)} (expected {', '.join(required)}, or a preset)"
                wrong.append((("fields",), message))
        if self.format == "regex" and not self.pattern:
            wrong.append((("pattern",), "missing required field (expected a regular expression)"))
        if wrong:
            raise Problems(wrong)
        return self


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


class AlertmanagerConfig(Frozen):
    url: Annotated[str, PlainValidator(check_url), Expect("an http(s) URL, e.g. http://127.0.0.1:9093")]
    resend_interval: Duration = 60.0  # firing alerts are posted again this often (endsAt: 4 x ahead)
    event_ttl: Duration = 3600.0  # match / new_value alerts stay active this long after their last hit


class DeliveryConfig(Frozen):
    # apprise groups: alerts of a rule that follow a message within this wait and go out together
    group_interval: DurationOrZero = 30.0


# -- rules -------------------------------------------------------------------------------------


class RuleBase(Frozen):
    name: Name
    kind: str
    when: Annotated[FilterConfig, Expect("a mapping of filters, e.g. {outcome: denied}")] = FilterConfig()
    by: EventFields = ()
    severity: Annotated[Severity, BeforeValidator(one_of("a severity", [s.value for s in Severity]))] = (
        Severity.WARNING
    )
    notify: Annotated[
        tuple[str, ...],
        PlainValidator(each(lambda v, ctx: ctx.notify_group(v), empty=True)),
        Expect("a list of notify groups"),
    ] = ()
    cooldown: DurationOrZero = 600.0
    max_alerts: CountOrZero = 20  # firing alerts in any 10 minutes; more make one flood alert (0: no limit)

    @field_validator("when", mode="before")
    @classmethod
    def _empty_when(cls, value: Any) -> Any:
        return {} if value is None else value  # `when:` with every line commented out


class MatchRule(RuleBase):
    kind: Literal["match"]


class ThresholdRule(RuleBase):
    kind: Literal["threshold"]
    count: Count
    window: Duration


ALLOWED_IPS = "allowed_ips"  # in a new_value rule's `known`: the key's own allowed_ips


def _known_network(value: Any, ctx: LoadContext) -> tuple[Network | str, ...]:
    return (ALLOWED_IPS,) if value == ALLOWED_IPS else ctx.network_ref(value)


def _flatten(items: list[tuple[Network | str, ...]]) -> tuple[Network | str, ...]:
    return tuple(item for group in items for item in group)


class NewValueRule(RuleBase):
    kind: Literal["new_value"]
    value: ValueField
    learn: DurationOrZero = 0.0
    forget: Duration = 30 * 86400.0
    # addresses never new for this rule: CIDRs, network names, `allowed_ips` (the key's own)
    known: Annotated[
        tuple[Network | str, ...],
        PlainValidator(each(_known_network, empty=True, finish=_flatten)),
        Expect("a list of CIDRs, network names or allowed_ips"),
    ] = ()

    @model_validator(mode="after")
    def _known_needs_addresses(self) -> Self:
        if self.known and not (self.value == "ip" or self.value.startswith("ip/")):
            message = f"only for addresses (expected value: ip or ip/N, not {self.value})"
            raise Problems([(("known",), message)])
        return self


class SpikeRule(RuleBase):
    kind: Literal["spike"]
    window: Duration
    factor: Annotated[float, Field(gt=1), Expect("a number > 1, e.g. 5")]
    min_count: Count
    baseline: Duration = 3600.0
    daily: bool = False  # compare with the same time of day on the previous days of `baseline`

    @model_validator(mode="after")
    def _baseline_longer(self) -> Self:
        if self.daily and self.baseline < 86400:
            message = (
                f"{format_duration(self.baseline)} is shorter than a day "
                "(expected with daily: true the days of history to compare with, e.g. 7d)"
            )
            raise Problems([(("baseline",), message)])
        if self.baseline <= self.window:
            message = (
                f"{format_duration(self.baseline)} is not longer than window {format_duration(self.window)} "
                "(expected a baseline longer than the window, e.g. 1h)"
            )
            raise Problems([(("baseline",), message)])
        return self


class _NotPerEvent(RuleBase):
    """Kinds that look at the clock, not at events: they group by their own subject, not `by`."""

    @field_validator("by", mode="before")
    @classmethod
    def _by_not_used(cls, value: Any) -> Any:
        raise ValueError(f"not used by kind {_kind_of(cls)} (expected it left out)")


def _kind_of(cls: type[BaseModel]) -> str:
    return str(get_args(cls.model_fields["kind"].annotation)[0])


class KeyExpiryRule(_NotPerEvent):
    kind: Literal["key_expiry"]
    by: EventFields = ("key",)
    within: Duration = 7 * 86400.0
    max_age: Duration | None = None
    no_expiry: bool = False  # also alert on keys without an expiry
    only_used: bool = True  # only keys seen in use
    # with only_used: a key unused this long is not watched (its clients moved to a successor)
    unused_after: Duration | None = None

    @field_validator("when")
    @classmethod
    def _keys_only(cls, value: FilterConfig) -> FilterConfig:
        """`when` picks registry keys here: only `key` and `owner` mean anything."""
        other = [name for name, given in value if given is not None and name not in ("key", "owner")]
        if other:
            raise Problems(
                [((name,), "not used by kind key_expiry (expected only key and owner)") for name in other]
            )
        return value


class AbsentRule(_NotPerEvent):
    kind: Literal["absent"]
    by: EventFields = ("source",)
    for_: Duration = Field(alias="for")
    sources: Annotated[
        tuple[str, ...],
        PlainValidator(each(lambda v, ctx: ctx.source_name(v), empty=False, default_all=True)),
        Expect("a list of source names"),
    ] = Field(default=(), validate_default=True)  # left out: every source of the file

    @field_validator("when", mode="before")
    @classmethod
    def _when_not_used(cls, value: Any) -> Any:
        raise ValueError("not used by kind absent (expected sources: to choose the sources)")


class DistinctRule(RuleBase):
    kind: Literal["distinct"]
    value: ValueField
    count: Count
    window: Duration


RuleConfig = Annotated[
    MatchRule | ThresholdRule | NewValueRule | SpikeRule | KeyExpiryRule | AbsentRule | DistinctRule,
    Field(discriminator="kind"),
    TagNoun("a rule kind"),
    Expect("a rule: a mapping with name, kind and the kind's fields"),
]


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


def _notify_target(value: Any, ctx: LoadContext) -> str:
    return check_notify_target(value, check_env(value, ctx), ctx)


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
        _mapping_of(each(_notify_target, empty=True), "group names to lists of apprise URLs"),
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
    problems: list[Problem] = list(doc.problems)
    data = doc.data
    if data is None:
        problems.append(Problem((), "the file is empty (expected a mapping with sources and rules)"))
    elif isinstance(data, dict):
        if "path" in data:
            names = [n for n in Config.model_fields if n != "path"]
            problems.append(Problem(("path",), f"unknown field (expected one of {', '.join(names)})"))
        problems.extend(_duplicate_names(data))
        data = {key: value for key, value in data.items() if not key.startswith("x-")}  # anchors only
        data["path"] = resolved
    if data is not None:
        context = load_context(data, resolved.parent, os.environ if environ is None else environ)
        try:
            config = Config.model_validate(data, context=context)
        except ValidationError as exc:
            problems.extend(problems_from(exc, doc, Config))
    if problems:
        raise ConfigError(doc.format(problems))
    listed = isinstance(data, dict) and isinstance(data.get("keys"), list)
    locs = [("keys", i) for i in range(len(config.keys))] if listed else [("keys",)] * len(config.keys)
    config._key_sites = tuple(f"{doc.name}:{doc.line_of(loc)}: {render_loc(loc)}" for loc in locs)
    return config


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
