"""Building blocks of the simulated gateway log: the line buffer, addresses, routes and the
ordinary traffic of a week in front of Xinference (`simulate/run.py` puts them together).

Everything is drawn from one `random.Random`, in a fixed order, so a seed gives the same log
byte for byte; nothing reads the clock. Requests are kept as `(ts, ip, rest of the line)` and
rendered as nginx `combined_key` lines in time order at the end: one tuple and one f-string per
request, because a week is ~630,000 of them.

Times are Unix seconds; day 0 is a Monday (`simulate.START`). Networks (all in the shipped
`internal` list except the outside ones):
- pods 10.244.0.0/16, one /24 per node; node probes 10.0.1.0/24; CI runners 10.30.1.0/24;
- office 192.168.10.0/24 (a fixed address per person), VPN 10.8.0.0/16 (a new one per day);
- outside: the partner's 198.51.100.0/24, internet scanners in 198.18.0.0/15, and the
  incidents' addresses in 203.0.113.0/24 and 192.0.2.0/24 (simulate/incidents.py).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter

DAY = 86400.0
HOUR = 3600.0
MINUTE = 60.0

# (method, path, smallest and largest body size, shortest and longest request_time)
Route = tuple[str, str, int, int, float, float]

LIST_MODELS: Route = ("GET", "/v1/models", 900, 3200, 0.004, 0.03)
CHAT: Route = ("POST", "/v1/chat/completions", 300, 4000, 0.4, 9.0)
COMPLETION: Route = ("POST", "/v1/completions", 200, 2500, 0.3, 6.0)
EMBED: Route = ("POST", "/v1/embeddings", 6000, 48000, 0.02, 0.4)
RERANK: Route = ("POST", "/v1/rerank", 400, 3000, 0.03, 0.5)
MODEL_INFO: Route = ("GET", "/v1/models/qwen2.5-instruct", 600, 1400, 0.005, 0.03)
INSTANCES: Route = ("GET", "/v1/models/instances", 500, 2500, 0.005, 0.04)
TRANSCRIBE: Route = ("POST", "/v1/audio/transcriptions", 200, 3000, 0.8, 12.0)
SPEECH: Route = ("POST", "/v1/audio/speech", 20000, 400000, 0.5, 6.0)
IMAGE: Route = ("POST", "/v1/images/generations", 300000, 1500000, 3.0, 25.0)
# Routes an API key may not use under advanced auth (answered 403 whatever its permissions say).
OUT_OF_SCOPE: tuple[Route, ...] = (
    ("POST", "/v1/models", 80, 200, 0.003, 0.02),
    ("DELETE", "/v1/models/qwen2.5-instruct", 80, 200, 0.003, 0.02),
    ("GET", "/v1/cluster/info", 80, 200, 0.003, 0.02),
    ("GET", "/v1/workers", 80, 200, 0.003, 0.02),
    ("GET", "/v1/cluster/logs", 80, 200, 0.003, 0.02),
    ("GET", "/v1/admin/users", 80, 200, 0.003, 0.02),
    ("GET", "/v1/admin/keys", 80, 200, 0.003, 0.02),
    ("POST", "/v1/model_registrations/LLM", 80, 200, 0.003, 0.02),
    ("GET", "/v1/cache/models", 80, 200, 0.003, 0.02),
    ("DELETE", "/v1/cache/models", 80, 200, 0.003, 0.02),
    ("GET", "/v1/audit/search", 80, 200, 0.003, 0.02),
    ("PUT", "/v1/admin/security/rate-limit", 80, 200, 0.003, 0.02),
)
WEBUI_FILES = (
    "/_next/static/css/3f9f47f0f37fbd03.css",
    "/_next/static/chunks/webpack-89ab649ead6c3c0e.js",
    "/_next/static/chunks/4bd1b696-100b9d70ed4e49c1.js",
    "/_next/static/chunks/1255-c3d9d435d8e674cc.js",
    "/_next/static/chunks/main-app-5d0e4a2b7c1f9e83.js",
    "/_next/static/chunks/app/layout-0b6f5c2d3e4a1f09.js",
    "/_next/static/chunks/app/page-7e1d2c3b4a5f6e70.js",
    "/_next/static/media/logo.8c1f2e3d.svg",
    "/favicon.ico",
)
BROWSER = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
# Ordinary failures of allowed requests: bad input, unknown model, overload, upstream errors.
_ERROR_RATE = 0.012
_ERRORS = (400, 400, 400, 400, 404, 404, 422, 429, 500, 502, 504)
# Office hours shape of user-driven traffic, per hour of the day (UTC), linearly interpolated.
_OFFICE = (
    0.12,
    0.10,
    0.08,
    0.08,
    0.10,
    0.15,
    0.25,
    0.45,
    0.75,
    0.95,
    1.0,
    1.0,
    0.9,
    0.95,
    1.0,
    0.95,
    0.85,
    0.7,
    0.55,
    0.45,
    0.35,
    0.28,
    0.2,
    0.15,
)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def office_curve(t: float) -> float:
    """Relative load of user-driven traffic at `t` (1.0 = weekday business peak)."""
    hour = (t % DAY) / HOUR
    i = int(hour)
    frac = hour - i
    return _OFFICE[i] * (1 - frac) + _OFFICE[(i + 1) % 24] * frac


def weekday(t: float, start: float) -> int:
    """0 = Monday ... 6 = Sunday (day 0 of the simulation is a Monday)."""
    return int((t - start) // DAY) % 7


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def raw_key(rng: random.Random, native: bool) -> str:
    """A key as Xinference makes them: `xf-` + 48 characters (advanced auth) or legacy `sk-` + 13."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    if native:
        return "xf-" + "".join(rng.choices(alphabet, k=48))
    return "sk-" + "".join(rng.choices(alphabet, k=13))


