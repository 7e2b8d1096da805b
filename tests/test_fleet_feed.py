"""The fleet's event stream without a socket (fleet/feed.py): what goes in, what comes out into the rule
engine, once each, in order, over duplicates, restarts, local mode and garbage.

The events are real: the fixtures' nginx recording through the real pipeline (`Pipeline.build`,
parser, key registry, attribution, `take_deferred`). A "stream" here is a list of payloads in the
order Redis would hand them out; entry ids are made up ("1-0", "2-0", ...).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paths import FIXTURES

from xinf_watch.app.pipeline import Pipeline
from xinf_watch.config.schema import empty_config, load_config
from xinf_watch.config.sources import SourceConfig
from xinf_watch.fleet import feed as fleet
from xinf_watch.fleet.feed import Entry, FleetFeed, claim_name, event_from_row, event_row
from xinf_watch.keys.files import load_registry
from xinf_watch.keys.registry import KeyRegistry
from xinf_watch.model import Alert, AlertStatus, CredentialKind, Event, KeyState, Outcome, ScopeDenial

SOURCE = "gateway"
ENUMS = {
    "outcome": Outcome,
    "credential": CredentialKind,
    "key_state": KeyState,
    "scope_denied_by": ScopeDenial,
}
OPTIONAL = ("reason", "owner", "scope_allowed", "ip_allowed", "duration", "bytes", "user_agent", "request_id",
            "fingerprint", "scope_denied_by")  # fmt: skip


@functools.cache
def recorded() -> tuple[Event, ...]:
    """Every line of the nginx recording as the daemon's pipeline hands it to the fleet."""
    source = SourceConfig(name=SOURCE, path="", format="nginx", log_format="combined_key")
    registry = load_registry([FIXTURES / "keys.yaml"])
    pipeline = Pipeline.build(empty_config(), registry, extra_sources=[source], defer_rules=True)
    for line in (FIXTURES / "nginx/access_combined_key.log").read_text(encoding="utf-8").splitlines():
        assert pipeline.process_line(SOURCE, line) == []  # deferred: no rule has run
    ((name, events),) = pipeline.take_deferred()
    assert name == SOURCE and len(events) == 1613
    return tuple(events)


def events(start: int, count: int, source: str = SOURCE) -> list[Event]:
    """Recorded events (as read by a source of another name, if `source` says)."""
    chosen = recorded()[start : start + count]
    return list(chosen) if source == SOURCE else [dataclasses.replace(e, source=source) for e in chosen]


def read(feed: FleetFeed, payloads: list[bytes]) -> list[Event]:
    """`payloads` as the next entries of the stream: the events fed to the engine."""
    out: list[Event] = []
    next_id = int(feed.last_id.split("-")[0]) + 1 if feed.last_id else 1
    for n, payload in enumerate(payloads, next_id):
        out.extend(feed.receive(f"{n}-0", payload))
    return out


def publish(feed: FleetFeed) -> list[bytes]:
    """What one exchange publishes: the pending entries, then marked published."""
    payloads = feed.outgoing()
    feed.published(payloads)
    return payloads


def same_fields(a: Event, b: Event) -> None:
    for name in Event.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        assert (type(x), x) == (type(y), y), name  # an enum must come back an enum, a bool a bool


# -- the wire ------------------------------------------------------------------------------------


def variants() -> list[Event]:
    """The recording's events, plus every enum value and every None the recording lacks."""
    base = recorded()
    out = list(base)
    for name, enum in ENUMS.items():
        out.extend(dataclasses.replace(base[0], **{name: member}) for member in enum)
    out.append(dataclasses.replace(base[0], **dict.fromkeys(OPTIONAL)))
    out.append(dataclasses.replace(base[0], ts=base[0].ts + 0.123456789, ip_forwarded=True))
    return out


def test_the_recording_covers_what_the_wire_must_carry() -> None:
    """Not vacuous: the real events have every enum field set, None and set optional fields."""
    base = recorded()
    for name in ("outcome", "credential", "key_state"):
        assert len({getattr(e, name) for e in base}) >= 4, name
    for name in ("reason", "owner", "scope_allowed", "ip_allowed", "fingerprint", "scope_denied_by"):
        assert {getattr(e, name) is None for e in base} == {True, False}, name


def test_an_event_survives_the_wire_field_for_field() -> None:
    for event in variants():
        back = event_from_row(event.source, orjson.loads(orjson.dumps(event_row(event))))
        assert back == event
        same_fields(back, event)


