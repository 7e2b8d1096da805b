"""Xinference's auth.db as a key source: the fixture keys in Xinference's real schema, read-only.

The database is built here with the schema of `xinference/api/oauth2/advanced/database.py`
(xorbitsai/inference 7ecec16, 2026-08-23; unchanged for these tables since v3.0 except
`users.token_version`) and filled like the 4.1.0 recording: `config/auth.json` migrated by
`xinference-migrate-auth` (keys `migrated-<first 7>`), plus the three native keys and the key
listing of `config/native_keys.json`. Only key hashes go into it; `key_encrypted` and
`password_hash` hold placeholders. Writers connect the way Xinference does (`journal_mode=WAL`,
one connection per operation).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from paths import FIXTURES

from xinf_watch.keys import authdb
from xinf_watch.keys.files import KeyFileError, load_registry
from xinf_watch.keys.registry import KeyRegistry
from xinf_watch.keys.sources import KeySources
from xinf_watch.model import CredentialKind, KeyHint, KeyState

# xinference/api/oauth2/advanced/database.py SCHEMA_SQL + the migration's oidc_sub index
SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL,
    password_hash TEXT,
    source TEXT NOT NULL DEFAULT 'local',
    oidc_sub TEXT,
    enabled INTEGER DEFAULT 1,
    must_change_password INTEGER DEFAULT 0,
    token_version INTEGER NOT NULL DEFAULT 0,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_users_source_username ON users(source, username);
CREATE TABLE IF NOT EXISTS user_permissions (
    user_id INTEGER NOT NULL,
    permission TEXT NOT NULL,
    PRIMARY KEY (user_id, permission),
    FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS api_keys (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL,
    key_hash TEXT UNIQUE NOT NULL,
    key_encrypted TEXT NOT NULL,
    key_prefix TEXT NOT NULL,
    name TEXT,
    description TEXT,
    enabled INTEGER DEFAULT 1,
    expires_at TIMESTAMP,
    encryption_version INTEGER DEFAULT 1,
    rate_limit_max_failures INTEGER,
    rate_limit_window_seconds INTEGER,
    rate_limit_ban_seconds INTEGER,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS api_key_model_permissions (
    id INTEGER PRIMARY KEY,
    api_key_id INTEGER NOT NULL,
    permission_type TEXT NOT NULL,
    permission_value TEXT,
    UNIQUE(api_key_id, permission_type, permission_value),
    FOREIGN KEY (api_key_id) REFERENCES api_keys(id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL,
    token_hash TEXT UNIQUE NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS system_config (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_users_oidc_sub ON users(oidc_sub) WHERE oidc_sub IS NOT NULL;
"""

