"""Alert delivery: notification text, the targets (apprise groups, Alertmanager), the outbox sender
and the alert journal. The only module that imports apprise.

Rules:
- Every alert reaches people as a readable title and body whose last paragraph holds the alert
  JSON, one alert per line (docs/DESIGN.md section 7); Alertmanager gets it as labels and annotations.
- Grouping (apprise targets with a `group_interval`): the alerts of one rule and severity
  (`state.notification_group`) are told together. The first one of a quiet group goes out at
  once; what follows within the group interval after a message waits for the interval's end and
  goes out as one message listing them all (at most `MAX_GROUP` alerts a message). A held group
  never holds back another group: a critical rule is not delayed by a flood of warnings. Which
  groups are held is the sender's memory only: after a restart the pending rows of a group go out
  together at once.
- Each URL (or apprise config file) of a notify group is a target of its own, `ops[1]`, `ops[2]`
  (`targets_for`): its own queue in the outbox, its own backoff, and, in the daemon, its own lane
  thread (`Lanes`), so a dead or slow URL delays only itself. One send is bounded by apprise's
  timeouts (4 s to connect, 4 s between reads by default; `?cto=` / `?rto=` in the URL).
- Delivery is at least once, in order per target and group (so a resolution never overtakes its
  firing); a target's critical groups go first, so a backlog of warnings never delays them: a
  `Deliverer` takes due rows from the durable outbox (`state.Outbox`), sends, and marks each
  delivered or failed (exponential backoff). A failed row holds back the later rows of its own
  target, never another target. Only a crash between a send and its `delivered` mark can repeat a
  notification; receivers de-duplicate by (id, status). The daemon runs two: one for the notify
  groups, one for Alertmanager, so neither waits for the other's timeouts.
- A row whose target is not in the current config (the group was removed by a reload) is kept and
  retried with backoff, with one loud message per target name: a reload that brings the group back
  delivers the backlog, and nothing is ever dropped silently.
- An `AppriseTarget` of several URLs (a group's own target, for rows an earlier release queued per
  group) remembers (in memory) which of its URLs already took an alert, so a retry after a partial
  failure goes only to the URLs that failed.
- apprise's logger is silenced (it may name URLs, and URLs carry tokens): its warnings are kept per
  send, with anything URL-shaped blanked, and become the text of the `DeliveryError`. The loggers
  of urllib3 and requests (request lines with a URL's path and query) never reach a handler.
- Text for people (titles, bodies, Alertmanager's labels and summary, error texts) goes through
  `visible.visible`: a path or an error body cannot forge a line or hide text.
- Alertmanager (as Prometheus does it): every post of a firing alert carries `endsAt = now +
  RESEND_FACTOR x resend_interval`, and the `Refresher` posts the firing set (state/store.py) again every
  `resend_interval`, so Alertmanager keeps an alert active exactly as long as xinf-watch does; a
  resolution carries `endsAt` = the time it ended. Alerts that no resolution ends (`ONE_OFF_KINDS`:
  one event each) get `endsAt = last_ts + event_ttl` on every post, and leave the firing set once
  that has passed. Re-sends are idempotent refreshes, not outbox rows: one that fails is logged
  and made again at the next interval. They run on the thread that delivers Alertmanager's outbox
  rows, so a re-send can never land after the resolution of the alert it carries.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import functools
import logging
import os
import re
import threading
import time
import urllib.request
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.error import HTTPError, URLError
from urllib.parse import unquote, urlsplit, urlunsplit

import orjson

from xinf_watch.model import ONE_OFF_KINDS, Alert, format_ts
from xinf_watch.state.outbox import Outbox, OutboxItem
from xinf_watch.state.storage_errors import is_storage_error
from xinf_watch.visible import tell, visible, visible_json

if TYPE_CHECKING:
    import apprise

ALERTMANAGER = "alertmanager"  # the target name of the Alertmanager, beside the notify group names
IDLE_WAIT = 60.0  # seconds the sender sleeps when nothing is pending (a commit wakes it sooner)
PASS_LIMIT = 1000  # outbox rows one delivery pass takes
MAX_GROUP = 200  # alerts in one grouped message, at most
AM_BATCH = 500  # alerts in one Alertmanager POST, at most
RESEND_FACTOR = 4  # a firing alert's endsAt is this many resend intervals ahead (Prometheus: 4)
DEFAULT_EVENT_TTL = 3600.0  # how long a one-off alert stays active in Alertmanager (alertmanager.event_ttl)
LANE_GRACE = 4.0  # seconds a stopping sender waits for the sends in progress (the daemon waits 5)
KEEP_DELIVERED = 7 * 86400.0  # delivered outbox rows are kept this long for de-duplication
_LABEL_BAD = re.compile(r"[^a-zA-Z0-9_]")
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://\S*")

_PORT = re.compile(r"^(?:.*@)?(?:\[[^\]]*\]|[^:\[\]]*):(\d+)$")  # the port of a netloc, if it has one

_STANDARD = ("rule", "kind", "severity", "status", "group", "key", "count", "first_ts", "last_ts",
             "summary", "source", "id")  # fmt: skip


class DeliveryError(Exception):
    """A target did not accept an alert; the message names no secret."""


class Target(Protocol):
    group_interval: float  # > 0: group the alerts of a rule (see the module docstring)
    max_batch: int  # alerts one `send` takes, at most

    def send(self, alerts: Sequence[dict[str, Any]]) -> None: ...


# -- text ----------------------------------------------------------------------------------------


def notification_text(alert: dict[str, Any]) -> tuple[str, str]:
    """A title and body for people, the body ending with the alert JSON on its own line. Every
    value is shown through `visible`: a path or user agent cannot add a line or hide text."""
    rule, status = visible(alert.get("rule", "?")), visible(alert.get("status", "firing"))
    severity, summary = visible(alert.get("severity", "")), visible(alert.get("summary", ""))
    title = f"[{status.upper()}] {rule} ({severity}): {summary}"
    lines = [f"{rule} is {status.upper()} ({severity}, {visible(alert.get('kind', '?'))} rule)", summary, ""]
    group = alert.get("group") or {}
    details: list[tuple[str, Any]] = [("key", alert.get("key"))]
    details += [(str(k), v) for k, v in group.items() if k != "key" or v != alert.get("key")]
    details += [("count", alert.get("count")), ("from", alert.get("first_ts")), ("to", alert.get("last_ts")),
                ("source", alert.get("source"))]  # fmt: skip
    details += [(k, v) for k, v in alert.items() if k not in _STANDARD]
    shown = [(visible(k) + ":", visible(v)) for k, v in details if v is not None]
    shown.append(("id:", visible(alert.get("id"))))
    width = max(len(k) for k, _ in shown)
    lines += [f"{k:<{width}} {v}" for k, v in shown]
    lines += ["", visible_json(alert)]
    return title, "\n".join(lines)


def group_text(alerts: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """A title and body for the alerts of one group (one rule and severity): a line for each, then,
    after an empty line, each alert's JSON on its own line. One alert reads as `notification_text`."""
    if len(alerts) == 1:
        return notification_text(alerts[0])
    first = alerts[0]
    rule, severity = visible(first.get("rule", "?")), visible(first.get("severity", ""))
    resolved = sum(a.get("status") == "resolved" for a in alerts)
    firing = len(alerts) - resolved
    counts = ", ".join(f"{n} {what}" for n, what in ((firing, "firing"), (resolved, "resolved")) if n)
    title = f"[{'FIRING' if firing else 'RESOLVED'}] {rule} ({severity}): {len(alerts)} alerts ({counts})"
    kind = visible(first.get("kind", "?"))
    lines = [f"{rule}: {len(alerts)} alerts, {counts} ({severity}, {kind} rule)", ""]
    for a in alerts:
        status = visible(a.get("status", "firing")).upper()
        lines.append(f"{visible(a.get('last_ts'))} {status}: {visible(a.get('summary', ''))}")
    lines.append("")
    lines += [visible_json(a) for a in alerts]
    return title, "\n".join(lines)


