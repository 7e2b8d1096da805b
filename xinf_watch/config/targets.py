"""Where alerts go: the `notify`, `alertmanager` and `delivery` sections of rules.yaml.

A notify group is a list of apprise URLs, or paths of apprise config files (relative to the rules
file); a group may be empty (journal and metrics only). `${VAR}` in a URL, and in `alertmanager.url`,
is taken from the environment (config/locations.py), and a notify URL is never shown in an error.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    PlainValidator,
)

from xinf_watch.config.context import LoadContext
from xinf_watch.config.fields import Duration, DurationOrZero, Frozen
from xinf_watch.config.locations import check_env, check_notify_target, check_url
from xinf_watch.config.yamlsource import Expect


class AlertmanagerConfig(Frozen):
    url: Annotated[str, PlainValidator(check_url), Expect("an http(s) URL, e.g. http://127.0.0.1:9093")]
    resend_interval: Duration = 60.0  # firing alerts are posted again this often (endsAt: 4 x ahead)
    event_ttl: Duration = 3600.0  # match / new_value alerts stay active this long after their last hit


class DeliveryConfig(Frozen):
    # apprise groups: alerts of a rule that follow a message within this wait and go out together
    group_interval: DurationOrZero = 30.0


def notify_target(value: Any, ctx: LoadContext) -> str:
    return check_notify_target(value, check_env(value, ctx), ctx)
