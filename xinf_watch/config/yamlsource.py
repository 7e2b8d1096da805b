"""YAML with line numbers, and problems as one-line messages that point into the file.

Owns two things for `config/schema.py`:

* **Loading.** `load_document` composes the YAML into nodes and builds plain Python values from
  them, recording the line of every mapping key and every sequence item under its location
  (`("rules", 2, "window")`). Duplicate keys in a mapping are problems (YAML would silently keep
  the last one); a YAML syntax error is a `ConfigError` with the line of the problem.
* **Messages.** Every problem becomes exactly one line,
  `<file as given>:<line>: <yaml path>: <what is wrong> (expected <what>)`, where the line is that
  of the nearest recorded location (a missing field points at its parent), in file order.
  `config/errors.py` turns pydantic's errors into problems; validators in `config/*.py` write their
  messages directly, `ValueError("<what is wrong> (expected <what>)")`.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from xinf_watch.config.yamlsafe import compose

Loc = tuple[str | int, ...]


class ConfigError(Exception):
    """An invalid or unreadable config; `errors` are finished one-line messages, all of them."""

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors: tuple[str, ...] = tuple(errors)
        super().__init__("\n".join(self.errors))


@dataclass(frozen=True, slots=True)
class Problem:
    loc: Loc  # location in the loaded data: keys and list indexes
    message: str  # "<what is wrong> (expected <what>)"
    line: int | None = None  # when the location's recorded line is not the right one


class Problems(ValueError):
    """Raised by a validator for several problems, or for ones below the validated value."""

    def __init__(self, items: Sequence[tuple[Loc, str]]) -> None:
        self.items = tuple(items)
        super().__init__("; ".join(message for _, message in self.items))


@dataclass(frozen=True, slots=True)
class Expect:
    """Annotated metadata: what a field expects, for messages about it (missing, wrong type)."""

    text: str


@dataclass(frozen=True, slots=True)
class TagNoun:
    """Annotated metadata of a tagged union: what its tag is called in messages ("a rule kind")."""

    text: str


@dataclass(slots=True)
class Document:
    name: str  # the file name as the user gave it: messages start with it
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)  # found while loading (duplicate keys)

    def line_of(self, loc: Loc) -> int:
        for end in range(len(loc), -1, -1):
            line = self.lines.get(loc[:end])
            if line is not None:
                return line
        return 1

    def format(self, problems: Iterable[Problem]) -> list[str]:
        """The messages, in file order (stable for problems on the same line)."""
        placed = [(p.line or self.line_of(p.loc), n, p) for n, p in enumerate(problems)]
        placed.sort(key=lambda item: (item[0], item[1]))
        return [f"{self.name}:{line}: {render_loc(p.loc)}: {p.message}" for line, _, p in placed]


def load_document(path: Path, name: str) -> Document:
    """Read and compose `path`; raise `ConfigError` when it cannot be read or is not YAML."""
    text = _read_text(path, name)
    loader: yaml.SafeLoader | None = None
    try:
        node, loader = compose(text)
        doc = Document(name, None)
        if node is not None:
            doc.lines[()] = node.start_mark.line + 1
            doc.data = _build(node, (), doc, loader)
        return doc
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(name, exc) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{name}:1: (yaml): {exc} (expected valid YAML syntax)"]) from None
    finally:
        if loader is not None:
            loader.dispose()


def _read_text(path: Path, name: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{name}: cannot read: not UTF-8 text ({exc.reason})"]) from None
    except OSError as exc:
        raise ConfigError([f"{name}: cannot read: {exc.strerror or exc}"]) from None


def _syntax_error(name: str, exc: yaml.MarkedYAMLError) -> ConfigError:
    """The one-line error for a YAML syntax error, at its line and column."""
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else 1
    where = f" at column {mark.column + 1}" if mark else ""
    what = (exc.problem or exc.context or "invalid YAML").removeprefix("but ")
    if exc.problem and exc.context and exc.context_mark and exc.context_mark.line + 1 != line:
        what = f"{exc.context} from line {exc.context_mark.line + 1}: {what}"
    return ConfigError([f"{name}:{line}: (yaml): {what}{where} (expected valid YAML syntax)"])


def _build(node: yaml.Node, loc: Loc, doc: Document, loader: yaml.SafeLoader) -> Any:
    if isinstance(node, yaml.MappingNode):
        merges = any(key.tag == "tag:yaml.org,2002:merge" for key, _ in node.value)
        loader.flatten_mapping(node)  # `<<: *anchor` merges; explicit keys then override
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                doc.problems.append(Problem(loc, "a mapping key is not a name (expected a plain key)", line))
                continue
            key = str(key_node.value)  # as written: `on:` is the name "on", not true
            if key in out and not merges:
                doc.problems.append(Problem(loc + (key,), "duplicate key (expected each key once)", line))
            doc.lines[loc + (key,)] = line
            out[key] = _build(value_node, loc + (key,), doc, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            doc.lines[loc + (index,)] = item.start_mark.line + 1
            items.append(_build(item, loc + (index,), doc, loader))
        return items
    return loader.construct_object(node, deep=True)


# -- rendering ----------------------------------------------------------------------------------

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_:-]*\Z")


def render_loc(loc: Loc) -> str:
    """`("rules", 2, "when", "ip")` -> `rules[2].when.ip`; the document itself is `(top level)`."""
    out = ""
    for seg in loc:
        if isinstance(seg, int):
            out += f"[{seg}]"
        elif _PLAIN_KEY.match(seg):
            out += f".{seg}" if out else seg
        else:
            out += f"[{json.dumps(seg, ensure_ascii=False)}]"
    return out or "(top level)"


def show(value: Any) -> str:
    """A value as a message quotes it: strings in double quotes, YAML spellings for the rest."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple | set | frozenset):
        return "a list"
    return json.dumps(str(value), ensure_ascii=False)


def did_you_mean(word: object, options: Iterable[str]) -> str:
    """`; did you mean "x"?` when `word` is close to one of `options`, else ``."""
    if not isinstance(word, str):
        return ""
    options = list(options)
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not close and word.lower() in options:
        close = [word.lower()]
    return f'; did you mean "{close[0]}"?' if close else ""


def not_one_of(value: object, what: str, options: Sequence[str]) -> str:
    """The message for a value outside a closed set, e.g. an unknown rule kind."""
    return f"{show(value)} is not {what} (expected one of {', '.join(options)}{did_you_mean(value, options)})"
