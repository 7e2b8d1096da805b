#!/usr/bin/env python3
"""Write N nginx `combined_key` access lines that look like a busy Xinference gateway.

The mix follows the recorded fixtures: mostly model listings and chat/embedding calls from a
dozen keys on their usual addresses, some JWT sessions, unauthenticated probes, unknown keys,
WebUI assets, and 4xx/5xx answers. Deterministic for a given --seed. The keys file it writes
beside the log (`--keys-out`) lets a rules.yaml attribute the traffic.

    python bench/gen_combined_key.py --lines 1000000 --out /tmp/access.log --keys-out /tmp/keys.yaml
"""

from __future__ import annotations

import argparse
import random
import string
import time
from datetime import UTC, datetime
from pathlib import Path

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


def make_key(rng: random.Random, native: bool) -> str:
    alphabet = string.ascii_letters + string.digits
    if native:
        return "xf-" + "".join(rng.choice(alphabet) for _ in range(48))
    return "sk-" + "".join(rng.choice(alphabet) for _ in range(13))


def weighted(rng: random.Random, pairs: list[tuple[int, int]]) -> int:
    return rng.choices([v for v, _ in pairs], weights=[w for _, w in pairs])[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--keys-out", type=Path, help="write a keys.yaml for the generated keys")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second of log time")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    keys = [(f"client-{i:02d}", make_key(rng, native=i % 3 == 0)) for i in range(12)]
    homes = {alias: [f"10.1.{i}.{j}" for j in range(1, 4)] for i, (alias, _) in enumerate(keys)}
    routes = [r for r in ROUTES]
    route_weights = [r[2] for r in ROUTES]
    start = datetime(2026, 11, 28, 6, 0, tzinfo=UTC).timestamp()
    step = 1.0 / args.rate

    # Pre-render the 1-second timestamps: nginx logs second resolution.
    with args.out.open("w") as out:
        for n in range(args.lines):
            ts = start + n * step
            stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(ts))
            method, path, _, statuses = rng.choices(routes, weights=route_weights)[0]
            roll = rng.random()
            if roll < 0.85:
                alias, key = rng.choice(keys)
                ip = rng.choice(homes[alias])
                auth = f"Bearer {key}"
            elif roll < 0.90:
                ip, auth = "10.9.0.5", "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZG1pbiJ9.sig"
            elif roll < 0.95:
                ip, auth = f"203.0.113.{rng.randrange(1, 255)}", "-"
            else:
                ip, auth = f"198.51.100.{rng.randrange(1, 255)}", f"Bearer {make_key(rng, native=False)}"
            status = weighted(rng, statuses)
            size = rng.randrange(20, 4000)
            duration = rng.random() * (8.0 if "chat" in path else 0.2)
            agent = rng.choice(AGENTS)
            out.write(
                f'{ip} - - [{stamp}] "{method} {path} HTTP/1.1" {status} {size} "-" "{agent}" '
                f'"{auth}" {duration:.3f}\n'
            )
    if args.keys_out:
        with args.keys_out.open("w") as out:
            out.write("keys:\n")
            for alias, key in keys:
                out.write(
                    f"  - key: {key}\n    alias: {alias}\n    owner: team-{alias[-2:]}\n"
                    f"    permissions: [models:list, models:read]\n"
                )


if __name__ == "__main__":
    main()
