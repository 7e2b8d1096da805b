"""The apprise target: a notify group's URLs and apprise config files. The only module that
imports apprise, and only on first use (a notify URL to check, a target with a URL or config
file): a daemon without notify URLs never holds apprise and its plugins (about 30 MiB).

Rules:
- One send is bounded by apprise's timeouts (4 s to connect, 4 s between reads by default;
  `?cto=` / `?rto=` in the URL).
- An `AppriseTarget` of several URLs (a group's own target, for rows an earlier release queued per
  group) remembers (in memory) which of its URLs already took an alert, so a retry after a partial
  failure goes only to the URLs that failed.
- apprise's logger is silenced (it may name URLs, and URLs carry tokens): its warnings are kept per
  send, with anything URL-shaped blanked, and become the text of the `DeliveryError`. The loggers
  of urllib3 and requests (request lines with a URL's path and query) never reach a handler.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import re
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xinf_watch.delivery.target import DeliveryError, group_of
from xinf_watch.delivery.text import group_text
from xinf_watch.visible import visible

if TYPE_CHECKING:
    import apprise

MAX_GROUP = 200  # alerts in one grouped message, at most
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://\S*")

_PORT = re.compile(r"^(?:.*@)?(?:\[[^\]]*\]|[^:\[\]]*):(\d+)$")  # the port of a netloc, if it has one


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
