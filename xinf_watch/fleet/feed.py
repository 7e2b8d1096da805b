"""Rule state shared by a fleet of instances (`state.shared`): what goes into the one event stream,
what comes out of it into the rule engine, and which alerts are this instance's to send.

The stream (Redis, `fleet/link.py` does the round trips) holds every instance's attributed events,
one entry per source and read batch. Every instance runs its own rule engine over the merged
stream, in stream order: the engine is deterministic, so every instance holds the same windows,
counts and seen values, and makes the same alerts with the same ids. The first instance to claim
an alert (id and status) sends it; the others drop it. A burst spread by a load balancer over
three gateways is one burst, and a key seen by one gateway is not new on the next.

Each entry carries its source's index of its first event (per instance and source, counted from
the first event ever published), and its writer: the instance's name and the run of its state (a
token made when the instance starts without saved state, so that one that lost its state counts
from 0 again as a new writer rather than be skipped until it passes its old indexes). An
instance feeds its engine each (writer, source) index once: an entry published twice (a crash
between publishing and committing the read position reads the lines again) counts once, and so
do the events an instance fed to its engine directly while the stream was unreachable (local
mode) when they reach the stream later.

Local mode: while the stream is unreachable the instance goes on alone: its own events go straight
into its engine and wait (bounded: `KEEP_EVENTS`) to be published, and the alerts it makes are sent
unclaimed and claimed when the stream is back, before its late events are published, so the other
instances do not send them again. Other instances' late events are judged at the engine's current
time (the engine's rule for late events).

Pure: no sockets, no clock. `snapshot()` / `restore()` carry it over a restart with the read
positions it goes with.
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from xinf_watch.caches import remember
from xinf_watch.model import Alert, CredentialKind, Event, KeyState, Outcome, ScopeDenial

KEEP_EVENTS = 50_000  # own events kept for publishing while the stream is unreachable (oldest dropped)
KEEP_UNCLAIMED = 10_000  # alert ids sent while unreachable, to claim when it is back
KEEP_IN_FLIGHT = 1_000  # own entries published and not read back yet (more: decoded when read)
WIRE_VERSION = 1

_FIELDS = tuple(f for f in Event.__dataclass_fields__ if f != "source")  # a row's, in Event's order
event_row: Callable[[Event], tuple[Any, ...]] = operator.attrgetter(*_FIELDS)  # (its source is the entry's)
_ENUM_AT = tuple(
    (_FIELDS.index(name), {member.value: member for member in enum})
    for name, enum in (("outcome", Outcome), ("credential", CredentialKind), ("key_state", KeyState),
                       ("scope_denied_by", ScopeDenial))
)  # fmt: skip


def event_from_row(source: str, row: Sequence[Any]) -> Event:
    """The event of a row `event_row` made; ValueError when `row` is not one."""
    if len(row) != len(_FIELDS):
        raise ValueError(f"an event of {len(row)} fields, not {len(_FIELDS)}")
    values = list(row)
    for at, members in _ENUM_AT:
        if values[at] is not None:
            values[at] = members[values[at]]
    if type(values[0]) not in (int, float):
        raise ValueError("an event without a numeric ts")
    values.insert(1, source)
    return Event(*values)


@dataclass(slots=True)
class Entry:
    """One source's events of one read batch of one instance; `first` is the index of events[0]."""

    instance: str
    source: str
    first: int
    events: list[Event]

    def encode(self) -> bytes:
        """A header line `[version, instance, source, first]`, then the events' rows: a reader
        sees whose entry it is without parsing the events."""
        header = orjson.dumps([WIRE_VERSION, self.instance, self.source, self.first])
        return header + b"\n" + orjson.dumps([event_row(e) for e in self.events])

    @staticmethod
    def header(payload: bytes) -> tuple[str, str, int, bytes]:
        """(instance, source, first, the events' JSON) of a payload; ValueError when it is not one
        of ours (garbage, another version)."""
        head, _, body = payload.partition(b"\n")
        try:
            version, instance, source, first = orjson.loads(head)
        except (orjson.JSONDecodeError, TypeError, ValueError):
            raise ValueError("not an event entry") from None
        if version != WIRE_VERSION:
            raise ValueError(f"wire version {version!r}")
        if type(first) is not int or first < 0 or type(instance) is not str or type(source) is not str:
            raise ValueError("not an event entry header")
        return instance, source, first, body

    @classmethod
    def decode(cls, payload: bytes) -> Entry:
        instance, source, first, body = cls.header(payload)
        try:
            return cls(instance, source, first, [event_from_row(source, row) for row in orjson.loads(body)])
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"not an event entry ({type(exc).__name__})") from None


def claim_name(alert: Alert) -> str:
    """What an alert transition is claimed as: the same on every instance that makes it."""
    return f"{alert.id}:{alert.status.value}"


