"""Key files: loading Xinference's auth configs, auth.db and keys.yaml into one `KeyRegistry`.

Owns reading and merging key files and reloading them while running; `keys/registry.py` owns the registry
and reads no file. Raw keys never leave: errors name a key by where it is in its file, and a
value that looks like a key is never quoted.

Files (`load_registry`), detected from content: Xinference's `--auth-config` JSON (`user_config`;
passwords and the JWT secret are never read), `{"api_keys": [{key, permissions}]}`, xinf-watch
`keys.yaml` (`keys:`) and Xinference's SQLite auth.db (header `SQLite format 3\\0`; read by
`keys/authdb.py`, read-only). Merging is by key SHA-256, field by field: keys.yaml beats the auth
configs and auth.db whatever the file order, and among files of the same rank the later one wins.
So alias, owner, name, created_at, allowed_ips and permissions come from keys.yaml when it gives
them, else from the auth config or auth.db (a key's permissions = its user's). Revocation and
expiry are the exception: what Xinference enforces (auth.db: key or owner disabled, expires_at)
always counts, so a key is revoked if keys.yaml or auth.db says so, and expires at the earlier of
the two expiries.
Revocation dates: keys.yaml's `revoked_at` (implies revoked; `revoked: true` without it means at
all times, `revoked: false` with it is an error). auth.db records no date, so a key or user it
shows disabled is dated only by `disabled_since` (the daemon's memory of when it first saw that,
keys/dates.py); without one (replay, check, audit) it is revoked at all times unless keys.yaml
dates the revocation. A key revoked by both is revoked from the earlier date.
Aliases: explicit aliases (keys.yaml) must be unique (else `KeyFileError`) and cannot be
`unknown`, `none` or `jwt:...`. The default alias is auth.db's key name, else
`<owner>:<last 4 chars of key>` (`<owner>:<first 4 hex of sha256>` for a key known only by hash;
`key:` without an owner). Default aliases that collide with any other alias all get
`-<first 6 hex of sha256>` appended, so no alias depends on file order.
Every file is tried: the errors of all broken files come together (`KeyFilesError`), one line
each. A file that cannot be opened (missing, a directory, permission denied) is reported where
rules.yaml names it, when the caller says where (`named_at`): `rules.yaml:25: keys[1]: ...`.
Reloading while running is `keys/sources.py`; keys.yaml's entries are read by `keys/yamlfile.py`, and
`keys/values.py` holds what the loaders share (errors, origins, the checks of keys and names).
"""

from __future__ import annotations

import json
import os
import stat
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from xinf_watch.config.yamlsafe import compose
from xinf_watch.keys.authdb import SQLITE_MAGIC, AuthDbError, read_auth_db
from xinf_watch.keys.dates import DisabledSince
from xinf_watch.keys.registry import KeyEntry, KeyRegistry, UserEntry
from xinf_watch.keys.values import (
    KEYLIKE,
    RANK_AUTH_CONFIG,
    RESERVED,
    Contribution,
    Doc,
    KeyFileError,
    KeyFilesError,
    Origin,
    key_parts,
    name_text,
    permission_set,
)
from xinf_watch.keys.yamlfile import load_keys_yaml

__all__ = ["KeyFileError", "KeyFilesError", "load_registry"]  # the errors are defined in keys/values.py


@dataclass(slots=True)
class _Merged:
    sha256: str
    prefix: str | None = None
    last4: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    alias_origin: Origin | None = None


