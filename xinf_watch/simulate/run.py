"""A seeded, realistic week of nginx traffic in front of Xinference, with injected incidents and
their ground truth: the evidence for alert quality (`bench/alert_quality.py`, `xinf-watch simulate`).

`simulate(days, seed)` is pure: the same seed gives the same lines, keys and truth; no clock is
read. The world is simulate/world.py, its ordinary traffic simulate/routine.py, the incidents and the table of
the rules that catch them simulate/incidents.py, the line buffer and the traffic primitives
simulate/traffic.py. Raw keys are in the lines and keys.yaml only, never in the truth.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson
import yaml

from xinf_watch import SHIPPED_RULES
from xinf_watch.model import format_ts
from xinf_watch.simulate.incidents import NOTICE_RULES, Incident, inject
from xinf_watch.simulate.routine import run_batches, run_infrastructure, run_people, run_webui
from xinf_watch.simulate.world import SimKey, World


@dataclass(frozen=True, slots=True)
class Simulation:
    seed: int
    days: int
    start: float
    end: float
    lines: list[str]
    keys: tuple[SimKey, ...]
    incidents: tuple[Incident, ...]
    notices: tuple[dict[str, Any], ...]
    facts: dict[str, Any]

    def keys_yaml(self) -> str:
        return yaml.safe_dump({"keys": [k.to_yaml() for k in self.keys]}, sort_keys=False)

    def truth(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "days": self.days,
            "start": format_ts(self.start),
            "end": format_ts(self.end),
            "lines": len(self.lines),
            "incidents": [i.to_json() for i in self.incidents],
            "notices": list(self.notices),
            "facts": self.facts,
        }


def simulate(days: int = 7, seed: int = 1) -> Simulation:
    """`days` of gateway traffic from Monday 00:00 UTC with the incidents of simulate/incidents.py."""
    if days < 1:
        raise ValueError("days must be at least 1")
    world = World(seed, days)
    world.make_keys()
    world.make_deployments()
    world.make_people()
    for deployment in world.deployments.values():
        deployment.run(world.rng, world.log, world.start, world.end)
    run_people(world)
    run_webui(world)
    run_batches(world)
    run_infrastructure(world)
    incidents = inject(world)
    log = world.log
    world.facts["pod_addresses"] = {name: d.addresses() for name, d in world.deployments.items()}
    world.facts["rollouts"] = {name: len(d.rollouts) for name, d in world.deployments.items()}
    world.facts["revoke_at"] = format_ts(world.revoke_at)
    notices = tuple(
        {
            "rules": list(NOTICE_RULES),
            "key": alias,
            "first_use": format_ts(log.first_use[alias]),
            "last_use": format_ts(log.last_use[alias]),
        }
        for alias in world.keys
        if alias in log.last_use
    )
    return Simulation(
        seed,
        days,
        world.start,
        world.end,
        log.lines(),
        tuple(world.keys.values()),
        tuple(incidents),
        notices,
        world.facts,
    )


def rules_for(shipped: Path, directory: Path) -> str:
    """`shipped` (a rules.yaml) pointed at the simulation's access.log and keys.yaml in `directory`."""
    config = yaml.safe_load(shipped.read_text())
    directory = directory.resolve()
    sources = [s for s in config.get("sources") or [] if s.get("format") == "nginx"][:1] or [
        {"name": "gateway", "format": "nginx"}
    ]
    config["sources"] = [{**sources[0], "path": str(directory / "access.log"), "log_format": "combined_key"}]
    config["keys"] = [str(directory / "keys.yaml")]
    config["state"] = {"dir": str(directory / "state")}
    config.pop("alertmanager", None)
    return yaml.safe_dump(config, sort_keys=False)


def write_simulation(sim: Simulation, directory: Path, shipped: Path) -> None:
    """access.log, keys.yaml, rules.yaml (`shipped` pointed at them) and truth.json into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "access.log").open("w") as f:
        f.writelines(sim.lines)
    (directory / "keys.yaml").write_text(sim.keys_yaml())
    (directory / "rules.yaml").write_text(rules_for(shipped, directory))
    (directory / "truth.json").write_bytes(orjson.dumps(sim.truth(), option=orjson.OPT_INDENT_2) + b"\n")




def run_simulate(days: int, seed: int, out: Path, rules: Path | None, stdout: TextIO) -> int:
    """`xinf-watch simulate`: write the files of `simulate(days, seed)` into `out`."""
    if days < 1:
        sys.stderr.write("xinf-watch: simulate: --days must be at least 1\n")
        return 2
    sim = simulate(days, seed)
    write_simulation(sim, out, rules or SHIPPED_RULES)
    stdout.write(
        f"{out}: access.log ({len(sim.lines):,} nginx combined_key lines, {days} day(s) from "
        f"{format_ts(sim.start)}), keys.yaml ({len(sim.keys)} keys), rules.yaml, truth.json "
        f"({len(sim.incidents)} incidents)\n"
        f"replay it: xinf-watch replay --rules {out / 'rules.yaml'}\n"
    )
    return 0
