#!/usr/bin/env python3
"""Write N nginx `combined_key` access lines that look like a busy Xinference gateway.

The mix follows the recorded fixtures: mostly model listings and chat/embedding calls from a
dozen keys on their usual addresses, some JWT sessions, unauthenticated probes, unknown keys,
WebUI assets, and 4xx/5xx answers. Deterministic for a given --seed. The keys file it writes
beside the log (`--keys-out`) lets a rules.yaml attribute the traffic.

    python bench/gen_combined_key.py --lines 1000000 --out /tmp/access.log --keys-out /tmp/keys.yaml

Options for the benchmarks (without them the output is what it always was, byte for byte):
--keys N (default 12), --addresses N (about N distinct client addresses in all, half of them the
keys' own, half outside ones for probes and unknown keys), --p401/--p403 (the share of lines
answered 401/403, drawn per line; the routes' own 401/403 become 200), and --json (nginx's
`escape=json` access log with the same fields, as `preset: nginx-json` reads it).
`Traffic` is importable (bench/live.py renders its requests with the current time).
"""

from __future__ import annotations

import argparse
import random
import string
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

ROUTES = [
    # method, path, weight, statuses (weighted)
    ("GET", "/v1/models", 40, [(200, 95), (401, 3), (403, 2)]),
    ("POST", "/v1/chat/completions", 30, [(200, 90), (404, 5), (429, 2), (500, 1), (401, 2)]),
    ("POST", "/v1/embeddings", 15, [(200, 95), (404, 5)]),
    ("GET", "/v1/models/qwen2.5-instruct", 5, [(200, 80), (400, 20)]),
    ("POST", "/v1/models", 1, [(200, 50), (403, 50)]),
    ("DELETE", "/v1/models/qwen2.5-instruct", 1, [(200, 50), (403, 50)]),
    ("GET", "/v1/cluster/info", 1, [(200, 50), (403, 50)]),
    ("GET", "/_next/static/chunks/main-3f2a.js", 3, [(200, 100)]),
    ("GET", "/", 1, [(200, 100)]),
    ("GET", "/v1/models?detailed=true", 2, [(200, 100)]),
    ("POST", "/v1/rerank", 1, [(200, 100)]),
]
AGENTS = ["OpenAI/Python 1.82.0", "curl/8.5.0", "python-httpx/0.27.0", "Mozilla/5.0 (X11; Linux x86_64)"]
START = datetime(2026, 11, 28, 6, 0, tzinfo=UTC).timestamp()


class Request(NamedTuple):
    ip: str
    method: str
    path: str
    status: int
    size: int
    duration: float
    agent: str
    auth: str  # the Authorization header, "-" when absent


def make_key(rng: random.Random, native: bool) -> str:
    alphabet = string.ascii_letters + string.digits
    if native:
        return "xf-" + "".join(rng.choice(alphabet) for _ in range(48))
    return "sk-" + "".join(rng.choice(alphabet) for _ in range(13))


def weighted(rng: random.Random, pairs: list[tuple[int, int]]) -> int:
    return rng.choices([v for v, _ in pairs], weights=[w for _, w in pairs])[0]


