"""A rule as the engine runs it, what it remembers per group, and that memory as JSON.

`CompiledRule` is one rule of the config made ready for events: its filter split for the engine's
index, its grouping and value getters, and its groups (capped, firing groups evicted last).
`GroupState` holds a group's windows, seen values, cooldown clock and current `Episode`. The JSON
form (`group_to_json` / `group_from_json`) uses only lists, dicts, strings, numbers, booleans and
null: no infinities (a cooldown never started is null), no tuples. Decoding is strict about types
and raises `ValueError` on anything that does not fit, so the engine can drop one malformed group
instead of trusting it. Window counters are restored only when their bucket width still matches
the rule's window (a changed `window:` starts the count over).
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, TypeVar

from xinf_watch.config.rules import ALLOWED_IPS
from xinf_watch.model import Event, Severity
from xinf_watch.rules.filters import compile_filter, ip_matcher, subnet_of
from xinf_watch.rules.windows import BoundedMap, WindowCounter

NEVER = float("-inf")
MAX_GROUPS = 20_000  # per rule

Group = tuple[str, ...]
T = TypeVar("T")


@dataclass(slots=True)
class Episode:
    """One group's current firing episode, or the hits gathered since its last notification."""

    first_ts: float = 0.0
    last_ts: float = 0.0
    count: int = 0
    key: str = "none"
    source: str | None = None
    firing: bool = False
    notified: bool = False  # False while firing inside the cooldown: nothing was sent for it yet
    started: float = 0.0  # what the alert id hashes: the same for the firing and its resolution
    summary: str = ""  # the firing summary, for a notification the cooldown held back
    extra: dict[str, Any] | None = None  # kind-specific alert fields; None saves a dict per group

    def extend(self, ts: float, key: str, source: str | None) -> None:
        """Count one more hit at `ts` (which may be a little out of order)."""
        if self.count == 0:
            self.first_ts = self.last_ts = ts
        else:
            self.first_ts = min(self.first_ts, ts)
            self.last_ts = max(self.last_ts, ts)
        self.count += 1
        self.key = key
        self.source = source


@dataclass(slots=True)
class GroupState:
    counter: WindowCounter | None = None
    long_counter: WindowCounter | None = None  # spike: the baseline window
    # new_value / distinct: value -> last seen, least recently seen first
    values: dict[str, float] = field(default_factory=dict)
    # new_value while learning: the wide networks (/16, /48) of the addresses it has used;
    # derived from `values` when None (after a restore), so never saved
    networks: set[str] | None = None
    first_seen: float | None = None
    last_notified: float = NEVER
    episode: Episode = field(default_factory=Episode)
    # daily spike: requests per hour (hour number -> count), the busiest closed window per day
    # (day number -> level), and the levels of the windows not yet closed ([slot, level] pairs)
    hours: dict[int, int] | None = None
    day_peaks: dict[int, int] | None = None
    open_slots: list[list[int]] | None = None
    # ...and what it expects in the current window (window number, expected): unchanged within a
    # window, so computed once per window, not per event; derived, never saved
    expected_memo: tuple[int, float | None] = (-1, None)
    # a firing threshold or distinct group: the earliest time its level can have fallen to half
    # (its buckets or values expire, nothing else lowers it); derived, never saved
    settle_at: float = NEVER


@contextmanager
def gc_paused() -> Iterator[None]:
    """For building or reading the whole state at once: tens of thousands of small containers,
    none in a cycle, would make the cyclic GC rescan the engine's state again and again (4-6x the
    time at the memory caps: 0.45 s instead of 0.11 s for a snapshot of 80,000 groups)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def is_firing(state: GroupState) -> bool:
    return state.episode.firing


def finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def group_to_json(state: GroupState) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if state.counter is not None:
        out["counter"] = [state.counter.width, state.counter.snapshot()]
    if state.long_counter is not None:
        out["long_counter"] = [state.long_counter.width, state.long_counter.snapshot()]
    if state.values:
        out["values"] = [[value, seen] for value, seen in state.values.items()]
    if state.first_seen is not None:
        out["first_seen"] = state.first_seen
    if math.isfinite(state.last_notified):
        out["last_notified"] = state.last_notified
    if state.hours is not None and state.day_peaks is not None and state.open_slots is not None:
        out["daily"] = {
            "hours": [[h, n] for h, n in state.hours.items()],
            "day_peaks": [[d, n] for d, n in state.day_peaks.items()],
            "open_slots": [list(pair) for pair in state.open_slots],
        }
    ep = state.episode
    if ep != Episode():
        out["episode"] = {
            "first_ts": ep.first_ts, "last_ts": ep.last_ts, "count": ep.count, "key": ep.key,
            "source": ep.source, "firing": ep.firing, "notified": ep.notified, "started": ep.started,
            "summary": ep.summary, "extra": ep.extra or {},
        }  # fmt: skip
    return out


def group_from_json(data: Any, windows: tuple[float | None, float | None]) -> GroupState:
    """A `GroupState` from `group_to_json` output; `windows`: the rule's (window, baseline window)."""
    if not isinstance(data, dict):
        raise ValueError("not a mapping")
    state = GroupState()
    state.counter = _counter(data.get("counter"), windows[0])
    state.long_counter = _counter(data.get("long_counter"), windows[1])
    if windows[1] is not None and (state.counter is None or state.long_counter is None):
        state.counter = state.long_counter = None  # a spike needs both, or neither
    for pair in _list(data.get("values", [])):
        value, seen = _list(pair)
        state.values[_str(value)] = _num(seen)
    if (first_seen := data.get("first_seen")) is not None:
        state.first_seen = _num(first_seen)
    if (last_notified := data.get("last_notified")) is not None:
        state.last_notified = _num(last_notified)
    if (daily := data.get("daily")) is not None:
        if not isinstance(daily, dict):
            raise ValueError("daily is not a mapping")
        state.hours = dict(_int_pairs(daily["hours"]))
        state.day_peaks = dict(_int_pairs(daily["day_peaks"]))
        state.open_slots = [list(pair) for pair in _int_pairs(daily["open_slots"])]
    if (ep := data.get("episode")) is not None:
        state.episode = _episode_from_json(ep)
    return state


