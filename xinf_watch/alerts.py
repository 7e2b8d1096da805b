"""Alert delivery: notification text, the targets (apprise groups, Alertmanager), the outbox sender
and the alert journal. The only module that imports apprise.

Rules:
- Every alert reaches people as a readable title and body that end with the alert JSON on its own
  line (docs/DESIGN.md section 7); Alertmanager gets it as labels and annotations.
- Delivery is at least once, in order per target: the `Deliverer` takes due rows from the durable
  outbox (`state.Outbox`), sends, and marks each delivered or failed (exponential backoff). A failed
  row holds back the later rows of its own target, never another target. Only a crash between a send
  and its `delivered` mark can repeat a notification; receivers de-duplicate by (id, status).
- A row whose target is not in the current config (the group was removed by a reload) is kept and
  retried with backoff, with one loud message per target name: a reload that brings the group back
  delivers the backlog, and nothing is ever dropped silently.
- An apprise group remembers (in memory) which of its URLs already took an alert, so a retry after a
  partial failure goes only to the URLs that failed.
- apprise's logger is silenced (it may name URLs, and URLs carry tokens): its warnings are kept per
  send, with anything URL-shaped blanked, and become the text of the `DeliveryError`.
- Alertmanager: a firing alert is posted without `endsAt`, a resolved one with `endsAt = last_ts`.
  Alertmanager ends a firing alert by itself after its `resolve_timeout` unless it is posted again.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import sys
import threading
import urllib.request
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.error import HTTPError, URLError
from urllib.parse import unquote, urlsplit, urlunsplit

import apprise
import orjson
from apprise.manager_plugins import NotificationManager

from xinf_watch.model import Alert
from xinf_watch.state import Outbox

ALERTMANAGER = "alertmanager"  # the target name of the Alertmanager, beside the notify group names
IDLE_WAIT = 60.0  # seconds the sender sleeps when nothing is pending (a commit wakes it sooner)
KEEP_DELIVERED = 7 * 86400.0  # delivered outbox rows are kept this long for de-duplication
_LABEL_BAD = re.compile(r"[^a-zA-Z0-9_]")
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://\S*")

with warnings.catch_warnings():
    # apprise loads its plugins on first use; one imports `imghdr`, deprecated since Python 3.11.
    # Load them now, once, so that warning (not ours to fix) does not surface at the first send.
    warnings.simplefilter("ignore", DeprecationWarning)
    NotificationManager().load_modules()  # type: ignore[no-untyped-call]

_STANDARD = ("rule", "kind", "severity", "status", "group", "key", "count", "first_ts", "last_ts",
             "summary", "source", "id")  # fmt: skip


class DeliveryError(Exception):
    """A target did not accept an alert; the message names no secret."""


class Target(Protocol):
    def send(self, alert: dict[str, Any]) -> None: ...


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- text ----------------------------------------------------------------------------------------


def notification_text(alert: dict[str, Any]) -> tuple[str, str]:
    """A title and body for people, the body ending with the alert JSON on its own line."""
    rule, status = str(alert.get("rule", "?")), str(alert.get("status", "firing"))
    severity, summary = str(alert.get("severity", "")), str(alert.get("summary", ""))
    title = f"[{status.upper()}] {rule} ({severity}): {summary}"
    lines = [f"{rule} is {status.upper()} ({severity}, {alert.get('kind', '?')} rule)", summary, ""]
    group = alert.get("group") or {}
    details: list[tuple[str, Any]] = [("key", alert.get("key"))]
    details += [(str(k), v) for k, v in group.items() if k != "key" or v != alert.get("key")]
    details += [("count", alert.get("count")), ("from", alert.get("first_ts")), ("to", alert.get("last_ts")),
                ("source", alert.get("source"))]  # fmt: skip
    details += [(k, v) for k, v in alert.items() if k not in _STANDARD]
    width = max(len(k) for k, _ in details) + 1
    lines += [f"{k + ':':<{width}} {v}" for k, v in details if v is not None]
    lines += [f"{'id:':<{width}} {alert.get('id')}", "", orjson.dumps(alert).decode()]
    return title, "\n".join(lines)


# -- apprise ------------------------------------------------------------------------------------


class _AppriseLog(logging.Handler):
    """Keeps apprise's warnings for the send in progress; nothing reaches stderr.

    apprise may log from its own worker threads, so the capture is process-wide: one send at a time.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._sending = threading.Lock()
        self._lines: list[str] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        lines = self._lines
        if lines is not None and len(lines) < 5:
            try:
                lines.append(_URL.sub("<url>", record.getMessage()))
            except Exception:  # a malformed apprise log call must not fail a delivery
                lines.append(record.levelname)

    @contextmanager
    def capture(self) -> Iterator[list[str]]:
        with self._sending:
            self._lines = lines = list[str]()
            try:
                yield lines
            finally:
                self._lines = None


