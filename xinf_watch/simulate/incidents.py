"""The incidents injected into a simulated week (simulate/run.py), their ground truth, and which
rules count as catching each of them.

Eleven incidents at seeded times, one per equal slot of the span in a shuffled order (the reuse
of the key revoked on Wednesday goes to a slot after its revocation). Each leaves the lines an
attacker, a broken client or a misconfiguration would leave, and an `Incident` saying when, which
key aliases and addresses, and which rules catch it (`CATCHING_RULES`).
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from xinf_watch.model import format_ts
from xinf_watch.simulate.traffic import (
    BROWSER,
    CHAT,
    DAY,
    EMBED,
    HOUR,
    LIST_MODELS,
    MINUTE,
    MODEL_INFO,
    OUT_OF_SCOPE,
    WEBUI_FILES,
    Client,
    Route,
    raw_key,
    stream,
)

if TYPE_CHECKING:
    from xinf_watch.simulate.world import World

# ================================================================================================
# THE rule-name table: which rules of rules/rules.yaml count as catching each incident kind.
# When a rule is renamed or added there, rename or add it here (and only here).
CATCHING_RULES: dict[str, tuple[str, ...]] = {
    "leaked-key": ("new-ip-for-key", "key-outside-allowed-ips", "rate-spike"),
    "key-spraying": ("key-spraying", "denied-burst"),
    "denied-burst": ("denied-burst",),
    "revoked-key-reused": ("revoked-key-used",),
    "expired-key-reused": ("expired-key-used",),
    "scope-probe": ("scope-violation",),
    "webui-external": ("webui-external",),
    "admin-external": ("admin-route-external",),
    "runaway-client": ("rate-spike",),
    "state-not-enforced": ("key-state-not-enforced", "revoked-key-used"),
    "partner-outside-allowlist": ("key-outside-allowed-ips", "new-ip-for-key"),
}
# Hygiene notices, not incidents: an alert of these rules about a key that a client still uses
# after the alert (it would break that client) is expected, neither true nor false positive; about
# a key nobody uses any more (its clients moved to a successor) it is noise, a false positive.
NOTICE_RULES: tuple[str, ...] = ("key-expiring",)
# ================================================================================================

_ADMIN_ROUTES: tuple[Route, ...] = (
    ("GET", "/v1/admin/users", 400, 3000, 0.005, 0.05),
    ("GET", "/v1/admin/keys", 400, 3000, 0.005, 0.05),
    ("GET", "/v1/cluster/info", 300, 1200, 0.005, 0.05),
    ("GET", "/v1/workers", 300, 1200, 0.005, 0.05),
    ("GET", "/v1/admin/keys/7/reveal", 100, 200, 0.005, 0.05),
    ("GET", "/v1/admin/security/banned-ips", 40, 200, 0.005, 0.05),
)
_JWT_HEADER = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"  # {"alg":"HS256","typ":"JWT"}
_PUBLIC_UI: tuple[Route, ...] = (
    ("GET", "/v1/cluster/auth", 20, 40, 0.002, 0.01),
    ("GET", "/v1/cluster/ui_config", 40, 200, 0.002, 0.01),
)


@dataclass(frozen=True, slots=True)
class Incident:
    id: str
    kind: str
    start: float
    end: float
    keys: tuple[str, ...]  # aliases of the keys involved
    ips: tuple[str, ...]  # client addresses involved
    what: str

    @property
    def rules(self) -> tuple[str, ...]:
        return CATCHING_RULES[self.kind]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "start": format_ts(self.start),
            "end": format_ts(self.end),
            "keys": list(self.keys),
            "ips": list(self.ips),
            "rules": list(self.rules),
            "what": self.what,
        }


def jwt(rng: random.Random, user: str, issued: float, scopes: list[str]) -> str:
    """A session token as Xinference issues them (HS256; the signature is random bytes here)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    payload = {"sub": user, "scopes": scopes, "exp": int(issued + 12 * 3600)}
    signature = b64(bytes(rng.randrange(256) for _ in range(32)))
    return f"{_JWT_HEADER}.{b64(json.dumps(payload).encode())}.{signature}"