class Log:
    """The requests of the simulation; `lines()` renders them as nginx combined_key, in time order."""

    __slots__ = ("entries", "last_use", "first_use")

    def __init__(self) -> None:
        self.entries: list[tuple[float, str, str]] = []
        self.first_use: dict[str, float] = {}  # alias -> first and last request with its key
        self.last_use: dict[str, float] = {}

    def add(
        self, ts: float, ip: str, route: Route, status: int, size: int, agent: str, auth: str, duration: float
    ) -> None:
        self.entries.append(
            (
                ts,
                ip,
                f'"{route[0]} {route[1]} HTTP/1.1" {status} {size} "-" "{agent}" "{auth}" {duration:.3f}',
            )
        )

    def used(self, alias: str, ts: float) -> None:
        if ts < self.first_use.get(alias, math.inf):
            self.first_use[alias] = ts
        if ts > self.last_use.get(alias, -math.inf):
            self.last_use[alias] = ts

    def lines(self) -> list[str]:
        self.entries.sort(key=itemgetter(0))  # stable: equal times keep the order they were drawn in
        days: dict[int, str] = {}
        out = []
        for ts, ip, rest in self.entries:
            sec = int(ts)
            day, rem = divmod(sec, 86400)
            prefix = days.get(day)
            if prefix is None:
                d = datetime.fromtimestamp(day * 86400, UTC)
                prefix = days[day] = f"{d.day:02d}/{_MONTHS[d.month - 1]}/{d.year}:"
            hour, rem = divmod(rem, 3600)
            out.append(f"{ip} - - [{prefix}{hour:02d}:{rem // 60:02d}:{rem % 60:02d} +0000] {rest}\n")
        return out


@dataclass(slots=True)
class Client:
    """Who sends a request: its user agent, its Authorization value and what it calls."""

    agent: str
    auth: str  # "Bearer <key>" or "-"
    routes: Sequence[Route]  # drawn uniformly: repeat a route to weight it
    alias: str | None = None  # the key's alias, for first/last use

    def send(
        self,
        log: Log,
        rng: random.Random,
        ts: float,
        ip: str,
        status: int | None = None,
        route: Route | None = None,
    ) -> None:
        """One request; `status` None: answered 200, or now and then an ordinary failure."""
        r = route or self.routes[int(rng.random() * len(self.routes))]
        if status is None:
            status = 200
            if rng.random() < _ERROR_RATE:
                status = _ERRORS[int(rng.random() * len(_ERRORS))]
        if status >= 400:
            size, duration = 60 + int(rng.random() * 120), r[4] * rng.random() + 0.001
        else:
            size = r[2] + int(rng.random() * (r[3] - r[2]))
            duration = r[4] + (r[5] - r[4]) * rng.random() ** 2
        log.add(ts, ip, r, status, size, self.agent, self.auth, duration)
        if self.alias is not None:
            log.used(self.alias, ts)

    def sender(self, log: Log, rng: random.Random, ip: str) -> Callable[[float], None]:
        """`send` from `ip` as a function of the time, for `stream`."""
        return lambda ts: self.send(log, rng, ts, ip)


