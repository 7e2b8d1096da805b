"""The one place the stages meet: line -> Record -> Event -> metrics and rules -> alert transitions.

Both `replay` and the daemon drive a `Pipeline`, which is what makes a replay equal to what the
live daemon would have done. The pipeline owns no I/O, no thread and no clock: time is the
event's own timestamp, and `advance(now)` lets the caller move time forward when no line arrives
(the daemon passes the wall clock, replay the last event time).

Reload is build-then-swap: `Pipeline.build` constructs every stage from a new config and registry,
and raises before anything is swapped if one of them is invalid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from xinf_watch.attribute import Attributor
from xinf_watch.config import Config, ConfigError, SourceConfig
from xinf_watch.formats import Parser, build_parser
from xinf_watch.keys import KeyRegistry
from xinf_watch.metrics import MetricsStore
from xinf_watch.model import Alert, Event, LineResult, Record
from xinf_watch.rules import RuleEngine
from xinf_watch.scopes import ScopeOverride, load_scope_map


@dataclass(frozen=True, slots=True)
class SourceStage:
    config: SourceConfig
    parse: Parser
    attributor: Attributor


def build_source_stage(
    config: Config, index: int, source: SourceConfig, registry: Callable[[], KeyRegistry]
) -> SourceStage:
    """Parser + attributor for one source; raises `ConfigError` naming the source on bad settings."""
    where = f"{config.path.name}: sources[{index}]"
    try:
        parse = build_parser(
            source.format,
            log_format=source.log_format,
            preset=source.preset,
            fields=source.fields,
            pattern=source.pattern,
        )
    except ValueError as exc:
        raise ConfigError((f"{where}.format: {exc}",)) from None
    overrides = [ScopeOverride(s.method, s.path, s.scope) for s in config.scopes]
    try:
        scopes = load_scope_map(source.xinference_version, overrides)
    except ValueError as exc:
        raise ConfigError((f"{where}.xinference_version: {exc}",)) from None
    return SourceStage(source, parse, Attributor(source.name, registry, scopes))


class Pipeline:
    """Built by `build`: one stage per source, the metric store, and the rule engine of the config."""

    def __init__(self, config: Config, registry: KeyRegistry, store: MetricsStore,
                 sources: Sequence[SourceConfig]) -> None:
        self.config = config
        self.registry = registry
        self.store = store
        self.stages: dict[str, SourceStage] = {}
        self.engine = RuleEngine(config.rules, self.current_registry, [s.name for s in sources])

    @classmethod
    def build(
        cls,
        config: Config,
        registry: KeyRegistry,
        store: MetricsStore | None = None,
        extra_sources: Sequence[SourceConfig] = (),
        rule_state: dict[str, Any] | None = None,
    ) -> Pipeline:
        """Every stage of `config` (plus ad-hoc sources), or `ConfigError` with all that is wrong;
        `rule_state` is a `RuleEngine.snapshot()` to carry on from (a restart, a reload)."""
        sources = (*config.sources, *extra_sources)
        pipeline = cls(config, registry, store or MetricsStore(), sources)
        errors: list[str] = []
        for index, source in enumerate(sources):
            try:
                pipeline.stages[source.name] = build_source_stage(
                    config, index, source, pipeline.current_registry
                )
            except ConfigError as exc:
                errors.extend(exc.errors)
        if errors:
            raise ConfigError(tuple(errors))
        if rule_state:
            pipeline.engine.restore(rule_state)
        return pipeline

    def current_registry(self) -> KeyRegistry:
        return self.registry

    def parse(self, source: str, line: str) -> Record | None:
        """Parse one line of `source`; non-records are counted here and give None."""
        result = self.stages[source].parse(line)
        if type(result) is Record:
            self.store.count_line(source, LineResult.PARSED)
            return result
        self.store.count_line(source, result)  # type: ignore[arg-type]
        return None

    def process(self, source: str, record: Record) -> tuple[Event, list[Alert]]:
        event = self.stages[source].attributor.attribute(record)
        self.store.observe(event)
        alerts = self.engine.observe(event)
        for alert in alerts:
            self.store.record_alert(alert)
        return event, alerts

    def process_line(self, source: str, line: str) -> list[Alert]:
        record = self.parse(source, line)
        if record is None:
            return []
        return self.process(source, record)[1]

    def advance(self, now: float) -> list[Alert]:
        alerts = self.engine.advance(now)
        for alert in alerts:
            self.store.record_alert(alert)
        return alerts
