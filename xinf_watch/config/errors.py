"""pydantic's validation errors as our problems: a location in the file and a one-line message.

Locations lose pydantic's union tags and the indexes it adds when a scalar stands for a one-item
list (they are matched against the loaded data); messages lose pydantic's wording and URLs. What a
field expects comes from its `Expect` metadata, else from its type. An unknown field gets a "did
you mean" from the model's own field names, or, inside a tagged union (rule kinds), the kinds that
do have it. Validators may raise `Problems` to report several problems, or ones below their value.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from xinf_watch.config.yamlsource import (
    Document,
    Expect,
    Loc,
    Problem,
    Problems,
    TagNoun,
    did_you_mean,
    not_one_of,
    show,
)

_MISSING = object()

_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
    "str": "a string",
    "list": "a list",
    "tuple": "a list",
    "set": "a list",
    "frozen_set": "a list",
    "dict": "a mapping",
    "model": "a mapping",
    "model_attributes": "a mapping",
}


def problems_from(error: ValidationError, doc: Document, root: type[BaseModel]) -> list[Problem]:
    out: list[Problem] = []
    for err in error.errors(include_url=False):
        loc = _data_loc(doc.data, err["loc"], missing=err["type"] == "missing")
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, Problems):
            out.extend(Problem(loc + sub, message) for sub, message in cause.items)
            continue
        out.append(_problem(err, loc, doc, root))
    # `fromat:` is one mistake, not two: its "did you mean" says what the missing field is
    meant = {p.loc[:-1] + (m.group(1),) for p in out if (m := _MEANT.search(p.message)) and p.loc}
    return [p for p in out if not (p.loc in meant and p.message.startswith("missing required field"))]


_MEANT = re.compile(r'^unknown field \(did you mean "([^"]+)"\?\)$')


def _problem(err: Any, loc: Loc, doc: Document, root: type[BaseModel]) -> Problem:
    kind: str = err["type"]
    value = _value_at(doc.data, loc)
    expect = _expect_at(root, err["loc"])
    if not loc:
        expect = "a mapping of sections: " + ", ".join(_field_names(root))
    if kind in ("value_error", "assertion_error"):
        return Problem(loc, str(err["ctx"]["error"]))
    if kind == "missing":
        return Problem(loc, f"missing required field (expected {expect})")
    if kind == "extra_forbidden":
        return Problem(loc, _unknown_field(root, err["loc"]))
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tag = str(err["ctx"]["discriminator"]).strip("'")
        tags, noun = _tags_at(root, err["loc"])
        if kind == "union_tag_not_found" or tag not in (value or {}):
            return Problem(loc + (tag,), f"missing required field (expected one of {', '.join(tags)})")
        return Problem(loc + (tag,), not_one_of(value[tag], noun or f"a {tag}", tags))
    if kind == "greater_than_equal":
        return Problem(loc, f"{show(value)} is less than {err['ctx']['ge']:g} (expected {expect})")
    if kind == "greater_than":
        return Problem(loc, f"{show(value)} is not greater than {err['ctx']['gt']:g} (expected {expect})")
    if kind in ("too_short", "string_too_short"):
        return Problem(loc, f"{show(value)} is empty (expected {expect})")
    base = kind.removesuffix("_type").removesuffix("_parsing").removesuffix("_from_float")
    if base in _TYPE_WORDS:
        return Problem(loc, f"{show(value)} is not {_TYPE_WORDS[base]} (expected {expect})")
    return Problem(loc, f"{show(value)}: {err['msg'][:1].lower()}{err['msg'][1:]} (expected {expect})")


def _data_loc(data: Any, loc: Sequence[str | int], missing: bool = False) -> Loc:
    """A pydantic location as a location in the data: drop union tags and scalar-as-list indexes.

    Only a `missing` error may end in a key that is not in the data (the missing field)."""
    out: list[str | int] = []
    here = data
    for n, seg in enumerate(loc):
        if isinstance(here, dict) and str(seg) in here:
            out.append(str(seg))
            here = here[str(seg)]
        elif isinstance(here, list) and isinstance(seg, int) and 0 <= seg < len(here):
            out.append(seg)
            here = here[seg]
        elif missing and n == len(loc) - 1 and isinstance(here, dict) and isinstance(seg, str):
            out.append(seg)  # a missing field
            here = _MISSING
    return tuple(out)


def _value_at(data: Any, loc: Loc) -> Any:
    for seg in loc:
        try:
            data = data[seg]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return data


def _unknown_field(root: type[BaseModel], loc: Sequence[str | int]) -> str:
    name = str(loc[-1])
    model, _ = _walk(root, loc[:-1])
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return "unknown field (expected it left out)"
    fields = _field_names(model)
    siblings = _union_siblings(root, loc[:-1], model)
    users = [tag for tag, other in siblings if name in _field_names(other)]
    if users and model_tag(model):
        tag_field, tag = model_tag(model) or ("", "")
        return f"not used by {tag_field} {tag} (expected it only with {tag_field} {', '.join(users)})"
    hint = did_you_mean(name, fields)
    if hint:
        return f"unknown field ({hint[2:]})"
    return f"unknown field (expected one of {', '.join(fields)})"


def _field_names(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items() if not info.exclude]


def model_tag(model: type[BaseModel]) -> tuple[str, str] | None:
    """(`kind`, `threshold`) for a member of a tagged union: its field with a one-value Literal."""
    for name, info in model.model_fields.items():
        if get_origin(info.annotation) is Literal and len(get_args(info.annotation)) == 1:
            return name, str(get_args(info.annotation)[0])
    return None


def _union_siblings(
    root: type[BaseModel], loc: Sequence[str | int], model: type[BaseModel]
) -> list[tuple[str, type[BaseModel]]]:
    """The other members of the tagged union `model` was chosen from at `loc`, with their tags."""
    tag = model_tag(model)
    if not tag or not loc:
        return []
    union, _ = _walk(root, loc[:-1], stop_at_union=True)
    out = []
    for member in _members(union):
        member_tag = model_tag(member)
        if member is not model and member_tag:
            out.append((member_tag[1], member))
    return out


def _tags_at(root: type[BaseModel], loc: Sequence[str | int]) -> tuple[list[str], str | None]:
    """The tags of the tagged union at `loc`, and what a tag is called (`TagNoun`)."""
    union, metadata = _walk(root, loc, stop_at_union=True)
    noun = next((item.text for item in metadata if isinstance(item, TagNoun)), None)
    return [tag[1] for member in _members(union) if (tag := model_tag(member))], noun


def _members(tp: Any) -> list[type[BaseModel]]:
    if get_origin(tp) in (Union, types.UnionType):
        return [m for m in get_args(tp) if isinstance(m, type) and issubclass(m, BaseModel)]
    return []


def _expect_at(root: type[BaseModel], loc: Sequence[str | int]) -> str:
    tp, metadata = _walk(root, loc)
    for item in metadata:
        if isinstance(item, Expect):
            return item.text
    return _describe_type(tp)


def _describe_type(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin in (tuple, list, frozenset, set):
        return "a list"
    if origin in (dict, Mapping, typing.Mapping) or (isinstance(tp, type) and issubclass(tp, BaseModel)):
        return "a mapping"
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in get_args(tp))
    return "a valid value"


def _walk(root: Any, loc: Sequence[str | int], stop_at_union: bool = False) -> tuple[Any, list[Any]]:
    """The annotation (and Annotated metadata) at a pydantic location, following union tags."""
    tp: Any = root
    metadata: list[Any] = []
    segs = list(loc)
    while True:
        if get_origin(tp) is Annotated:
            metadata.extend(tp.__metadata__)
            tp = get_args(tp)[0]
            continue
        if get_origin(tp) in (Union, types.UnionType):
            members = _members(tp)
            if stop_at_union and not segs and members:
                return tp, metadata
            tp = _union_member(tp, members, segs)
            continue
        if not segs:
            return tp, metadata
        below = _descend(tp, segs.pop(0))
        if below is None:
            return tp, []
        tp, metadata = below


def _union_member(tp: Any, members: list[type[BaseModel]], segs: list[str | int]) -> Any:
    """The member the next segment names by its tag (taken off `segs`), else the first non-None one."""
    chosen = next((m for m in members if segs and (t := model_tag(m)) and t[1] == segs[0]), None)
    if chosen is not None:
        segs.pop(0)
        return chosen
    return next((a for a in get_args(tp) if a is not type(None)), tp)


def _descend(tp: Any, seg: str | int) -> tuple[Any, list[Any]] | None:
    """The annotation one segment below `tp` and its metadata; None when nothing is below."""
    origin = get_origin(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        found = [(n, i) for n, i in tp.model_fields.items() if (i.alias or n) == seg]
        if not found:
            return tp, []  # a tag or pydantic's own segment: stay
        info = found[0][1]
        return info.annotation, list(info.metadata)
    if origin in (tuple, list, frozenset, set) and isinstance(seg, int):
        return get_args(tp)[0], []
    if origin in (dict, Mapping, typing.Mapping):
        return (str if seg == "[key]" else get_args(tp)[1]), []
    return None
