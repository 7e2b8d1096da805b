"""Alertmanager: the API v2 alert objects, the target that posts them, and the `Refresher` that
posts the firing set again.

Rules (as Prometheus does it):
- Alertmanager gets each alert as labels and annotations: the labels and summary escaped for
  people (`visible`), the `alert` annotation the exact alert JSON.
- Every post of a firing alert carries `endsAt = now + RESEND_FACTOR x resend_interval`, and the
  `Refresher` posts the firing set (state/outbox.py) again every `resend_interval`, so Alertmanager
  keeps an alert active exactly as long as xinf-watch does; a resolution carries `endsAt` = the
  time it ended. Alerts that no resolution ends (`ONE_OFF_KINDS`: one event each) get
  `endsAt = last_ts + event_ttl` on every post, and leave the firing set once that has passed.
- Re-sends are idempotent refreshes, not outbox rows: one that fails is logged and made again at
  the next interval. They run on the thread that delivers Alertmanager's outbox rows
  (delivery/sender.py), so a re-send can never land after the resolution of the alert it carries.
"""

from __future__ import annotations

import base64
import re
import time
import urllib.request
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import unquote, urlsplit, urlunsplit

import orjson

from xinf_watch.delivery.target import ALERTMANAGER, DeliveryError, Target
from xinf_watch.model import ONE_OFF_KINDS, format_ts
from xinf_watch.state.outbox import Outbox
from xinf_watch.visible import tell, visible

AM_BATCH = 500  # alerts in one Alertmanager POST, at most
RESEND_FACTOR = 4  # a firing alert's endsAt is this many resend intervals ahead (Prometheus: 4)
DEFAULT_EVENT_TTL = 3600.0  # how long a one-off alert stays active in Alertmanager (alertmanager.event_ttl)
FORGET_EVERY = 60.0  # without an Alertmanager: how often ended one-off alerts leave the firing set
_LABEL_BAD = re.compile(r"[^a-zA-Z0-9_]")


def _label_name(name: str) -> str:
    clean = _LABEL_BAD.sub("_", name)
    return clean if clean and not clean[0].isdigit() else "_" + clean


def _epoch(ts: Any) -> float:
    return datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp()


def ends_at(alert: dict[str, Any], now: float, hold: float, event_ttl: float) -> float:
    """When Alertmanager is to consider `alert` over, as of a post at `now` (never before it began)."""
    first, last = _epoch(alert.get("first_ts")), _epoch(alert.get("last_ts"))
    if alert.get("status") == "resolved":
        end = min(last, now)  # a log written ahead of the clock must not keep it active
    elif alert.get("kind") in ONE_OFF_KINDS:
        end = last + event_ttl
    else:
        end = now + hold
    return max(end, first)


def alertmanager_alert(
    alert: dict[str, Any],
    now: float,
    *,
    hold: float = RESEND_FACTOR * 60.0,
    event_ttl: float = DEFAULT_EVENT_TTL,
) -> dict[str, Any]:
    """The Alertmanager API v2 alert object for one of our alerts, posted at `now`; `hold` is how long a
    firing alert stays active without being posted again."""
    labels = {"alertname": alert.get("rule"), "rule": alert.get("rule"), "severity": alert.get("severity"),
              "key": alert.get("key"), "source": alert.get("source")}  # fmt: skip
    for field, value in (alert.get("group") or {}).items():
        name = _label_name(str(field))
        if name in labels and labels[name] != value:
            name = "group_" + name
        labels[name] = value
    out: dict[str, Any] = {
        # an empty label is no label in Alertmanager, so absent values are left out
        # labels and summary are what Alertmanager's notifications show: escaped (`visible`); the
        # `alert` annotation carries the exact data as JSON
        "labels": {k: visible(v) for k, v in labels.items() if v is not None and str(v) != ""},
        "annotations": {"summary": visible(alert.get("summary", "")), "alert": orjson.dumps(alert).decode()},
        "startsAt": alert.get("first_ts"),
        "endsAt": format_ts(ends_at(alert, now, hold, event_ttl)),
    }
    return out


