"""The one place the stages meet: line -> Record -> Event -> metrics and rules -> alert transitions.

Both `replay` and the daemon drive a `Pipeline`, which is what makes a replay equal to what the
live daemon would have done. The pipeline owns no I/O, no thread and no clock: time is the
event's own timestamp, and `advance(now)` lets the caller move time forward when no line arrives
(the daemon passes the wall clock, replay the last event time). Lines come one at a time
(`process_line`) or a batch at a time (`process_lines`, the daemon's reads and replay's blocks:
the same work, with the stages looked up once per batch).

Reload is build-then-swap: `Pipeline.build` constructs every stage from a new config and registry,
and raises before anything is swapped if one of them is invalid.

A source with a `wrapper` (container logs, ingest/wrappers.py) has its lines unwrapped here, before its
parser: the caller names the file each line comes from (`file`), and says when a file has ended
(`end_file`, `end_files`), since a line may be joined from parts. The parts still pending are
state like the rules': `partial_lines()` to save, `build(partial_lines=...)` to carry on.

With shared rule state (`defer_rules`, the daemon with `state.shared`: fleet/feed.py) an event is
counted in the metrics at once, and waits for the rules: the caller takes the events
(`take_deferred`), and feeds the fleet's merged stream to `judge`; only the alerts this instance
sends are counted (`count_alerts`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Container, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from xinf_watch.attribution.attribute import Attributor
from xinf_watch.attribution.scopes import ScopeOverride, load_scope_map
from xinf_watch.config.schema import Config, ConfigError
from xinf_watch.config.sources import SourceConfig
from xinf_watch.formats import Parser, build_parser
from xinf_watch.ingest.wrappers import Unwrapper, runtime_time
from xinf_watch.keys.registry import KeyRegistry
from xinf_watch.metrics.store import MetricsStore
from xinf_watch.model import Alert, Event, LineResult, Record
from xinf_watch.rules.engine import RuleEngine


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
            wrapped=source.wrapper is not None,
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
                 sources: Sequence[SourceConfig], defer_rules: bool = False) -> None:
        self.config = config
        self.defer_rules = defer_rules
        self.deferred: dict[str, list[Event]] = {}
        self.registry = registry
        self.store = store
        self.stages: dict[str, SourceStage] = {}
        self.unwrappers: dict[str, Unwrapper] = {s.name: Unwrapper(s.wrapper) for s in sources if s.wrapper}
        self.engine = RuleEngine(config.rules, self.current_registry, [s.name for s in sources])

    @classmethod
    def build(
        cls,
        config: Config,
        registry: KeyRegistry,
        store: MetricsStore | None = None,
        extra_sources: Sequence[SourceConfig] = (),
        rule_state: dict[str, Any] | None = None,
        partial_lines: Mapping[str, Any] | None = None,
        defer_rules: bool = False,
    ) -> Pipeline:
        """Every stage of `config` (plus ad-hoc sources), or `ConfigError` with all that is wrong;
        `rule_state` is a `RuleEngine.snapshot()`, `partial_lines` a `partial_lines()`, to carry on
        from (a restart, a reload)."""
        sources = (*config.sources, *extra_sources)
        pipeline = cls(config, registry, store or MetricsStore(), sources, defer_rules)
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
        for name, unwrapper in pipeline.unwrappers.items():
            unwrapper.restore((partial_lines or {}).get(name))
        return pipeline

    def current_registry(self) -> KeyRegistry:
        return self.registry

    def parse(self, source: str, line: str, file: Hashable = None) -> Record | None:
        """Parse one line of `source` (from `file`, for a wrapped source); non-records are counted
        here and give None, and so does a part of a wrapped line (counted with its line)."""
        if self.unwrappers and source in self.unwrappers:
            unwrapper = self.unwrappers[source]
            fed = unwrapper.feed(file, line)
            if fed is None:
                return None
            if isinstance(fed, LineResult):  # a str too: first
                self.store.count_line(source, fed)
                return None
            return self._counted(source, self._parse_unwrapped(source, fed, unwrapper))
        return self._counted(source, self.stages[source].parse(line))

    def _counted(self, source: str, result: Record | LineResult) -> Record | None:
        """Count a line's result; the record, if it is one."""
        if type(result) is Record:
            self.store.count_line(source, LineResult.PARSED)
            return result
        self.store.count_line(source, result)  # type: ignore[arg-type]
        return None

    def _parse_unwrapped(self, source: str, line: str, unwrapper: Unwrapper) -> Record | LineResult:
        result = self.stages[source].parse(line)
        if type(result) is Record and math.isnan(result.ts):  # NO_TIME: the line has none of its own
            ts = runtime_time(unwrapper.time)
            if ts is None:
                return LineResult.UNPARSED
            result.ts = ts
        return result

    def end_file(self, source: str, file: Hashable) -> list[Record]:
        """`file` of a wrapped `source` has ended: the lines its parts made, parsed (to process)."""
        unwrapper = self.unwrappers.get(source)
        if unwrapper is None:
            return []
        records = []
        for fed in unwrapper.end(file):
            if isinstance(fed, LineResult):
                self.store.count_line(source, fed)
            elif (record := self._counted(source, self._parse_unwrapped(source, fed, unwrapper))) is not None:
                records.append(record)
        return records

    def end_files(self, source: str, open_files: Container[Hashable]) -> list[Alert]:
        """The daemon's side of `end_file`: every file of `source` with parts pending and not in
        `open_files` has ended; its lines are processed."""
        unwrapper = self.unwrappers.get(source)
        alerts: list[Alert] = []
        for file in unwrapper.pending_files() if unwrapper is not None else ():
            if file not in open_files:
                for record in self.end_file(source, file):
                    alerts.extend(self.process(source, record)[1])
        return alerts

    def has_partial_lines(self, source: str) -> bool:
        unwrapper = self.unwrappers.get(source)
        return unwrapper is not None and unwrapper.has_pending()

    def partial_lines(self) -> dict[str, Any]:
        """The parts of wrapped lines still pending, per source (JSON-ready), for `build`."""
        return {name: u.snapshot() for name, u in self.unwrappers.items() if u.has_pending()}

    def process(self, source: str, record: Record) -> tuple[Event, list[Alert]]:
        event = self.stages[source].attributor.attribute(record)
        self.store.observe(event)
        if self.defer_rules:
            self.deferred.setdefault(source, []).append(event)
            return event, []
        return event, self.count_alerts(self.engine.observe(event))

    def process_line(self, source: str, line: str, file: Hashable = None) -> list[Alert]:
        record = self.parse(source, line, file)
        if record is None:
            return []
        return self.process(source, record)[1]

    def process_lines(
        self,
        source: str,
        lines: Iterable[str],
        file: Hashable = None,
        on_error: Callable[[], None] | None = None,
    ) -> tuple[int, list[Alert]]:
        """`process_line` for each of `lines` (the daemon's batches, replay's blocks): the records
        among them and the alerts. The stages are looked up once per batch, not per line: that
        was 1.5 us of the 10 a line cost. A line that raises calls `on_error` (inside the except
        block, to log) and is skipped, or, without `on_error`, ends the batch."""
        if source in self.unwrappers or self.defer_rules:
            return self._process_lines_one_by_one(source, lines, file, on_error)
        stage, store, judge = self.stages[source], self.store, self.engine.observe
        parse, attribute, observe = stage.parse, stage.attributor.attribute, store.observe
        records = 0
        alerts: list[Alert] = []
        try:
            for line in lines:
                try:
                    result = parse(line)
                    if type(result) is not Record:
                        store.count_line(source, result)  # type: ignore[arg-type]
                        continue
                    records += 1
                    event = attribute(result)
                    observe(event)
                    if fired := judge(event):
                        alerts.extend(self.count_alerts(fired))
                except Exception:
                    if on_error is None:
                        raise
                    on_error()
        finally:
            store.count_lines(source, LineResult.PARSED, records)
        return records, alerts

    def _process_lines_one_by_one(
        self, source: str, lines: Iterable[str], file: Hashable, on_error: Callable[[], None] | None
    ) -> tuple[int, list[Alert]]:
        records = 0
        alerts: list[Alert] = []
        for line in lines:
            try:
                record = self.parse(source, line, file)
                if record is not None:
                    records += 1
                    alerts.extend(self.process(source, record)[1])
            except Exception:
                if on_error is None:
                    raise
                on_error()
        return records, alerts

    def advance(self, now: float) -> list[Alert]:
        alerts = self.engine.advance(now)
        return alerts if self.defer_rules else self.count_alerts(alerts)

    def take_deferred(self) -> list[tuple[str, list[Event]]]:
        """The events waiting for the rules, per source in the order they were read."""
        deferred, self.deferred = self.deferred, {}
        return list(deferred.items())

    def judge(self, events: list[Event]) -> list[Alert]:
        """Deferred rules: `events` (of any instance) through the rule engine; the alerts, not counted."""
        observe = self.engine.observe
        return [alert for event in events for alert in observe(event)]

    def count_alerts(self, alerts: list[Alert]) -> list[Alert]:
        for alert in alerts:
            self.store.record_alert(alert)
        return alerts
