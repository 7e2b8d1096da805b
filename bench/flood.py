"""An alert flood against the live daemon: what it costs, and how late a critical alert is in it.

A benchmark, not a test: it prints a markdown table (bench/README.md keeps the results).

The real daemon process follows a file that this script appends `--lines` gateway lines to, as
fast as it can, each the WebUI answered to an outside address of its own (what a scanner making
up addresses, or a misrouted load balancer, looks like). Halfway through, one line is a revoked
key that got an answer: `key-state-not-enforced`, critical. The rules are the shipped ones that
these lines reach (`webui-external`, `revoked-key-used`, `key-state-not-enforced`, from
rules/rules.yaml), notifying a local json:// receiver, with the daemon's default delivery.

It runs twice in one go, side by side: with the shipped flood limit (`max_alerts` unset: 20 per
rule in 10 minutes) and with `max_alerts: 0` (no limit: xinf-watch before the limit existed).
For each: seconds from writing the critical line to its arrival at the receiver, seconds until
every line was counted, outbox rows and alert journal lines at that moment, state.db size,
messages and alerts the receiver got by `--settle` seconds after the last line was counted, and
how many /metrics scrapes got no answer within 5 s meanwhile.

Usage (from the repository root, xinf-watch installed):
    python3 bench/flood.py                      # 200,000 lines
    python3 bench/flood.py --lines 1000000
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from harness import FIXTURE_KEYS, Workspace, parsed_lines  # noqa: E402
from latency import TimedReceiver, machine  # noqa: E402

RULES = ("webui-external", "revoked-key-used", "key-state-not-enforced")
CHUNK = 2000  # lines per write(2)


@dataclass
class Result:
    label: str
    critical_seconds: float
    counted_seconds: float
    outbox_rows: int
    journal_lines: int
    state_db_mib: float
    messages: int
    alerts: int
    slow_scrapes: int


def shipped_rules(max_alerts: int | None) -> list[dict[str, Any]]:
    shipped = yaml.safe_load((ROOT / "rules" / "rules.yaml").read_text())["rules"]
    rules = [dict(r, notify=["ops"]) for r in shipped if r["name"] in RULES]
    if max_alerts is not None:
        rules = [dict(r, max_alerts=max_alerts) for r in rules]
    return rules


def revoked_key() -> str:
    entries = yaml.safe_load(FIXTURE_KEYS.read_text())["keys"]
    return str(next(e["key"] for e in entries if e.get("revoked")))


def stamp() -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())


def webui_line(n: int) -> str:
    ip = f"{100 + n // 65536 % 100}.{n // 256 % 256}.{n % 256}.7"  # outside every internal network
    return f'{ip} - - [{stamp()}] "GET /ui/ HTTP/1.1" 200 1480 "-" "Mozilla/5.0" "-" 0.001\n'


def critical_line(key: str) -> str:
    request = '"GET /v1/models HTTP/1.1" 200 431 "-" "curl/8.5"'
    return f'10.1.0.45 - - [{stamp()}] {request} "Bearer {key}" 0.002\n'


def write_webui(log: TextIO, start: int, stop: int) -> None:
    for first in range(start, stop, CHUNK):
        log.write("".join(webui_line(n) for n in range(first, min(stop, first + CHUNK))))
        log.flush()


def run(label: str, max_alerts: int | None, lines: int, settle: float) -> Result:
    receiver = TimedReceiver()
    with tempfile.TemporaryDirectory(prefix="xinf-watch-flood-") as tmp:
        ws = Workspace(Path(tmp))
        ws.log.touch()
        ws.write_rules(rules=shipped_rules(max_alerts), notify={"ops": [f"json://127.0.0.1:{receiver.port}/x"]})
        daemon = ws.daemon()
        try:
            daemon.start()
            half = lines // 2
            with ws.log.open("a") as log:
                write_webui(log, 0, half)
                log.write(critical_line(revoked_key()))
                log.flush()
                written_at = time.monotonic()
                write_webui(log, half, lines)
            finished_writing = time.monotonic()

            def critical_arrived() -> float | None:
                for at, alert in list(receiver.arrivals):
                    if alert["rule"] == "key-state-not-enforced":
                        return at
                return None

            deadline = time.monotonic() + 1200
            slow_scrapes = 0
            while time.monotonic() < deadline:
                try:
                    if parsed_lines(daemon.metrics()) >= lines + 1:
                        break
                except OSError:  # no answer in 5 s: the daemon is busy with a batch of alerts
                    slow_scrapes += 1
                time.sleep(0.2)
            counted = time.monotonic()
            outbox = sqlite3.connect(ws.state / "state.db", timeout=10).execute("SELECT count(*) FROM outbox")
            outbox_rows = int(outbox.fetchone()[0])
            journal_lines = len(ws.journal())
            state_db = sum(f.stat().st_size for f in ws.state.glob("state.db*")) / 2**20  # with its WAL
            while critical_arrived() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            arrived = critical_arrived()
            time.sleep(settle)
            daemon.terminate()
        finally:
            daemon.close()
            receiver.stop()
    return Result(
        label=label,
        critical_seconds=(arrived - written_at) if arrived is not None else float("inf"),
        counted_seconds=counted - finished_writing,
        outbox_rows=outbox_rows,
        journal_lines=journal_lines,
        state_db_mib=state_db,
        messages=len({at for at, _ in receiver.arrivals}),
        alerts=len(receiver.arrivals),
        slow_scrapes=slow_scrapes,
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=200_000, help="WebUI lines from outside (default 200000)")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds of delivery after the count (10)")
    args = ap.parse_args(argv)
    print(machine())
    print(f"{args.lines:,} WebUI lines from distinct outside addresses, one critical line halfway\n")
    print("| run | critical alert after its line | all lines counted after the writer | outbox rows "
          "| journal lines | state.db | messages received | alerts received | /metrics timeouts (5 s) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |", flush=True)
    runs = (("shipped limit (max_alerts 20 / 10 min)", None), ("no limit (max_alerts: 0)", 0))
    for label, max_alerts in runs:
        r = run(label, max_alerts, args.lines, args.settle)
        print(f"| {r.label} | {r.critical_seconds:.2f} s | {r.counted_seconds:.1f} s | {r.outbox_rows:,} "
              f"| {r.journal_lines:,} | {r.state_db_mib:.1f} MiB | {r.messages:,} "
              f"| {r.alerts:,} | {r.slow_scrapes} |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