def alerts_in(body: str) -> list[dict[str, Any]]:
    """The alerts a notification body carries: the JSON lines of its last paragraph."""
    return [orjson.loads(line) for line in body.rstrip("\n").rsplit("\n\n", 1)[-1].splitlines()]


# -- apprise ------------------------------------------------------------------------------------


@functools.cache
def _apprise_schemes() -> frozenset[str]:
    """The URL schemes of apprise's plugins, lowercase. The first call imports apprise and loads all
    its plugins (with requests, about 30 MiB): only notify URLs and targets call it, so a daemon
    without notify URLs never holds them."""
    from apprise.manager_plugins import NotificationManager

    with warnings.catch_warnings():
        # one plugin imports `imghdr`, deprecated since Python 3.11: loading them all here, once,
        # keeps that warning (not ours to fix) from surfacing at the first send
        warnings.simplefilter("ignore", DeprecationWarning)
        NotificationManager().load_modules()  # type: ignore[no-untyped-call]
    return frozenset(str(s).lower() for s in NotificationManager().schemas())  # type: ignore[no-untyped-call]


def notify_url_problem(url: str) -> str | None:
    """Why apprise cannot use a notify group's URL (its ${VAR}s replaced), as the text of a config
    error that names the scheme and nothing else of the URL (the rest may be secret); None when it
    can. Config validation calls it, so apprise is imported here only."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in _apprise_schemes():
        shown = f'"{visible(scheme)}://"' if len(scheme) <= 20 else "this scheme"
        return f"{shown} is not an apprise scheme (expected one apprise knows, e.g. json://, mailto://)"
    port = _PORT.match(re.split(r"[/?#]", rest, maxsplit=1)[0])
    if port is not None and not 0 < int(port.group(1)) < 65536:
        return f"the port of this {scheme}:// URL is out of range (expected 1-65535)"
    return None


_CAPTURE: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("apprise_capture", default=None)


class _AppriseLog(logging.Handler):
    """Keeps apprise's warnings for the send in progress; nothing reaches stderr.

    The capture is per send (a context variable), so sends to several URLs may run at once (lanes):
    apprise runs its worker threads in a copy of the caller's context.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        lines = _CAPTURE.get()
        if lines is not None and len(lines) < 5:
            try:
                lines.append(visible(_URL.sub("<url>", record.getMessage())))
            except Exception:  # a malformed apprise log call must not fail a delivery
                lines.append(record.levelname)

    @contextmanager
    def capture(self) -> Iterator[list[str]]:
        lines = list[str]()
        token = _CAPTURE.set(lines)
        try:
            yield lines
        finally:
            _CAPTURE.reset(token)


