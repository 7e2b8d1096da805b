"""Key files: loading Xinference's auth configs, auth.db and keys.yaml into one `KeyRegistry`.

Owns reading and merging key files and reloading them while running; `keys.py` owns the registry
and reads no file. Raw keys never leave: errors name a key by where it is in its file, and a
value that looks like a key is never quoted.

Files (`load_registry`), detected from content: Xinference's `--auth-config` JSON (`user_config`;
passwords and the JWT secret are never read), `{"api_keys": [{key, permissions}]}`, xinf-watch
`keys.yaml` (`keys:`) and Xinference's SQLite auth.db (header `SQLite format 3\\0`; read by
`authdb.py`, read-only). Merging is by key SHA-256, field by field: keys.yaml beats the auth
configs and auth.db whatever the file order, and among files of the same rank the later one wins.
So alias, owner, name, created_at, allowed_ips and permissions come from keys.yaml when it gives
them, else from the auth config or auth.db (a key's permissions = its user's). Revocation and
expiry are the exception: what Xinference enforces (auth.db: key or owner disabled, expires_at)
always counts, so a key is revoked if keys.yaml or auth.db says so, and expires at the earlier of
the two expiries.
Revocation dates: keys.yaml's `revoked_at` (implies revoked; `revoked: true` without it means at
all times, `revoked: false` with it is an error). auth.db records no date, so a key or user it
shows disabled is dated only by `disabled_since` (the daemon's memory of when it first saw that,
keydates.py); without one (replay, check, audit) it is revoked at all times unless keys.yaml
dates the revocation. A key revoked by both is revoked from the earlier date.
Aliases: explicit aliases (keys.yaml) must be unique (else `KeyFileError`) and cannot be
`unknown`, `none` or `jwt:...`. The default alias is auth.db's key name, else
`<owner>:<last 4 chars of key>` (`<owner>:<first 4 hex of sha256>` for a key known only by hash;
`key:` without an owner). Default aliases that collide with any other alias all get
`-<first 6 hex of sha256>` appended, so no alias depends on file order.
Every file is tried: the errors of all broken files come together (`KeyFilesError`), one line
each. A file that cannot be opened (missing, a directory, permission denied) is reported where
rules.yaml names it, when the caller says where (`named_at`): `rules.yaml:25: keys[1]: ...`.
Reloading while running is `keysources.py`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import yaml

from xinf_watch.authdb import SQLITE_MAGIC, AuthDbError, read_auth_db
from xinf_watch.keydates import DisabledSince
from xinf_watch.keys import IPNetwork, KeyEntry, KeyRegistry, UserEntry, sha256_hex
from xinf_watch.yamlsafe import compose

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_KEYLIKE = re.compile(r"(?:sk-|xf-|eyJ)[A-Za-z0-9]|[0-9a-fA-F]{32}")
_KEY_TOKEN = re.compile(r"(?:sk-|xf-|eyJ)[A-Za-z0-9_.-]{4,}|\b[0-9a-fA-F]{32,}\b")
_RESERVED = frozenset({"unknown", "none"})
_KEYS_YAML_FIELDS = frozenset(
    {"key", "key_sha256", "alias", "owner", "name", "permissions", "created_at", "expires_at", "revoked"}
    | {"revoked_at", "allowed_ips"}
)
_RANK_AUTH_CONFIG, _RANK_KEYS_YAML = 1, 2


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
        super().__init__(_KEY_TOKEN.sub("(key not shown)", message))
        self.transient = transient


class KeyFilesError(KeyFileError):
    """Several key files that cannot be used: each one's error on its own line.

    `transient` when any is: the next try may load that one (and report the others again)."""

    def __init__(self, errors: Sequence[KeyFileError]) -> None:
        ValueError.__init__(self, "\n".join(str(e) for e in errors))
        self.transient = any(e.transient for e in errors)


@dataclass(frozen=True, slots=True)
class _Origin:
    file: Path
    line: int | None
    where: str

    def error(self, problem: str) -> KeyFileError:
        return KeyFileError(self.file, problem, line=self.line, where=self.where)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else f"{self.file} {self.where}"


@dataclass(frozen=True, slots=True)
class _Contribution:
    """What one file says about one key; `fields` holds only what the file actually sets."""

    sha256: str
    prefix: str | None
    last4: str | None
    rank: int
    fields: dict[str, Any]
    origin: _Origin
    alias_at: _Origin | None = None


@dataclass(slots=True)
class _Merged:
    sha256: str
    prefix: str | None = None
    last4: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    alias_origin: _Origin | None = None


@dataclass(frozen=True, slots=True)
class _Doc:
    """A parsed file and, for YAML, its node tree (for line numbers)."""

    file: Path
    node: yaml.Node | None

    def at(self, *steps: str | int) -> _Origin:
        where = "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in steps).lstrip(".")
        return _Origin(self.file, _line_of(self.node, steps), where)


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
    contributions: list[_Contribution] = []
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
    explicit: dict[str, _Origin | None] = {}  # alias -> where it was set
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
    memory: DisabledSince, now: float, contributions: list[_Contribution], users: dict[str, UserEntry]
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
    if name and name.isprintable() and name not in _RESERVED and not name.startswith("jwt:"):
        return str(name)
    alias = f"{m.fields.get('owner') or 'key'}:{m.last4 or m.sha256[:4]}"
    return f"key:{alias}" if alias.startswith("jwt:") else alias  # jwt:<user> names JWT sessions


def _load_file(path: Path, named_at: str | None) -> tuple[list[_Contribution], list[UserEntry]]:
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
    if data == SQLITE_MAGIC:
        return _load_auth_db(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise KeyFileError(path, "not UTF-8 text (expected auth.json, keys.yaml or auth.db)") from None
    if text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise KeyFileError(path, f"invalid JSON: {e.msg}", line=e.lineno) from None
        where = _Doc(path, None)
    else:
        where, doc = _parse_yaml(path, text)
    if isinstance(doc, dict) and "user_config" in doc:
        return _load_auth_config(where, doc)
    if isinstance(doc, dict) and "api_keys" in doc:
        return _load_api_keys(where, doc), []
    if isinstance(doc, dict) and "keys" in doc:
        return _load_keys_yaml(where, doc), []
    raise KeyFileError(
        path,
        "not a key file (expected Xinference's auth config with user_config, JSON with api_keys,"
        " or keys.yaml with a top-level keys: list)",
    )


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


def _load_auth_db(path: Path) -> tuple[list[_Contribution], list[UserEntry]]:
    """Xinference's auth.db: its state (disabled, expires_at) always counts, its metadata ranks
    with the auth configs, and a key's name is its default alias."""
    try:
        db = read_auth_db(path)
    except AuthDbError as e:
        raise KeyFileError(path, str(e), transient=e.transient) from None
    out: list[_Contribution] = []
    for i, key in enumerate(db.keys):
        fields: dict[str, Any] = {"owner": key.owner, "server_revoked": key.disabled}
        if key.permissions is not None:
            fields["permissions"] = key.permissions
        if key.name is not None:
            fields["name"] = fields["db_name"] = key.name
        for name, value in (("created_at", key.created_at), ("server_expires_at", key.expires_at)):
            if value is not None:
                fields[name] = value
        origin = _Origin(path, None, f"api_keys row {i + 1}")
        out.append(_Contribution(key.sha256, key.prefix, None, _RANK_AUTH_CONFIG, fields, origin))
    return out, list(db.users)


