"""The simulated world of simulate/run.py: its keys, its clients and their schedules (a realistic week
in front of Xinference with advanced auth, behind nginx); the ordinary traffic they send is
simulate/routine.py, besides the Deployments' own (simulate/traffic.py).

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
from xinf_watch.simulate.traffic import (
    CHAT,
    COMPLETION,
    DAY,
    EMBED,
    HOUR,
    IMAGE,
    LIST_MODELS,
    MINUTE,
    MODEL_INFO,
    RERANK,
    SPEECH,
    TRANSCRIBE,
    Client,
    Deployment,
    Log,
    PodNetwork,
    Route,
    raw_key,
)

START = datetime(2026, 11, 30, tzinfo=UTC).timestamp()  # a Monday
SERVICE = ("models:list", "models:read")


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

    # --- the cast of the ordinary week (simulate/routine.py runs its traffic) ---------------------

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