def test_an_entry_survives_the_wire() -> None:
    entry = Entry("gw1", SOURCE, 7, variants())
    back = Entry.decode(entry.encode())
    assert back == entry
    for a, b in zip(back.events, entry.events, strict=True):
        same_fields(a, b)


def test_a_byte_count_beyond_64_bits_reaches_the_wire_as_none() -> None:
    """A client-written JSON log line may say any size, and orjson writes no int past 64 bits:
    Entry.encode raised in every FleetSync.turn, and again after a restart (the same uncommitted
    line). The parser drops a count no response has (formats.common.BYTE_DIGITS)."""
    source = SourceConfig(name="caddy", path="", format="json", preset="caddy")
    pipeline = Pipeline.build(empty_config(), KeyRegistry(()), extra_sources=[source], defer_rules=True)
    line = orjson.loads((FIXTURES / "caddy/access.log").read_text(encoding="utf-8").splitlines()[0])
    for size in (1e20, 2**64, 17):
        pipeline.process_line("caddy", json.dumps({**line, "size": size}))
    ((_, read_events),) = pipeline.take_deferred()
    assert [e.bytes for e in read_events] == [None, None, 17]
    feed = FleetFeed("gw1")
    feed.add("caddy", read_events)
    (payload,) = publish(feed)
    assert Entry.decode(payload).events == read_events


# -- feeding: once each, in stream order --------------------------------------------------------


def test_an_entry_published_twice_feeds_each_event_once_and_the_extra_ones_too() -> None:
    """A crash between publishing and committing: the restart reads the lines again from the last
    commit, and this time reads more of them (the log grew)."""
    lines = events(0, 12)
    before = FleetFeed("gw1")
    committed = orjson.loads(orjson.dumps(before.snapshot()))
    before.add(SOURCE, lines[:5])
    first = publish(before)  # ... and the process dies before committing

    after = FleetFeed("gw1")
    after.restore(committed)
    after.add(SOURCE, lines[:8])  # the same lines again, and three more
    second = publish(after)
    after.add(SOURCE, lines[8:])
    third = publish(after)
    assert [Entry.decode(p).first for p in first + second + third] == [0, 0, 8]

    reader = FleetFeed("gw2")
    assert read(reader, first) == lines[:5]
    assert read(reader, second) == lines[5:8]
    assert read(reader, second + first) == []  # the same entries once more: nothing
    assert read(reader, third) == lines[8:]
    assert reader.fed_events == 12 and reader.invalid == 0


def test_entries_of_several_instances_are_fed_in_stream_order_each_once() -> None:
    feeds = {name: FleetFeed(name) for name in ("gw1", "gw2", "gw3")}
    own = {"gw1": events(0, 9), "gw2": events(100, 6), "gw3": events(200, 4)}
    batches = {name: [own[name][i : i + 3] for i in range(0, len(own[name]), 3)] for name in feeds}
    stream: list[bytes] = []
    expected: list[Event] = []
    order = ["gw1", "gw2", "gw1", "gw3", "gw2", "gw1", "gw3"]
    for name in order:  # gw3's second batch has one event
        batch = batches[name].pop(0)
        feeds[name].add(SOURCE, batch)
        stream += publish(feeds[name])
        expected += batch
    assert all(not b for b in batches.values())
    # gw1 has its own entries in the stream too: it feeds them when they come back, like the others'
    stream_twice = stream[:4] + stream[2:4] + stream[4:] + stream
    for name in ("gw1", "gw4"):
        reader = feeds.get(name) or FleetFeed(name)
        assert read(reader, stream_twice) == expected
        assert reader.fed_events == len(expected) == 19
        assert reader.last_id == f"{len(stream_twice)}-0"


def test_own_events_fed_locally_are_not_fed_again_from_the_stream() -> None:
    """Local mode: own events go straight into the engine; published later, they are skipped, and
    what the other instances published meanwhile is still fed."""
    gw1, gw2 = FleetFeed("gw1"), FleetFeed("gw2")
    mine, theirs = events(0, 10), events(300, 5)
    gw1.add(SOURCE, mine[:4])
    gw1.add(SOURCE, mine[4:7])
    assert gw1.take_local() == mine[:7]
    assert gw1.take_local() == []  # fed once
    assert gw1.pending_events() == 7  # still waiting for the stream
    gw1.add(SOURCE, mine[7:])
    assert gw1.take_local() == mine[7:]

    gw2.add(SOURCE, theirs)
    stream = publish(gw2) + publish(gw1)
    assert gw1.pending_events() == 0 and gw1.published_events == 10
    assert read(gw1, stream) == theirs
    assert gw1.fed_events == 15
    # the next own batch, published while the stream is up, is fed from the stream as usual
    gw1.add(SOURCE, events(20, 2))
    assert read(gw1, publish(gw1)) == events(20, 2)
    assert FleetFeed("gw3").take_local() == []