class AlertmanagerTarget:
    """POSTs alerts to `<url>/api/v2/alerts`, up to `AM_BATCH` a request. Credentials in the URL become
    Basic auth. `resend_interval` is how often the firing set is posted again (`Refresher`)."""

    group_interval = 0.0  # Alertmanager groups by itself
    max_batch = AM_BATCH

    def __init__(
        self,
        url: str,
        timeout: float = 10.0,
        *,
        resend_interval: float = 60.0,
        event_ttl: float = DEFAULT_EVENT_TTL,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.resend_interval = resend_interval
        self.event_ttl = event_ttl
        self._now = now
        parts = urlsplit(url)
        host = parts.hostname or ""
        self._where = f"{'[' + host + ']' if ':' in host else host}{f':{parts.port}' if parts.port else ''}"
        self._endpoint = urlunsplit(
            (parts.scheme, self._where, parts.path.rstrip("/") + "/api/v2/alerts", "", "")
        )
        self._headers = {"Content-Type": "application/json", "User-Agent": "xinf-watch"}
        if parts.username is not None:
            token = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
        self._timeout = timeout

    def send(self, alerts: Sequence[dict[str, Any]]) -> None:
        now, hold = self._now(), RESEND_FACTOR * self.resend_interval
        # the latest transition of each alert: a firing and its resolution in one post end resolved
        latest = {str(a.get("id")): a for a in alerts}
        body = [alertmanager_alert(a, now, hold=hold, event_ttl=self.event_ttl) for a in latest.values()]
        for start in range(0, len(body), AM_BATCH):
            self._post(body[start : start + AM_BATCH])

    def _post(self, body: list[dict[str, Any]]) -> None:
        data = orjson.dumps(body)
        request = urllib.request.Request(self._endpoint, data=data, headers=self._headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                response.read()
        except HTTPError as exc:
            detail = visible(exc.read(300).decode("utf-8", "replace").strip())
            raise DeliveryError(f"alertmanager at {self._where}: HTTP {exc.code}: {detail}") from None
        except URLError as exc:
            raise DeliveryError(f"alertmanager at {self._where}: {visible(exc.reason)}") from None
        except (OSError, ValueError) as exc:  # timeouts, resets, a malformed response
            why = f"{type(exc).__name__}: {visible(exc)}"
            raise DeliveryError(f"alertmanager at {self._where}: {why}") from None


def _one_off_over(alert: dict[str, Any], now: float, event_ttl: float) -> bool:
    """A one-off alert whose endsAt has passed: no post will ever make it active again."""
    return alert.get("kind") in ONE_OFF_KINDS and ends_at(alert, now, 0.0, event_ttl) <= now


class Refresher:
    """Posts the firing set to Alertmanager again every `resend_interval` (the first time at once),
    and takes the one-off alerts whose endsAt has passed out of it (every `FORGET_EVERY` and with
    the default `event_ttl` when no Alertmanager is configured, so the set stays small either way).

    A failed re-send is logged once until one succeeds again, and retried at the next interval:
    the next post makes it whole, as the endsAt of the last good one leaves RESEND_FACTOR intervals.
    """

    def __init__(self, outbox: Outbox, now: Callable[[], float], log: Callable[[str], None] = tell) -> None:
        self._outbox = outbox
        self._now = now
        self._log = log
        self.next_at = float("-inf")
        self._failing = False

    def run_due(self, target: Target | None) -> None:
        now = self._now()
        if now < self.next_at:
            return
        am = target if isinstance(target, AlertmanagerTarget) else None
        self.next_at = now + (am.resend_interval if am is not None else FORGET_EVERY)
        ttl = am.event_ttl if am is not None else DEFAULT_EVENT_TTL
        alerts = self._still_firing(now, ttl)
        if am is None or not alerts:
            return
        self._resend(am, alerts)

    def _still_firing(self, now: float, ttl: float) -> list[dict[str, Any]]:
        """The firing set, after taking out (for good) the one-off alerts whose endsAt has passed."""
        alerts = self._outbox.firing()
        over = {str(a.get("id")) for a in alerts if _one_off_over(a, now, ttl)}
        if over:
            self._outbox.forget_firing(over)
            alerts = [a for a in alerts if str(a.get("id")) not in over]
        return alerts

    def _resend(self, am: AlertmanagerTarget, alerts: Sequence[dict[str, Any]]) -> None:
        """Post `alerts` again; a failure is logged once until a post succeeds again."""
        try:
            am.send(alerts)
        except Exception as exc:
            if not self._failing:
                error = str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
                self._log(f"xinf-watch: re-sending {len(alerts)} firing alerts failed (retried every"
                          f" {am.resend_interval:g}s): {error}")  # fmt: skip
            self._failing = True
        else:
            if self._failing:
                self._log(f"xinf-watch: re-sending firing alerts to {ALERTMANAGER} works again")
            self._failing = False

    def reset(self) -> None:
        """Re-send at the next pass (a reload may have brought a new Alertmanager)."""
        self.next_at = float("-inf")