def _parse_yaml(path: Path, text: str) -> tuple[_Doc, Any]:
    loader: yaml.SafeLoader | None = None
    try:
        node, loader = compose(text)
        doc = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        # Only the problem and its line: the exception's own text quotes the file, keys included.
        mark = e.problem_mark or e.context_mark
        problem = e.problem or e.context or "syntax error"
        problem = "syntax error" if _KEYLIKE.search(problem) else problem
        raise KeyFileError(path, f"invalid YAML: {problem}", line=mark.line + 1 if mark else None) from None
    except ValueError as e:  # a timestamp that is not a date, e.g. 2026-13-01
        problem = "a value cannot be converted" if _KEYLIKE.search(str(e)) else str(e)
        raise KeyFileError(path, f"invalid YAML: {problem}") from None
    except yaml.YAMLError as e:
        raise KeyFileError(path, f"invalid YAML ({type(e).__name__})") from None
    finally:
        if loader is not None:
            loader.dispose()
    return _Doc(path, node), doc


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


def _load_keys_yaml(doc: _Doc, data: dict[str, Any]) -> list[_Contribution]:
    for extra in data.keys() - {"keys"}:
        raise doc.at(str(extra)).error("unknown field (expected only keys:)")
    items = data.get("keys") or []
    if not isinstance(items, list):
        raise doc.at("keys").error("expected a list of keys")
    out: list[_Contribution] = []
    seen: dict[str, _Origin] = {}
    for i, item in enumerate(items):
        origin = doc.at("keys", i)
        if not isinstance(item, dict):
            raise origin.error("expected a mapping with key or key_sha256, alias, owner, ...")
        for name in item.keys() - _KEYS_YAML_FIELDS:
            raise doc.at("keys", i, str(name)).error(
                f"unknown field (expected one of {', '.join(sorted(_KEYS_YAML_FIELDS))})"
            )
        if ("key" in item) == ("key_sha256" in item):
            raise origin.error("expected exactly one of key or key_sha256")
        if "key" in item:
            sha, prefix, last4 = _key_parts(doc.at("keys", i, "key"), item["key"])
        else:
            sha, prefix, last4 = _sha_field(doc.at("keys", i, "key_sha256"), item["key_sha256"]), None, None
        if sha in seen:
            raise origin.error(f"the same key as at {seen[sha]} (expected each key once)")
        seen[sha] = origin
        fields: dict[str, Any] = {}
        for name in ("alias", "owner", "name"):
            if item.get(name) is not None:
                fields[name] = _text(doc.at("keys", i, name), item[name])
        if "alias" in fields and (fields["alias"] in _RESERVED or fields["alias"].startswith("jwt:")):
            raise doc.at("keys", i, "alias").error(
                f"{fields['alias']!r} is reserved (expected another alias)"
            )
        if "alias" in fields and _KEY_TOKEN.search(fields["alias"]):
            # the alias is a metric label and shows in every alert: it must not be the key itself
            raise doc.at("keys", i, "alias").error("looks like a key (expected a name such as alice-laptop)")
        if item.get("permissions") is not None:
            fields["permissions"] = _permissions(doc.at("keys", i, "permissions"), item["permissions"])
        for name in ("created_at", "expires_at"):
            if name in item:
                fields[name] = _epoch(doc.at("keys", i, name), item[name])
        if item.get("revoked") is not None:
            if not isinstance(item["revoked"], bool):
                raise doc.at("keys", i, "revoked").error("expected true or false")
            fields["revoked"], fields["revoked_at"] = item["revoked"], None
        if item.get("revoked_at") is not None:
            where = doc.at("keys", i, "revoked_at")
            if fields.get("revoked") is False:
                raise where.error("given with revoked: false (expected revoked: true or no revoked:)")
            fields["revoked"], fields["revoked_at"] = True, _epoch(where, item["revoked_at"])
        if item.get("allowed_ips") is not None:
            fields["allowed_ips"] = _networks(doc.at("keys", i, "allowed_ips"), item["allowed_ips"])
        alias_at = doc.at("keys", i, "alias") if "alias" in fields else None
        out.append(_Contribution(sha, prefix, last4, _RANK_KEYS_YAML, fields, origin, alias_at))
    return out


