"""Key state with dates: keys.yaml's `revoked_at`, and the daemon's memory of when auth.db first
showed a key or user disabled (auth.db itself keeps no date).

On real inputs: the recorded nginx log of the Xinference 4.1.0 recording (its chatbot-prod lines
spread over a week), the recording's keys.yaml, and auth.db files built as `test_authdb.py`
builds them and changed the way Xinference changes them; `replay` and the daemon run as real
processes.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import DaemonProcess, Workspace, access_line, total
from paths import FIXTURES
from test_authdb import _jwt, execute, make_auth_db, raw_keys

from xinf_watch.keys.audit import audit_keys
from xinf_watch.keys.dates import DisabledSince
from xinf_watch.keys.files import KeyFileError, load_registry
from xinf_watch.keys.registry import sha256_hex
from xinf_watch.keys.sources import KeySources
from xinf_watch.model import KeyState

REPO = Path(__file__).resolve().parents[1]
KEYS_YAML = FIXTURES / "keys.yaml"
NGINX_LOG = FIXTURES / "nginx" / "access_combined_key.log"
PROD = "Bearer sk-Yn9ggOg8DoIku"  # chatbot-prod (migrated-sk-Yn9g in auth.db)
STATE_RULES = ("revoked-key-used", "key-state-not-enforced")


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def keys_yaml(tmp_path: Path, alias: str, **fields: Any) -> Path:
    """The recording's keys.yaml with `fields` set on the key `alias` (None: field removed)."""
    doc = yaml.safe_load(KEYS_YAML.read_text(encoding="utf-8"))
    entry = next(k for k in doc["keys"] if k["alias"] == alias)
    for name, value in fields.items():
        if value is None:
            entry.pop(name, None)
        else:
            entry[name] = value
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


# --- keys.yaml: revoked_at ----------------------------------------------------------------------


def test_revoked_at_revokes_from_that_moment_and_not_before(tmp_path: Path) -> None:
    wed = "2026-11-25T12:00:00Z"
    reg = load_registry([keys_yaml(tmp_path, "chatbot-prod", revoked=None, revoked_at=wed)])
    entry = reg.by_alias("chatbot-prod")
    assert entry is not None and entry.revoked and entry.revoked_at == ts(wed)  # revoked_at alone: revoked
    for at, state in [
        ("2026-11-23T09:00:00Z", KeyState.VALID),
        ("2026-11-25T11:59:59.999Z", KeyState.VALID),
        (wed, KeyState.REVOKED),  # at revoked_at: revoked
        ("2026-11-29T23:00:00Z", KeyState.REVOKED),
    ]:
        assert reg.resolve(PROD, ts(at)).state == state, at
        assert reg.state_of(entry, ts(at)) == entry.state_at(ts(at)) == state, at


def test_an_expired_key_revoked_later_is_valid_then_expired_then_revoked(tmp_path: Path) -> None:
    # chatbot-staging expires 2026-12-28T07:05:55Z in the recording's keys.yaml
    path = keys_yaml(tmp_path, "chatbot-staging", revoked=None, revoked_at="2027-01-10T00:00:00Z")
    reg = load_registry([path])
    staging = "Bearer sk-Ff2xlFLn6m9oZ"
    times = ("2026-12-28T07:05:54Z", "2026-12-28T07:05:55Z", "2027-01-09T23:59:59Z", "2027-01-10T00:00:00Z")
    assert [reg.resolve(staging, ts(at)).state for at in times] == [
        KeyState.VALID, KeyState.EXPIRED, KeyState.EXPIRED, KeyState.REVOKED,
    ]  # fmt: skip


