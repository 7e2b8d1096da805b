"""The daemon's link to the fleet's Redis (`state.shared`): one round trip per turn, and what to do
when there is none.

`SharedLink` owns the connection: per turn one pipelined round trip claims the alerts sent while
Redis was unreachable, publishes the pending entries and reads the stream past the last entry fed;
a second one, only when the turn made alerts, claims them (`SET NX`: the first instance wins). A
failed round trip marks Redis down; it is tried again after a backoff (1 s, doubling to 10 s), so
an unreachable Redis costs one connect timeout now and then, not one per turn.

`FleetSync` runs a turn: own events from the pipeline into the feed (fleet/feed.py), the exchange, the
stream's entries into the rule engine, the clock, the claims; in local mode the feed's own events
straight into the engine. It says once each way when Redis is lost and back.

The URL's password never reaches a log line: `redacted()`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from xinf_watch.fleet.feed import FleetFeed, claim_name
from xinf_watch.model import Alert, AlertStatus

if TYPE_CHECKING:
    from xinf_watch.app.pipeline import Pipeline

STREAM = b"xinf-watch:events"
CLAIM_PREFIX = "xinf-watch:claim:"
STREAM_MAXLEN = 100_000  # entries kept (trimmed approximately): an instance away longer misses some
READ_COUNT = 500  # entries read per turn; more wait for the next turn (the daemon keeps turning)
CLAIM_TTL = 7 * 86400  # seconds a claim is remembered
WARMUP = 3600.0  # a new instance starts reading the stream this far back: rule windows fill up
TIMEOUT = 2.0  # seconds for a connect or a reply
RETRY_MIN, RETRY_MAX = 1.0, 10.0


class SharedStateDown(Exception):
    """Redis cannot be reached (now, or recently: waiting for the next attempt)."""


def redacted(url: str) -> str:
    """`url` without its password (the user name stays: it says which account)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class SharedLink:
    def __init__(
        self,
        url: str,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        import redis  # only a daemon with `state.shared` loads it
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.url = url
        self._errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=TIMEOUT,
            socket_connect_timeout=TIMEOUT,
            retry=Retry(NoBackoff(), 0),
            client_name="xinf-watch",
        )
        self._monotonic, self._wall = monotonic, wall
        self.up: bool | None = None  # None: not tried yet
        self.error = ""
        self._retry_every = RETRY_MIN
        self._retry_at = 0.0

    def exchange(
        self, claims: Sequence[str], publish: Sequence[bytes], after: str | None
    ) -> list[tuple[str, bytes]]:
        """Claim `claims`, append `publish`, and read the stream past `after` (None: the last
        `WARMUP`), in one round trip: the entries read, as (id, payload), oldest first."""
        if after is None:
            after = f"{int((self._wall() - WARMUP) * 1000)}-0"
        replies = self._round_trip(
            lambda p: (
                self._queue_claims(p, claims),
                [p.xadd(STREAM, {b"e": e}, maxlen=STREAM_MAXLEN, approximate=True) for e in publish],
                p.xread({STREAM: after}, count=READ_COUNT),
            )
        )
        streams = replies[-1] or []
        return [(i.decode(), fields.get(b"e", b"")) for _, entries in streams for i, fields in entries]

    def claim(self, names: Sequence[str]) -> list[bool]:
        """Claim each name for this instance: True for those no instance had claimed."""
        return [bool(r) for r in self._round_trip(lambda p: self._queue_claims(p, names))]

    @staticmethod
    def _queue_claims(pipe: Any, names: Sequence[str]) -> None:
        for name in names:
            pipe.set(CLAIM_PREFIX + name, b"1", nx=True, ex=CLAIM_TTL)

    def _round_trip(self, queue: Callable[[Any], object]) -> list[Any]:
        if self.up is False and self._monotonic() < self._retry_at:
            raise SharedStateDown(self.error)
        try:
            with self._client.pipeline(transaction=False) as pipe:
                queue(pipe)
                replies: list[Any] = pipe.execute()
        except self._errors as exc:
            self.error = f"{type(exc).__name__}: {exc}".replace(self.url, redacted(self.url))
            self._retry_at = self._monotonic() + self._retry_every
            self._retry_every = min(RETRY_MAX, self._retry_every * 2)
            self.up = False
            raise SharedStateDown(self.error) from None
        self.up = True
        self._retry_every = RETRY_MIN
        return replies

    def close(self) -> None:
        self._client.close()


class FleetSync:
    """One turn of shared rule state; `log` hears when Redis is lost and back."""

    def __init__(self, feed: FleetFeed, link: SharedLink, log: logging.Logger) -> None:
        self.feed, self.link, self.log = feed, link, log
        self.behind = False  # the stream has more entries than one turn reads
        self.received = 0  # entries read in the last turn (the feed's position moved: commit)
        self._said_up: bool | None = None

    def turn(self, pipeline: Pipeline, clock: Callable[[], float | None]) -> list[Alert]:
        """This turn's alerts that are this instance's to send (counted in the pipeline's store)."""
        for source, events in pipeline.take_deferred():
            self.feed.add(source, events)
        try:
            outgoing = self.feed.outgoing()
            entries = self.link.exchange(list(self.feed.unclaimed), outgoing, self.feed.last_id)
        except SharedStateDown:
            self._say()
            alerts = pipeline.judge(self.feed.take_local()) + self._advance(pipeline, clock)
            self.feed.sent_unclaimed(alerts)
            self.behind, self.received = False, 0
            return pipeline.count_alerts(alerts)
        self._say()
        self.feed.published(outgoing)
        self.feed.unclaimed.clear()
        self.behind, self.received = len(entries) >= READ_COUNT, len(entries)
        alerts = []
        for entry_id, payload in entries:
            events = self.feed.receive(entry_id, payload)
            try:
                alerts.extend(pipeline.judge(events))
            except Exception:  # another instance's event this one cannot judge: it costs that entry
                self.feed.invalid += 1
                self.log.exception("shared state: entry %s could not be judged; it is skipped", entry_id)
        alerts.extend(self._advance(pipeline, clock))
        mine = self._claimed(alerts)
        # counted: the alerts this instance sends, and every resolution (it ends a firing this
        # instance may have sent, whoever sends the resolution)
        pipeline.count_alerts(
            [a for a, m in zip(alerts, mine, strict=True) if m or a.status is AlertStatus.RESOLVED]
        )
        return [a for a, m in zip(alerts, mine, strict=True) if m]

    @staticmethod
    def _advance(pipeline: Pipeline, clock: Callable[[], float | None]) -> list[Alert]:
        now = clock()
        return [] if now is None else pipeline.advance(now)

    def _claimed(self, alerts: list[Alert]) -> list[bool]:
        """Per alert, whether it is this instance's to send: claimed first, or Redis is down."""
        if not alerts:
            return []
        try:
            return self.link.claim([claim_name(a) for a in alerts])
        except SharedStateDown:
            self._say()
            self.feed.sent_unclaimed(alerts)
            return [True] * len(alerts)

    def _say(self) -> None:
        up = self.link.up
        if up == self._said_up:
            return
        url = redacted(self.link.url)
        if up:
            self.log.info("shared state: connected to %s; rules count across the fleet", url)
        else:
            self.log.warning("shared state: %s unreachable (%s); rules count this instance's lines"
                     " alone, its events are kept for the fleet and alerts go out unclaimed until it is"
                     " back", url, self.link.error)  # fmt: skip
        self._said_up = up