def _load_auth_config(doc: _Doc, data: dict[str, Any]) -> tuple[list[_Contribution], list[UserEntry]]:
    users_cfg = data.get("user_config")
    if not isinstance(users_cfg, list):
        raise doc.at("user_config").error("expected a list of users")
    out: list[_Contribution] = []
    users: list[UserEntry] = []
    seen: dict[str, _Origin] = {}
    for i, user in enumerate(users_cfg):
        if not isinstance(user, dict):
            raise doc.at("user_config", i).error("expected an object with username, permissions, api_keys")
        name = _text(doc.at("user_config", i, "username"), user.get("username"))
        perms = None
        if user.get("permissions") is not None:
            perms = _permissions(doc.at("user_config", i, "permissions"), user["permissions"])
        users.append(UserEntry(name, perms))
        keys = user.get("api_keys") or []
        if not isinstance(keys, list):
            raise doc.at("user_config", i, "api_keys").error("expected a list of keys")
        fields: dict[str, Any] = {"owner": name} | ({"permissions": perms} if perms is not None else {})
        for j, key in enumerate(keys):
            origin = doc.at("user_config", i, "api_keys", j)
            sha, prefix, last4 = _key_parts(origin, key)
            if sha in seen:
                raise origin.error(f"the same key as {seen[sha].where} (expected each key once)")
            seen[sha] = origin
            out.append(_Contribution(sha, prefix, last4, _RANK_AUTH_CONFIG, dict(fields), origin))
    return out, users