def _apprise_log() -> _AppriseLog:
    logger = logging.getLogger("apprise")
    for handler in logger.handlers:
        if isinstance(handler, _AppriseLog):
            return handler
    handler = _AppriseLog()
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)  # no debug records: they carry payloads and URLs
    logger.propagate = False
    return handler


def _notify_type(alert: dict[str, Any]) -> apprise.NotifyType:
    if alert.get("status") == "resolved":
        return apprise.NotifyType.SUCCESS
    return {"critical": apprise.NotifyType.FAILURE, "warning": apprise.NotifyType.WARNING}.get(
        str(alert.get("severity")), apprise.NotifyType.INFO
    )


class AppriseTarget:
    """A notify group: apprise URLs and/or apprise config files (YAML or text), each sent on its own."""

    def __init__(self, name: str, entries: Sequence[str]) -> None:
        self.name = name
        self._log = _apprise_log()
        asset = apprise.AppriseAsset(app_id="xinf-watch", app_desc="xinf-watch", storage_mode="memory")
        self._entries: list[tuple[str, apprise.Apprise]] = []
        self.problems: list[str] = []  # entries that could not be loaded: each send fails on them
        for n, entry in enumerate(entries, 1):
            is_url = "://" in entry
            label = f"{name}[{n}] ({entry.partition('://')[0] + '://' if is_url else entry})"
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
        self._done: OrderedDict[tuple[str, str], set[int]] = OrderedDict()

    def send(self, alert: dict[str, Any]) -> None:
        title, body = notification_text(alert)
        key = (str(alert.get("id")), str(alert.get("status")))
        done = self._done.pop(key, set())
        failures = list(self.problems)
        for n, (label, service) in enumerate(self._entries):
            if n in done:
                continue
            with self._log.capture() as lines:
                try:
                    ok = bool(service.notify(body=body, title=title, notify_type=_notify_type(alert),
                                             body_format=apprise.NotifyFormat.TEXT))  # fmt: skip
                except Exception as exc:  # apprise plugins are many; one raising is a failed send
                    ok, lines[:] = False, [type(exc).__name__]
            if ok:
                done.add(n)
            else:
                failures.append(f"{label}: {'; '.join(lines) or 'apprise reported failure'}")
        if failures:
            self._done[key] = done
            while len(self._done) > 1000:
                self._done.popitem(last=False)
            raise DeliveryError(f"notify group {self.name!r}: " + " | ".join(failures))


# -- Alertmanager -------------------------------------------------------------------------------


def _label_name(name: str) -> str:
    clean = _LABEL_BAD.sub("_", name)
    return clean if clean and not clean[0].isdigit() else "_" + clean


def alertmanager_alert(alert: dict[str, Any]) -> dict[str, Any]:
    """The Alertmanager API v2 alert object for one of our alerts."""
    labels = {"alertname": alert.get("rule"), "rule": alert.get("rule"), "severity": alert.get("severity"),
              "key": alert.get("key"), "source": alert.get("source")}  # fmt: skip
    for field, value in (alert.get("group") or {}).items():
        name = _label_name(str(field))
        if name in labels and labels[name] != value:
            name = "group_" + name
        labels[name] = value
    out: dict[str, Any] = {
        # an empty label is no label in Alertmanager, so absent values are left out
        "labels": {k: str(v) for k, v in labels.items() if v is not None and str(v) != ""},
        "annotations": {"summary": str(alert.get("summary", "")), "alert": orjson.dumps(alert).decode()},
        "startsAt": alert.get("first_ts"),
    }
    if alert.get("status") == "resolved":
        out["endsAt"] = alert.get("last_ts")
    return out