@dataclass
class FleetFeed:
    """This instance's side of the stream: events to publish, entries to feed, claims to make."""

    instance: str
    run: str = ""  # the token of this state's run (see the module docstring); kept by restore()
    keep_events: int = KEEP_EVENTS
    last_id: str | None = None  # the last stream entry fed to the engine (None: none yet)
    next_index: dict[str, int] = field(default_factory=dict)  # per own source: the next event's index
    fed: dict[tuple[str, str], int] = field(default_factory=dict)  # (writer, source): next index to feed
    pending: deque[Entry] = field(default_factory=deque)  # own entries not yet in the stream
    # own entries published and not read back yet, with their payloads: their events need no decoding
    in_flight: dict[tuple[str, int], tuple[bytes, list[Event]]] = field(default_factory=dict)
    unclaimed: dict[str, None] = field(default_factory=dict)  # claims of alerts sent while unreachable
    published_events: int = 0  # own events in the stream
    fed_events: int = 0  # events (own and others') fed to the engine
    dropped: int = 0  # own events never published: more than keep_events waited
    invalid: int = 0  # stream entries that were not ours to read (garbage, another version)

    @property
    def writer(self) -> str:
        """This instance as its entries name it: its name and the run of its state."""
        return f"{self.instance}/{self.run}" if self.run else self.instance

    def add(self, source: str, events: list[Event]) -> None:
        """Own events of `source`, in the order they were read, to publish."""
        if not events:
            return
        first = self.next_index.get(source, 0)
        self.next_index[source] = first + len(events)
        self.pending.append(Entry(self.writer, source, first, events))
        self._bound()

    def pending_events(self) -> int:
        return sum(len(e.events) for e in self.pending)

    def outgoing(self) -> list[bytes]:
        """The pending entries, encoded, oldest first: publish them, then call `published()`."""
        return [entry.encode() for entry in self.pending]

    def published(self, payloads: Sequence[bytes]) -> None:
        """`payloads`, what `outgoing()` gave (oldest first), are in the stream."""
        for payload in payloads[: len(self.pending)]:
            entry = self.pending.popleft()
            self.published_events += len(entry.events)
            remember(self.in_flight, (entry.source, entry.first), (payload, entry.events), KEEP_IN_FLIGHT)

    def receive(self, entry_id: str, payload: bytes) -> list[Event]:
        """A stream entry, in stream order: the events of it the engine has not been fed yet."""
        self.last_id = entry_id
        try:
            instance, source, first, _ = Entry.header(payload)
            own = self.in_flight.get((source, first)) if instance == self.writer else None
            # only this very payload: a copy an earlier run published under the same index (a crash
            # before the commit) may hold fewer events, and is fed as the other instances feed it
            if own is not None and own[0] == payload:
                del self.in_flight[(source, first)]
                entry = Entry(instance, source, first, own[1])
            else:
                entry = Entry.decode(payload)
        except ValueError:
            self.invalid += 1
            return []
        return self._unfed(entry)

    def take_local(self) -> list[Event]:
        """Local mode: the own events not fed yet, to feed the engine directly (they stay pending)."""
        out: list[Event] = []
        for entry in self.pending:
            out.extend(self._unfed(entry))
        return out

    def _unfed(self, entry: Entry) -> list[Event]:
        where = (entry.instance, entry.source)
        start = self.fed.get(where, 0)
        end = entry.first + len(entry.events)
        if end <= start:
            return []
        self.fed[where] = end
        events = entry.events[max(0, start - entry.first) :]
        self.fed_events += len(events)
        return events

    def sent_unclaimed(self, alerts: Iterable[Alert]) -> None:
        """Local mode: these alerts went out unclaimed; claim them once the stream is back."""
        for alert in alerts:
            self.unclaimed[claim_name(alert)] = None
        while len(self.unclaimed) > KEEP_UNCLAIMED:
            del self.unclaimed[next(iter(self.unclaimed))]

    def _bound(self) -> None:
        excess = self.pending_events() - self.keep_events
        while excess > 0 and len(self.pending) > 1:
            entry = self.pending.popleft()
            self.dropped += len(entry.events)
            excess -= len(entry.events)

    # -- restart ---------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "last_id": self.last_id,
            "run": self.run,
            "next_index": dict(self.next_index),
            "fed": [[instance, source, n] for (instance, source), n in self.fed.items()],
            "pending": [entry.encode().decode() for entry in self.pending],
            "unclaimed": list(self.unclaimed),
            "counts": [self.published_events, self.fed_events, self.dropped, self.invalid],
        }

    def restore(self, data: dict[str, Any] | None) -> None:
        """From a `snapshot()` (pending entries keep the instance name they were made under)."""
        if not data:
            return
        self.last_id = data.get("last_id")
        self.run = str(data.get("run", self.run))
        self.next_index = {str(k): int(v) for k, v in data.get("next_index", {}).items()}
        self.fed = {(str(i), str(s)): int(n) for i, s, n in data.get("fed", ())}
        self.pending = deque(Entry.decode(p.encode()) for p in data.get("pending", ()))
        self.unclaimed = dict.fromkeys(str(c) for c in data.get("unclaimed", ()))
        counts = map(int, data.get("counts", (0,) * 4))
        self.published_events, self.fed_events, self.dropped, self.invalid = counts