def _apprise_log() -> _AppriseLog:
    logger = logging.getLogger("apprise")
    for handler in logger.handlers:
        if isinstance(handler, _AppriseLog):
            return handler
    handler = _AppriseLog()
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)  # no debug records: they carry payloads and URLs
    logger.propagate = False
    # the HTTP libraries under apprise log request lines (a URL's path and query: its tokens), at
    # any level; what they would say of a failure, apprise says without the URL
    for name in ("urllib3", "requests"):
        lib = logging.getLogger(name)
        lib.addHandler(logging.NullHandler())
        lib.propagate = False
    return handler


def _notify_type(alerts: Sequence[dict[str, Any]]) -> apprise.NotifyType:
    from apprise import NotifyType  # imported by the target that sends

    if all(a.get("status") == "resolved" for a in alerts):
        return NotifyType.SUCCESS
    return {"critical": NotifyType.FAILURE, "warning": NotifyType.WARNING}.get(
        str(alerts[0].get("severity")), NotifyType.INFO
    )


class AppriseTarget:
    """A notify group: apprise URLs and/or apprise config files (YAML or text), each sent on its own."""

    def __init__(self, name: str, entries: Sequence[str], group_interval: float = 0.0) -> None:
        self.name = name
        self.group_interval = group_interval
        self.max_batch = MAX_GROUP if group_interval > 0 else 1
        self._log = _apprise_log()
        self._entries: list[tuple[str, apprise.Apprise]] = []
        self.problems: list[str] = []  # entries that could not be loaded: each send fails on them
        self._done: OrderedDict[tuple[str, str], set[int]] = OrderedDict()
        if not entries:
            return  # a group without URLs loads no apprise
        _apprise_schemes()  # apprise and its plugins, loaded here rather than at the first send
        import apprise

        asset = apprise.AppriseAsset(app_id="xinf-watch", app_desc="xinf-watch", storage_mode="memory")
        for n, entry in enumerate(entries, 1):
            is_url = "://" in entry
            where = entry.partition("://")[0] + "://" if is_url else entry
            label = f"{name}[{n}] ({where})" if len(entries) > 1 else f"{name} ({where})"
            if not is_url and not Path(entry).is_file():
                self.problems.append(f"{label}: no such file (expected an apprise URL or config file)")
                continue
            service = apprise.Apprise(asset=asset)
            with self._log.capture() as lines:
                if not is_url:
                    config = apprise.AppriseConfig(asset=asset)
                    ok = bool(config.add(entry)) and bool(service.add(config))
                else:
                    ok = bool(service.add(entry))
            if ok:
                self._entries.append((label, service))
            else:
                why = "; ".join(lines) or "not a valid apprise URL or readable apprise config file"
                self.problems.append(f"{label}: {why}")

    def send(self, alerts: Sequence[dict[str, Any]]) -> None:
        """One message per URL with the alerts (one group's) that URL has not taken yet."""
        from apprise import NotifyFormat  # imported by __init__

        keys = [(str(a.get("id")), str(a.get("status"))) for a in alerts]
        done = {key: self._done.pop(key, set()) for key in keys}
        failures = list(self.problems)
        for n, (label, service) in enumerate(self._entries):
            todo = [(key, a) for key, a in zip(keys, alerts, strict=True) if n not in done[key]]
            if not todo:
                continue
            title, body = group_text([a for _, a in todo])
            kind = _notify_type([a for _, a in todo])
            with self._log.capture() as lines:
                try:
                    ok = bool(service.notify(body=body, title=title, notify_type=kind,
                                             body_format=NotifyFormat.TEXT))  # fmt: skip
                except Exception as exc:  # apprise plugins are many; one raising is a failed send
                    ok, lines[:] = False, [type(exc).__name__]
            if ok:
                for key, _ in todo:
                    done[key].add(n)
            else:
                failures.append(f"{label}: {'; '.join(lines) or 'apprise reported failure'}")
        if failures:
            self._done.update(done)
            while len(self._done) > 5000:
                self._done.popitem(last=False)
            raise DeliveryError(f"notify group {group_of(self.name)!r}: " + " | ".join(failures))


