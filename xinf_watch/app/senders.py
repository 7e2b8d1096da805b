"""The daemon's two sender threads of the outbox, and the delivery targets of a config.

Two `Deliverer`s (delivery/sender.py) deliver the outbox: one to the notify groups (each URL on a
lane thread of its own, so a slow or dead one holds up only itself), one to Alertmanager, which
also re-sends the firing alerts every `resend_interval` (delivery/alertmanager.py's `Refresher`);
the loop only wakes them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from xinf_watch.config.schema import Config
from xinf_watch.delivery.alertmanager import Refresher
from xinf_watch.delivery.routing import build_targets
from xinf_watch.delivery.sender import Deliverer
from xinf_watch.delivery.target import ALERTMANAGER
from xinf_watch.state.outbox import Outbox

log = logging.getLogger("xinf_watch")


def delivery_targets(config: Config) -> dict[str, Any]:
    am = config.alertmanager
    if am is None:
        return build_targets(config.notify, None, group_interval=config.delivery.group_interval)
    return build_targets(config.notify, am.url, group_interval=config.delivery.group_interval,
                         resend_interval=am.resend_interval, event_ttl=am.event_ttl)  # fmt: skip


def start_senders(
    outbox: Outbox,
    targets: dict[str, Any],
    on_result: Callable[[str, bool, int], None],
    clock: Callable[[], float],
    stop: threading.Event,
    wakes: tuple[threading.Event, threading.Event],
) -> tuple[Deliverer, Deliverer, list[threading.Thread]]:
    """The notify groups' sender and Alertmanager's, each started on its thread (woken by `wakes`,
    in that order; `on_result` hears of every message)."""
    deliverer = Deliverer(outbox, targets, on_result, now=clock, log=log.warning, besides=ALERTMANAGER)
    alertmanager_sender = Deliverer(outbox, targets, on_result, now=clock, log=log.warning, only=ALERTMANAGER,
                                    refresher=Refresher(outbox, clock, log.warning))  # fmt: skip
    senders = [  # the notify groups' sender sends to each URL on a lane of its own
        threading.Thread(target=sender.run, args=(stop, wake), kwargs={"lanes": lanes}, name=name,
                         daemon=True)
        for sender, wake, name, lanes in (
            (deliverer, wakes[0], "xinf-watch-sender", True),
            (alertmanager_sender, wakes[1], "xinf-watch-alertmanager", False))
    ]  # fmt: skip
    for sender in senders:
        sender.start()
    return deliverer, alertmanager_sender, senders
