"""`xinf-watch demo`: a live daemon on simulated gateway traffic, with nothing to set up.

It writes a keys.yaml and a rules.yaml (the shipped rules) into a temporary directory, starts the
real daemon on them as a child process, and appends nginx `combined_key` lines to its access log:
normal traffic from a handful of keys on their usual addresses, and every few seconds one of the
incidents the shipped rules exist for. Alerts are printed as the daemon journals them; metrics
are on the printed URL while the demo runs. Ctrl-C (or --duration) stops everything.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import yaml

from xinf_watch import SHIPPED_RULES
from xinf_watch.model import format_ts

AGENT = "OpenAI/Python 1.82.0"


@dataclass(frozen=True, slots=True)
class DemoKey:
    key: str
    owner: str
    homes: tuple[str, ...]
    expires_in_days: float = 365
    revoked: bool = False
    allowed_ips: tuple[str, ...] = ()


def _key(rng: random.Random, prefix: str, length: int) -> str:
    return prefix + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(length))


class Traffic:
    """nginx combined_key lines for a few keys, and the incidents that the shipped rules catch."""

    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        rng = self.rng
        self.keys = {
            "chatbot-prod": DemoKey(_key(rng, "sk-", 13), "chatbot", ("10.1.0.21", "10.1.0.22")),
            "etl-embed": DemoKey(_key(rng, "sk-", 13), "etl", ("10.1.0.61",), expires_in_days=3),
            "finance-bot": DemoKey(_key(rng, "xf-", 48), "finance", ("10.1.0.66",),
                                   allowed_ips=("10.1.0.64/28",)),
            "old-laptop": DemoKey(_key(rng, "xf-", 48), "analyst", ("10.1.0.45",), revoked=True),
            "archive-job": DemoKey(_key(rng, "sk-", 13), "etl", ("10.1.0.64",), expires_in_days=-20),
        }

    def keys_yaml(self, now: float) -> str:
        entries = []
        for alias, k in self.keys.items():
            entry: dict[str, object] = {
                "key": k.key, "alias": alias, "owner": k.owner, "permissions": ["models:list", "models:read"],
                "created_at": format_ts(now - 90 * 86400),
                "expires_at": format_ts(now + k.expires_in_days * 86400), "revoked": k.revoked,
            }
            if k.allowed_ips:
                entry["allowed_ips"] = list(k.allowed_ips)
            entries.append(entry)
        return yaml.safe_dump({"keys": entries}, sort_keys=False)

    def line(self, ip: str, method: str, path: str, status: int, auth: str | None) -> str:
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
        header = auth or "-"
        size = self.rng.randrange(27, 900)
        return (f'{ip} - - [{stamp}] "{method} {path} HTTP/1.1" {status} {size} "-" "{AGENT}" '
                f'"{header}" {self.rng.random() / 4:.3f}\n')

    def normal(self) -> str:
        alias = self.rng.choice(["chatbot-prod", "chatbot-prod", "etl-embed", "finance-bot"])
        demo_key = self.keys[alias]
        method, path = self.rng.choice([("GET", "/v1/models"), ("POST", "/v1/chat/completions"),
                                        ("POST", "/v1/embeddings")])
        return self.line(self.rng.choice(demo_key.homes), method, path, 200, f"Bearer {demo_key.key}")

    def incidents(self) -> Iterator[tuple[str, list[str]]]:
        """(what happens, the lines it writes), in the order the demo plays them."""
        k = self.keys
        yield "an outside address hammers the API without a key", [
            self.line("203.0.113.7", "GET", "/v1/models", 401, None) for _ in range(25)]
        yield "25 different unknown keys from one address (key spraying)", [
            self.line("198.51.100.9", "GET", "/v1/models", 401, f"Bearer {_key(self.rng, 'sk-', 13)}")
            for _ in range(25)]
        yield "a revoked key is used", [
            self.line("10.1.0.45", "GET", "/v1/models", 401, f"Bearer {k['old-laptop'].key}")]
        yield "an expired key still gets answers", [
            self.line("10.1.0.64", "GET", "/v1/models", 200, f"Bearer {k['archive-job'].key}")]
        yield "chatbot-prod shows up from a new address", [
            self.line("192.0.2.50", "POST", "/v1/chat/completions", 200, f"Bearer {k['chatbot-prod'].key}")]
        yield "finance-bot used outside its allowed_ips", [
            self.line("10.9.9.9", "GET", "/v1/models", 200, f"Bearer {k['finance-bot'].key}")]
        yield "a chat key tries to launch, stop and register models", [
            self.line("10.1.0.21", method, path, 403, f"Bearer {k['chatbot-prod'].key}")
            for method, path in (("POST", "/v1/models"), ("DELETE", "/v1/models/qwen2.5-instruct"),
                                 ("POST", "/v1/model_registrations/LLM"))]
        yield "the WebUI is opened from outside", [
            self.line("203.0.113.99", "GET", "/", 200, None),
            self.line("203.0.113.99", "GET", "/_next/static/chunks/main.js", 200, None)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(directory: Path, traffic: Traffic, port: int) -> Path:
    shipped = yaml.safe_load(SHIPPED_RULES.read_text())
    (directory / "keys.yaml").write_text(traffic.keys_yaml(time.time()))
    config = {
        "sources": [{"name": "gateway", "path": str(directory / "access.log"), "format": "nginx",
                     "log_format": "combined_key"}],
        "keys": [str(directory / "keys.yaml")],
        "networks": {"internal": ["10.0.0.0/8"]},
        "metrics": {"listen": f"127.0.0.1:{port}"},
        "state": {"dir": str(directory / "state")},
        "notify": {"ops": []},
        "rules": shipped["rules"],  # as shipped
    }
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _follow(path: Path) -> Callable[[], list[dict[str, object]]]:
    offset = 0

    def read_new() -> list[dict[str, object]]:
        nonlocal offset
        if not path.exists():
            return []
        with path.open() as f:
            f.seek(offset)
            data = f.read()
        complete = data[: data.rfind("\n") + 1]
        offset += len(complete.encode())
        return [json.loads(line) for line in complete.splitlines() if line]

    return read_new


def run_demo(duration: float, port: int | None, out: TextIO = sys.stdout) -> int:
    traffic = Traffic()
    port = port or _free_port()
    with tempfile.TemporaryDirectory(prefix="xinf-watch-demo-") as tmp:
        directory = Path(tmp)
        log_path = directory / "access.log"
        log_path.touch()
        rules = write_config(directory, traffic, port)
        child = subprocess.Popen([sys.executable, "-m", "xinf_watch", "--rules", str(rules),
                                  "--log-level", "warning"])
        out.write(f"xinf-watch demo: daemon pid {child.pid}, config {rules}\n"
                  f"  metrics: http://127.0.0.1:{port}/metrics   (Ctrl-C to stop)\n\n")
        out.flush()
        new_alerts = _follow(directory / "state" / "alerts.jsonl")
        incidents = traffic.incidents()
        started = time.monotonic()
        next_incident = started + 3.0
        try:
            with log_path.open("a") as log:
                while time.monotonic() - started < duration and child.poll() is None:
                    log.write(traffic.normal())
                    if time.monotonic() >= next_incident:
                        what, lines = next(incidents, ("", []))
                        if lines:
                            out.write(f"-> {what}\n")
                            log.writelines(lines)
                        next_incident += 4.0
                    log.flush()
                    for alert in new_alerts():
                        out.write(f"   [{alert['severity']}] {alert['status']}: {alert['rule']}: "
                                  f"{alert['summary']}\n")
                    out.flush()
                    time.sleep(0.05)
        except KeyboardInterrupt:
            pass
        finally:
            child.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=10)
            if child.poll() is None:
                child.kill()
        for alert in new_alerts():
            out.write(f"   [{alert['severity']}] {alert['status']}: {alert['rule']}: {alert['summary']}\n")
        out.write("demo finished\n")
    return 0