# -- Alertmanager -------------------------------------------------------------------------------


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


# -- routing and the sender ---------------------------------------------------------------------


def entry_target(group: str, n: int) -> str:
    """The target name of the `n`th (from 1) URL or config file of a notify group: `ops[2]`."""
    return f"{group}[{n}]"


def group_of(target: str) -> str:
    """The notify group (or `alertmanager`) a target name belongs to (group names have no `[`)."""
    return target.partition("[")[0]


def targets_for(
    rule_notify: Sequence[str], notify_groups: Mapping[str, Sequence[str]], alertmanager_url: str | None
) -> list[str]:
    """The target names an alert of a rule goes to: each entry of its notify groups (a queue of its
    own), then Alertmanager (all alerts)."""
    groups = dict.fromkeys(g for g in rule_notify if g in notify_groups)
    names = [entry_target(g, n) for g in groups for n in range(1, len(notify_groups[g]) + 1)]
    if alertmanager_url:
        names.append(ALERTMANAGER)
    return names


def build_targets(
    notify_groups: Mapping[str, Sequence[str]],
    alertmanager_url: str | None,
    *,
    group_interval: float = 0.0,
    resend_interval: float = 60.0,
    event_ttl: float = DEFAULT_EVENT_TTL,
) -> dict[str, Target]:
    if alertmanager_url and ALERTMANAGER in notify_groups:
        raise ValueError(f"a notify group may not be called {ALERTMANAGER!r} when alertmanager is configured")
    targets: dict[str, Target] = {}
    for name, entries in notify_groups.items():
        for n, entry in enumerate(entries, 1):
            targets[entry_target(name, n)] = AppriseTarget(entry_target(name, n), [entry], group_interval)
        # the rows an earlier release queued per group (all its URLs in one row) still go out
        targets[name] = AppriseTarget(name, entries, group_interval)
    if alertmanager_url:
        targets[ALERTMANAGER] = AlertmanagerTarget(
            alertmanager_url, resend_interval=resend_interval, event_ttl=event_ttl
        )
    return targets