class _Injector:
    def __init__(self, world: World) -> None:
        self.w = world
        self.rng = world.rng
        self.taken: set[str] = set()

    def outside(self, net: str = "203.0.113") -> str:
        while True:
            ip = f"{net}.{self.rng.randrange(2, 255)}"
            if ip not in self.taken:
                self.taken.add(ip)
                return ip

    def burst(self, t: float, seconds: float, n: int, send: Any) -> float:
        """n requests spread over `seconds` from t (the first at t); returns the last one's time."""
        times = sorted([t] + [t + self.rng.random() * seconds for _ in range(n - 1)])
        for ts in times:
            send(ts)
        return times[-1]

    def key_client(self, alias: str, agent: str, routes: tuple[Route, ...]) -> Client:
        return Client(agent, f"Bearer {self.w.keys[alias].key}", routes, alias)

    def make(self, kind: str, t: float) -> Incident:
        """The lines of one incident of `kind` from time t on, and its ground truth."""
        maker = _MAKERS.get(kind)
        if maker is None:
            raise ValueError(kind)
        return maker(self, kind, t)

    def _leaked_key(self, kind: str, t: float) -> Incident:
        rng, log = self.rng, self.w.log
        alias = rng.choice(["bob-notebook", "carol-dev", "dave-ws", "gina-analyst", "ivan-dev"])
        ip = self.outside()
        c = self.key_client(alias, "python-requests/2.32.3", (CHAT, CHAT, LIST_MODELS, MODEL_INFO))
        end = self.burst(
            t, rng.uniform(10, 25) * MINUTE, rng.randint(15, 40), lambda ts: c.send(log, rng, ts, ip, 200)
        )
        return Incident("", kind, t, end, (alias,), (ip,), f"{alias}'s key used from outside ({ip})")

    def _key_spraying(self, kind: str, t: float) -> Incident:
        rng, log = self.rng, self.w.log
        ip = self.outside()

        def spray(ts: float) -> None:
            guess = raw_key(rng, native=rng.random() < 0.5)
            Client("Go-http-client/1.1", f"Bearer {guess}", (LIST_MODELS,)).send(log, rng, ts, ip, 401)

        end = self.burst(t, rng.uniform(2, 4) * MINUTE, rng.randint(30, 60), spray)
        return Incident("", kind, t, end, (), (ip,), f"different unknown keys tried from {ip}")

    def _denied_burst(self, kind: str, t: float) -> Incident:
        rng, log = self.rng, self.w.log
        ip = self.outside()
        c = Client("OpenAI/Python 1.82.0", f"Bearer {raw_key(rng, native=True)}", (CHAT,))
        end = self.burst(
            t, rng.uniform(40, 58), rng.randint(30, 60), lambda ts: c.send(log, rng, ts, ip, 401)
        )
        return Incident("", kind, t, end, (), (ip,), f"a dead key hammering from {ip}: 401s")

    def _revoked_key_reused(self, kind: str, t: float) -> Incident:
        rng, w, log = self.rng, self.w, self.w.log
        alias, ip = "ml-pipeline-v1", w.net.new()  # a pod nobody updated, in another namespace
        c = self.key_client(alias, "python-httpx/0.27.2", (EMBED, CHAT))
        end = self.burst(
            t, rng.uniform(3, 10) * MINUTE, rng.randint(5, 15), lambda ts: c.send(log, rng, ts, ip, 401)
        )
        return Incident("", kind, t, end, (alias,), (ip,), f"{alias} used after its revocation, refused")

    def _expired_key_reused(self, kind: str, t: float) -> Incident:
        rng, log = self.rng, self.w.log
        alias, ip = "old-ci-2024", f"10.30.1.{rng.randint(10, 40)}"
        c = self.key_client(alias, "python-httpx/0.27.2", (LIST_MODELS, CHAT))
        end = self.burst(
            t, rng.uniform(1, 3) * MINUTE, rng.randint(3, 10), lambda ts: c.send(log, rng, ts, ip, 401)
        )
        return Incident("", kind, t, end, (alias,), (ip,), f"expired {alias} used again, refused")

    def _scope_probe(self, kind: str, t: float) -> Incident:
        rng, w, log = self.rng, self.w, self.w.log
        alias = rng.choice(["henry-intern", "ivan-dev", "dave-ws", "judy-ml"])
        ip = w.address_of(alias, t)
        c = self.key_client(alias, "curl/8.5.0", OUT_OF_SCOPE)
        probes = rng.sample(OUT_OF_SCOPE, rng.randint(6, 10))
        times = sorted(t + rng.random() * rng.uniform(1, 3) * MINUTE for _ in probes[1:])
        for ts, route in zip([t, *times], probes, strict=True):
            c.send(log, rng, ts, ip, 403, route)
        return Incident(
            "",
            kind,
            t,
            max([t, *times]),
            (alias,),
            (ip,),
            f"{alias} probing admin routes, {len(probes)} refused",
        )

    def _webui_external(self, kind: str, t: float) -> Incident:
        rng, log = self.rng, self.w.log
        ip = self.outside()
        c = Client(BROWSER, "-", ())
        page: list[Route] = [("GET", "/", 1500, 4000, 0.002, 0.01)]
        page += [("GET", p, 2000, 90000, 0.002, 0.02) for p in WEBUI_FILES] + list(_PUBLIC_UI)
        ts = t
        for route in page:
            c.send(log, rng, ts, ip, 200, route)
            ts += rng.random() * 2
        return Incident("", kind, t, ts, (), (ip,), f"the WebUI answered {ip} (outside)")

    def _admin_external(self, kind: str, t: float) -> Incident:
        rng, log = self.rng, self.w.log
        ip = self.outside()
        token = jwt(rng, "frank", t - 3 * 3600, ["admin"])  # a stolen session
        c = Client("python-requests/2.32.3", f"Bearer {token}", _ADMIN_ROUTES)
        end = self.burst(
            t, rng.uniform(2, 6) * MINUTE, rng.randint(5, 10), lambda ts: c.send(log, rng, ts, ip, 200)
        )
        return Incident("", kind, t, end, (), (ip,), f"admin routes answered to {ip} (outside)")

    def _runaway_client(self, kind: str, t: float) -> Incident:
        rng, w, log = self.rng, self.w, self.w.log
        deployment = w.deployments[rng.choice(["doc-summarizer", "support-assistant", "translation-svc"])]
        c = deployment.client_at(t)
        pods = deployment.pods_at(t)
        length = rng.uniform(30, 60) * MINUTE
        last = [t]

        def runaway(ts: float) -> None:
            c.send(log, rng, ts, pods[int(rng.random() * len(pods))])
            last[0] = max(last[0], ts)

        # 19x its weekday peak on top of its normal traffic: 20x its busiest usual rate
        stream(rng, t, t + length, lambda _t: 19 * deployment.peak, runaway)
        alias = c.alias or ""
        return Incident(
            "",
            kind,
            t,
            last[0],
            (alias,),
            tuple(pods),
            f"{alias} at 20x its usual rate for {length / MINUTE:.0f} min (retry loop)",
        )

    def _state_not_enforced(self, kind: str, t: float) -> Incident:
        rng, log = self.rng, self.w.log
        alias, ip = "ex-contractor", f"10.8.{rng.randrange(256)}.{rng.randrange(2, 255)}"
        c = self.key_client(alias, "OpenAI/Python 1.82.0", (CHAT, LIST_MODELS))
        end = self.burst(
            t, rng.uniform(2, 10) * MINUTE, rng.randint(3, 8), lambda ts: c.send(log, rng, ts, ip, 200)
        )
        return Incident("", kind, t, end, (alias,), (ip,), f"revoked {alias} answered 200")

    def _partner_outside_allowlist(self, kind: str, t: float) -> Incident:
        rng, log = self.rng, self.w.log
        alias, ip = "partner-acme", self.outside("192.0.2")
        c = self.key_client(alias, "python-requests/2.32.3", (CHAT, CHAT, EMBED, LIST_MODELS))
        end = self.burst(
            t, rng.uniform(5, 15) * MINUTE, rng.randint(5, 20), lambda ts: c.send(log, rng, ts, ip, 200)
        )
        return Incident("", kind, t, end, (alias,), (ip,), f"{alias} used from {ip}, outside its allowed_ips")


