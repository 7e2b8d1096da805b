"""Helpers for the rule engine tests: synthetic events and rules files loaded the real way.

`event(ts, **fields)` builds an `Event` with plausible defaults (a valid key `alice` listing
models from 10.1.0.5, answered 200); `outcome` follows `status` unless given. `load_rules(tmp_path,
rules_yaml)` writes a small rules.yaml (one nginx source `gateway`, the given `networks`) and loads
it with `load_config`, so the rules are exactly the typed objects the daemon builds.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xinf_watch.config.schema import Config, load_config
from xinf_watch.keys.registry import KeyEntry, KeyRegistry
from xinf_watch.model import Alert, CredentialKind, Event, KeyState, Outcome
from xinf_watch.rules.engine import RuleEngine

T0 = 1795849560.0  # 2026-11-28T07:06:00Z, a whole minute (window buckets start on it)


def event(ts: float, **fields: Any) -> Event:
    values: dict[str, Any] = {
        "ts": ts,
        "source": "gateway",
        "ip": "10.1.0.5",
        "ip_forwarded": False,
        "method": "GET",
        "path": "/v1/models",
        "status": 200,
        "reason": None,
        "credential": CredentialKind.API_KEY,
        "key": "alice",
        "owner": "alice",
        "key_state": KeyState.VALID,
        "scope": "models:list",
        "scope_allowed": True,
        "ip_allowed": None,
        "duration": 0.01,
        "bytes": 27,
        "user_agent": "OpenAI/Python 1.82.0",
        "request_id": None,
        "fingerprint": None,
    }
    values.update(fields)
    values.setdefault("outcome", Outcome.from_status(values["status"]))
    return Event(**values)


def load_rules(
    tmp_path: Path, rules: str, networks: str = "", sources: Sequence[str] = ("gateway",)
) -> Config:
    source_lines = "".join(f"  - {{name: {s}, path: /var/log/{s}.log, format: nginx}}\n" for s in sources)
    text = f"sources:\n{source_lines}"
    if networks:
        text += "networks:\n" + textwrap.indent(textwrap.dedent(networks).strip("\n"), "  ") + "\n"
    text += "rules:\n" + textwrap.indent(textwrap.dedent(rules).strip("\n"), "  ") + "\n"
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def engine(
    tmp_path: Path, rules: str, registry: KeyRegistry | None = None, networks: str = "", **kw: Any
) -> RuleEngine:
    config = load_rules(tmp_path, rules, networks, **kw)
    fixed = registry or KeyRegistry(())
    return RuleEngine(config.rules, lambda: fixed, [s.name for s in config.sources])


def key_entry(
    alias: str,
    *,
    owner: str | None = None,
    expires_at: float | None = None,
    created_at: float | None = None,
    revoked: bool = False,
) -> KeyEntry:
    sha = (alias.encode().hex() * 64)[:64]
    return KeyEntry(alias, owner, frozenset({"models:list"}), created_at, expires_at, revoked, (), sha, None)


def feed(eng: RuleEngine, events: Sequence[Event]) -> list[Alert]:
    out: list[Alert] = []
    for e in events:
        out.extend(eng.observe(e))
    return out


def firing(alerts: Sequence[Alert], rule: str | None = None) -> list[Alert]:
    return [a for a in alerts if a.status.value == "firing" and rule in (None, a.rule)]


def resolved(alerts: Sequence[Alert], rule: str | None = None) -> list[Alert]:
    return [a for a in alerts if a.status.value == "resolved" and rule in (None, a.rule)]