def test_revoked_true_without_a_date_is_revoked_at_all_times(tmp_path: Path) -> None:
    reg = load_registry([KEYS_YAML])
    legacy = reg.by_alias("chatbot-legacy")  # revoked: true
    assert legacy is not None and legacy.revoked and legacy.revoked_at is None
    assert reg.resolve("Bearer sk-duStQ5OUlVIe5", 0).state == KeyState.REVOKED


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"revoked_at": "last wednesday", "revoked": None},
         "keys.yaml:{line}: keys[1].revoked_at: 'last wednesday' is not a date (expected e.g. 2026-12-31 or"
         " 2026-12-31T00:00:00Z)"),
        ({"revoked_at": "2026-11-25T12:00:00Z", "revoked": False},
         "keys.yaml:{line}: keys[1].revoked_at: given with revoked: false (expected revoked: true or no"
         " revoked:)"),
    ],
)  # fmt: skip
def test_revoked_at_errors_are_one_line_with_file_line_and_field(
    tmp_path: Path, fields: dict[str, Any], message: str
) -> None:
    path = keys_yaml(tmp_path, "chatbot-prod", **fields)
    text = path.read_text().splitlines()
    line = next(n for n, t in enumerate(text, 1) if t.lstrip().startswith("revoked_at:"))
    with pytest.raises(KeyFileError) as info:
        load_registry([path])
    assert str(info.value) == f"{tmp_path}/" + message.format(line=line)
    assert "sk-Yn9g" not in str(info.value)


def test_keys_audit_shows_the_date_a_key_is_revoked_from(tmp_path: Path) -> None:
    reg = load_registry(
        [keys_yaml(tmp_path, "chatbot-prod", revoked=None, revoked_at="2026-11-25T12:00:00Z")]
    )
    at = ts("2026-11-28T07:10:00Z")
    found = {(f.key, f.kind): f.detail for f in audit_keys(reg, at)}
    assert found["chatbot-prod", "revoked"] == (
        "revoked since 2026-11-25T12:00:00Z (2d19h ago); still listed, so its uses from then on show as"
        " key_state revoked"
    )
    assert (
        found["chatbot-legacy", "revoked"] == "revoked; still listed, so its uses show as key_state revoked"
    )
    before = {(f.key, f.kind) for f in audit_keys(reg, ts("2026-11-24T00:00:00Z"))}
    assert ("chatbot-prod", "revoked") not in before and ("chatbot-prod", "no_allowlist") in before


# --- auth.db: dated by the daemon's memory ------------------------------------------------------


def test_keys_yaml_dates_a_key_auth_db_shows_disabled(tmp_path: Path) -> None:
    db = make_auth_db(tmp_path / "auth.db")
    execute(db, "UPDATE api_keys SET enabled = 0 WHERE name = 'migrated-sk-Yn9g'")
    wed = "2026-11-25T12:00:00Z"
    undated = load_registry([db, KEYS_YAML])  # replay: nobody knows since when
    assert undated.resolve(PROD, ts("2026-11-23T09:00:00Z")).state == KeyState.REVOKED
    dated = load_registry([db, keys_yaml(tmp_path, "chatbot-prod", revoked=None, revoked_at=wed)])
    assert dated.resolve(PROD, ts("2026-11-23T09:00:00Z")).state == KeyState.VALID
    assert dated.resolve(PROD, ts(wed)).state == KeyState.REVOKED