# How each kind of CATCHING_RULES is made: a kind missing here raises ValueError in `make`.
_MAKERS: dict[str, Callable[[_Injector, str, float], Incident]] = {
    "leaked-key": _Injector._leaked_key,
    "key-spraying": _Injector._key_spraying,
    "denied-burst": _Injector._denied_burst,
    "revoked-key-reused": _Injector._revoked_key_reused,
    "expired-key-reused": _Injector._expired_key_reused,
    "scope-probe": _Injector._scope_probe,
    "webui-external": _Injector._webui_external,
    "admin-external": _Injector._admin_external,
    "runaway-client": _Injector._runaway_client,
    "state-not-enforced": _Injector._state_not_enforced,
    "partner-outside-allowlist": _Injector._partner_outside_allowlist,
}


def inject(world: World) -> list[Incident]:
    """Every kind of `CATCHING_RULES` once, at a seeded time in its own slot of the span, none in
    the first hour (a replay starts with empty rule state), the runaway client not before its key
    has a day of history (its usual rate at every hour: a live daemon has it, a replay from Monday
    00:00 has not), the revoked key's reuse after its revocation."""
    rng = world.rng
    n_slots = len(CATCHING_RULES)
    slot = (world.end - world.start) / n_slots
    earliest = dict.fromkeys(CATCHING_RULES, world.start + HOUR)
    earliest["runaway-client"] = world.start + min(DAY, (world.end - world.start) / 2)
    earliest["revoked-key-reused"] = world.revoke_at + HOUR
    placed: dict[int, str] = {}
    for kind in ("revoked-key-reused", "runaway-client"):  # the constrained ones first
        fits = [
            j
            for j in range(n_slots)
            if j not in placed and world.start + (j + 1) * slot - 2 * HOUR >= earliest[kind]
        ]
        placed[rng.choice(fits or [max(set(range(n_slots)) - set(placed))])] = kind
    rest = [k for k in CATCHING_RULES if k not in placed.values()]
    rng.shuffle(rest)
    kinds = [placed[j] if j in placed else rest.pop() for j in range(n_slots)]
    injector = _Injector(world)
    incidents = []
    for n, kind in enumerate(kinds):
        begin = max(world.start + n * slot + 10 * MINUTE, earliest[kind])
        t = rng.uniform(begin, max(begin, world.start + (n + 1) * slot - 100 * MINUTE))
        incident = injector.make(kind, t)
        day = int((t - world.start) // DAY)
        incidents.append(
            Incident(
                f"{n + 1:02d}-{kind}",
                kind,
                incident.start,
                incident.end,
                incident.keys,
                incident.ips,
                f"day {day}: {incident.what}",
            )
        )
    return incidents
