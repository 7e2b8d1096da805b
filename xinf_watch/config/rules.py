"""The `rules:` section of rules.yaml: one model per rule kind (`RULE_KINDS`), told apart by `kind`.

`RuleBase` holds what every kind has: `when` (config/filters.py), `by`, `severity`, `notify`
(names of groups in the notify section), `cooldown`, `max_alerts`. Network names in a new_value
rule's `known` are resolved to their CIDRs (`allowed_ips` stands for the key's own). The checks that
span several fields of one rule (a spike's baseline against its window and `daily`, `known` only
for addresses) run once the rule's own fields are valid. `key_expiry` and `absent` look at the
clock, not at events: they group by their own subject, and refuse `by`. What each kind does is the
business of rules/eventkinds.py and rules/clockkinds.py.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    PlainValidator,
    field_validator,
    model_validator,
)

from xinf_watch.config.context import LoadContext, each
from xinf_watch.config.fields import (
    Count,
    CountOrZero,
    Duration,
    DurationOrZero,
    EventFields,
    Frozen,
    Name,
    ValueField,
)
from xinf_watch.config.filters import FilterConfig
from xinf_watch.config.networks import Network
from xinf_watch.config.values import format_duration, one_of
from xinf_watch.config.yamlsource import Expect, Problems, TagNoun
from xinf_watch.model import Severity

RULE_KINDS = ("match", "threshold", "new_value", "spike", "key_expiry", "absent", "distinct")


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