def load_registry(
    paths: Sequence[Path],
    named_at: Sequence[str] = (),
    *,
    disabled_since: DisabledSince | None = None,
    now: float = 0.0,
) -> KeyRegistry:
    """Merge key files (any mix of auth.json, api_keys JSON, auth.db and keys.yaml) into one registry.

    `named_at[i]`: where the config names `paths[i]` (`rules.yaml:25: keys[1]`), the place to
    report it when it cannot be opened. Raises `KeyFileError` naming every broken file.
    `disabled_since`: the daemon's memory of auth.db's disabled keys and users; it is told what
    auth.db shows disabled `now`, and dates those revocations."""
    contributions: list[Contribution] = []
    users: dict[str, UserEntry] = {}
    errors: list[KeyFileError] = []
    for i, path in enumerate(paths):
        try:
            keys, file_users = _load_file(Path(path), named_at[i] if i < len(named_at) else None)
        except KeyFileError as e:
            errors.append(e)
            continue
        contributions += keys
        users.update((u.name, u) for u in file_users)
    if errors:
        raise errors[0] if len(errors) == 1 else KeyFilesError(errors)
    if disabled_since is not None:
        _date_disabled(disabled_since, now, contributions, users)
    merged: dict[str, _Merged] = {}
    for c in contributions:  # first pass: entry order = first appearance
        m = merged.setdefault(c.sha256, _Merged(c.sha256))
        m.prefix, m.last4 = m.prefix or c.prefix, m.last4 or c.last4
    for c in sorted(contributions, key=lambda c: c.rank):  # stable: later files win within a rank
        m = merged[c.sha256]
        m.fields.update(c.fields)
        if "alias" in c.fields:
            m.alias_origin = c.alias_at or c.origin
    return KeyRegistry(_entries(list(merged.values())), users.values())


def _entries(merged: list[_Merged]) -> list[KeyEntry]:
    aliases: dict[str, str] = {}  # sha256 -> alias
    explicit: dict[str, Origin | None] = {}  # alias -> where it was set
    for m in merged:
        alias = m.fields.get("alias")
        if alias is None:
            continue
        if alias in explicit and m.alias_origin is not None:
            raise m.alias_origin.error(
                f"alias {alias!r} is already used by the key at {explicit[alias]} (expected a unique alias)"
            )
        explicit[alias], aliases[m.sha256] = m.alias_origin, alias
    defaults = {m.sha256: _default_alias(m) for m in merged if "alias" not in m.fields}
    taken = Counter([*explicit, *defaults.values()])
    for sha, alias in defaults.items():
        aliases[sha] = f"{alias}-{sha[:6]}" if taken[alias] > 1 else alias
    entries = []
    for m in merged:
        f = m.fields
        revoked = f.get("revoked", False) or f.get("server_revoked", False)
        entries.append(
            KeyEntry(
                alias=aliases[m.sha256],
                owner=f.get("owner"),
                permissions=f.get("permissions"),
                created_at=f.get("created_at"),
                expires_at=min(_given(f.get("expires_at"), f.get("server_expires_at")), default=None),
                revoked=revoked,
                allowed_ips=f.get("allowed_ips", ()),
                sha256=m.sha256,
                prefix=m.prefix,
                name=f.get("name"),
                revoked_at=_revoked_at(f) if revoked else None,
            )
        )
    if len({e.alias for e in entries}) != len(entries):
        raise KeyFileError(
            "keys", "two keys ended up with the same alias (expected unique aliases: set alias:)"
        )
    return entries


def _date_disabled(
    memory: DisabledSince, now: float, contributions: list[Contribution], users: dict[str, UserEntry]
) -> None:
    disabled = {c.sha256 for c in contributions if c.fields.get("server_revoked")}
    memory.observe(disabled, {u.name for u in users.values() if u.disabled}, now)
    for c in contributions:
        if c.sha256 in disabled and (since := memory.key(c.sha256)) is not None:
            c.fields["server_revoked_at"] = since
    for name, user in users.items():
        if user.disabled:
            users[name] = replace(user, disabled_at=memory.user(name))


def _revoked_at(f: dict[str, Any]) -> float | None:
    """The earliest dated revocation; None (at all times) when keys.yaml revokes without a date,
    or only auth.db revokes and nobody knows since when."""
    own = f.get("revoked", False)
    if own and f.get("revoked_at") is None:
        return None
    return min(_given(f.get("revoked_at") if own else None, f.get("server_revoked_at")), default=None)