def _episode_from_json(ep: Any) -> Episode:
    if not isinstance(ep, dict) or not isinstance(ep.get("extra", {}), dict):
        raise ValueError("episode is not a mapping")
    source = ep.get("source")
    return Episode(
        first_ts=_num(ep["first_ts"]), last_ts=_num(ep["last_ts"]), count=_int(ep["count"]),
        key=_str(ep["key"]), source=None if source is None else _str(source),
        firing=_bool(ep["firing"]), notified=_bool(ep["notified"]), started=_num(ep["started"]),
        summary=_str(ep.get("summary", "")), extra=dict(ep.get("extra", {})) or None,
    )  # fmt: skip


def _count_or(saved: Any, default: int) -> int:
    """`saved` if it is a count (an int >= 0, not a bool), else `default`."""
    return saved if isinstance(saved, int) and not isinstance(saved, bool) and saved >= 0 else default


def _int_pairs(data: Any) -> list[tuple[int, int]]:
    pairs = []
    for pair in _list(data):
        first, second = _list(pair)
        pairs.append((_int(first), _int(second)))
    return pairs


def _counter(data: Any, window: float | None) -> WindowCounter | None:
    if data is None or window is None:
        return None
    saved_width, buckets = _list(data)
    counter = WindowCounter(window)
    if not math.isclose(_num(saved_width), counter.width):
        return None  # the window changed: these buckets mean something else now
    counter.restore([[_int(i), _int(n), _num(t)] for i, n, t in (_list(b) for b in _list(buckets))])
    return counter


def _of_type(value: Any, kind: type[T]) -> T:
    """`value` if it is a `kind` (a bool is not an int here, as in JSON), else ValueError."""
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ValueError(f"expected {kind.__name__}, got {type(value).__name__}")
    return value


def _list(value: Any) -> list[Any]:
    return _of_type(value, list)


def _str(value: Any) -> str:
    return _of_type(value, str)


def _int(value: Any) -> int:
    return _of_type(value, int)


def _bool(value: Any) -> bool:
    return _of_type(value, bool)


