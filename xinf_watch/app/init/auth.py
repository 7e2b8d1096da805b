"""Xinference's key files for `init`, and the keys.yaml skeleton that names their keys.

Owns finding the auth sources: the `--auth-config` JSON given, `auth/auth.db` under
XINFERENCE_HOME (default `~/.xinference`), else what a running Xinference was started with
(`--auth-config` on its command line, XINFERENCE_HOME in its environment, read from /proc where
permitted). They are referenced by path in rules.yaml's `keys:`, never copied. The skeleton
names each key by the registry's own alias (`<user>:<last 4 chars>`, or auth.db's key name) and
its SHA-256: the key itself is never written. Permissions stay commented out: keys.yaml wins over
the auth config, so a copy would hide later changes made in Xinference.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from xinf_watch.keys.authdb import SQLITE_MAGIC
from xinf_watch.keys.files import load_registry
from xinf_watch.keys.registry import KeyEntry

_KEY_LIKE = re.compile(r"(?:sk-|xf-|eyJ)[A-Za-z0-9_.-]{4,}|\b[0-9a-fA-F]{32,}\b")  # keyfiles' alias rule
_RESERVED = frozenset({"unknown", "none"})


@dataclass(frozen=True, slots=True)
class AuthSource:
    path: Path
    kind: str  # "auth config" | "auth.db"
    how: str  # how it was found


def xinference_home(given: Path | None) -> Path:
    return given or Path(os.environ.get("XINFERENCE_HOME") or Path.home() / ".xinference")


def find_auth(auth_config: Path | None, home: Path | None, proc: Path = Path("/proc")) -> list[AuthSource]:
    """The auth sources to list in `keys:`: the ones given, else those found on the host."""
    found: list[AuthSource] = []
    if auth_config is not None:
        found.append(AuthSource(auth_config.resolve(), _kind(auth_config), "--auth-config"))
    db = xinference_home(home) / "auth" / "auth.db"
    if db.is_file():
        found.append(AuthSource(db.resolve(), "auth.db", f"under XINFERENCE_HOME {db.parent.parent}"))
    if found or home is not None:
        return found
    return _from_processes(proc)


def _kind(path: Path) -> str:
    try:
        with path.open("rb") as f:
            return "auth.db" if f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC else "auth config"
    except OSError:
        return "auth config"  # load_registry reports why it cannot be read


def _from_processes(proc: Path) -> list[AuthSource]:
    """What running Xinference processes were started with (only those /proc lets us read)."""
    found: dict[Path, AuthSource] = {}
    for pid_dir in sorted(proc.glob("[0-9]*")):
        try:
            argv = (pid_dir / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if not any("xinference" in arg for arg in argv):
                continue
            cwd = Path(os.readlink(pid_dir / "cwd"))
        except OSError:
            continue
        how = f"the command line of process {pid_dir.name}"
        for flag, value in zip(argv, argv[1:], strict=False):
            if flag == "--auth-config" and (cwd / value).is_file():
                path = (cwd / value).resolve()
                found.setdefault(path, AuthSource(path, "auth config", how))
        db = _environ_home(pid_dir) / "auth" / "auth.db"
        if db.is_file():
            found.setdefault(
                db.resolve(),
                AuthSource(db.resolve(), "auth.db", f"the environment of process {pid_dir.name}"),
            )
    return list(found.values())


def _environ_home(pid_dir: Path) -> Path:
    try:
        environ = (pid_dir / "environ").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return Path("/nonexistent")
    home = next((e.split("=", 1)[1] for e in environ if e.startswith("XINFERENCE_HOME=")), None)
    user_home = next((e.split("=", 1)[1] for e in environ if e.startswith("HOME=")), None)
    return Path(home) if home else Path(user_home or "/nonexistent") / ".xinference"


def registry_entries(sources: list[AuthSource]) -> list[KeyEntry]:
    """The keys of the auth sources as the registry sees them (KeyFileError when one cannot load)."""
    return list(load_registry([s.path for s in sources]).entries) if sources else []


def keys_yaml(entries: list[KeyEntry], sources: list[AuthSource], now: datetime | None = None) -> str:
    """The keys.yaml skeleton: one entry per key, by hash and alias, metadata to fill in commented."""
    when = (now or datetime.now(UTC)).strftime("%Y-%m-%d")
    lines = [
        f"# xinf-watch key metadata, written by `xinf-watch init` on {when} (docs/DESIGN.md section 4).",
        "# Keys are listed by SHA-256, never by the key itself; this file wins over the files below.",
        *(f"#   from {s.path} ({s.kind})" for s in sources),
        "# alias: the name every metric and alert shows. permissions come from Xinference: set them",
        "# here only to override it. Fill in expires_at (keys of --auth-config never expire in",
        "# Xinference: this date binds xinf-watch's rules) and allowed_ips (where the key is used from).",
    ]
    if not entries:
        return "\n".join(
            [
                *lines,
                "keys: []",
                "# keys:",
                "#   - key_sha256: <sha256 hex of the key>",
                "#     alias: alice-laptop",
                "#     owner: alice",
                "",
            ]
        )
    lines.append("keys:")
    for entry, alias in zip(entries, aliases(entries), strict=True):
        lines += [f"  - key_sha256: {entry.sha256}", f"    alias: {_quoted(alias)}"]
        if entry.owner:
            lines.append(f"    owner: {_quoted(entry.owner)}")
        permissions = ", ".join(sorted(entry.permissions)) if entry.permissions is not None else "..."
        lines += [
            f"    # permissions: [{permissions}]",
            "    # expires_at: 2026-12-31T00:00:00Z",
            "    # allowed_ips: [10.0.0.0/8]",
        ]
    return "\n".join(lines) + "\n"


def aliases(entries: list[KeyEntry]) -> list[str]:
    """Each key's alias in the skeleton: the registry's when keys.yaml accepts it as an alias (it
    refuses names that look like keys, such as auth.db's `migrated-sk-...`), else
    `<owner>:<first 4 hex of its SHA-256>`, as the registry names a key known only by hash."""
    out: list[str] = []
    for entry in entries:
        alias = entry.alias
        if _KEY_LIKE.search(alias) or alias in _RESERVED or alias.startswith("jwt:"):
            alias = f"{entry.owner or 'key'}:{entry.sha256[:4]}"
        out.append(f"{alias}-{entry.sha256[:6]}" if alias in out else alias)
    return out


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
