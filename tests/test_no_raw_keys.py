"""Raw keys never leave the registry (docs/DESIGN.md section 4): no output of xinf-watch shows one.

Every secret of the recordings is collected: the keys of keys.yaml, auth.json and native_keys.json,
every credential the recorder sent (`auth_header` in events.jsonl: known keys, the sprayed unknown
keys, JWTs), the auth.json passwords and JWT secrets. Then everything the product writes for every
fixture log is searched for them: `check` output, replay alerts, events, the metrics exposition and
stderr, with the recording's key files and with none (all credentials unknown), plus the error
messages for key files with a broken entry. A JWT counts as shown when any 13 characters of its
signature appear.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from paths import FIXTURES

from xinf_watch.app.cli import main
from xinf_watch.formats import FORMATS

REPO = Path(__file__).resolve().parents[1]
JWT_WINDOW = 13
_TOKEN_RUN = re.compile(rf"[A-Za-z0-9_-]{{{JWT_WINDOW},}}")


@dataclass
class Secrets:
    raw: set[str] = field(default_factory=set)  # keys, passwords, JWT secrets: must not appear whole
    jwt_windows: set[str] = field(default_factory=set)  # every 13 characters of every JWT signature
    jwts: int = 0

    def add_credential(self, token: str) -> None:
        parts = token.split(".")
        if len(parts) == 3 and token.startswith("eyJ"):
            signature = parts[2]
            self.jwts += 1
            self.jwt_windows.update(
                signature[i : i + JWT_WINDOW] for i in range(len(signature) - JWT_WINDOW + 1)
            )
        elif len(token) >= JWT_WINDOW:  # `Bearer undefined` and the like are not secrets
            self.raw.add(token)

    def found_in(self, text: str) -> list[str]:
        """The secrets `text` shows, shortened to a recognisable prefix."""
        found = {f"{s[:7]}... (raw)" for s in self.raw if s in text}
        for run in _TOKEN_RUN.findall(text):
            for i in range(len(run) - JWT_WINDOW + 1):
                if run[i : i + JWT_WINDOW] in self.jwt_windows:
                    found.add(f"{run[i : i + 7]}... (JWT signature)")
        return sorted(found)


def collect_secrets() -> Secrets:
    secrets = Secrets()
    for keys_yaml in (FIXTURES / "keys.yaml", FIXTURES / "xinference-legacy" / "keys.yaml"):
        for entry in yaml.safe_load(keys_yaml.read_text(encoding="utf-8"))["keys"]:
            if "key" in entry:
                secrets.add_credential(entry["key"])
    for auth in (FIXTURES / "config" / "auth.json", FIXTURES / "config" / "legacy" / "auth.json"):
        data = json.loads(auth.read_text(encoding="utf-8"))
        secrets.raw.add(data["auth_config"]["secret_key"])
        for user in data["user_config"]:
            secrets.raw.add(user["password"])
            for key in user["api_keys"]:
                secrets.add_credential(key)
    native = json.loads((FIXTURES / "config" / "native_keys.json").read_text(encoding="utf-8"))
    for value in native.values():
        if isinstance(value, dict) and "key" in value:
            secrets.add_credential(value["key"])
    for sent in (FIXTURES / "events.jsonl", FIXTURES / "xinference-legacy" / "events.jsonl"):
        for line in sent.read_text(encoding="utf-8").splitlines():
            header = json.loads(line).get("auth_header")
            if header:
                secrets.add_credential(header.removeprefix("Bearer "))
    return secrets


SECRETS = collect_secrets()


def test_the_secrets_were_collected() -> None:
    passwords = 10  # 6 users in set A, 4 in set B
    assert len(SECRETS.raw) >= 21 + 3 + 2 + passwords + 25 + 45  # keys, native, JWT secrets, sprayed
    assert SECRETS.jwts >= 3 and len(SECRETS.jwt_windows) > 100
    assert "sk-Yn9ggOg8DoIku" in SECRETS.raw and "Platform-l2kaGEs8oJz9PM" in SECRETS.raw
    assert SECRETS.found_in("x sk-Yn9ggOg8DoIku y") == ["sk-Yn9g... (raw)"]


# -- every output for every fixture log -----------------------------------------------------------

KEY_SETS = {
    "A": ("config/auth.json", "keys.yaml"),
    "B": ("config/legacy/auth.json", "xinference-legacy/keys.yaml"),
}
NGINX = {"format": "nginx", "log_format": "combined_key"}
LEGACY = {**NGINX, "xinference_version": "2.11"}
CADDY = {"format": "json", "preset": "caddy"}
INPUTS: dict[str, tuple[dict[str, str], str]] = {
    "nginx/access_combined_key.log": (NGINX, "A"),
    "nginx/access_json.log": ({"format": "json", "preset": "nginx-json"}, "A"),
    "nginx/error.log.gz": (NGINX, "A"),
    "caddy/access.log": (CADDY, "A"),
    "caddy/access_log_credentials.log": (CADDY, "A"),
    "caddy/caddy-process.log": (CADDY, "A"),
    "haproxy/haproxy.log": ({"format": "haproxy"}, "A"),
    "haproxy/haproxy_stdout_raw.log": ({"format": "haproxy"}, "A"),
    "xinference/audit.log": ({"format": "xinference-audit"}, "A"),
    "xinference/xinference.log.gz": ({"format": "xinference"}, "A"),
    "xinference-legacy/text/nginx_access_combined_key.log": (LEGACY, "B"),
    "xinference-legacy/json/nginx_access_combined_key.log": (LEGACY, "B"),
    "xinference-legacy/text/nginx_error.log.gz": (LEGACY, "B"),
    "xinference-legacy/json/nginx_error.log.gz": (LEGACY, "B"),
    "xinference-legacy/text/xinference.log": ({"format": "xinference", "xinference_version": "2.11"}, "B"),
    "xinference-legacy/json/xinference.log": ({"format": "xinference", "xinference_version": "2.11"}, "B"),
}


def test_every_fixture_log_is_an_input() -> None:
    logs = {
        str(p.relative_to(FIXTURES))
        for p in FIXTURES.rglob("*.log*")
        if "recorder" not in p.parts and "config" not in p.parts
    }
    assert sorted(logs) == sorted(INPUTS)


def write_rules(path: Path, log: str, source: dict[str, str], keys: tuple[str, ...]) -> Path:
    doc: dict[str, Any] = yaml.safe_load((REPO / "rules" / "rules.yaml").read_text(encoding="utf-8"))
    doc["sources"] = [{"name": "gateway", "path": str(FIXTURES / log), **source}]
    doc["keys"] = [str(FIXTURES / k) for k in keys]
    doc["networks"] = {"internal": ["127.0.1.0/24"]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str], log: str) -> Iterator[tuple[str, int, str]]:
    """(what, exit code, text) for everything xinf-watch writes about `log`."""
    source, key_set = INPUTS[log]
    for keys in ("with keys", "without keys"):
        rules = write_rules(
            tmp_path / f"rules {keys}.yaml", log, source, KEY_SETS[key_set] if keys == "with keys" else ()
        )
        metrics = tmp_path / f"metrics {keys}.prom"
        for what, argv in [
            ("check", ["check", "--rules", str(rules)]),
            ("replay", ["replay", "--rules", str(rules), "--metrics-out", str(metrics)]),
            ("replay --events", ["replay", "--rules", str(rules), "--events"]),
        ]:
            code = main(argv)
            out, err = capsys.readouterr()
            yield f"{what} {keys}: stdout", code, out
            yield f"{what} {keys}: stderr", code, err
        yield f"--metrics-out {keys}", 0, metrics.read_text(encoding="utf-8")


# Replaying a .gz file currently leaks its file object (test_cli.py::test_replay_closes_gzip_files);
# that is not what this test is about, so its ResourceWarning is not turned into an error here.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.parametrize("log", sorted(INPUTS))
def test_no_output_shows_a_secret(log: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fmt = INPUTS[log][0]["format"]
    if fmt not in FORMATS:
        pytest.skip(f"log format {fmt!r} is not implemented yet")
    seen = {}
    for what, code, text in outputs(tmp_path, capsys, log):
        assert code == 0, f"{what}: exit code {code}"
        seen[what] = SECRETS.found_in(text)
    assert {what: found for what, found in seen.items() if found} == {}


# -- error messages about broken key files --------------------------------------------------------

BROKEN_KEY_FILES = {
    "duplicate-key.yaml": "keys:\n  - {key: sk-Yn9ggOg8DoIku, alias: a}\n"
    "  - {key: sk-Yn9ggOg8DoIku, alias: b}\n",
    "bad-revoked.yaml": "keys:\n  - {key: sk-Yn9ggOg8DoIku, alias: a, revoked: sk-Ff2xlFLn6m9oZ}\n",
    "key-with-space.yaml": "keys:\n  - {key: 'sk-Yn9ggOg8DoIku sk-Ff2xlFLn6m9oZ'}\n",
    "owner-is-a-key.yaml": "keys:\n  - {key: sk-Yn9ggOg8DoIku, owner: [sk-Ff2xlFLn6m9oZ]}\n",
    "expiry-is-a-key.yaml": "keys:\n  - {key: sk-Yn9ggOg8DoIku, expires_at: sk-Ff2xlFLn6m9oZ}\n",
    "network-is-a-key.yaml": "keys:\n  - {key: sk-Yn9ggOg8DoIku, allowed_ips: [sk-Ff2xlFLn6m9oZ]}\n",
    "sha-is-a-key.yaml": "keys:\n  - {key_sha256: sk-Yn9ggOg8DoIku}\n",
    "yaml-syntax.yaml": "keys:\n  - {key: sk-Yn9ggOg8DoIku, alias: a\n  - {key: sk-Ff2xlFLn6m9oZ}\n",
    "yaml-syntax-after-key.yaml": "keys:\n  - key: sk-Yn9ggOg8DoIku: sk-Ff2xlFLn6m9oZ\n",
    # a key written as a mapping's field name: `- sk-...: {alias: ...}`
    "key-as-field-name.yaml": "keys:\n  - sk-Yn9ggOg8DoIku: {alias: chatbot-prod}\n",
    "key-as-top-level-field.yaml": "keys: []\nsk-Yn9ggOg8DoIku: chatbot-prod\n",
    "duplicate-key.json": '{"user_config": [{"username": "a", "permissions": [],'
    ' "api_keys": ["sk-Yn9ggOg8DoIku", "sk-Yn9ggOg8DoIku"]}]}',
    "json-syntax.json": '{"api_keys": [{"key": "sk-Yn9ggOg8DoIku", }]}',
    "permissions-is-a-key.json": '{"api_keys": [{"key": "sk-Yn9ggOg8DoIku",'
    ' "permissions": "sk-Ff2xlFLn6m9oZ"}]}',
    "user-is-a-key.json": '{"user_config": [{"username": ["sk-Yn9ggOg8DoIku"], "permissions": [],'
    ' "api_keys": ["sk-Ff2xlFLn6m9oZ"]}]}',
}


@pytest.mark.parametrize("name", sorted(BROKEN_KEY_FILES))
def test_key_file_errors_never_show_a_key(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / name
    keys.write_text(BROKEN_KEY_FILES[name], encoding="utf-8")
    rules = tmp_path / "rules.yaml"
    source = {"name": "gateway", "path": str(FIXTURES / "nginx" / "access_combined_key.log"), **NGINX}
    rules.write_text(yaml.safe_dump({"sources": [source], "keys": [str(keys)]}), encoding="utf-8")
    for argv in (["check", "--rules", str(rules)], ["replay", "--rules", str(rules), "--events"]):
        code = main(argv)
        out, err = capsys.readouterr()
        assert (code, out) == (2, ""), argv
        assert err.startswith(f"{keys}"), err  # the message names the key file...
        assert SECRETS.found_in(err) == [], err  # ...but never the key


def test_metric_series_stay_bounded_whatever_an_attacker_sends(tmp_path: Path) -> None:
    """50,000 requests, each with its own forged key, address, path, method and user agent:
    the exposition keeps a handful of series (labels: alias/unknown/none, route scopes, outcomes)."""
    import random

    from prometheus_client.parser import text_string_to_metric_families

    rng = random.Random(11)
    lines = []
    for n in range(50_000):
        ip = f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        key = "sk-" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789") for _ in range(13))
        method = rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH", f"X{n}"])
        path = rng.choice(["/v1/models/", "/v1/", "/", "/admin/", "/ui/"]) + f"{n:x}?q={n}"
        credential = rng.choice([f"Bearer {key}", key, f"Basic {key}", "-", f"Bearer eyJ{key}.e30.x"])
        lines.append(
            f'{ip} - - [28/Nov/2026:07:{n // 1000 % 60:02d}:{n % 60:02d} +0000] "{method} {path} HTTP/1.1" '
            f'{rng.choice([200, 401, 403, 404, 429, 500])} 12 "-" "agent-{n}" "{credential}" 0.010'
        )
    log = tmp_path / "access.log"
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    metrics = tmp_path / "metrics.prom"
    done = subprocess.run(
        [sys.executable, "-m", "xinf_watch", "replay", "--format", "nginx", "--metrics-out", str(metrics),
         str(log)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    series = {f.name: len(f.samples) for f in text_string_to_metric_families(metrics.read_text())}
    requests = series["xinf_requests"]
    assert requests <= 6 * 20 * 5, series  # keys (unknown/none/other) x scopes x outcomes, at most
    assert sum(series.values()) < 2_000, series
    text = metrics.read_text()
    assert "agent-" not in text and "?q=" not in text and "sk-" not in text
