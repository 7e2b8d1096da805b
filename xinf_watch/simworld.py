"""The simulated world of simulate.py: its keys, its clients and their schedules, and the ordinary
traffic they send (a realistic week in front of Xinference with advanced auth, behind nginx).

Day 0 starts Monday 2026-11-30 00:00 UTC; 25 keys, ~105,000 requests on a weekday, ~55,000 on a
weekend day:
- service keys of Kubernetes Deployments whose pod addresses change with rolling restarts
  (several a weekday) and reschedules; nightly CronJobs with a new pod address each night: the
  search indexer's batch at 10-20x its daytime rate (02:00, 30-90 min) and the nightly reports;
- CI bursts (hundreds of requests in a few minutes) after idle hours on weekdays; people on the
  office network or the VPN (a new VPN address a day), notebook loops of 10-30 minutes;
- a partner key from its fixed outside /24 (its `allowed_ips`), the WebUI used from inside with
  session tokens, node health probes, Prometheus scrapes, an uptime probe, internet scanners
  refused by nginx (only /v1/ is open to the outside);
- one-off refused mistakes: a 403 when someone calls a route outside what an API key may use,
  a 401 from a mistyped key;
- `ml-pipeline-v1` revoked on Wednesday 10:00 (`revoked_at`) after its pods moved to
  `ml-pipeline-v2` at 09:30; `reports-2025` expiring on Saturday, its nightly job on
  `reports-2026` from Tuesday on; `search-indexer` expiring the Wednesday after the week.
Every draw comes from the world's one `random.Random`, in a fixed order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from xinf_watch.model import format_ts
from xinf_watch.simincidents import jwt
from xinf_watch.simtraffic import (
    BROWSER,
    CHAT,
    COMPLETION,
    DAY,
    EMBED,
    HOUR,
    IMAGE,
    INSTANCES,
    LIST_MODELS,
    MINUTE,
    MODEL_INFO,
    OUT_OF_SCOPE,
    RERANK,
    SPEECH,
    TRANSCRIBE,
    WEBUI_FILES,
    Client,
    Deployment,
    Log,
    PodNetwork,
    Route,
    constant,
    office_curve,
    raw_key,
    stream,
)

START = datetime(2026, 11, 30, tzinfo=UTC).timestamp()  # a Monday
SERVICE = ("models:list", "models:read")
_STATUS: Route = ("GET", "/status", 14, 16, 0.001, 0.003)
_METRICS: Route = ("GET", "/metrics", 20000, 30000, 0.01, 0.04)
_SCANS: tuple[Route, ...] = tuple(
    ("GET", p, 150, 160, 0.0, 0.001)
    for p in (
        "/",
        "/.env",
        "/wp-login.php",
        "/.git/config",
        "/robots.txt",
        "/favicon.ico",
        "/docs",
        "/owa/auth/logon.aspx",
        "/cgi-bin/luci",
        "/v1/models",
        "/actuator/health",
        "/server-status",
    )
)


@dataclass(frozen=True, slots=True)
class SimKey:
    alias: str
    key: str
    owner: str
    permissions: tuple[str, ...]
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    allowed_ips: tuple[str, ...] = ()

    def to_yaml(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "key": self.key,
            "alias": self.alias,
            "owner": self.owner,
            "permissions": list(self.permissions),
            "created_at": format_ts(self.created_at),
        }
        if self.expires_at is not None:
            entry["expires_at"] = format_ts(self.expires_at)
        entry["revoked"] = self.revoked_at is not None
        if self.revoked_at is not None:
            entry["revoked_at"] = format_ts(self.revoked_at)
        if self.allowed_ips:
            entry["allowed_ips"] = list(self.allowed_ips)
        return entry


@dataclass(slots=True)
class Person:
    client: Client
    office: str
    notebook: bool = False  # runs loops over a notebook now and then
    webui: bool = False  # uses the WebUI (a session token, not the key)
    addresses: list[str | None] = field(default_factory=list)  # per day; None: not working


class World:
    """The keys, clients and schedules of one simulated span, and the log they write."""

    def __init__(self, seed: int, days: int) -> None:
        self.rng = random.Random(seed)
        self.start, self.end, self.days = START, START + days * DAY, days
        self.log = Log()
        self.net = PodNetwork(self.rng)
        self.keys: dict[str, SimKey] = {}
        self.deployments: dict[str, Deployment] = {}
        self.people: dict[str, Person] = {}
        self.facts: dict[str, Any] = {}
        # Wednesday 10:00; a span too short for that revokes 60 % into it (its reuse must fit in)
        self.revoke_at = START + (2 * DAY + 10 * HOUR if days >= 3 else round(0.6 * days * 24) * HOUR)

    def key(
        self,
        alias: str,
        owner: str,
        *,
        native: bool = True,
        permissions: tuple[str, ...] = SERVICE,
        created: float = -120,
        expires: float | None = 200,
        revoked_at: float | None = None,
        allowed_ips: tuple[str, ...] = (),
    ) -> SimKey:
        """A key; `created` and `expires` are days from the start."""
        entry = SimKey(
            alias,
            raw_key(self.rng, native),
            owner,
            permissions,
            self.start + created * DAY,
            None if expires is None else self.start + expires * DAY,
            revoked_at,
            allowed_ips,
        )
        self.keys[alias] = entry
        return entry

    def client(self, alias: str, agent: str, routes: tuple[Route, ...]) -> Client:
        return Client(agent, f"Bearer {self.keys[alias].key}", routes, alias)

    def address_of(self, alias: str, t: float) -> str:
        person = self.people[alias]
        day = int((t - self.start) // DAY)
        return (person.addresses[day] if 0 <= day < len(person.addresses) else None) or person.office

    def weekday(self, day: int) -> bool:
        return day % 7 < 5

    # --- the ordinary week -------------------------------------------------------------------

    def make_keys(self) -> None:
        k = self.key
        k("chatbot-prod", "chatbot", created=-200)
        k("rag-api", "search")
        k("support-assistant", "support", created=-90)
        k("doc-summarizer", "docs", created=-150)
        k("translation-svc", "i18n", created=-60)
        k("search-indexer", "search", created=-350, expires=9 + 10 / 24)  # rotation due next week
        k("ml-pipeline-v1", "ml", created=-300, revoked_at=self.revoke_at)
        k("ml-pipeline-v2", "ml", created=(self.revoke_at - self.start) / DAY - 1 / 24)
        k("reports-2025", "finance", native=False, created=-360, expires=5.5)  # successor in use from Tuesday
        k("reports-2026", "finance", created=-9, expires=356)
        k("ci-runner", "platform", created=-60, expires=30)
        k("old-ci-2024", "platform", native=False, created=-400, expires=-30)
        k("uptime-probe", "platform", permissions=("models:list",), expires=None)
        k("partner-acme", "acme", created=-45, expires=90, allowed_ips=("198.51.100.0/24",))
        for alias, owner, native in (
            ("alice-laptop", "alice", False),
            ("bob-notebook", "bob", True),
            ("carol-dev", "carol", True),
            ("dave-ws", "dave", False),
            ("erin-research", "erin", True),
            ("gina-analyst", "gina", True),
            ("ivan-dev", "ivan", True),
            ("judy-ml", "judy", True),
        ):
            k(
                alias,
                owner,
                native=native,
                created=-self.rng.randint(20, 300),
                expires=self.rng.randint(40, 300),
            )
        k("henry-intern", "henry", created=-70, expires=20)
        k("frank-ops", "frank", permissions=("admin",), created=-500, expires=None)
        k(
            "ex-contractor",
            "contractor",
            native=False,
            created=-250,
            expires=100,
            revoked_at=self.start - 50 * DAY,
        )

    def make_deployments(self) -> None:
        specs = [  # name, agent, routes, replicas, peak req/s, weekend share, rollouts/weekday, flat
            (
                "chatbot-prod",
                "OpenAI/Python 1.82.0",
                (CHAT,) * 6 + (LIST_MODELS, MODEL_INFO),
                4,
                0.78,
                0.5,
                (1, 4),
                False,
            ),
            (
                "rag-api",
                "python-httpx/0.27.2",
                (EMBED,) * 4 + (RERANK, RERANK, CHAT, CHAT, CHAT, LIST_MODELS),
                3,
                0.45,
                0.5,
                (1, 3),
                False,
            ),
            (
                "support-assistant",
                "OpenAI/JS 4.67.3",
                (CHAT,) * 5 + (LIST_MODELS,),
                2,
                0.2,
                0.4,
                (1, 3),
                False,
            ),
            (
                "doc-summarizer",
                "xinference-client/1.9.0",
                (CHAT, CHAT, CHAT, COMPLETION, COMPLETION),
                2,
                0.12,
                0.3,
                (1, 3),
                False,
            ),
            (
                "translation-svc",
                "Go-http-client/1.1",
                (TRANSCRIBE, TRANSCRIBE, SPEECH, CHAT, IMAGE),
                2,
                0.06,
                0.3,
                (1, 2),
                False,
            ),
            ("search-indexer", "xinference-client/1.9.0", (EMBED,), 1, 0.03, 1.0, (0, 1), True),
            (
                "ml-pipeline-v1",
                "python-httpx/0.27.2",
                (EMBED, EMBED, CHAT, CHAT, RERANK),
                2,
                0.05,
                1.0,
                (0, 2),
                True,
            ),
        ]
        for name, agent, routes, replicas, peak, weekend, rollouts, flat in specs:
            d = Deployment(name, self.client(name, agent, routes), replicas, peak, weekend, flat)
            d.plan(self.rng, self.net, self.start, self.days, rollouts, (0, 2) if replicas > 1 else (0, 1))
            self.deployments[name] = d
        pipeline = self.deployments["ml-pipeline-v1"]
        switch = self.revoke_at - 30 * MINUTE  # the rollout with the new secret
        pipeline.roll_at(switch, self.net)
        pipeline.key_changes.append(
            (switch, self.client("ml-pipeline-v2", pipeline.client.agent, tuple(pipeline.client.routes)))
        )

    def make_people(self) -> None:
        agents = {
            "alice-laptop": "OpenAI/Python 1.82.0",
            "bob-notebook": "OpenAI/Python 1.82.0",
            "carol-dev": "python-httpx/0.27.2",
            "dave-ws": "curl/8.5.0",
            "erin-research": "OpenAI/Python 1.82.0",
            "gina-analyst": "OpenAI/JS 4.67.3",
            "ivan-dev": "xinference-client/1.9.0",
            "judy-ml": "OpenAI/Python 1.82.0",
            "henry-intern": "python-requests/2.32.3",
            "frank-ops": "xinference-client/1.9.0",
        }
        routes = (CHAT, CHAT, CHAT, LIST_MODELS, EMBED, MODEL_INFO, COMPLETION)
        for n, (alias, agent) in enumerate(agents.items()):
            self.people[alias] = Person(
                self.client(alias, agent, routes),
                f"192.168.10.{21 + n}",
                notebook=alias in ("bob-notebook", "erin-research", "judy-ml"),
                webui=alias in ("frank-ops", "alice-laptop", "gina-analyst"),
            )
        for day in range(self.days):
            for person in self.people.values():
                present = self.rng.random() < (0.9 if self.weekday(day) else 0.12)
                vpn = f"10.8.{self.rng.randrange(256)}.{self.rng.randrange(2, 255)}"
                person.addresses.append(
                    (person.office if self.rng.random() < 0.55 else vpn) if present else None
                )

    def run_people(self) -> None:
        rng, log = self.rng, self.log
        loops = []
        for day in range(self.days):
            base = self.start + day * DAY
            work = self.weekday(day)
            for person in self.people.values():
                ip = person.addresses[day]
                if ip is None:
                    continue
                for _ in range(rng.randint(2, 6) if work else 1):
                    t0 = base + (8 + rng.random() * 10.5) * HOUR
                    length = rng.uniform(2, 20) * MINUTE
                    for _ in range(rng.randint(3, 40)):
                        person.client.send(log, rng, t0 + rng.random() * length, ip)
                if person.notebook and work and rng.random() < 0.45:
                    t0 = base + (9.5 + rng.random() * 7.5) * HOUR
                    length, rate = rng.uniform(10, 30) * MINUTE, rng.uniform(0.5, 2.5)
                    loop = Client(person.client.agent, person.client.auth, (CHAT, EMBED), person.client.alias)
                    n = stream(rng, t0, t0 + length, constant(rate), loop.sender(log, rng, ip))
                    loops.append(
                        {
                            "key": loop.alias,
                            "start": format_ts(t0),
                            "minutes": round(length / MINUTE),
                            "requests": n,
                        }
                    )
            self.mistakes(day, base, work)
        self.facts["notebook_loops"] = loops

    def mistakes(self, day: int, base: float, work: bool) -> None:
        """One-off refusals: a route an API key may not use (403), a mistyped key (401)."""
        rng, log = self.rng, self.log
        present = [p for p in self.people.values() if p.addresses[day] is not None]
        for person in rng.sample(
            present, min(len(present), rng.randint(2, 5) if work else rng.randint(0, 1))
        ):
            t = base + (8.5 + rng.random() * 9.5) * HOUR
            person.client.send(
                log,
                rng,
                t,
                person.addresses[day] or person.office,
                403,
                OUT_OF_SCOPE[int(rng.random() * len(OUT_OF_SCOPE))],
            )
        for person in rng.sample(
            present, min(len(present), rng.randint(1, 3) if work else rng.randint(0, 1))
        ):
            key = person.client.auth
            i = rng.randrange(len("Bearer xx-"), len(key))
            typo = Client(
                person.client.agent,
                key[:i] + rng.choice("abcdefghXYZ0123") + key[i + 1 :],
                (CHAT, LIST_MODELS),
            )
            t = base + (8.5 + rng.random() * 9.5) * HOUR
            for _ in range(rng.randint(1, 2)):
                typo.send(log, rng, t, person.addresses[day] or person.office, 401)
                t += rng.uniform(2, 20)

    def run_webui(self) -> None:
        rng, log = self.rng, self.log
        users = [p for p in self.people.values() if p.webui]
        for day in range(self.days):
            if not self.weekday(day):
                continue
            base = self.start + day * DAY
            for _ in range(rng.randint(2, 5)):
                person = rng.choice(users)
                ip = person.addresses[day] or person.office
                t = base + (8.5 + rng.random() * 9.5) * HOUR
                browser = Client(BROWSER, "-", ())
                browser.send(log, rng, t, ip, 200, ("GET", "/", 1500, 4000, 0.002, 0.01))
                for path in rng.sample(WEBUI_FILES, rng.randint(4, len(WEBUI_FILES))):
                    browser.send(
                        log,
                        rng,
                        t + rng.random() * 2,
                        ip,
                        rng.choice((200, 304)),
                        ("GET", path, 2000, 90000, 0.002, 0.02),
                    )
                browser.send(log, rng, t + 2, ip, 200, ("GET", "/v1/cluster/auth", 20, 40, 0.002, 0.01))
                browser.send(log, rng, t + 9, ip, 200, ("POST", "/token", 300, 400, 0.05, 0.2))
                user = (person.client.alias or "").split("-")[0]
                scopes = ["admin"] if user == "frank" else list(SERVICE)
                routes = (LIST_MODELS, INSTANCES, INSTANCES) + (
                    (("GET", "/v1/cluster/info", 300, 1200, 0.005, 0.05),) if user == "frank" else ()
                )
                session = Client(BROWSER, f"Bearer {jwt(rng, user, t + 9, scopes)}", routes)
                length = rng.uniform(5, 40) * MINUTE
                for _ in range(rng.randint(10, 60)):
                    session.send(log, rng, t + 10 + rng.random() * length, ip)

    def run_batches(self) -> None:
        """Nightly CronJobs (a new pod each night) and weekday CI bursts."""
        rng, log = self.rng, self.log
        indexer = self.deployments["search-indexer"]
        batches, bursts = [], []
        ci = self.client(
            "ci-runner", "python-httpx/0.27.2", (LIST_MODELS, CHAT, CHAT, EMBED, MODEL_INFO, RERANK)
        )
        for day in range(self.days):
            base = self.start + day * DAY
            t0 = base + 2 * HOUR + rng.random() * 4 * MINUTE
            length, factor = rng.uniform(30, 90) * MINUTE, rng.uniform(10, 20)
            pod = self.net.new()
            n = stream(
                rng, t0, t0 + length, constant(factor * indexer.peak), indexer.client.sender(log, rng, pod)
            )
            batches.append(
                {
                    "key": "search-indexer",
                    "start": format_ts(t0),
                    "end": format_ts(t0 + length),
                    "factor": round(factor, 1),
                    "requests": n,
                    "address": pod,
                }
            )
            alias = "reports-2025" if day == 0 else "reports-2026"
            reports = self.client(alias, "python-requests/2.32.3", (CHAT, CHAT, COMPLETION, LIST_MODELS))
            t0 = base + 3.5 * HOUR + rng.random() * 3 * MINUTE
            rate, pod = rng.uniform(0.8, 1.2), self.net.new()
            stream(rng, t0, t0 + rng.uniform(10, 25) * MINUTE, constant(rate), reports.sender(log, rng, pod))
            if not self.weekday(day):
                continue
            count = rng.randint(2, 4)
            for i in range(count):
                t0 = base + (7 + (i + rng.random() * 0.6) * 14 / count) * HOUR
                length, n, runner = (
                    rng.uniform(2, 5) * MINUTE,
                    rng.randint(150, 600),
                    f"10.30.1.{rng.randint(10, 40)}",
                )
                for _ in range(n):
                    ci.send(log, rng, t0 + rng.random() * length, runner)
                bursts.append(
                    {
                        "key": "ci-runner",
                        "start": format_ts(t0),
                        "end": format_ts(t0 + length),
                        "requests": n,
                        "address": runner,
                    }
                )
        self.facts["nightly_batches"] = batches
        self.facts["ci_bursts"] = bursts

    def run_infrastructure(self) -> None:
        """Node probes, Prometheus, the uptime probe (rescheduled once), the partner, scanners."""
        rng, log = self.rng, self.log
        probe = Client("kube-probe/1.30", "-", (_STATUS,))
        scrape = Client("Prometheus/2.53.1", "-", (_METRICS,))
        uptime = self.client("uptime-probe", "Blackbox Exporter/0.25.0", (LIST_MODELS,))
        prometheus, uptime_pod = self.net.new(), self.net.new()
        moved = self.start + rng.random() * (self.end - self.start)
        uptime_next = self.net.new()
        t = self.start
        while t < self.end:
            if int(t) % 20 == 0:
                for node in ("10.0.1.11", "10.0.1.12"):
                    probe.send(log, rng, t + rng.random() * 0.2, node, 200)
            if int(t) % 30 == 0:
                scrape.send(log, rng, t + 0.5 + rng.random() * 0.1, prometheus, 200)
            if int(t) % 60 == 0:
                uptime.send(log, rng, t + 1 + rng.random() * 0.3, uptime_pod if t < moved else uptime_next)
            t += 10
        partner = self.client(
            "partner-acme", "python-requests/2.32.3", (CHAT, CHAT, CHAT, EMBED, LIST_MODELS)
        )
        nat = ["198.51.100.10", "198.51.100.11", "198.51.100.12"]

        def partner_rate(t: float) -> float:
            return 0.12 * office_curve(t) * (1.0 if self.weekday(int((t - self.start) // DAY)) else 0.05)

        def partner_send(ts: float) -> None:
            pool = nat if ts - self.start < 3 * DAY else [*nat, "198.51.100.13"]  # a new egress address
            partner.send(log, rng, ts, pool[int(rng.random() * len(pool))])

        stream(rng, self.start, self.end, partner_rate, partner_send)
        for day in range(self.days):
            for _ in range(rng.randint(2, 6)):
                ip = f"198.{rng.randint(18, 19)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
                t = self.start + day * DAY + rng.random() * DAY
                scanner = Client(
                    rng.choice(
                        (
                            "Mozilla/5.0 zgrab/0.x",
                            "python-requests/2.31.0",
                            "Mozilla/5.0 (compatible; CensysInspect/1.1)",
                        )
                    ),
                    "-",
                    (),
                )
                for route in rng.sample(_SCANS, rng.randint(3, 12)):
                    # nginx lets only /v1/ through from outside: Xinference asks for a key there
                    scanner.send(log, rng, t, ip, 401 if route[1].startswith("/v1/") else 403, route)
                    t += rng.random() * 5