def _given(*values: float | None) -> list[float]:
    return [v for v in values if v is not None]


def _default_alias(m: _Merged) -> str:
    name = m.fields.get("db_name")  # auth.db's key name, when it can be a label value
    if name and name.isprintable() and name not in RESERVED and not name.startswith("jwt:"):
        return str(name)
    alias = f"{m.fields.get('owner') or 'key'}:{m.last4 or m.sha256[:4]}"
    return f"key:{alias}" if alias.startswith("jwt:") else alias  # jwt:<user> names JWT sessions


def _load_file(path: Path, named_at: str | None) -> tuple[list[Contribution], list[UserEntry]]:
    data = _read_bytes(path, named_at)
    if data == SQLITE_MAGIC:
        return _load_auth_db(path)
    where, doc = _parse_text(path, data)
    if isinstance(doc, dict) and "user_config" in doc:
        return _load_auth_config(where, doc)
    if isinstance(doc, dict) and "api_keys" in doc:
        return _load_api_keys(where, doc), []
    if isinstance(doc, dict) and "keys" in doc:
        return load_keys_yaml(where, doc), []
    raise KeyFileError(
        path,
        "not a key file (expected Xinference's auth config with user_config, JSON with api_keys,"
        " or keys.yaml with a top-level keys: list)",
    )


def _read_bytes(path: Path, named_at: str | None) -> bytes:
    """The file's bytes; of an SQLite database only its header (auth.db is read by keys/authdb.py)."""
    try:
        mode = os.stat(path).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # a FIFO would block open(); a directory fails it
            raise OSError(0, "not a regular file")
        with path.open("rb") as f:
            data = f.read(len(SQLITE_MAGIC))
            data += f.read() if data != SQLITE_MAGIC else b""
    except OSError as e:
        if named_at is not None:
            raise KeyFileError(named_at, _cannot_open(path, e)) from None
        raise KeyFileError(path, f"cannot read key file ({e.strerror or type(e).__name__})") from None
    return data


def _parse_text(path: Path, data: bytes) -> tuple[Doc, Any]:
    """A text key file parsed: JSON when it starts with `{`, else YAML."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise KeyFileError(path, "not UTF-8 text (expected auth.json, keys.yaml or auth.db)") from None
    if not text.lstrip().startswith("{"):
        return _parse_yaml(path, text)
    try:
        return Doc(path, None), json.loads(text)
    except json.JSONDecodeError as e:
        raise KeyFileError(path, f"invalid JSON: {e.msg}", line=e.lineno) from None


def _cannot_open(path: Path, e: OSError) -> str:
    """What is wrong with a key file that cannot be opened, said about the path rules.yaml names."""
    expected = "a key file: Xinference's auth config, auth.db or keys.yaml"
    if isinstance(e, FileNotFoundError):
        what = "does not exist"
    elif isinstance(e, IsADirectoryError):
        what = "is a directory"
    elif isinstance(e, PermissionError):
        what, expected = "cannot be read: permission denied", "a key file readable by xinf-watch's user"
    else:
        what = f"cannot be read: {e.strerror or type(e).__name__}"
    return f"{path} {what} (expected {expected})"


def _load_auth_db(path: Path) -> tuple[list[Contribution], list[UserEntry]]:
    """Xinference's auth.db: its state (disabled, expires_at) always counts, its metadata ranks
    with the auth configs, and a key's name is its default alias."""
    try:
        db = read_auth_db(path)
    except AuthDbError as e:
        raise KeyFileError(path, str(e), transient=e.transient) from None
    out: list[Contribution] = []
    for i, key in enumerate(db.keys):
        fields: dict[str, Any] = {"owner": key.owner, "server_revoked": key.disabled}
        if key.permissions is not None:
            fields["permissions"] = key.permissions
        if key.name is not None:
            fields["name"] = fields["db_name"] = key.name
        for name, value in (("created_at", key.created_at), ("server_expires_at", key.expires_at)):
            if value is not None:
                fields[name] = value
        origin = Origin(path, None, f"api_keys row {i + 1}")
        out.append(Contribution(key.sha256, key.prefix, None, RANK_AUTH_CONFIG, fields, origin))
    return out, list(db.users)