def _one_off_over(alert: dict[str, Any], now: float, event_ttl: float) -> bool:
    """A one-off alert whose endsAt has passed: no post will ever make it active again."""
    return alert.get("kind") in ONE_OFF_KINDS and ends_at(alert, now, 0.0, event_ttl) <= now


class Refresher:
    """Posts the firing set to Alertmanager again every `resend_interval` (the first time at once),
    and takes the one-off alerts whose endsAt has passed out of it (every `IDLE_WAIT` and with the
    default `event_ttl` when no Alertmanager is configured, so the set stays small either way).

    A failed re-send is logged once until one succeeds again, and retried at the next interval:
    the next post makes it whole, as the endsAt of the last good one leaves RESEND_FACTOR intervals.
    """

    def __init__(
        self, outbox: Outbox, now: Callable[[], float], log: Callable[[str], None] = tell
    ) -> None:
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
        self.next_at = now + (am.resend_interval if am is not None else IDLE_WAIT)
        ttl = am.event_ttl if am is not None else DEFAULT_EVENT_TTL
        alerts = self._outbox.firing()
        over = {str(a.get("id")) for a in alerts if _one_off_over(a, now, ttl)}
        if over:
            self._outbox.forget_firing(over)
            alerts = [a for a in alerts if str(a.get("id")) not in over]
        if am is None or not alerts:
            return
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