def test_own_entries_come_back_from_the_stream_without_decoding() -> None:
    gw1 = FleetFeed("gw1")
    batch = events(0, 5)
    gw1.add(SOURCE, batch)
    (fed,) = [read(gw1, publish(gw1))]
    assert fed == batch and all(a is b for a, b in zip(fed, batch, strict=True))  # the same objects
    assert gw1.in_flight == {}
    # another instance of the same name (its state restored elsewhere) decodes them
    assert read(FleetFeed("gw1"), [Entry("gw1", SOURCE, 5, events(5, 2)).encode()]) == events(5, 2)


def test_every_instance_feeds_a_copy_published_before_a_crash_where_the_others_do() -> None:
    """gw1 publishes 10 events and dies before committing; restarted, it reads the same lines in
    two batches. The stream holds the first copy, gw2's entry, then the two new entries: every
    instance, gw1 included, must feed the same events in the same order, or their rule engines part
    ways (windows, alert ids)."""
    mine, theirs = events(0, 10), events(400, 3)
    before = FleetFeed("gw1")
    before.add(SOURCE, mine)
    old = publish(before)
    gw2 = FleetFeed("gw2")
    gw2.add(SOURCE, theirs)
    gw1 = FleetFeed("gw1")  # restarted from the commit before those lines
    gw1.add(SOURCE, mine[:4])
    gw1.add(SOURCE, mine[4:])
    stream = old + publish(gw2) + publish(gw1)
    expected = mine + theirs
    assert read(FleetFeed("gw3"), stream) == expected
    assert read(gw2, stream) == expected
    assert read(gw1, stream) == expected


def test_keep_events_drops_the_oldest_pending_entries_and_counts_them() -> None:
    feed = FleetFeed("gw1", keep_events=10)
    batches = [events(n * 4, 4) for n in range(4)]
    for batch in batches:
        feed.add(SOURCE, batch)
    assert feed.dropped == 8 and feed.pending_events() == 8
    assert [Entry.decode(p).first for p in feed.outgoing()] == [8, 12]
    assert read(FleetFeed("gw2"), publish(feed)) == batches[2] + batches[3]
    assert feed.published_events == 8
    # the newest entry stays even when it alone is more than the bound
    big = FleetFeed("gw1", keep_events=3)
    big.add(SOURCE, events(0, 5))
    assert big.pending_events() == 5 and big.dropped == 0
    big.add(SOURCE, events(5, 1))
    assert big.pending_events() == 1 and big.dropped == 5


GARBAGE: list[bytes] = [
    b"",
    b"not json",
    b"\xff\xfe",
    b"null",
    b"[]",
    b'"text"',
    b"{}",
    b'[1, "gw9", "gateway"]\n[]',
    b'[1, "gw9", "gateway", 0]',  # no events
    b'[1, "gw9", "gateway", 0]\nnot json',
    b'[1, "gw9", "gateway", 0]\n{"a": 1}',
    b'[1, "gw9", "gateway", 0]\n5',
]


def entry_with(rows: object = None, **header: object) -> bytes:
    """An entry of gw9 (two recorded events) as the wire has it, with a header field or the rows
    replaced."""
    fields = {"v": 1, "instance": "gw9", "source": SOURCE, "first": 0} | header
    body = [list(event_row(e)) for e in events(0, 2)] if rows is None else rows
    return orjson.dumps(list(fields.values())) + b"\n" + orjson.dumps(body)


def bad_rows() -> list[bytes]:
    row = list(event_row(recorded()[0]))
    names = list(fleet._FIELDS)
    out = []
    for name, value in (("outcome", "fine"), ("key_state", 3), ("credential", "key"), ("ts", "1795849556"),
                        ("ts", None), ("scope_denied_by", "nope"), ("outcome", [])):  # fmt: skip
        changed = list(row)
        changed[names.index(name)] = value
        out.append(entry_with([row, changed]))
    return out + [
        entry_with([row[:-1]]),
        entry_with([[*row, None]]),
        entry_with([{}]),
        entry_with(["x" * 21]),
    ]


