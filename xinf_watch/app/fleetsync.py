"""One turn of shared rule state (`state.shared`): the pipeline's own events into the fleet's feed
(fleet/feed.py), one exchange with Redis (fleet/link.py), the stream's entries into the rule engine,
the clock, the claims; while Redis is unreachable, the feed's own events straight into the engine
and the alerts sent unclaimed. It says once each way when Redis is lost and back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from xinf_watch.app.pipeline import Pipeline
from xinf_watch.fleet.feed import FleetFeed, claim_name
from xinf_watch.fleet.link import READ_COUNT, SharedLink, SharedStateDown, redacted
from xinf_watch.model import Alert, AlertStatus


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