class AlertmanagerTarget:
    """POSTs each alert to `<url>/api/v2/alerts`. Credentials in the URL become Basic auth."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
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

    def send(self, alert: dict[str, Any]) -> None:
        data = orjson.dumps([alertmanager_alert(alert)])
        request = urllib.request.Request(self._endpoint, data=data, headers=self._headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                response.read()
        except HTTPError as exc:
            detail = exc.read(300).decode("utf-8", "replace").strip()
            raise DeliveryError(f"alertmanager at {self._where}: HTTP {exc.code}: {detail}") from None
        except URLError as exc:
            raise DeliveryError(f"alertmanager at {self._where}: {exc.reason}") from None
        except (OSError, ValueError) as exc:  # timeouts, resets, a malformed response
            raise DeliveryError(f"alertmanager at {self._where}: {type(exc).__name__}: {exc}") from None


# -- routing and the sender ---------------------------------------------------------------------


def targets_for(
    rule_notify: Sequence[str], notify_groups: Mapping[str, Sequence[str]], alertmanager_url: str | None
) -> list[str]:
    """The target names an alert of a rule goes to: its notify groups, then Alertmanager (all alerts)."""
    names = list(dict.fromkeys(g for g in rule_notify if g in notify_groups))
    if alertmanager_url:
        names.append(ALERTMANAGER)
    return names


def build_targets(
    notify_groups: Mapping[str, Sequence[str]], alertmanager_url: str | None
) -> dict[str, Target]:
    if alertmanager_url and ALERTMANAGER in notify_groups:
        raise ValueError(f"a notify group may not be called {ALERTMANAGER!r} when alertmanager is configured")
    targets: dict[str, Target] = {name: AppriseTarget(name, urls) for name, urls in notify_groups.items()}
    if alertmanager_url:
        targets[ALERTMANAGER] = AlertmanagerTarget(alertmanager_url)
    return targets


class Deliverer:
    """Sends due outbox rows to their targets; `run` is the sender thread's loop."""

    def __init__(
        self,
        outbox: Outbox,
        targets: Mapping[str, Target],
        on_result: Callable[[str, bool], None],
        now: Callable[[], float],
        *,
        log: Callable[[str], None] = _stderr,
    ) -> None:
        self._outbox = outbox
        self._targets = dict(targets)
        self._on_result = on_result
        self._now = now
        self._log = log
        self._missing_reported: set[str] = set()
        self._attempted = 0

    def set_targets(self, targets: Mapping[str, Target]) -> None:
        """Swap in the targets of a reloaded config (one reference swap)."""
        self._targets = dict(targets)
        self._missing_reported.clear()

    def deliver_due(self, stop: threading.Event | None = None) -> int:
        """One pass over the due rows; returns how many were delivered."""
        targets, sent, held = self._targets, 0, set()
        self._attempted = 0
        for item in self._outbox.due(self._now()):
            if stop is not None and stop.is_set():
                break
            if item.target in held:  # the target just failed: its later rows wait for the retry
                continue
            self._attempted += 1
            target = targets.get(item.target)
            try:
                if target is None:
                    raise DeliveryError(f"no target named {item.target!r} in the current config")
                target.send(item.alert)
            except Exception as exc:
                held.add(item.target)
                error = str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
                self._outbox.failed(item.id, self._now(), error)
                self._on_result(item.target, False)
                quiet = target is None and item.target in self._missing_reported
                if target is None:
                    self._missing_reported.add(item.target)
                if not quiet:
                    self._log(f"xinf-watch: delivery to {item.target} failed (attempt {item.attempts + 1},"
                              f" will retry): {error}")  # fmt: skip
            else:
                self._outbox.delivered(item.id, self._now())
                self._on_result(item.target, True)
                sent += 1
        return sent

    def run(self, stop: threading.Event, wake: threading.Event) -> None:
        """Deliver until `stop` is set. Set `wake` after a commit that enqueued alerts (and after `stop`)."""
        last_prune = float("-inf")
        while not stop.is_set():
            next_due: float | None = None
            try:
                self.deliver_due(stop)
                now = self._now()
                if now - last_prune >= 3600:
                    self._outbox.prune(now - KEEP_DELIVERED)
                    last_prune = now
                next_due = self._outbox.next_due()
            except Exception as exc:  # the sender must outlive a bad pass (e.g. a locked database)
                self._log(f"xinf-watch: alert delivery pass failed: {type(exc).__name__}: {exc}")
                self._attempted = 0
            timeout = IDLE_WAIT if next_due is None else min(max(next_due - self._now(), 0.0), IDLE_WAIT)
            if timeout == 0.0 and self._attempted == 0:
                timeout = 0.05  # due rows but nothing tried (stopping, or a clock step): never spin
            wake.wait(timeout)
            wake.clear()


# -- journal ------------------------------------------------------------------------------------


class AlertJournal:
    """Append-only JSON lines, one per alert transition, mode 0600; each transition once.

    The daemon journals a batch's alerts before it commits them, so a crash cannot leave a
    committed alert out of the journal; a batch read again after a crash makes the same alerts
    (same id and status), which are recognised among the last `REMEMBER` transitions (read back
    from the file's end when the journal is opened) and not written twice.
    The file is opened (append mode) for each batch, so a journal rotated by rename continues in a
    fresh file without a reopen signal.
    """

    REMEMBER = 4096
    _TAIL_BYTES = 2 << 20

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._recent: OrderedDict[tuple[str, str], None] = OrderedDict()
        for line in self._tail():
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
                alert = orjson.loads(line)
                self._remember((str(alert["id"]), str(alert["status"])))

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

    def append(self, alerts: Sequence[Alert]) -> None:
        new = [a for a in alerts if (a.id, a.status.value) not in self._recent]
        if not new:
            return
        data = b"".join(orjson.dumps(alert.to_json()) + b"\n" for alert in new)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:  # one write for a batch, unless the kernel takes it in parts
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        for alert in new:
            self._remember((alert.id, alert.status.value))