@pytest.mark.parametrize(
    "payload",
    GARBAGE
    + [
        entry_with(v=2),
        entry_with(v="1"),
        entry_with(instance=None),
        entry_with(source=7),
        entry_with(first=-1),
        entry_with(first="0"),
        entry_with(first=1.5),
        entry_with(5),
        entry_with([5]),
    ]
    + bad_rows(),
)
def test_a_payload_that_is_not_an_entry_is_counted_and_skipped(payload: bytes) -> None:
    feed = FleetFeed("gw1")
    assert feed.receive("5-0", payload) == []
    assert feed.invalid == 1 and feed.last_id == "5-0" and feed.fed_events == 0
    assert feed.receive("6-0", entry_with()) == events(0, 2)  # the next good entry is fed
    assert feed.invalid == 1 and feed.fed_events == 2


def test_an_entry_of_another_version_is_refused_even_when_it_would_parse() -> None:
    with pytest.raises(ValueError, match="wire version 2"):
        Entry.decode(entry_with(v=2))


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_json_in_an_entry_is_fed_or_counted_never_raised(data: st.DataObject) -> None:
    """A writer of another version (or anyone with access to the Redis) may put anything there."""
    part = data.draw(st.sampled_from(["v", "instance", "source", "first", "rows", "row", "value", "whole"]))
    if part == "whole":
        payload = orjson.dumps(data.draw(JSON)) + data.draw(st.sampled_from([b"", b"\n[]"]))
    elif part == "rows":
        payload = entry_with(data.draw(JSON))
    elif part == "row":
        payload = entry_with([data.draw(st.lists(JSON, max_size=25))])
    elif part == "value":
        row: list[object] = list(event_row(recorded()[0]))
        row[data.draw(st.integers(0, len(row) - 1))] = data.draw(JSON)
        payload = entry_with([row])
    else:
        payload = entry_with(**{part: data.draw(JSON)})
    feed = FleetFeed("gw1")
    fed = feed.receive("1-0", payload)
    assert all(isinstance(e, Event) for e in fed)
    assert (feed.invalid, feed.fed_events) in ((1, 0), (0, len(fed)))


# -- restart -------------------------------------------------------------------------------------


def alerts_of(tmp_path: Path) -> list[Alert]:
    """Real alerts: the recording's revoked keys through a match rule."""
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - {name: revoked, kind: match, when: {key_state: revoked}, by: [key, ip]}\n")
    registry = load_registry([FIXTURES / "keys.yaml"])
    pipeline = Pipeline.build(load_config(rules), registry, defer_rules=True)
    alerts = pipeline.judge(list(recorded()))
    assert len(alerts) >= 2 and len({claim_name(a) for a in alerts}) == len(alerts)
    return alerts


def test_snapshot_carries_pending_entries_indexes_fed_positions_claims_and_counts(tmp_path: Path) -> None:
    gw1, gw2 = FleetFeed("gw1", keep_events=6), FleetFeed("gw2")
    gw2.add(SOURCE, events(50, 3))
    gw2.add("audit", events(60, 2, "audit"))
    gw1.add(SOURCE, events(0, 4))
    read(gw1, publish(gw1) + publish(gw2) + [b"garbage"])
    gw1.add(SOURCE, events(4, 3))
    gw1.add("audit", events(7, 2, "audit"))
    gw1.add(SOURCE, events(9, 2))  # 7 pending: the oldest entry is dropped
    gw1.take_local()
    alerts = alerts_of(tmp_path)
    gw1.sent_unclaimed(alerts)
    assert (gw1.published_events, gw1.fed_events, gw1.dropped, gw1.invalid) == (4, 4 + 5 + 4, 3, 1)

    restored = FleetFeed("gw1", keep_events=6)
    restored.restore(orjson.loads(orjson.dumps(gw1.snapshot())))
    assert restored == gw1  # every field, pending entries event for event
    assert restored.next_index == {SOURCE: 9, "audit": 2}
    assert restored.fed == {("gw1", SOURCE): 9, ("gw1", "audit"): 2, ("gw2", SOURCE): 3, ("gw2", "audit"): 2}
    assert list(restored.unclaimed) == [claim_name(a) for a in alerts]
    assert restored.last_id == "4-0"
    # and it carries on where the first left off: nothing fed twice, indexes go on
    stream = publish(restored)
    assert [Entry.decode(p).first for p in stream] == [0, 7]
    assert read(restored, stream) == []
    restored.add(SOURCE, events(11, 1))
    assert Entry.decode(restored.outgoing()[0]).first == 9
    empty = FleetFeed("gw1")
    empty.restore(None)
    assert empty == FleetFeed("gw1")


def test_claim_names_tell_firing_from_resolved(tmp_path: Path) -> None:
    alert = alerts_of(tmp_path)[0]
    resolved = dataclasses.replace(alert, status=AlertStatus.RESOLVED)
    assert claim_name(alert) == f"{alert.id}:firing" and claim_name(resolved) == f"{alert.id}:resolved"