def _num(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {type(value).__name__}")
    return float(value)


def _group_getter(fields: Sequence[str]) -> Callable[[Event], Group]:
    if not fields:
        return lambda e: ()
    if len(fields) == 1:
        get = attrgetter(fields[0])

        def one(e: Event) -> Group:
            value = get(e)
            return (value if type(value) is str else str(value),)

        return one
    get_all = attrgetter(*fields)
    return lambda e: tuple(v if type(v) is str else str(v) for v in get_all(e))


def _known_getter(known: Sequence[Any]) -> Callable[[Event], bool] | None:
    """new_value's `known`: whether an event's address is inside a network the rule never reports."""
    if not known:
        return None
    networks = tuple(n for n in known if not isinstance(n, str))
    own_allowed_ips = ALLOWED_IPS in known
    if own_allowed_ips and not networks:
        return lambda e: e.ip_allowed is True
    within = ip_matcher(networks)
    if own_allowed_ips:
        return lambda e: e.ip_allowed is True or within(e.ip)
    return lambda e: within(e.ip)


def _value_getter(value: str | None) -> Callable[[Event], str | None]:
    """The rule's `value` of an event (None: the event has none); rules without one get None."""
    if not value:
        return lambda e: None
    if value.startswith("ip/"):
        prefix = int(value[3:])
        return lambda e: subnet_of(e.ip, prefix)
    get = attrgetter(value)

    def plain(e: Event) -> str | None:
        got = get(e)
        return None if got is None else got if type(got) is str else str(got)

    return plain


class CompiledRule:
    def __init__(self, config: Any) -> None:
        self.config = config
        self.name: str = config.name
        self.kind: str = config.kind
        self.severity: Severity = Severity(config.severity)
        self.by: tuple[str, ...] = tuple(config.by)
        # clock-driven kinds group by what they watch, whatever `by` says
        self.group_fields = {"absent": ("source",), "key_expiry": ("key",)}.get(self.kind, self.by)
        self.cooldown: float = float(config.cooldown)
        self.residual = compile_filter(config.when, indexed=False)  # the rest: see `admits`
        self.group_of = _group_getter(self.by)
        self.groups: BoundedMap[Group, GroupState] = BoundedMap(MAX_GROUPS, keep=is_firing)
        self.firing: dict[Group, None] = {}  # an ordered set: groups in the order they fired
        self.held: dict[Group, None] = {}  # match: groups with hits a cooldown held back
        self.evicted_values = 0
        self.value_of = _value_getter(getattr(config, "value", None))
        self.is_known = _known_getter(getattr(config, "known", ()))
        value = getattr(config, "value", None) or ""
        self.value_is_address = value == "ip" or value.startswith("ip/")
        self.daily: bool = getattr(config, "daily", False)
        window = getattr(config, "window", None)
        # a trailing spike baseline needs a long window counter; a daily one counts hours instead
        baseline = getattr(config, "baseline", None) if self.kind == "spike" else None
        if self.daily:
            baseline = None
        self.windows: tuple[float | None, float | None] = (
            window,
            None if baseline is None or window is None else baseline + window,
        )

    def new_state(self) -> GroupState:
        state = GroupState()
        window, long_window = self.windows
        if window is not None and self.kind in ("threshold", "spike"):
            state.counter = WindowCounter(window)
            if long_window is not None:
                state.long_counter = WindowCounter(long_window)
            if self.daily:
                state.hours, state.day_peaks, state.open_slots = {}, {}, []
        return state

    def group_dict(self, group: Group) -> dict[str, str]:
        return dict(zip(self.group_fields, group, strict=True))

    @property
    def evicted(self) -> int:
        return self.groups.evicted + self.evicted_values

    # -- state ----------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "fields": list(self.group_fields),
            "evicted": self.groups.evicted,
            "evicted_values": self.evicted_values,
            "groups": [[list(group), group_to_json(state)] for group, state in self.groups.items()],
            "firing": [list(group) for group in self.firing],
            "held": [list(group) for group in self.held],
        }

    def restore(self, data: Any) -> None:
        """Take over saved state; ignore it if the rule's kind or grouping changed since."""
        if not isinstance(data, dict) or data.get("kind") != self.kind:
            return
        if data.get("fields") != list(self.group_fields):
            return
        groups = data.get("groups")
        for item in groups if isinstance(groups, list) else ():
            restored = self._restore_group(item)
            if restored is not None:
                self.groups.put(*restored)
        # the firing groups (and a match rule's held-back hits) in the order they fired (were held)
        self.firing = self._in_saved_order(data.get("firing"), lambda s: s.episode.firing)
        if self.kind == "match":
            self.held = self._in_saved_order(data.get("held"), lambda s: s.episode.count > 0)
        self.groups.evicted = _count_or(data.get("evicted"), self.groups.evicted)
        self.evicted_values = _count_or(data.get("evicted_values"), self.evicted_values)

    def _restore_group(self, item: Any) -> tuple[Group, GroupState] | None:
        """One saved group, fitted to the rule as it is now; None when malformed (dropped alone)."""
        try:
            saved_group, saved_state = item
            group = tuple(saved_group)
            if len(group) != len(self.group_fields) or not all(isinstance(g, str) for g in group):
                return None
            state = group_from_json(saved_state, self.windows)
        except (TypeError, ValueError, KeyError):
            return None
        if self.kind in ("threshold", "spike") and state.counter is None:
            fresh = self.new_state()
            state.counter, state.long_counter = fresh.counter, fresh.long_counter  # window changed
        if self.daily and state.hours is None:
            state.hours, state.day_peaks, state.open_slots = {}, {}, []  # was not daily before
        return group, state

    def _in_saved_order(self, saved: Any, holds: Callable[[GroupState], bool]) -> dict[Group, None]:
        """The groups for which `holds`: in the saved order, then any the saved list lacks."""
        wanted = {g for g, state in self.groups.items() if holds(state)}
        order = [tuple(g) for g in saved if isinstance(g, list)] if isinstance(saved, list) else []
        out = dict.fromkeys(g for g in order if g in wanted)
        out.update(dict.fromkeys(g for g, _ in self.groups.items() if g in wanted))
        return out