class Deliverer:
    """Sends due outbox rows to their targets; `run` is a sender thread's loop.

    `only` / `besides` choose the rows of one target / all but one (the daemon's two senders);
    `refresher` re-sends the firing set to the Alertmanager target after each pass. `on_result`
    hears of each message: (target, sent, how many alerts it carried).
    """

    def __init__(
        self,
        outbox: Outbox,
        targets: Mapping[str, Target],
        on_result: Callable[[str, bool, int], None],
        now: Callable[[], float],
        *,
        log: Callable[[str], None] = tell,
        only: str | None = None,
        besides: str | None = None,
        refresher: Refresher | None = None,
    ) -> None:
        self._outbox = outbox
        self._targets = dict(targets)
        self._on_result = on_result
        self._now = now
        self._log = log
        self._only, self._besides = only, besides
        self._refresher = refresher
        self._missing_reported: set[str] = set()
        self._attempted = 0
        self._told_at: dict[tuple[str, str], float] = {}  # (target, group) -> its last message
        self._told_lock = threading.Lock()  # lanes write `_told_at`, the loop reads it
        self._lanes: Lanes | None = None

    def set_targets(self, targets: Mapping[str, Target]) -> None:
        """Swap in the targets of a reloaded config (one reference swap)."""
        self._targets = dict(targets)
        self._missing_reported.clear()
        if self._refresher is not None:
            self._refresher.reset()

    def holding(self, now: float) -> dict[tuple[str, str], float]:
        """The groups inside their group interval: (target, group) -> when they may speak again."""
        out: dict[tuple[str, str], float] = {}
        with self._told_lock:
            for (name, group), told in list(self._told_at.items()):
                target = self._targets.get(name)
                release = told + (target.group_interval if target is not None else 0.0)
                if release > now:
                    out[(name, group)] = release
                else:
                    del self._told_at[(name, group)]
        return out

    def _batches(self, items: Sequence[OutboxItem]) -> list[tuple[str, list[OutboxItem]]]:
        """The due rows as messages, in the order of their first row: the rows of a group together
        (grouping targets), all together (Alertmanager), or one each."""
        batches: list[tuple[str, list[OutboxItem]]] = []
        open_: dict[tuple[str, str], list[OutboxItem]] = {}
        for item in items:
            target = self._targets.get(item.target)
            if target is None or target.max_batch <= 1:
                batches.append((item.target, [item]))
                continue
            key = (item.target, item.group if target.group_interval > 0 else "")
            batch = open_.get(key)
            if batch is None or len(batch) >= target.max_batch:
                open_[key] = batch = []
                batches.append((item.target, batch))
            batch.append(item)
        return batches

    def deliver_due(self, stop: threading.Event | None = None) -> int:
        """One pass: each target with due rows says what it has (see `_deliver_target`). Without
        lanes the targets are served here, one after the other, and the count delivered is
        returned; with lanes (`run(lanes=True)`) each goes to its own lane thread, and 0 is returned."""
        self._attempted = 0
        now = self._now()
        skip = self.holding(now)
        busy = self._lanes.busy() if self._lanes is not None else set[str]()
        names = self._outbox.due_targets(now, only=self._only, besides=self._besides, skip=skip, exclude=busy)
        sent = 0
        for name in names:
            if stop is not None and stop.is_set():
                break
            self._attempted += 1
            if self._lanes is None:
                sent += self._deliver_target(name, now, skip, stop)
            else:
                self._lanes.start(name, functools.partial(self._deliver_target, name, now, skip, stop))
        return sent

    def _deliver_target(
        self, name: str, now: float, skip: Mapping[tuple[str, str], float], stop: threading.Event | None
    ) -> int:
        """The due rows of one target, `PASS_LIMIT` at a time, until one fails; returns how many
        were delivered. Critical alerts first: they never wait behind a flood of warnings (the
        order within a group, one rule and severity, is kept). The groups held back are those held
        when the pass began: a group that speaks in this pass says all it has, however many
        messages that takes."""
        sent = 0
        critical = [g for g in self._outbox.pending_groups(name) if g.rpartition("\0")[2] == "critical"]
        for groups in ([critical] if critical else []) + [None]:
            for _ in range(100):  # a bound, not a limit: a failed target's rows are not due again
                items = self._outbox.due(now, PASS_LIMIT, only=name, skip=skip, groups=groups)
                delivered, failed = self._send(items, stop)
                sent += delivered
                if failed or (stop is not None and stop.is_set()):
                    return sent
                if len(items) < PASS_LIMIT:
                    break
        return sent

    def _send(self, items: Sequence[OutboxItem], stop: threading.Event | None) -> tuple[int, bool]:
        """Send `items` (one target's) as messages, in order, until one fails: (delivered, failed)."""
        sent = 0
        for name, batch in self._batches(items):
            if stop is not None and stop.is_set():
                break
            target = self._targets.get(name)
            try:
                if target is None:
                    raise DeliveryError(f"no target named {name!r} in the current config")
                target.send([item.alert for item in batch])
            except Exception as exc:
                error = str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
                self._outbox.failed([item.id for item in batch], self._now(), error)
                self._on_result(group_of(name), False, len(batch))
                quiet = target is None and name in self._missing_reported
                if target is None:
                    self._missing_reported.add(name)
                if not quiet:
                    what = f"{len(batch)} alerts" if len(batch) > 1 else "an alert"
                    self._log(f"xinf-watch: delivery of {what} to {name} failed (attempt"
                              f" {batch[0].attempts + 1}, will retry): {error}")  # fmt: skip
                return sent, True  # its later rows wait for the retry
            done = self._now()
            for item in batch:
                self._outbox.delivered(item.id, done)
            self._on_result(group_of(name), True, len(batch))
            if target.group_interval > 0:
                with self._told_lock:
                    for item in batch:
                        self._told_at[(name, item.group)] = done
            sent += len(batch)
        return sent, False

    def next_wake(self, now: float) -> float:
        """When a pass may have something to do: a retry, a group's interval ending, a re-send
        (a target whose lane is busy wakes the sender when it is done)."""
        holding = self.holding(now)
        busy = self._lanes.busy() if self._lanes is not None else set[str]()
        due = self._outbox.next_due(only=self._only, besides=self._besides, skip=holding, exclude=busy)
        times = [now + IDLE_WAIT, *holding.values()]
        if due is not None:
            times.append(due)
        if self._refresher is not None:
            times.append(self._refresher.next_at)
        return min(times)

    def run(self, stop: threading.Event, wake: threading.Event, *, lanes: bool = False) -> None:
        """Deliver until `stop` is set. Set `wake` after a commit that enqueued alerts (and after `stop`).
        `lanes`: each target is sent to on a thread of its own (`Lanes`), so a slow or dead URL
        holds up only itself; the loop never waits for a send."""
        self._lanes = Lanes(wake, stop, self._log) if lanes else None
        last_prune = float("-inf")
        while not stop.is_set():
            timeout = IDLE_WAIT
            try:
                self.deliver_due(stop)
                if self._refresher is not None and not stop.is_set():
                    self._refresher.run_due(self._targets.get(ALERTMANAGER))
                now = self._now()
                if now - last_prune >= 3600:
                    self._outbox.prune(now - KEEP_DELIVERED)
                    last_prune = now
                timeout = min(max(self.next_wake(now) - now, 0.0), IDLE_WAIT)
            except Exception as exc:  # the sender must outlive a bad pass (e.g. a locked database)
                self._log(f"xinf-watch: alert delivery pass failed: {type(exc).__name__}: {exc}")
                self._attempted = 0
            if timeout == 0.0 and self._attempted == 0:
                timeout = 0.05  # due rows but nothing tried (stopping, or a clock step): never spin
            wake.wait(timeout)
            wake.clear()
        if self._lanes is not None:  # a send in progress may still mark its rows (else: sent again)
            self._lanes.wait_idle(LANE_GRACE)