def constant(rate: float) -> Callable[[float], float]:
    return lambda _t: rate


def stream(
    rng: random.Random, t0: float, t1: float, rate: Callable[[float], float], send: Callable[[float], None]
) -> int:
    """A Poisson stream from t0 to t1 at `rate(t)` requests/s (looked at once a minute); returns
    how many requests it sent."""
    n = 0
    t = t0
    while t < t1:
        step = min(MINUTE, t1 - t)
        for _ in range(poisson(rng, rate(t) * step)):
            send(t + rng.random() * step)
            n += 1
        t += step
    return n


class PodNetwork:
    """Pod addresses: one /24 per node of 10.244.0.0/16; an address is never handed out twice."""

    def __init__(self, rng: random.Random, nodes: int = 8) -> None:
        self.rng = rng
        self.nodes = nodes
        self.used: set[str] = set()

    def new(self) -> str:
        while True:
            ip = f"10.244.{self.rng.randrange(self.nodes)}.{self.rng.randrange(2, 255)}"
            if ip not in self.used:
                self.used.add(ip)
                return ip


@dataclass(slots=True)
class Deployment:
    """A Kubernetes Deployment calling Xinference with one service key: `replicas` pods whose
    addresses change with every rolling restart (one pod a minute) and reschedule."""

    name: str
    client: Client
    replicas: int
    peak: float  # requests/s at the weekday business peak
    weekend: float  # weekend load relative to weekdays
    flat: bool = False  # a steady pipeline, not user-driven: no office-hours shape
    pods: list[str] = field(default_factory=list)
    changes: list[tuple[float, int, str]] = field(default_factory=list)  # (time, replica, new address)
    rollouts: list[float] = field(default_factory=list)
    key_changes: list[tuple[float, Client]] = field(default_factory=list)  # new secret at a rollout

    def rate(self, t: float, start: float) -> float:
        load = 1.0 if self.flat else office_curve(t)
        return self.peak * load * (self.weekend if weekday(t, start) >= 5 else 1.0)

    def plan(
        self,
        rng: random.Random,
        net: PodNetwork,
        start: float,
        days: int,
        rollouts_per_weekday: tuple[int, int],
        reschedules_per_day: tuple[int, int],
    ) -> None:
        """Pods at `start`, then rolling restarts (weekday working hours) and single-pod reschedules."""
        self.pods = [net.new() for _ in range(self.replicas)]
        for day in range(days):
            base = start + day * DAY
            if day % 7 < 5:
                for _ in range(rng.randint(*rollouts_per_weekday)):
                    self.rollouts.append(base + 9 * HOUR + rng.random() * 9 * HOUR)
            for _ in range(rng.randint(*reschedules_per_day)):
                self.changes.append((base + rng.random() * DAY, rng.randrange(self.replicas), net.new()))
        self.rollouts.sort()
        for at in self.rollouts:
            self.changes.extend((at + i * MINUTE, i, net.new()) for i in range(self.replicas))
        self.changes.sort(key=itemgetter(0))

    def roll_at(self, at: float, net: PodNetwork) -> None:
        """An extra rolling restart at `at` (e.g. the one that brings a new key)."""
        self.rollouts.append(at)
        self.changes.extend((at + i * MINUTE, i, net.new()) for i in range(self.replicas))
        self.changes.sort(key=itemgetter(0))

    def pods_at(self, t: float) -> list[str]:
        pods = list(self.pods)
        for at, i, ip in self.changes:
            if at > t:
                break
            pods[i] = ip
        return pods

    def client_at(self, t: float) -> Client:
        client = self.client
        for at, c in self.key_changes:
            if at <= t:
                client = c
        return client

    def run(self, rng: random.Random, log: Log, start: float, end: float) -> int:
        pods = list(self.pods)
        changes = iter(self.changes)
        pending = next(changes, None)
        keys = iter(self.key_changes)
        next_key = next(keys, None)
        client = self.client
        n = 0
        t = start
        while t < end:
            while pending is not None and pending[0] <= t:
                pods[pending[1]] = pending[2]
                pending = next(changes, None)
            while next_key is not None and next_key[0] <= t:
                client = next_key[1]
                next_key = next(keys, None)
            for _ in range(poisson(rng, self.rate(t, start) * MINUTE)):
                client.send(log, rng, t + rng.random() * MINUTE, pods[int(rng.random() * len(pods))])
                n += 1
            t += MINUTE
        return n

    def addresses(self) -> int:
        return len(self.pods) + len(self.changes)