def _load_api_keys(doc: _Doc, data: dict[str, Any]) -> list[_Contribution]:
    items = data.get("api_keys")
    if not isinstance(items, list):
        raise doc.at("api_keys").error("expected a list of {key, permissions}")
    out: list[_Contribution] = []
    for i, item in enumerate(items):
        origin = doc.at("api_keys", i)
        if not isinstance(item, dict):
            raise origin.error("expected an object with key and permissions")
        sha, prefix, last4 = _key_parts(doc.at("api_keys", i, "key"), item.get("key"))
        fields: dict[str, Any] = {}
        if item.get("permissions") is not None:
            fields["permissions"] = _permissions(doc.at("api_keys", i, "permissions"), item["permissions"])
        for name in ("owner", "name"):
            if item.get(name) is not None:
                fields[name] = _text(doc.at("api_keys", i, name), item[name])
        out.append(_Contribution(sha, prefix, last4, _RANK_AUTH_CONFIG, fields, origin))
    return out


def _key_parts(origin: _Origin, value: object) -> tuple[str, str, str]:
    # Never echo the value: it is (or may be) a key.
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise origin.error("expected the key as a non-empty string without spaces")
    return sha256_hex(value), value[:7], value[-4:]


def _sha_field(origin: _Origin, value: object) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise origin.error("expected the SHA-256 of the key as 64 hex digits")
    return value.lower()


def _text(origin: _Origin, value: object) -> str:
    if not isinstance(value, str) or not value.strip() or any(not c.isprintable() for c in value):
        raise origin.error(f"{_show(value)} is not a name (expected a non-empty single-line string)")
    return value.strip()


def _permissions(origin: _Origin, value: object) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(p, str) and p.strip() for p in value):
        raise origin.error(
            f"{_show(value)} is not a list of scopes (expected e.g. [models:list, models:read])"
        )
    return frozenset(p.strip() for p in value)


def _networks(origin: _Origin, value: object) -> tuple[IPNetwork, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise origin.error(f"{_show(value)} is not a list of networks (expected e.g. [10.1.0.0/16])")
    try:
        return tuple(ip_network(str(item), strict=False) for item in items)
    except ValueError:
        bad = next(item for item in items if not _is_network(item))
        raise origin.error(f"{_show(bad)} is not an IP network (expected e.g. 10.1.0.0/16)") from None


def _is_network(value: object) -> bool:
    try:
        ip_network(str(value), strict=False)
    except ValueError:
        return False
    return True


def _epoch(origin: _Origin, value: object) -> float | None:
    """A YAML date/datetime, ISO 8601 string or epoch number as Unix seconds; naive means UTC."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = datetime.fromisoformat(value.strip())
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()
    raise origin.error(f"{_show(value)} is not a date (expected e.g. 2026-12-31 or 2026-12-31T00:00:00Z)")


def _show(value: object) -> str:
    """A value for an error message, unless it looks like a key put in the wrong field."""
    text = repr(value)
    if _KEYLIKE.search(text):
        return "(a value that looks like a key, not shown)"
    return text if len(text) <= 40 else text[:37] + "..."
