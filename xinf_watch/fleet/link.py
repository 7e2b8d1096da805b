"""The daemon's link to the fleet's Redis (`state.shared`): one round trip per turn, and what to do
when there is none.

`SharedLink` owns the connection: per turn one pipelined round trip claims the alerts sent while
Redis was unreachable, publishes the pending entries and reads the stream past the last entry fed;
a second one, only when the turn made alerts, claims them (`SET NX`: the first instance wins). A
failed round trip marks Redis down; it is tried again after a backoff (1 s, doubling to 10 s), so
an unreachable Redis costs one connect timeout now and then, not one per turn.

What a turn does with it (own events out, the fleet's into the rule engine, the claims) is
`app/fleetsync.py`'s: this module knows Redis, not the pipeline.

The URL's password never reaches a log line: `redacted()`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

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
