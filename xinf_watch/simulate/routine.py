"""The ordinary traffic of the simulated world (simulate/world.py) besides its Deployments' own: people
at work and their one-off mistakes, the WebUI, nightly batches and CI bursts, infrastructure, the
partner and internet scanners.

Every draw comes from the world's one `random.Random`: simulate/run.py calls these functions in a fixed
order (run_people, run_webui, run_batches, run_infrastructure).
"""

from __future__ import annotations

from xinf_watch.model import format_ts
from xinf_watch.simulate.incidents import jwt
from xinf_watch.simulate.traffic import (
    BROWSER,
    CHAT,
    COMPLETION,
    DAY,
    EMBED,
    HOUR,
    INSTANCES,
    LIST_MODELS,
    MINUTE,
    MODEL_INFO,
    OUT_OF_SCOPE,
    RERANK,
    WEBUI_FILES,
    Client,
    Route,
    constant,
    office_curve,
    stream,
)
from xinf_watch.simulate.world import SERVICE, World

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


def run_people(world: World) -> None:
    """People on the days they work: bursts of requests, notebook loops, and their mistakes."""
    rng, log = world.rng, world.log
    loops = []
    for day in range(world.days):
        base = world.start + day * DAY
        work = world.weekday(day)
        for person in world.people.values():
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
        _mistakes(world, day, base, work)
    world.facts["notebook_loops"] = loops


def _mistakes(world: World, day: int, base: float, work: bool) -> None:
    """One-off refusals: a route an API key may not use (403), a mistyped key (401)."""
    rng, log = world.rng, world.log
    present = [p for p in world.people.values() if p.addresses[day] is not None]
    for person in rng.sample(present, min(len(present), rng.randint(2, 5) if work else rng.randint(0, 1))):
        t = base + (8.5 + rng.random() * 9.5) * HOUR
        person.client.send(
            log,
            rng,
            t,
            person.addresses[day] or person.office,
            403,
            OUT_OF_SCOPE[int(rng.random() * len(OUT_OF_SCOPE))],
        )
    for person in rng.sample(present, min(len(present), rng.randint(1, 3) if work else rng.randint(0, 1))):
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


def run_webui(world: World) -> None:
    """WebUI sessions on weekdays: the page, a login, then requests with the session token."""
    rng, log = world.rng, world.log
    users = [p for p in world.people.values() if p.webui]
    for day in range(world.days):
        if not world.weekday(day):
            continue
        base = world.start + day * DAY
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


def run_batches(world: World) -> None:
    """Nightly CronJobs (a new pod each night) and weekday CI bursts."""
    rng, log = world.rng, world.log
    indexer = world.deployments["search-indexer"]
    batches, bursts = [], []
    ci = world.client(
        "ci-runner", "python-httpx/0.27.2", (LIST_MODELS, CHAT, CHAT, EMBED, MODEL_INFO, RERANK)
    )
    for day in range(world.days):
        base = world.start + day * DAY
        t0 = base + 2 * HOUR + rng.random() * 4 * MINUTE
        length, factor = rng.uniform(30, 90) * MINUTE, rng.uniform(10, 20)
        pod = world.net.new()
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
        reports = world.client(alias, "python-requests/2.32.3", (CHAT, CHAT, COMPLETION, LIST_MODELS))
        t0 = base + 3.5 * HOUR + rng.random() * 3 * MINUTE
        rate, pod = rng.uniform(0.8, 1.2), world.net.new()
        stream(rng, t0, t0 + rng.uniform(10, 25) * MINUTE, constant(rate), reports.sender(log, rng, pod))
        if not world.weekday(day):
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
    world.facts["nightly_batches"] = batches
    world.facts["ci_bursts"] = bursts


def run_infrastructure(world: World) -> None:
    """Node probes, Prometheus, the uptime probe (rescheduled once), the partner, scanners."""
    rng, log = world.rng, world.log
    probe = Client("kube-probe/1.30", "-", (_STATUS,))
    scrape = Client("Prometheus/2.53.1", "-", (_METRICS,))
    uptime = world.client("uptime-probe", "Blackbox Exporter/0.25.0", (LIST_MODELS,))
    prometheus, uptime_pod = world.net.new(), world.net.new()
    moved = world.start + rng.random() * (world.end - world.start)
    uptime_next = world.net.new()
    t = world.start
    while t < world.end:
        if int(t) % 20 == 0:
            for node in ("10.0.1.11", "10.0.1.12"):
                probe.send(log, rng, t + rng.random() * 0.2, node, 200)
        if int(t) % 30 == 0:
            scrape.send(log, rng, t + 0.5 + rng.random() * 0.1, prometheus, 200)
        if int(t) % 60 == 0:
            uptime.send(log, rng, t + 1 + rng.random() * 0.3, uptime_pod if t < moved else uptime_next)
        t += 10
    partner = world.client("partner-acme", "python-requests/2.32.3", (CHAT, CHAT, CHAT, EMBED, LIST_MODELS))
    nat = ["198.51.100.10", "198.51.100.11", "198.51.100.12"]

    def partner_rate(t: float) -> float:
        return 0.12 * office_curve(t) * (1.0 if world.weekday(int((t - world.start) // DAY)) else 0.05)

    def partner_send(ts: float) -> None:
        pool = nat if ts - world.start < 3 * DAY else [*nat, "198.51.100.13"]  # a new egress address
        partner.send(log, rng, ts, pool[int(rng.random() * len(pool))])

    stream(rng, world.start, world.end, partner_rate, partner_send)
    for day in range(world.days):
        for _ in range(rng.randint(2, 6)):
            ip = f"198.{rng.randint(18, 19)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            t = world.start + day * DAY + rng.random() * DAY
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