def test_sent_unclaimed_keeps_the_newest_claims_up_to_the_bound(tmp_path: Path) -> None:
    alert = alerts_of(tmp_path)[0]
    many = [dataclasses.replace(alert, id=f"{n:016x}") for n in range(fleet.KEEP_UNCLAIMED + 5)]
    feed = FleetFeed("gw1")
    feed.sent_unclaimed(many[:10])
    feed.sent_unclaimed(many[:10])  # the same again: kept once
    assert list(feed.unclaimed) == [claim_name(a) for a in many[:10]]
    feed.sent_unclaimed(many[10:])
    assert list(feed.unclaimed) == [claim_name(a) for a in many[5:]]


# -- the property --------------------------------------------------------------------------------


def published_by(name: str, own: list[Event], data: st.DataObject) -> tuple[list[bytes], FleetFeed]:
    """What one instance puts in the stream, reading `own` in batches of any size, publishing,
    committing (a snapshot with the read position) and crashing (back to the last commit: the
    lines after it are read again, maybe in other batches) in any order, and now and then
    publishing an entry twice (a retried XADD); and its feed at the end."""
    feed = FleetFeed(name)
    committed, committed_at = orjson.dumps(feed.snapshot()), 0
    at = 0
    out: list[bytes] = []
    for _ in range(data.draw(st.integers(0, 25))):
        step = data.draw(st.sampled_from(["read", "read", "publish", "commit", "crash", "again"]))
        if step == "read" and at < len(own):
            end = data.draw(st.integers(at + 1, len(own)))
            feed.add(SOURCE, own[at:end])
            at = end
        elif step == "publish":
            out += publish(feed)
        elif step == "commit":
            committed, committed_at = orjson.dumps(feed.snapshot()), at
        elif step == "crash":
            feed = FleetFeed(name)
            feed.restore(orjson.loads(committed))
            at = committed_at
        elif step == "again" and out:
            out.append(data.draw(st.sampled_from(out)))
    if at < len(own):
        feed.add(SOURCE, own[at:])
    return out + publish(feed), feed


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), sizes=st.tuples(st.integers(0, 30), st.integers(0, 30)))
def test_any_batching_duplication_and_interleaving_feeds_each_event_once_in_order(
    data: st.DataObject, sizes: tuple[int, int]
) -> None:
    """Every instance (a third one, and the two publishers themselves, reading the stream from the
    start) feeds each instance's events once, in its order, and all feed the same sequence."""
    own = {"gw1": events(0, sizes[0]), "gw2": events(700, sizes[1])}
    published = {name: published_by(name, own[name], data) for name in own}
    queues = {name: list(out) for name, (out, _) in published.items()}
    stream: list[tuple[str, bytes]] = []
    while queues["gw1"] or queues["gw2"]:
        name = data.draw(st.sampled_from([k for k, q in queues.items() if q]))
        stream.append((name, queues[name].pop(0)))
    readers = [FleetFeed("gw3"), published["gw1"][1], published["gw2"][1]]
    sequences = []
    for reader in readers:
        fed: dict[str, list[Event]] = {"gw1": [], "gw2": []}
        sequence = []
        for n, (name, payload) in enumerate(stream, 1):
            got = reader.receive(f"{n}-0", payload)
            fed[name] += got
            sequence += got
        assert fed == own, reader.instance
        assert reader.invalid == 0
        sequences.append(sequence)
    assert sequences[1] == sequences[0] and sequences[2] == sequences[0]


def test_an_instance_that_lost_its_state_is_a_new_writer_and_is_read_from_its_first_event() -> None:
    """Its indexes start at 0 again: under the old writer name the others would skip its events
    until it had published as many as before. A run token (the daemon's, made when it starts
    without saved state) makes it a new writer; a restart with its state keeps the token."""
    reader = FleetFeed("gw2")
    before = FleetFeed("gw1", run="aaaa")
    before.add(SOURCE, events(0, 50))
    assert len(read(reader, publish(before))) == 50

    kept = FleetFeed("gw1", run="bbbb")  # a restart with its state: the saved token wins
    kept.restore(orjson.loads(orjson.dumps(before.snapshot())))
    assert kept.writer == before.writer == "gw1/aaaa"

    lost = FleetFeed("gw1", run="cccc")  # a restart without state: indexes from 0 again
    lost.add(SOURCE, events(50, 10))
    fed = read(reader, publish(lost))
    assert [e.request_id for e in fed] == [e.request_id for e in events(50, 10)]
    assert [e.ts for e in fed] == [e.ts for e in events(50, 10)]
