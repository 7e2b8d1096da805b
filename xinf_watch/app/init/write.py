"""The files `init` writes: rules.yaml and keys.yaml, never over existing ones unless forced.

rules.yaml is the shipped rules file (the packaged copy of rules/rules.yaml, read when `init`
runs) with its `sources`, `keys`, `metrics` and `state` sections replaced by this host's; its
comments and rules stay as shipped. keys.yaml is written with mode 0600. Both are written to a
temporary file first and renamed into place, so a failure leaves no half-written file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from xinf_watch.app.init.gateway import InitError

DEFAULT_STATE_DIR = Path("/var/lib/xinf-watch")
_TOP_KEY = re.compile(r"([A-Za-z_][\w-]*)\s*:")


@dataclass(frozen=True, slots=True)
class Source:
    settings: dict[str, object]  # name, path, format, ...
    comments: tuple[str, ...]


def rules_yaml(
    shipped: str, sources: Sequence[Source], keys: Sequence[tuple[str, str]], state_dir: Path, header: str
) -> str:
    """The shipped rules with this host's sections; `keys` are (path, comment)."""
    source_lines = ["sources:"]
    for source in sources:
        source_lines += [f"  # {c}" for c in source.comments]
        dumped = yaml.safe_dump([source.settings], sort_keys=False, width=10_000, allow_unicode=True)
        source_lines += ["  " + line for line in dumped.splitlines()]
        source_lines.append(
            '    # xinference_version: "4"    # the Xinference behind it: before 2.12 the scope names differ'
        )
    sections = {
        "sources": source_lines,
        "keys": ["keys:", *(f"  - {_scalar(path)}    # {comment}" for path, comment in keys)],
        "metrics": ["metrics:", '  listen: "127.0.0.1:9877"         # Prometheus scrapes /metrics here'],
        "state": [
            "state:",
            f"  dir: {_scalar(str(state_dir))}    # read positions, rule state, the alert outbox",
        ],
    }
    return header + _replace_sections(shipped, {k: "\n".join(v) + "\n" for k, v in sections.items()})


def _scalar(value: str) -> str:
    return yaml.safe_dump(value, width=10_000).removesuffix("\n...\n").strip()


def _replace_sections(text: str, new: dict[str, str]) -> str:
    """Replace top-level sections (absent ones go before `rules:`); comments and blank lines after
    a section's body stay."""
    lines = text.splitlines(keepends=True)
    starts = [(i, m.group(1)) for i, line in enumerate(lines) if (m := _TOP_KEY.match(line))]
    absent = [new[k] + "\n" for k in new if k not in {key for _, key in starts}]
    out = lines[: starts[0][0]] if starts else list(lines)
    for n, (i, key) in enumerate(starts):
        end = starts[n + 1][0] if n + 1 < len(starts) else len(lines)
        if key == "rules":
            out += absent
            absent = []
        if key not in new:
            out += lines[i:end]
            continue
        body = i + 1
        for j in range(i + 1, end):
            if lines[j].strip() and lines[j][0].isspace():
                body = j + 1
        out += [new[key], *lines[body:end]]
    return "".join(out + ["\n" + a for a in absent])


def state_dir(given: Path | None) -> Path:
    """The state dir: the one given (it must exist or be creatable), else /var/lib/xinf-watch when
    creatable here (root), else $XDG_STATE_HOME/xinf-watch (~/.local/state/xinf-watch)."""
    if given is not None:
        path = given.resolve()
        if not creatable(path):
            raise InitError(
                f"--state-dir {path}: cannot be created by this user (expected a writable directory)"
            )
        return path
    if creatable(DEFAULT_STATE_DIR):
        return DEFAULT_STATE_DIR
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "xinf-watch"


def creatable(path: Path) -> bool:
    """An existing writable directory, or one whose nearest existing ancestor is writable."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)


def write_files(files: Sequence[tuple[Path, str, int]], force: bool, gid: int = -1) -> None:
    """Write (path, text, mode) each, owned by group `gid` when given; nothing at all when one
    exists and not `force`."""
    existing = [str(path) for path, _, _ in files if path.exists()]
    if existing and not force:
        raise InitError(
            f"{', '.join(existing)}: already there (use --force to overwrite; nothing was written)"
        )
    for path, text, mode in files:
        if not path.parent.exists():
            path.parent.mkdir(parents=True)
            if gid != -1:  # a directory made for the service's group: it reads, nobody else does
                os.chown(path.parent, -1, gid)
                os.chmod(path.parent, 0o750)
        tmp = path.with_name(f".{path.name}.init-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.chown(tmp, -1, gid)
            os.chmod(tmp, mode)  # exactly this mode, whatever the umask left
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