def _parse_yaml(path: Path, text: str) -> tuple[Doc, Any]:
    loader: yaml.SafeLoader | None = None
    try:
        node, loader = compose(text)
        doc = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        # Only the problem and its line: the exception's own text quotes the file, keys included.
        mark = e.problem_mark or e.context_mark
        problem = e.problem or e.context or "syntax error"
        problem = "syntax error" if KEYLIKE.search(problem) else problem
        raise KeyFileError(path, f"invalid YAML: {problem}", line=mark.line + 1 if mark else None) from None
    except ValueError as e:  # a timestamp that is not a date, e.g. 2026-13-01
        problem = "a value cannot be converted" if KEYLIKE.search(str(e)) else str(e)
        raise KeyFileError(path, f"invalid YAML: {problem}") from None
    except yaml.YAMLError as e:
        raise KeyFileError(path, f"invalid YAML ({type(e).__name__})") from None
    finally:
        if loader is not None:
            loader.dispose()
    return Doc(path, node), doc


def _load_auth_config(doc: Doc, data: dict[str, Any]) -> tuple[list[Contribution], list[UserEntry]]:
    users_cfg = data.get("user_config")
    if not isinstance(users_cfg, list):
        raise doc.at("user_config").error("expected a list of users")
    out: list[Contribution] = []
    users: list[UserEntry] = []
    seen: dict[str, Origin] = {}
    for i, user in enumerate(users_cfg):
        if not isinstance(user, dict):
            raise doc.at("user_config", i).error("expected an object with username, permissions, api_keys")
        name = name_text(doc.at("user_config", i, "username"), user.get("username"))
        perms = None
        if user.get("permissions") is not None:
            perms = permission_set(doc.at("user_config", i, "permissions"), user["permissions"])
        users.append(UserEntry(name, perms))
        keys = user.get("api_keys") or []
        if not isinstance(keys, list):
            raise doc.at("user_config", i, "api_keys").error("expected a list of keys")
        fields: dict[str, Any] = {"owner": name} | ({"permissions": perms} if perms is not None else {})
        for j, key in enumerate(keys):
            origin = doc.at("user_config", i, "api_keys", j)
            sha, prefix, last4 = key_parts(origin, key)
            if sha in seen:
                raise origin.error(f"the same key as {seen[sha].where} (expected each key once)")
            seen[sha] = origin
            out.append(Contribution(sha, prefix, last4, RANK_AUTH_CONFIG, dict(fields), origin))
    return out, users


def _load_api_keys(doc: Doc, data: dict[str, Any]) -> list[Contribution]:
    items = data.get("api_keys")
    if not isinstance(items, list):
        raise doc.at("api_keys").error("expected a list of {key, permissions}")
    out: list[Contribution] = []
    for i, item in enumerate(items):
        origin = doc.at("api_keys", i)
        if not isinstance(item, dict):
            raise origin.error("expected an object with key and permissions")
        sha, prefix, last4 = key_parts(doc.at("api_keys", i, "key"), item.get("key"))
        fields: dict[str, Any] = {}
        if item.get("permissions") is not None:
            fields["permissions"] = permission_set(doc.at("api_keys", i, "permissions"), item["permissions"])
        for name in ("owner", "name"):
            if item.get(name) is not None:
                fields[name] = name_text(doc.at("api_keys", i, name), item[name])
        out.append(Contribution(sha, prefix, last4, RANK_AUTH_CONFIG, fields, origin))
    return out