def test_the_memory_dates_what_auth_db_disables_while_watched(tmp_path: Path) -> None:
    db = make_auth_db(tmp_path / "auth.db")
    clock = [ts("2026-11-28T07:00:00Z")]
    memory = DisabledSince()
    sources = KeySources([db, KEYS_YAML], clock=lambda: int(clock[0] * 1e9), disabled_since=memory)
    first = sources.load()
    # disabled before anyone looked (analyst-old-laptop): at all times, as in replay
    old_laptop = "Bearer " + raw_keys()["xf-jTbW"]
    assert first.resolve(old_laptop, 0).state == KeyState.REVOKED

    clock[0] = disabled_at = ts("2026-11-28T07:30:00Z")
    execute(db, "UPDATE api_keys SET enabled = 0 WHERE name = 'migrated-sk-Yn9g'")
    execute(db, "UPDATE users SET enabled = 0 WHERE username = 'etl'")
    reg = sources.reload_if_changed()
    assert reg is not None
    before, after = disabled_at - 1, disabled_at
    for credential in (PROD, "Bearer " + _jwt("etl")):  # a key, a session of a disabled user
        assert reg.resolve(credential, before).state == KeyState.VALID
        assert reg.resolve(credential, after).state == KeyState.REVOKED
    archive = reg.by_alias("etl-archive")  # owner etl: disabled from then on
    assert archive is not None and reg.state_of(archive, after) == KeyState.REVOKED
    assert reg.state_of(archive, before) == KeyState.EXPIRED  # keys.yaml: expired 2026-11-08
    assert reg.resolve(old_laptop, 0).state == KeyState.REVOKED

    # a restart: the same dates from the saved memory
    saved = json.loads(json.dumps(memory.snapshot()))
    clock[0] += 3600
    again = KeySources(
        [db, KEYS_YAML], clock=lambda: int(clock[0] * 1e9), disabled_since=DisabledSince(saved)
    )
    restarted = again.load()
    assert restarted.entries == reg.entries and restarted.users == reg.users
    # only 8 hex digits of a key's hash are kept
    assert all(len(ref) == 8 for ref in saved["keys"]) and saved["users"] == {"etl": disabled_at}

    # enabled again, then disabled again: a new date
    execute(db, "UPDATE api_keys SET enabled = 1 WHERE name = 'migrated-sk-Yn9g'")
    assert again.reload_if_changed() is not None
    clock[0] = redisabled = disabled_at + 7200
    execute(db, "UPDATE api_keys SET enabled = 0 WHERE name = 'migrated-sk-Yn9g'")
    latest = again.reload_if_changed()
    assert latest is not None
    assert latest.resolve(PROD, redisabled - 1).state == KeyState.VALID
    assert latest.resolve(PROD, redisabled).state == KeyState.REVOKED


# --- replay over a week -------------------------------------------------------------------------

MONDAY = datetime(2026, 11, 23, tzinfo=UTC).timestamp()
_TIME = re.compile(r"\[[^\]]+\]")