class Lanes:
    """One sending thread per target at a time: a target whose send is in progress is busy, and the
    next pass leaves its rows alone (so its rows still go out in order, one message at a time). A
    lane wakes the sender loop when it is done, for whatever came due meanwhile."""

    def __init__(self, wake: threading.Event, stop: threading.Event, log: Callable[[str], None]) -> None:
        self._wake = wake
        self._stop = stop
        self._log = log
        self._busy: set[str] = set()
        self._lock = threading.Condition()

    def busy(self) -> set[str]:
        with self._lock:
            return set(self._busy)

    def wait_idle(self, timeout: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: not self._busy, timeout)

    def start(self, name: str, work: Callable[[], int]) -> None:
        def lane() -> None:
            try:
                work()
            except Exception as exc:  # e.g. a locked database: the next pass tries again
                if not self._stop.is_set():  # (stopping: the outbox may be closed under a late send)
                    self._log(f"xinf-watch: alert delivery to {name} failed: {type(exc).__name__}: {exc}")
            finally:
                with self._lock:  # not busy before the wake: the pass it wakes must see it free
                    self._busy.discard(name)
                    self._lock.notify_all()
                self._wake.set()

        with self._lock:
            self._busy.add(name)
        threading.Thread(target=lane, name=f"xinf-watch-send {name}", daemon=True).start()


