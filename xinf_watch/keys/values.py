"""What every key-file loader shares: its errors, where a value is in its file, what a file says
about a key, and the checks of the values every format has (a key, a name, permissions).

`keys/files.py` reads the files and merges them, `keys/yamlfile.py` reads keys.yaml; both build on this.
Errors never quote a value that looks like a key (`show`, and `KeyFileError` itself).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from xinf_watch.keys.registry import sha256_hex

KEYLIKE = re.compile(r"(?:sk-|xf-|eyJ)[A-Za-z0-9]|[0-9a-fA-F]{32}")
KEY_TOKEN = re.compile(r"(?:sk-|xf-|eyJ)[A-Za-z0-9_.-]{4,}|\b[0-9a-fA-F]{32,}\b")
RESERVED = frozenset({"unknown", "none"})  # aliases that mean "no known key" in every output
RANK_AUTH_CONFIG, RANK_KEYS_YAML = 1, 2


class KeyFileError(ValueError):
    """A key file that cannot be used: `file[:line]: field: what is wrong (what was expected)`.

    `transient`: the file is being written (auth.db locked); the same file may load a moment later.
    """

    def __init__(
        self,
        file: Path | str,
        problem: str,
        *,
        line: int | None = None,
        where: str = "",
        transient: bool = False,
    ) -> None:
        location = f"{file}:{line}" if line else str(file)
        message = f"{location}: {where}: {problem}" if where else f"{location}: {problem}"
        # Last line of defence: a key pasted where a path or a field name belongs is not echoed.
        super().__init__(KEY_TOKEN.sub("(key not shown)", message))
        self.transient = transient


class KeyFilesError(KeyFileError):
    """Several key files that cannot be used: each one's error on its own line.

    `transient` when any is: the next try may load that one (and report the others again)."""

    def __init__(self, errors: Sequence[KeyFileError]) -> None:
        ValueError.__init__(self, "\n".join(str(e) for e in errors))
        self.transient = any(e.transient for e in errors)


@dataclass(frozen=True, slots=True)
class Origin:
    file: Path
    line: int | None
    where: str

    def error(self, problem: str) -> KeyFileError:
        return KeyFileError(self.file, problem, line=self.line, where=self.where)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else f"{self.file} {self.where}"


@dataclass(frozen=True, slots=True)
class Contribution:
    """What one file says about one key; `fields` holds only what the file actually sets."""

    sha256: str
    prefix: str | None
    last4: str | None
    rank: int
    fields: dict[str, Any]
    origin: Origin
    alias_at: Origin | None = None


@dataclass(frozen=True, slots=True)
class Doc:
    """A parsed file and, for YAML, its node tree (for line numbers)."""

    file: Path
    node: yaml.Node | None

    def at(self, *steps: str | int) -> Origin:
        where = "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in steps).lstrip(".")
        return Origin(self.file, _line_of(self.node, steps), where)


def _line_of(node: yaml.Node | None, steps: Sequence[str | int]) -> int | None:
    """Line of the node at `steps`, or of the deepest one that exists (a missing field: its mapping)."""
    for step in steps:
        if isinstance(node, yaml.MappingNode) and isinstance(step, str):
            child = next((v for k, v in node.value if getattr(k, "value", None) == step), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            child = node.value[step]
        else:
            child = None
        if child is None:
            break
        node = child
    return node.start_mark.line + 1 if node is not None else None


def key_parts(origin: Origin, value: object) -> tuple[str, str, str]:
    """A raw key's SHA-256, 7-char prefix and last 4 chars."""
    # Never echo the value: it is (or may be) a key.
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise origin.error("expected the key as a non-empty string without spaces")
    return sha256_hex(value), value[:7], value[-4:]


def name_text(origin: Origin, value: object) -> str:
    if not isinstance(value, str) or not value.strip() or any(not c.isprintable() for c in value):
        raise origin.error(f"{show(value)} is not a name (expected a non-empty single-line string)")
    return value.strip()


def permission_set(origin: Origin, value: object) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(p, str) and p.strip() for p in value):
        raise origin.error(
            f"{show(value)} is not a list of scopes (expected e.g. [models:list, models:read])"
        )
    return frozenset(p.strip() for p in value)


def show(value: object) -> str:
    """A value for an error message, unless it looks like a key put in the wrong field."""
    text = repr(value)
    if KEYLIKE.search(text):
        return "(a value that looks like a key, not shown)"
    return text if len(text) <= 40 else text[:37] + "..."