class Traffic:
    """The keys and addresses of one seed, and the requests they make (`request()`, in order)."""

    def __init__(
        self,
        seed: int = 7,
        keys: int = 12,
        addresses: int | None = None,
        p401: float | None = None,
        p403: float | None = None,
    ) -> None:
        self.rng = rng = random.Random(seed)
        self.keys = [(f"client-{i:02d}", make_key(rng, native=i % 3 == 0)) for i in range(keys)]
        self.outside: list[str] | None = None
        if addresses is None:  # the original mix: 3 addresses a key, two outside /24s
            self.homes = {
                alias: [f"10.1.{i}.{j}" for j in range(1, 4)] for i, (alias, _) in enumerate(self.keys)
            }
        else:
            own = max(keys, addresses // 2)
            self.homes = {alias: [] for alias, _ in self.keys}
            for j in range(own):
                self.homes[self.keys[j % keys][0]].append(f"10.1.{j // 250}.{j % 250 + 1}")
            self.outside = [f"198.18.{j // 250}.{j % 250 + 1}" for j in range(max(1, addresses - own))]
        self.p401 = p401
        self.p403 = p403
        self.route_weights = [r[2] for r in ROUTES]

    def request(self) -> Request:
        rng = self.rng
        method, path, _, statuses = rng.choices(ROUTES, weights=self.route_weights)[0]
        roll = rng.random()
        if roll < 0.85:
            alias, key = rng.choice(self.keys)
            ip = rng.choice(self.homes[alias])
            auth = f"Bearer {key}"
        elif roll < 0.90:
            ip, auth = "10.9.0.5", "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZG1pbiJ9.sig"
        elif roll < 0.95:
            ip = rng.choice(self.outside) if self.outside else f"203.0.113.{rng.randrange(1, 255)}"
            auth = "-"
        else:
            ip = rng.choice(self.outside) if self.outside else f"198.51.100.{rng.randrange(1, 255)}"
            auth = f"Bearer {make_key(rng, native=False)}"
        status = weighted(rng, statuses)
        if self.p401 is not None or self.p403 is not None:
            p401, p403 = self.p401 or 0.0, self.p403 or 0.0
            denied = rng.random()
            if denied < p401:
                status = 401
            elif denied < p401 + p403:
                status = 403
            elif status in (401, 403):
                status = 200
        size = rng.randrange(20, 4000)
        duration = rng.random() * (8.0 if "chat" in path else 0.2)
        agent = rng.choice(AGENTS)
        return Request(ip, method, path, status, size, duration, agent, auth)

    def keys_yaml(self) -> str:
        out = ["keys:\n"]
        for alias, key in self.keys:
            out.append(
                f"  - key: {key}\n    alias: {alias}\n    owner: team-{alias[-2:]}\n"
                f"    permissions: [models:list, models:read]\n"
            )
        return "".join(out)


def combined_key(r: Request, stamp: str) -> str:
    """The line nginx writes with `log_format combined_key`; `stamp` is $time_local."""
    return (
        f'{r.ip} - - [{stamp}] "{r.method} {r.path} HTTP/1.1" {r.status} {r.size} "-" "{r.agent}" '
        f'"{r.auth}" {r.duration:.3f}\n'
    )


def json_key(r: Request, stamp: str) -> str:
    """The same request as nginx's `escape=json` log (tests/fixtures/config/nginx.conf's `json_key`
    plus remote_user and http_referer); `stamp` is $time_iso8601. nginx writes an unset variable
    as "" there, and these values need no escaping."""
    auth = "" if r.auth == "-" else r.auth
    return (
        f'{{"time_iso8601":"{stamp}","remote_addr":"{r.ip}","remote_user":"",'
        f'"request_method":"{r.method}","request_uri":"{r.path}","status":{r.status},'
        f'"body_bytes_sent":{r.size},"request_time":{r.duration:.3f},"http_referer":"",'
        f'"http_authorization":"{auth}","http_user_agent":"{r.agent}","http_x_forwarded_for":""}}\n'
    )


def lines(traffic: Traffic, n: int, rate: float = 200.0, json: bool = False) -> Iterator[str]:
    """`n` lines from START on, `rate` requests per second of log time."""
    step = 1.0 / rate
    layout, render = (
        ("%Y-%m-%dT%H:%M:%S+00:00", json_key) if json else ("%d/%b/%Y:%H:%M:%S +0000", combined_key)
    )
    for i in range(n):
        yield render(traffic.request(), time.strftime(layout, time.gmtime(START + i * step)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--keys-out", type=Path, help="write a keys.yaml for the generated keys")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second of log time")
    parser.add_argument("--keys", type=int, default=12, help="number of keys (default 12)")
    parser.add_argument("--addresses", type=int, help="about this many distinct client addresses")
    parser.add_argument("--p401", type=float, help="share of lines answered 401 (e.g. 0.04)")
    parser.add_argument("--p403", type=float, help="share of lines answered 403 (e.g. 0.01)")
    parser.add_argument("--json", action="store_true", help="nginx escape=json lines instead of combined_key")
    args = parser.parse_args()

    traffic = Traffic(args.seed, args.keys, args.addresses, args.p401, args.p403)
    with args.out.open("w") as out:
        out.writelines(lines(traffic, args.lines, args.rate, args.json))
    if args.keys_out:
        args.keys_out.write_text(traffic.keys_yaml())


if __name__ == "__main__":
    main()
