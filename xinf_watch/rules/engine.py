"""The rule engine: events and a clock in, alert transitions out (docs/DESIGN.md sections 3 and 7).

This module owns the engine's clock, the dispatch of events to rules, the order of the alerts and
the engine's state; what each kind does lives beside it: `eventrules` (match, threshold,
distinct, new_value, spike), `clockrules` (absent, key_expiry), `episodes` (firing, resolution,
cooldown, alert ids), `summaries` (what an alert says), `rulestate` (a rule's memory).

Pure: no threads, files, sockets or wall clock. Time is the events' own (`observe`) or what the
caller passes to `advance(now)`, and `now` never goes backwards. Every event is evaluated at its
own time, or at `now` when it is late (lines a few seconds out of order are fine). The clock
follows the events, with one exception: an event more than `MAX_CLOCK_LEAD` ahead of `now` moves
it only when the event before it was that far ahead too. A log that really jumps (a quiet night,
a restart after downtime) moves the clock at its second line; one stray line with a wrong date
does not drag the clock, and with it every window, cooldown and absent source, into its future.
That line still counts for its rules in its own time, so it can leave a trace in its own group
(a match cooldown counted from its time); it does not count as its source writing later than now.
The clock-driven work (`advance`) runs every `TICK` seconds of clock time; key expiry every
`KEY_EXPIRY_EVERY` and at the first use of a key.

Alerts come out in a deterministic order (rules in config order, groups in the order they
fired), so a replay prints the same lines every time.

Speed: rules are indexed by the few-valued fields of their filters (`filters.INDEXED`): each
combination of those values met in the events gets, once, the list of rules it can match.

Memory is bounded: groups per rule (`memory.MAX_GROUPS`, firing groups evicted last), values per
new_value group (`eventkinds.MAX_VALUES`), distinct values per group (twice the rule's count);
`evicted` counts what was forgotten. `snapshot()` / `restore()` carry all of the state over a
restart.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from xinf_watch.caches import remember
from xinf_watch.keys.registry import KeyRegistry
from xinf_watch.model import Alert, Event, KeyState
from xinf_watch.rules.clockkinds import check_absent, check_key_expiry
from xinf_watch.rules.episodes import notify_held_back
from xinf_watch.rules.eventkinds import HANDLERS, Handler, describe_now, flush_held, settle
from xinf_watch.rules.filters import Predicate, admits, always
from xinf_watch.rules.flood import FLOOD_KIND, FloodGate
from xinf_watch.rules.memory import NEVER, CompiledRule, finite_or_none, gc_paused

TICK = 1.0
KEY_EXPIRY_EVERY = 60.0
MAX_CLOCK_LEAD = 3600.0
PLAN_LIMIT = 4096  # index combinations; scopes come from the route table, but a shared feed is input
STATE_VERSION = 1

Plan = tuple[tuple[CompiledRule, Handler, Predicate | None], ...]

_CLOCK_KINDS = ("threshold", "spike", "distinct", "absent", "key_expiry")
_KEYED_STATES = frozenset({KeyState.VALID, KeyState.EXPIRED, KeyState.REVOKED})


class RuleEngine:
    """Evaluates every configured rule; `registry` is a getter so a key reload is seen at once."""

    def __init__(
        self,
        rules: Sequence[Any],
        registry: Callable[[], KeyRegistry],
        sources: Iterable[str] = (),
    ) -> None:
        self.rules = [CompiledRule(r) for r in rules]
        self.registry = registry
        self.sources = tuple(sources)
        self.now = NEVER
        self.started: float | None = None
        self.leap_pending = False  # the last event was more than MAX_CLOCK_LEAD ahead of `now`
        self.next_tick = NEVER
        self.next_expiry_check = NEVER
        self.source_last_seen: dict[str, float] = {}
        self.keys_last_used: dict[str, float] = {}  # alias -> its latest use, for key_expiry
        self._event_rules = [(r, HANDLERS[r.kind]) for r in self.rules if r.kind in HANDLERS]
        self._clock_rules = [r for r in self.rules if r.kind in _CLOCK_KINDS]
        self._expiry_rules = [r for r in self.rules if r.kind == "key_expiry"]
        self._match_rules = [r for r in self.rules if r.kind == "match"]
        # the event's values of filters.INDEXED -> the rules it can match
        self._plans: dict[tuple[Any, ...], Plan] = {}
        limited = [r for r in self.rules if r.config.max_alerts]
        self._gates = {r.name: FloodGate(r.name, r.severity, r.config.max_alerts) for r in limited}

    # -- input ---------------------------------------------------------------------------------

    def observe(self, event: Event) -> list[Alert]:
        """The alerts the clock owes for a gap before the event, those the event causes, then
        those the clock owes now."""
        out: list[Alert] = []
        ts = event.ts
        before = self.now
        now = self._move_clock(ts)
        gap = now >= self.next_tick and now - before > TICK
        if gap:
            # A gap in the log is silence the clock-driven rules must see before the line that
            # ends it is counted (`absent`), as the live daemon's timer sees it while no line comes.
            out.extend(self._advance(now))
        at = now if ts <= now else ts  # the time its rules see: its own, unless it is late
        new_key = self._note_use(event, now)
        index = (
            event.credential, event.key_state, event.outcome,
            event.scope_allowed, event.ip_allowed, event.ip_forwarded, event.scope,
        )  # fmt: skip
        plan = self._plans.get(index)
        if plan is None:  # (an empty plan is a plan: no rule for this index)
            plan = self._plan(index)
        for rule, handler, residual in plan:
            if residual is None or residual(event):
                alert = handler(rule, event, at)
                if alert is not None:
                    out.append(alert)
        if new_key and self._expiry_rules:
            out.extend(self._check_key_expiry(now))  # a key's first use: check it at once
        if gap or now >= self.next_tick:
            out.extend(self._advance(now))
        return self._gated(out) if out and self._gates else out

    def _plan(self, index: tuple[Any, ...]) -> Plan:
        """The rules an event of this index can match, with what is left to check of their filters
        (None: nothing), made once per index."""
        plan = tuple(
            (rule, handler, None if rule.residual is always else rule.residual)
            for rule, handler in self._event_rules
            if admits(rule.config.when, index)
        )
        return remember(self._plans, index, plan, PLAN_LIMIT)

    def _move_clock(self, ts: float) -> float:
        """The clock after an event at `ts` (see the module docstring on lines far ahead)."""
        if self.started is None:
            self.started = ts
        now = self.now
        if ts > now:
            if ts - now <= MAX_CLOCK_LEAD or self.leap_pending or now == NEVER:
                self.now = now = ts
                self.leap_pending = False
            else:
                self.leap_pending = True  # a lone line far ahead: the clock waits for the next one
        elif self.leap_pending:
            self.leap_pending = False
        return now

    def _note_use(self, event: Event, now: float) -> bool:
        """Record when the event's source wrote and its key was used; True for a key's first use."""
        ts = event.ts
        written = ts if ts <= now else now  # when its source wrote, as far as the clock can tell
        last = self.source_last_seen.get(event.source)
        if last is None or written > last:
            self.source_last_seen[event.source] = written
        if event.key_state not in _KEYED_STATES:
            return False
        last_used = self.keys_last_used.get(event.key)
        if last_used is None or ts > last_used:
            self.keys_last_used[event.key] = ts
        return last_used is None

    @property
    def last_write(self) -> float | None:
        """The latest time a source wrote, as the clock accepted it (a stray future line excluded)."""
        return max(self.source_last_seen.values(), default=None)

    def advance(self, now: float) -> list[Alert]:
        """Time-driven transitions at `now`: resolutions, absent sources, expiring keys."""
        out = self._advance(now)
        return self._gated(out) if out and self._gates else out

    def _advance(self, now: float) -> list[Alert]:
        if self.started is None:
            self.started = now
        if now > self.now:
            self.now = now
        now = self.now
        self.next_tick = now + TICK
        out: list[Alert] = []
        if now >= self.next_expiry_check:
            self.next_expiry_check = now + KEY_EXPIRY_EVERY
            out.extend(self._check_key_expiry(now))
        for rule in self._clock_rules:
            if rule.kind == "absent":
                out.extend(check_absent(rule, now, self.sources, self.source_last_seen, self.started))
            elif rule.kind != "key_expiry" and rule.firing:
                out.extend(settle(rule, now))
            out.extend(notify_held_back(rule, now, describe_now))
        for rule in self._match_rules:
            if rule.held:
                out.extend(flush_held(rule, now))
        for gate in self._gates.values():
            if gate.flood is not None:
                out.extend(gate.settle(now))
        return out

    def _gated(self, alerts: list[Alert]) -> list[Alert]:
        """`alerts` through their rules' flood limits (`rules/flood.py`)."""
        out: list[Alert] = []
        for alert in alerts:
            gate = self._gates.get(alert.rule)
            if gate is None or alert.kind == FLOOD_KIND:
                out.append(alert)
            else:
                out.extend(gate.admit(alert, self.now))
        return out

    @property
    def evicted(self) -> dict[str, int]:
        return {r.name: r.evicted for r in self.rules if r.evicted}

    @property
    def held_back(self) -> dict[str, int]:
        """Firing alerts each rule's flood limit held back, ever (saved with the rule state)."""
        return {name: gate.held_back_total for name, gate in self._gates.items() if gate.held_back_total}

    def _check_key_expiry(self, now: float) -> list[Alert]:
        out: list[Alert] = []
        registry = self.registry()
        for rule in self._expiry_rules:
            out.extend(check_key_expiry(rule, registry, now, self.keys_last_used))
        return out

    # -- state ---------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """All of the engine's state as JSON-able data (no raw credentials: aliases and hashes)."""
        with gc_paused():
            rules = {rule.name: rule.snapshot() for rule in self.rules}
        return {
            "version": STATE_VERSION,
            "now": finite_or_none(self.now),
            "started": self.started,
            "leap_pending": self.leap_pending,
            "next_tick": finite_or_none(self.next_tick),
            "next_expiry_check": finite_or_none(self.next_expiry_check),
            "source_last_seen": dict(self.source_last_seen),
            "keys_last_used": dict(sorted(self.keys_last_used.items())),
            "rules": rules,
            "floods": {name: gate.snapshot() for name, gate in self._gates.items()},
        }

    def restore(self, data: Any) -> None:
        """Take over a `snapshot()` (from JSON); rules that no longer exist, or changed kind or
        grouping, are ignored, and so is state that does not have the expected shape."""
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            return
        for name in ("now", "next_tick", "next_expiry_check"):
            value = _number(data.get(name))
            setattr(self, name, NEVER if value is None else value)
        self.started = _number(data.get("started"))
        self.leap_pending = data.get("leap_pending") is True  # absent from older snapshots
        if (seen := _times(data.get("source_last_seen"))) is not None:
            self.source_last_seen = seen
        if (used := _times(data.get("keys_last_used"))) is not None:
            self.keys_last_used = used
        elif isinstance(keys := data.get("keys_seen"), list):  # saved before last use was kept
            self.keys_last_used = {k: self.now for k in keys if isinstance(k, str)}
        rules = data.get("rules")
        if isinstance(rules, dict):
            with gc_paused():
                for rule in self.rules:
                    rule.restore(rules.get(rule.name))
        floods = data.get("floods")
        if isinstance(floods, dict):
            for name, gate in self._gates.items():
                gate.restore(floods.get(name))


def _times(saved: Any) -> dict[str, float] | None:
    """A saved {name: time} mapping without the entries that are not one; None if not a mapping."""
    if not isinstance(saved, dict):
        return None
    return {k: v for k, v in saved.items() if isinstance(k, str) and _number(v) is not None}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)