def week_log(path: Path) -> list[float]:
    """chatbot-prod's recorded lines, retimed: 8 a day from Monday to Sunday 09:00-16:00 UTC."""
    lines = [line for line in NGINX_LOG.read_text().splitlines() if f'"{PROD}"' in line]
    assert len(lines) >= 56
    out, times = [], []
    for i, line in enumerate(lines[:56]):
        at = MONDAY + (i // 8) * 86400 + 9 * 3600 + (i % 8) * 3600
        stamp = datetime.fromtimestamp(at, UTC).strftime("[%d/%b/%Y:%H:%M:%S +0000]")
        out.append(_TIME.sub(stamp, line, count=1))
        times.append(at)
    path.write_text("".join(line + "\n" for line in out), encoding="utf-8")
    return times


def replay_alerts(tmp_path: Path, keys: Path, log: Path) -> list[dict[str, Any]]:
    doc = yaml.safe_load((REPO / "rules" / "rules.yaml").read_text(encoding="utf-8"))
    doc.update(
        sources=[{"name": "gateway", "path": str(log), "format": "nginx", "log_format": "combined_key"}],
        keys=[str(keys)], networks={"internal": ["127.0.1.0/24"]},
    )  # fmt: skip
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(doc), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "xinf_watch", "replay", "--rules", str(rules)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_a_replay_over_a_week_judges_each_request_by_the_key_state_at_that_moment(tmp_path: Path) -> None:
    log = tmp_path / "week.log"
    times = week_log(log)
    wednesday_noon = MONDAY + 2 * 86400 + 12 * 3600
    after = [t for t in times if t >= wednesday_noon]

    dated = keys_yaml(tmp_path, "chatbot-prod", revoked=True, revoked_at="2026-11-25T12:00:00Z")
    alerts = [a for a in replay_alerts(tmp_path, dated, log) if a["rule"] in STATE_RULES]
    assert {a["rule"] for a in alerts} == set(STATE_RULES)  # the uses after revoked_at do alert
    assert all(a["key"] == "chatbot-prod" for a in alerts)
    first = min(ts(a["first_ts"]) for a in alerts)
    assert first == after[0]  # the first use at or after Wednesday noon, not Monday's

    # today's meaning without a date: Monday's uses already count as revoked
    undated = keys_yaml(tmp_path, "chatbot-prod", revoked=True)
    alerts = [a for a in replay_alerts(tmp_path, undated, log) if a["rule"] in STATE_RULES]
    assert min(ts(a["first_ts"]) for a in alerts) == times[0] < wednesday_noon


# --- the daemon remembers across a restart ------------------------------------------------------

REVOKED_KEY_USED = {"name": "revoked-key-used", "kind": "match", "when": {"key_state": "revoked"},
                    "by": ["key"], "severity": "critical"}  # fmt: skip


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    w = Workspace(tmp_path)
    yield w
    w.close()


def nginx_time(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")


def used(seq: int, credential: str, at: float, ip: str = "127.0.1.21") -> str:
    """A recorded 200 of the 4.1.0 recording, with `credential`, at log time `at`."""
    line = access_line(seq, ip=ip, when=nginx_time(at))
    return line.rsplit('"Bearer ', 1)[0] + f'"{credential}" 0.02'


@pytest.mark.system
def test_the_daemon_remembers_when_it_first_saw_a_key_disabled_across_a_restart(ws: Workspace) -> None:
    db = make_auth_db(ws.root / "auth.db")
    ws.write_rules(keys=[db, KEYS_YAML], rules=[REVOKED_KEY_USED])
    d: DaemonProcess = ws.daemon().start()
    started = time.time()

    execute(db, "UPDATE api_keys SET enabled = 0 WHERE name = 'migrated-sk-Yn9g'")  # in Xinference
    d.wait_until(lambda m: total(m, "xinf_key_info", key="chatbot-prod", state="revoked") == 1,
                 what="chatbot-prod disabled in auth.db")  # fmt: skip
    seen = time.time()
    d.terminate()

    # written while the daemon is stopped: a use from before it saw the key disabled, one after
    before, after = int(started) - 30, int(seen) + 1
    old_laptop = "Bearer " + raw_keys()["xf-jTbW"]  # disabled before the daemon first looked
    with ws.log.open("a") as f:
        f.write(used(1, old_laptop, before - 3600, ip="127.0.1.45") + "\n")
        f.write(used(2, PROD, before) + "\n")
        f.write(used(3, PROD, after) + "\n")
    while time.time() < after + 1:  # the restart comes after both
        time.sleep(0.05)

    d.start()
    d.wait_until(lambda m: total(m, "xinf_alerts_total", rule="revoked-key-used") == 2, what="two alerts")
    alerts = {a["key"]: a for a in ws.journal()}
    assert set(alerts) == {"chatbot-prod", "analyst-old-laptop"}
    assert ts(alerts["chatbot-prod"]["first_ts"]) == after  # not `before`: the restart kept the date
    assert ts(alerts["analyst-old-laptop"]["first_ts"]) == before - 3600  # undated: at all times
    d.terminate()

    with closing(sqlite3.connect(ws.state / "state.db")) as conn:
        (blob,) = conn.execute("SELECT data FROM blobs WHERE name = 'key_dates'").fetchone()
    memory = json.loads(blob)
    assert len(memory["keys"]) == 2 and started <= max(v for v in memory["keys"].values() if v) <= seen
    # no key and no full key hash in the state database
    stored = b"".join(p.read_bytes() for p in ws.state.iterdir() if p.name.startswith("state.db"))
    for key in raw_keys().values():
        assert key.encode() not in stored and sha256_hex(key).encode() not in stored
