"""`when:` of a rule as a typed, frozen value: what each filter field accepts and how it is stored.

Every field is optional (None: not checked); a list means "any of" and a scalar is a one-item list.
Closed sets become frozensets of the model's enums, network names become their CIDRs, `status`
becomes a `StatusSet` (codes and classes such as `4xx`), `user_agent` a `UserRegex` (time-bounded,
userregex.py). Matching
an event against it is `rules/filters.py`'s business.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, PlainValidator

from xinf_watch.config.context import LoadContext, each
from xinf_watch.config.networks import Network
from xinf_watch.config.values import check_method, check_route_path, check_text, fail, one_of
from xinf_watch.config.yamlsource import Expect, show
from xinf_watch.model import CredentialKind, KeyState, Outcome
from xinf_watch.userregex import UserRegex

_STATUS_CLASS = re.compile(r"([1-5])xx\Z", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class StatusSet:
    """`status:` of a filter: `404 in s`, `429 in s` for `[404, 4xx]`; iterates as written back."""

    codes: frozenset[int]
    classes: frozenset[int]  # 4 for "4xx"

    def __contains__(self, status: object) -> bool:
        return isinstance(status, int) and (status in self.codes or status // 100 in self.classes)

    def covered(self) -> frozenset[int]:
        """Every code in the set: the codes, and the hundred of each class (a set lookup per event)."""
        return self.codes | {c * 100 + n for c in self.classes for n in range(100)}

    def __iter__(self) -> Iterator[int | str]:
        yield from sorted(self.codes)
        yield from (f"{c}xx" for c in sorted(self.classes))

    @classmethod
    def of(cls, items: Sequence[int | str]) -> StatusSet:
        codes = frozenset(i for i in items if isinstance(i, int))
        return cls(codes, frozenset(int(i[0]) for i in items if isinstance(i, str)))


def _status(value: Any, _ctx: LoadContext) -> int | str:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
        return value
    if isinstance(value, str) and _STATUS_CLASS.match(value.strip()):
        return value.strip().lower()
    return fail(f"{show(value)} is not a status (expected a code 100-599 or a class such as 4xx)")


def _scope_glob(value: Any, _ctx: LoadContext) -> str:
    if isinstance(value, str) and value:
        return value
    return fail(f"{show(value)} is not a scope glob (expected e.g. models:*, admin or webui)")


def _regex(value: Any) -> UserRegex | None:
    if value is None or isinstance(value, UserRegex):
        return value
    if not isinstance(value, str):
        return fail(f"{show(value)} is not a string (expected a regular expression)")
    try:
        return UserRegex(value)
    except ValueError as exc:
        return fail(f"{exc} (expected a Python regular expression)")


def _set_of(what: str, enum: type[StrEnum]) -> Any:
    check = one_of(what, [member.value for member in enum])
    return PlainValidator(each(lambda v, ctx: enum(check(v)), empty=False, finish=frozenset, optional=True))


def _list_of(check: Callable[[Any, LoadContext], Any], finish: Callable[[list[Any]], Any] = tuple) -> Any:
    return PlainValidator(each(check, empty=False, finish=finish, optional=True))


def _flatten(items: list[tuple[Network, ...]]) -> tuple[Network, ...]:
    return tuple(net for group in items for net in group)


_NETS = Expect("a list of CIDRs or network names")


class FilterConfig(BaseModel):
    """`when:` of a rule: every given field must match; a list means "any of"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Annotated[tuple[str, ...] | None, _list_of(lambda v, ctx: ctx.source_name(v))] = None
    ip: Annotated[
        tuple[Network, ...] | None, _list_of(lambda v, ctx: ctx.network_ref(v), _flatten), _NETS
    ] = None
    ip_not_in: Annotated[
        tuple[Network, ...] | None, _list_of(lambda v, ctx: ctx.network_ref(v), _flatten), _NETS
    ] = None
    ip_allowed: bool | None = None
    ip_forwarded: bool | None = None
    key: Annotated[frozenset[str] | None, _list_of(check_text, frozenset)] = None
    owner: Annotated[frozenset[str] | None, _list_of(check_text, frozenset)] = None
    credential: Annotated[frozenset[CredentialKind] | None, _set_of("a credential kind", CredentialKind)] = (
        None
    )
    key_state: Annotated[frozenset[KeyState] | None, _set_of("a key state", KeyState)] = None
    scope: Annotated[tuple[str, ...] | None, _list_of(_scope_glob)] = None
    scope_allowed: bool | None = None
    outcome: Annotated[frozenset[Outcome] | None, _set_of("an outcome", Outcome)] = None
    reason: Annotated[frozenset[str] | None, _list_of(check_text, frozenset)] = None
    status: Annotated[StatusSet | None, _list_of(_status, StatusSet.of)] = None
    method: Annotated[frozenset[str] | None, _list_of(check_method, frozenset)] = None
    path: Annotated[tuple[str, ...] | None, _list_of(check_route_path)] = None
    user_agent: Annotated[UserRegex | None, PlainValidator(_regex), Expect("a regular expression")] = None
