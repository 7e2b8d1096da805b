"""The field types that rules.yaml's sections share, each with what it expects in a message.

Durations are `30s`, `5m`, `1h30m`, `250ms`, `7d`, `2w` or bare seconds: a `Duration` must be
positive, a `DurationOrZero` (`learn`, `cooldown`, `delivery.group_interval`) may be 0. Also counts,
names, event fields, paths resolved against the rules file, Redis URLs; and `Frozen`, the base of
every section's model (unknown fields are errors; the objects are immutable).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    Strict,
)

from xinf_watch.config.context import each
from xinf_watch.config.locations import check_path, check_redis_url
from xinf_watch.config.values import EVENT_FIELDS, check_duration, check_name, check_value_field, one_of
from xinf_watch.config.yamlsource import Expect

_DURATION = Expect("a duration, e.g. 30s, 5m, 1h")
Where = tuple[str | int, ...]

Duration = Annotated[float, PlainValidator(check_duration(positive=True)), _DURATION]
DurationOrZero = Annotated[float, PlainValidator(check_duration(positive=False)), _DURATION]
Count = Annotated[int, Strict(), Field(ge=1), Expect("an integer >= 1")]
CountOrZero = Annotated[int, Strict(), Field(ge=0), Expect("an integer >= 0")]
Name = Annotated[str, PlainValidator(check_name), Expect("a name without spaces, e.g. gateway")]
EventFields = Annotated[
    tuple[str, ...],
    PlainValidator(each(one_of("an event field", EVENT_FIELDS), empty=True)),
    Expect("a list of event fields, e.g. [ip] or [key]"),
]
ValueField = Annotated[
    str, PlainValidator(check_value_field), Expect("an event field or ip/<prefix>, e.g. ip or ip/24")
]
ResolvedPath = Annotated[Path, PlainValidator(check_path), Expect("a file path")]
RedisUrl = Annotated[
    str, PlainValidator(check_redis_url), Expect("a Redis URL, e.g. redis://127.0.0.1:6379/0")
]


class Frozen(BaseModel):
    """The base of every section's model: unknown fields are errors, the objects immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)
