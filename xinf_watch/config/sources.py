"""The `sources:` section of rules.yaml: `SourceConfig`, a log to follow and how to read it.

`format` is one of `SOURCE_FORMATS`; the options belong to formats (`log_format`: nginx, default
`combined_key`; `preset`: json; `pattern`: regex; `fields`: json and haproxy; `wrapper`: any, a
container runtime's wrapping of each line). The checks that span several fields (an option given to
a format that does not use it, what a json or regex source cannot do without) run once the source's
own fields are valid. `path`, a file or glob, is made absolute against the rules file; a
`SourceConfig(...)` built in code rather than loaded (an ad-hoc replay source) keeps it as given.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BeforeValidator,
    PlainValidator,
    ValidationInfo,
    field_validator,
    model_validator,
)

from xinf_watch.config.fields import Frozen, Name, Where
from xinf_watch.config.locations import check_glob
from xinf_watch.config.values import (
    HAPROXY_FIELDS,
    JSON_FIELDS,
    JSON_PRESETS,
    SOURCE_FORMATS,
    check_log_format,
    check_regex_source,
    check_version,
    one_of,
)
from xinf_watch.config.yamlsource import Expect, Problems, not_one_of
from xinf_watch.ingest.wrappers import WRAPPERS


def _regex_pattern(value: Any, info: ValidationInfo) -> str | None:
    # `wrapper` is declared before `pattern`, so it is validated first: with one, `ts` may be left out
    return check_regex_source(value, time_optional=info.data.get("wrapper") is not None)


class SourceConfig(Frozen):
    name: Name
    path: Annotated[str, PlainValidator(check_glob), Expect("a file path or glob")]  # absolute
    format: Annotated[
        str,
        PlainValidator(one_of("a source format", SOURCE_FORMATS)),
        Expect("one of " + ", ".join(SOURCE_FORMATS)),
    ]
    # nginx: a log_format string; a preset name ("combined", "combined_key") means that preset
    log_format: Annotated[str | None, PlainValidator(check_log_format)] = None
    preset: Annotated[str | None, PlainValidator(one_of("a json preset", JSON_PRESETS, optional=True))] = None
    # json: record field -> dotted path in the object; haproxy: {captures: "Authorization|User-Agent"}
    fields: Annotated[
        Mapping[str, str] | None, AfterValidator(lambda m: None if m is None else MappingProxyType(dict(m)))
    ] = None
    # the container runtime's wrapping of each line (ingest/wrappers.py): cri or docker; None: plain lines
    wrapper: Annotated[str | None, PlainValidator(one_of("a wrapper", WRAPPERS, optional=True))] = None
    pattern: Annotated[str | None, PlainValidator(_regex_pattern), Expect("a regular expression")] = None
    start_at: Annotated[
        Literal["end", "beginning"], BeforeValidator(one_of("a start position", ("end", "beginning")))
    ] = "end"
    xinference_version: Annotated[
        str | None, PlainValidator(check_version), Expect('a version, e.g. "4"')
    ] = None

    @model_validator(mode="before")
    @classmethod
    def _nginx_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("format") == "nginx" and data.get("log_format") is None:
            return {**data, "log_format": "combined_key"}
        return data

    @field_validator("fields", mode="before")
    @classmethod
    def _field_names(cls, value: Any, info: ValidationInfo) -> Any:
        known = {"json": JSON_FIELDS, "haproxy": HAPROXY_FIELDS}.get(info.data.get("format", ""))
        if isinstance(value, dict) and known:
            bad = [((key,), not_one_of(key, "a field", known)) for key in value if key not in known]
            if bad:
                raise Problems(bad)
        return value

    @model_validator(mode="after")
    def _per_format(self) -> Self:
        wrong: list[tuple[Where, str]] = []
        uses = {
            "log_format": ("nginx",),
            "preset": ("json",),
            "pattern": ("regex",),
            "fields": ("json", "haproxy"),
        }
        for option, formats in uses.items():
            if getattr(self, option) is not None and self.format not in formats:
                only = " or ".join(formats)
                wrong.append(
                    ((option,), f"not used by format {self.format} (expected it only with format {only})")
                )
        if self.format == "json" and not self.preset:
            required = JSON_FIELDS[:5]
            missing = [f for f in required if not (self.fields or {}).get(f)]
            if not self.fields:
                presets = ", ".join(JSON_PRESETS)
                message = (
                    f"a json source needs a preset or fields (expected preset: {presets}, and/or fields)"
                )
                wrong.append(((), message))
            elif missing:
                message = f"no path for {', '.join(missing)} (expected {', '.join(required)}, or a preset)"
                wrong.append((("fields",), message))
        if self.format == "regex" and not self.pattern:
            wrong.append((("pattern",), "missing required field (expected a regular expression)"))
        if wrong:
            raise Problems(wrong)
        return self