# -- journal ------------------------------------------------------------------------------------


class AlertJournal:
    """Append-only JSON lines, one per alert transition, mode 0600; each transition once.

    The daemon journals a batch's alerts before it commits them, so a crash cannot leave a
    committed alert out of the journal; a batch read again after a crash makes the same alerts
    (same id and status), which are recognised among the last `REMEMBER` transitions (read back
    from the file's end when the journal is opened) and not written twice.
    The file is opened (append mode) for each batch, so a journal rotated by rename continues in a
    fresh file without a reopen signal.
    A write the storage refuses (disk full, read-only) never leaves part of a record: the file is cut
    back to where the batch began, and the records are kept (`unwritten`) and written, in order,
    by the next `append` or `flush` that can. A file found ending in part of a record (a crash in
    the middle of a write) is cut back to its last whole record before anything is added.
    """

    REMEMBER = 4096
    _TAIL_BYTES = 2 << 20
    _SCAN = 1 << 16  # bytes read at a time looking back for the last whole record

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._recent: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._unwritten: list[bytes] = []  # records the storage refused so far, in order
        self.error: str | None = None  # why they are not written (the path and the OS error)
        self.write_errors = 0
        for line in self._tail():
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
                alert = orjson.loads(line)
                self._remember((str(alert["id"]), str(alert["status"])))

    @property
    def unwritten(self) -> int:
        return len(self._unwritten)

    def _tail(self) -> list[bytes]:
        try:
            with self.path.open("rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - self._TAIL_BYTES))
                data = f.read()
        except OSError:
            return []
        lines = data.split(b"\n")
        return lines[1:] if len(data) == self._TAIL_BYTES else lines  # the first may be cut

    def _remember(self, key: tuple[str, str]) -> None:
        self._recent[key] = None
        if len(self._recent) > self.REMEMBER:
            self._recent.popitem(last=False)

    def append(self, alerts: Sequence[Alert]) -> bool:
        """Journal the transitions not journaled yet; False when the storage refused them (kept)."""
        for alert in alerts:
            key = (alert.id, alert.status.value)
            if key not in self._recent:
                self._unwritten.append(orjson.dumps(alert.to_json()) + b"\n")
                self._remember(key)
        return self.flush()

    def flush(self) -> bool:
        """Write the records kept from refused writes; True when none is left."""
        if not self._unwritten:
            return True
        try:
            self._write(b"".join(self._unwritten))
        except OSError as exc:
            if not is_storage_error(exc):
                raise
            self.write_errors += 1
            self.error = f"{exc.filename or self.path}: {exc.strerror or exc}"
            return False
        self._unwritten.clear()
        self.error = None
        return True

    def _write(self, data: bytes) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            end = self._whole_end(fd)
            view = memoryview(data)
            try:
                while view:  # one write for a batch, unless the kernel takes it in parts
                    view = view[os.write(fd, view) :]
            except OSError:
                with contextlib.suppress(OSError):  # no part of a record stays behind
                    os.ftruncate(fd, end)
                raise
        finally:
            os.close(fd)

    def _whole_end(self, fd: int) -> int:
        """The file's size, after cutting a last record that was written in part (a crash mid-write)."""
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return size
        end = size
        while end > 0:
            start = max(0, end - self._SCAN)
            newline = os.pread(fd, end - start, start).rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        os.ftruncate(fd, end)
        return end