AUTH_JSON = FIXTURES / "config" / "auth.json"
KEYS_YAML = FIXTURES / "keys.yaml"
NATIVE = json.loads((FIXTURES / "config" / "native_keys.json").read_text())
RECORDING = datetime.fromisoformat("2026-11-28T07:10:00Z").timestamp()
# What auth.db alone knows: names as aliases, Xinference's own states.
DB_ONLY_STATE = {
    "migrated-sk-k5TV": KeyState.VALID, "migrated-sk-Yn9g": KeyState.VALID,
    "migrated-sk-Ff2x": KeyState.VALID, "migrated-sk-duSt": KeyState.VALID,  # revoked only in keys.yaml
    "migrated-sk-QfeR": KeyState.VALID, "migrated-sk-OTyp": KeyState.VALID,
    "migrated-sk-7jXW": KeyState.VALID, "migrated-sk-0fEi": KeyState.VALID,  # expired only in keys.yaml
    "migrated-sk-XrTI": KeyState.VALID, "finance-bot": KeyState.VALID,
    "analyst-old-laptop": KeyState.REVOKED, "mlops-2025-q3": KeyState.EXPIRED,
}  # fmt: skip


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def lines(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def raw_keys() -> dict[str, str]:
    """prefix -> raw key of every key the 4.1.0 server had."""
    keys = [k for u in json.loads(AUTH_JSON.read_text())["user_config"] for k in u["api_keys"]]
    keys += [v["key"] for name, v in NATIVE.items() if name != "all_keys_listing"]
    return {k[:7]: k for k in keys}


@contextmanager
def xinference(path: Path, journal: str = "WAL") -> Iterator[sqlite3.Connection]:
    """A connection as Xinference's Database._get_conn opens one: commit and close at the end."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA journal_mode={journal}")
        yield conn
        conn.commit()


def make_auth_db(path: Path, journal: str = "WAL") -> Path:
    users = json.loads(AUTH_JSON.read_text())["user_config"]
    keys = raw_keys()
    with xinference(path, journal) as conn:
        conn.executescript(SCHEMA)
        for uid, user in enumerate(users, 1):  # migrate-auth.out: platform id=1 ... finance id=6
            conn.execute(
                "INSERT INTO users (id, username, password_hash, created_at) VALUES (?, ?, ?, ?)",
                (uid, user["username"], "$2b$12$placeholder-not-a-hash", "2026-11-28 07:00:21"),
            )
            conn.executemany(
                "INSERT INTO user_permissions (user_id, permission) VALUES (?, ?)",
                [(uid, p) for p in user["permissions"]],
            )
        for row in NATIVE["all_keys_listing"]:
            assert users[row["user_id"] - 1]["username"] == row["owner_username"]
            key = keys[row["key_prefix"]]
            conn.execute(
                "INSERT INTO api_keys (id, user_id, key_hash, key_encrypted, key_prefix, name, description,"
                " enabled, expires_at, rate_limit_max_failures, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    row["id"], row["user_id"], hashlib.sha256(key.encode()).hexdigest(),
                    f"placeholder-ciphertext-{row['id']}", key[:7], row["name"], row["description"],
                    int(row["enabled"]), row["expires_at"], 50 if key.startswith("xf-") else None,
                    row["created_at"],
                ),
            )  # fmt: skip
            for perm in row["model_permissions"]:
                conn.execute(
                    "INSERT INTO api_key_model_permissions (api_key_id, permission_type, permission_value)"
                    " VALUES (?, ?, ?)",
                    (row["id"], perm["permission_type"], perm["permission_value"]),
                )
    an_hour_ago = time.time_ns() - 3600 * 10**9  # a settled file: later writes change its mtime
    os.utime(path, ns=(an_hour_ago, an_hour_ago))
    return path


def execute(path: Path, sql: str, *args: object, journal: str = "WAL") -> None:
    with xinference(path, journal) as conn:
        conn.execute(sql, args)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sidecars(path: Path) -> set[str]:
    return {p.name for p in path.parent.iterdir() if p.name.startswith(path.name + "-")}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return make_auth_db(tmp_path / "auth.db")


@pytest.fixture(scope="module")
def reg_json() -> KeyRegistry:
    return load_registry([AUTH_JSON, KEYS_YAML])


@pytest.fixture(scope="module")
def reg_db(tmp_path_factory: pytest.TempPathFactory) -> KeyRegistry:
    return load_registry([make_auth_db(tmp_path_factory.mktemp("db") / "auth.db"), KEYS_YAML])


# --- what auth.db says ---------------------------------------------------------------------------


def test_the_fixture_database_reads_as_xinference_lists_it(db: Path) -> None:
    got = authdb.read_auth_db(db)
    assert got.skipped == 0 and len(got.keys) == 12
    assert [(k.name, k.prefix, k.owner) for k in got.keys] == [
        (r["name"], r["key_prefix"], r["owner_username"]) for r in NATIVE["all_keys_listing"]
    ]
    assert {u.name: (u.permissions, u.disabled) for u in got.users} == {
        u["username"]: (frozenset(u["permissions"]), False)
        for u in json.loads(AUTH_JSON.read_text())["user_config"]
    }
    q3 = next(k for k in got.keys if k.name == "mlops-2025-q3")
    assert q3.expires_at == ts("2026-10-01T00:00:00Z") and q3.created_at == ts("2026-11-28T07:01:21Z")
    assert [k.name for k in got.keys if k.disabled] == ["analyst-old-laptop"]
    assert "sha256" not in repr(q3) and q3.sha256 not in repr(got)


def test_auth_db_alone_names_keys_by_their_xinference_name(db: Path) -> None:
    reg = load_registry([db])
    assert {e.alias: reg.state_of(e, RECORDING) for e in reg.entries} == DB_ONLY_STATE
    names = {row["key_prefix"]: row["name"] for row in NATIVE["all_keys_listing"]}
    for prefix, key in raw_keys().items():
        got = reg.resolve(f"Bearer {key}", RECORDING)
        hashed = reg.resolve(hashlib.sha256(key.encode()).hexdigest(), RECORDING)
        assert got.key == hashed.key == names[prefix]
    bot = reg.by_alias("finance-bot")
    assert bot is not None and (bot.owner, bot.prefix, bot.name) == ("finance", "xf-WBrc", "finance-bot")
    assert bot.permissions == frozenset({"models:list", "models:read"})
    assert bot.created_at == ts("2026-11-28T07:01:21Z")


def test_with_keys_yaml_every_logged_credential_resolves_as_with_auth_json(
    reg_db: KeyRegistry, reg_json: KeyRegistry
) -> None:
    n = 0
    for e in lines(FIXTURES / "events.jsonl"):
        assert reg_db.resolve(e["auth_header"], ts(e["t_done"])) == reg_json.resolve(
            e["auth_header"], ts(e["t_done"])
        )
        n += 1
    assert n == 2865
    assert {e.alias for e in reg_db.entries} == {e.alias for e in reg_json.entries}
    # keys.yaml's metadata wins; the names come from auth.db only
    for entry in reg_db.entries:
        other = reg_json.by_alias(entry.alias)
        assert other is not None and entry.name is not None and other.name is None
        assert entry == replace(other, name=entry.name)


def test_audit_log_hints_resolve_through_the_auth_db_names(db: Path, reg_db: KeyRegistry) -> None:
    only_db = load_registry([db])
    for e in lines(FIXTURES / "xinference" / "audit.log"):
        hint = KeyHint(e["user"], e["api_key_name"], e["api_key_prefix"], e["auth_type"])
        at = ts(e["@timestamp"])
        got, alone = reg_db.resolve_hint(hint, at), only_db.resolve_hint(hint, at)
        if e["api_key_name"]:  # a key Xinference found: by its name in auth.db
            entry = only_db.by_alias(e["api_key_name"])
            assert entry is not None and alone.key == e["api_key_name"] and alone.owner == e["user"]
            assert got.key == next(x.alias for x in reg_db.entries if x.sha256 == entry.sha256)
            assert alone.state == DB_ONLY_STATE[e["api_key_name"]]
            if e["status"] in ("key_disabled", "key_expired"):
                assert got.state == alone.state != KeyState.VALID
        elif e["status"] == "invalid_key":
            assert got.key == alone.key == "unknown" and got.credential == CredentialKind.API_KEY
        else:
            assert (got.key, got.credential) == (alone.key, alone.credential)


# --- reloading -----------------------------------------------------------------------------------


def test_reload_sees_a_key_disabled_and_an_expiry_set_in_auth_db(db: Path) -> None:
    sources = KeySources([db, KEYS_YAML])
    before = sources.load()
    assert not sources.changed() and sources.reload_if_changed() is None
    execute(db, "UPDATE api_keys SET enabled = 0 WHERE name = ?", "migrated-sk-Yn9g")
    execute(db, "UPDATE api_keys SET expires_at = '2026-11-28T07:08:00' WHERE name = 'migrated-sk-Ff2x'")
    assert sources.changed()
    after = sources.reload_if_changed()
    assert after is not None
    prod, staging = raw_keys()["sk-Yn9g"], raw_keys()["sk-Ff2x"]
    assert after.resolve(f"Bearer {prod}", RECORDING).state == KeyState.REVOKED
    assert after.resolve(f"Bearer {staging}", ts("2026-11-28T07:07:59Z")).state == KeyState.VALID
    assert after.resolve(f"Bearer {staging}", RECORDING).state == KeyState.EXPIRED  # keys.yaml: 2026-12-28
    assert before.resolve(f"Bearer {prod}", RECORDING).state == KeyState.VALID  # the old one is untouched
    # just written: looked at once more, and the same keys are no new registry
    assert sources.reload_if_changed() is None


def test_a_commit_still_in_the_wal_is_seen(db: Path) -> None:
    sources = KeySources([db])
    sources.load()
    main = digest(db)
    with closing(sqlite3.connect(db)) as writer:  # a connection that stays open: nothing checkpointed
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("UPDATE users SET enabled = 0 WHERE username = 'etl'")
        writer.commit()
        assert digest(db) == main and sources.changed()  # only the -wal changed
        reg = sources.reload_if_changed()
        assert reg is not None
        assert {u.name for u in reg.users if u.disabled} == {"etl"}
        states = {e.alias: reg.state_of(e, RECORDING) for e in reg.entries}
        assert states["migrated-sk-7jXW"] == states["migrated-sk-0fEi"] == KeyState.REVOKED
        assert reg.resolve("Bearer " + _jwt("etl"), RECORDING).state == KeyState.REVOKED


def _jwt(user: str) -> str:
    payload = base64.urlsafe_b64encode(json.dumps({"sub": user}).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJIUzI1NiJ9.{payload}.c2ln"


def test_writes_that_change_no_key_give_no_new_registry(db: Path) -> None:
    sources = KeySources([db])
    sources.load()
    execute(db, "INSERT INTO refresh_tokens (user_id, token_hash, expires_at) VALUES (1, 'h', '2026-12-05')")
    assert sources.changed() and sources.reload_if_changed() is None


def test_a_broken_new_version_keeps_the_old_registry_until_it_changes_again(db: Path) -> None:
    sources = KeySources([db, KEYS_YAML], clock=lambda: time.time_ns() + 10 * 10**9)
    old = sources.load()
    execute(db, "ALTER TABLE api_keys RENAME COLUMN key_hash TO key_digest")
    with pytest.raises(KeyFileError, match="api_keys has no key_hash column"):
        sources.reload_if_changed()
    assert not sources.changed()  # not read again (nor logged again) until the next change
    execute(db, "ALTER TABLE api_keys RENAME COLUMN key_digest TO key_hash")
    assert sources.reload_if_changed() is None  # the same keys as the registry kept all along
    assert len(old) == 12


# --- never blocked, never writing ----------------------------------------------------------------


@pytest.mark.parametrize("journal", ["WAL", "DELETE"])
@pytest.mark.parametrize("lock", ["BEGIN IMMEDIATE", "BEGIN EXCLUSIVE"])
def test_a_writer_holding_a_lock_never_hangs_us_nor_empties_the_registry(
    tmp_path: Path, journal: str, lock: str
) -> None:
    path = make_auth_db(tmp_path / "auth.db", journal)
    sources = KeySources([path])
    old = sources.load()
    execute(path, "UPDATE api_keys SET enabled = 0 WHERE name = 'finance-bot'", journal=journal)  # committed
    with closing(sqlite3.connect(path, isolation_level=None)) as writer:
        writer.execute(f"PRAGMA journal_mode={journal}")
        writer.execute(lock)
        writer.execute("DELETE FROM api_keys")  # pending, never committed
        started = time.monotonic()
        try:
            new = sources.reload_if_changed()
        except KeyFileError as e:
            # only a rollback-journal database being committed (EXCLUSIVE) blocks readers
            assert (journal, lock) == ("DELETE", "BEGIN EXCLUSIVE")
            assert e.transient
            assert str(e) == f"{path}: auth.db is locked by a writer (still SQLITE_BUSY after 200 ms)"
            assert sources.changed()  # transient: tried again next time
            new = None
        else:
            assert (journal, lock) != ("DELETE", "BEGIN EXCLUSIVE")
            assert new is not None and len(new) == 12  # the last commit, not the pending delete
            revoked = {e.alias for e in new.entries if new.state_of(e, RECORDING) == KeyState.REVOKED}
            assert revoked == {"analyst-old-laptop", "finance-bot"}
        assert time.monotonic() - started < 2
        writer.execute("ROLLBACK")
    assert len(old) == 12
    if new is None:
        new = sources.reload_if_changed()
        assert new is not None and new.by_alias("finance-bot") is not None


@pytest.mark.parametrize("journal", ["WAL", "DELETE"])
def test_reading_writes_nothing(tmp_path: Path, journal: str) -> None:
    path = make_auth_db(tmp_path / "auth.db", journal)
    assert sidecars(path) == set()
    stat, content = os.stat(path), digest(path)
    load_registry([path])
    authdb.read_auth_db(path)
    assert (digest(path), os.stat(path).st_mtime_ns, os.stat(path).st_size) == (
        content, stat.st_mtime_ns, stat.st_size,
    )  # fmt: skip
    assert sidecars(path) == set()  # no -journal, and no -wal/-shm that Xinference could not write


def test_with_a_connection_open_we_read_without_touching_the_files(db: Path) -> None:
    with closing(sqlite3.connect(db)) as writer:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("UPDATE api_keys SET name = 'renamed' WHERE id = 10")
        writer.commit()
        wal = Path(f"{db}-wal")
        files = {p: (digest(p), os.stat(p).st_mtime_ns) for p in (db, wal)}
        assert load_registry([db]).by_alias("renamed") is not None
        assert {p: (digest(p), os.stat(p).st_mtime_ns) for p in (db, wal)} == files


def test_a_checkpoint_during_the_read_is_retried(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = authdb._query
    calls: list[int] = []

    def query(conn: sqlite3.Connection) -> authdb.AuthDb:
        if not calls:  # Xinference commits and checkpoints into the file we are reading
            execute(db, "UPDATE api_keys SET enabled = 0 WHERE id = 1")
        calls.append(1)
        return real(conn)

    monkeypatch.setattr(authdb, "_query", query)
    got = authdb.read_auth_db(db)
    assert len(calls) == 2 and next(k for k in got.keys if k.name == "migrated-sk-k5TV").disabled


# --- broken and unexpected databases -------------------------------------------------------------


def _damaged(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[4096:8192] = bytes(range(256)) * 16  # page 2 and on: the tables
    data[8192:] = b"\xff" * (len(data) - 8192)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 16),
         "cannot read auth.db (SQLITE_NOTADB: file is not a database)"),
        (_damaged, "cannot read auth.db (SQLITE_CORRUPT: database disk image is malformed)"),
        (lambda p: p.unlink(), "cannot read key file (No such file or directory)"),
        (lambda p: execute(p, "DROP TABLE api_keys"), "not Xinference's auth database (no api_keys table)"),
        (lambda p: execute(p, "ALTER TABLE users RENAME COLUMN username TO login"),
         "unexpected auth.db schema: users has no username column"),
    ],
)  # fmt: skip
def test_broken_databases_are_one_line_errors(db: Path, make: Any, message: str) -> None:
    make(db)
    with pytest.raises(KeyFileError) as info:
        load_registry([db, KEYS_YAML])
    text = str(info.value)
    assert text.startswith(f"{db}: {message}") and "\n" not in text and not info.value.transient
    assert not any(k in text or k[:7] in text for k in raw_keys().values())
    assert info.value.__context__ is None or info.value.__suppress_context__


def test_older_and_odd_schemas_still_load(tmp_path: Path) -> None:
    path = tmp_path / "auth.db"
    sha = [hashlib.sha256(f"xf-{i}".encode()).hexdigest() for i in range(6)]
    with xinference(path) as conn:
        conn.executescript(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, username TEXT, is_active INTEGER);"
            "CREATE TABLE api_keys (id INTEGER PRIMARY KEY, user_id INTEGER, key_hash TEXT, name TEXT,"
            " enabled INTEGER, expires_at TEXT);"
        )
        conn.executemany("INSERT INTO users VALUES (?, ?, ?)", [(1, "ann", 1), (2, "bob", 0), (3, "ann", 0)])
        conn.executemany(
            "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?)",
            [
                (1, 1, sha[0], "laptop", 1, "2026-12-01T00:00:00+01:00"),  # an offset is kept
                (2, 1, sha[1].upper(), "laptop", None, "not a date"),  # NULL enabled: disabled
                (3, 2, sha[2], "unknown", 1, None),  # owner disabled; a reserved name
                (4, 9, sha[3], "orphan", 1, None),  # owner gone: Xinference's join drops it
                (5, 1, "not-a-hash", "bad", 1, None),
                (6, 3, sha[5], "jwt:x", 1, 1234),
            ],
        )
    got = authdb.read_auth_db(path)
    assert got.skipped == 2 and all(k.prefix is None and k.permissions is None for k in got.keys)
    assert {u.name: u.disabled for u in got.users} == {"ann": False, "bob": True}
    reg = load_registry([path])
    assert sorted(e.alias for e in reg.entries) == sorted(
        [f"laptop-{sha[0][:6]}", f"laptop-{sha[1][:6]}", f"bob:{sha[2][:4]}", f"ann:{sha[5][:4]}"]
    )
    states = {e.sha256: (reg.state_of(e, ts("2026-11-30T23:30:00Z")), e.expires_at) for e in reg.entries}
    assert states[sha[0]] == (KeyState.EXPIRED, ts("2026-11-30T23:00:00Z"))
    assert states[sha[1]] == (KeyState.REVOKED, None)
    assert states[sha[2]][0] == states[sha[5]][0] == KeyState.REVOKED  # its owner row is disabled


def test_a_missing_permissions_table_means_unknown_permissions(db: Path) -> None:
    execute(db, "DROP TABLE user_permissions")
    reg = load_registry([db])
    assert all(e.permissions is None for e in reg.entries) and all(u.permissions is None for u in reg.users)


def test_the_smallest_schema_is_enough(tmp_path: Path) -> None:
    path = tmp_path / "auth.db"
    with xinference(path) as conn:
        conn.executescript(
            "CREATE TABLE users (id INTEGER, username TEXT);"
            "CREATE TABLE api_keys (user_id INTEGER, key_hash TEXT);"
            f"INSERT INTO users VALUES (1, 'ann'); INSERT INTO api_keys VALUES (1, '{'ab' * 32}');"
        )
    reg = load_registry([path])
    assert [(e.alias, e.owner, reg.state_of(e, RECORDING)) for e in reg.entries] == [
        ("ann:abab", "ann", KeyState.VALID)
    ]


def test_a_wal_without_its_shm_is_left_alone(db: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy" / "auth.db"
    copy.parent.mkdir()
    with closing(sqlite3.connect(db)) as writer:  # after a crash: commits in the -wal, no -shm
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("UPDATE api_keys SET enabled = 0")
        writer.commit()
        copy.write_bytes(db.read_bytes())
        Path(f"{copy}-wal").write_bytes(Path(f"{db}-wal").read_bytes())
    with pytest.raises(KeyFileError) as info:
        load_registry([copy])
    assert info.value.transient and str(info.value) == (
        f"{copy}: auth.db has a -wal but no -shm (not read: we create nothing)"
    )
    assert sidecars(copy) == {"auth.db-wal"}
