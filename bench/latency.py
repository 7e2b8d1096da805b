"""Latency of the live daemon: from a line written to (a) its effect on /metrics, (b) its alert at a
local HTTP receiver. A benchmark, not a test: it prints p50/p99/max and a markdown row.

The real daemon process (`python -m xinf_watch`) follows a file that a writer thread appends real
gateway lines to at `--rate` lines/s (one write(2) per line) for `--seconds`. Every `--incident-every`
seconds one of those lines comes from an address of its own, which a `match` rule alerts on.

(a) A poller thread GETs /metrics in a tight loop. For every line i, its latency is the time the
    first scrape that counted it (`xinf_watch_lines_total{result="parsed"}` > i) returned, minus
    the time its write returned. The scrape's own duration is included (an upper bound).
(b) The receiver notes when each alert's POST arrives; minus the time its line was written.
    The incidents are all alerts of one rule, so with grouping on (`--group-interval`, the
    daemon's default is 30s) every one after the first would wait for its group's interval by
    design: the benchmark turns grouping off (0s) to measure the pipeline itself.

Usage (from the repository root, xinf-watch installed):
    python3 bench/latency.py                     # 5,000 lines/s for 20 s
    python3 bench/latency.py --rate 10000 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness import FileSink, LogWriter, Workspace, denied_line  # noqa: E402

from xinf_watch.delivery.text import alerts_in  # noqa: E402

PARSED = re.compile(rb'^xinf_watch_lines_total\{[^}]*result="parsed"[^}]*\} ([0-9.e+]+)$', re.M)

ALERT_RULE = {
    "name": "marker", "kind": "match", "when": {"ip": ["203.0.113.0/24"]}, "by": ["ip"], "cooldown": "0s",
    "severity": "info", "notify": ["bench"],
}  # fmt: skip


class TimedReceiver:
    """Records (arrival time, alert JSON) for every apprise json:// POST."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                at = time.monotonic()
                for alert in alerts_in(json.loads(body)["message"]):
                    receiver.arrivals.append((at, alert))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


class Poller:
    """Scrapes /metrics back to back; keeps (time the response was in, parsed lines)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[tuple[float, int]] = []
        self.scrape_seconds: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            began = time.monotonic()
            with urllib.request.urlopen(self.url, timeout=5) as r:
                body = r.read()
            done = time.monotonic()
            m = PARSED.search(body)
            self.samples.append((done, int(float(m.group(1))) if m else 0))
            self.scrape_seconds.append(done - began)


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def line_latencies(times: Sequence[float], samples: Sequence[tuple[float, int]], skip: int) -> list[float]:
    out: list[float] = []
    seen = skip
    for at, count in samples:
        while seen < min(count, len(times)):
            out.append(at - times[seen])
            seen += 1
    return out


def machine() -> str:
    model = "?"
    with open("/proc/cpuinfo") as f:
        for row in f:
            if row.startswith("model name"):
                model = row.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    python = platform.python_version()
    return (
        f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}, Python {python}; load average {load}"
    )


def summary(name: str, values: Sequence[float]) -> str:
    ms = [v * 1000 for v in values]
    p50, p90, p99 = (percentile(ms, p) for p in (50, 90, 99))
    return (
        f"{name}: n={len(ms)} p50={p50:.1f} ms p90={p90:.1f} ms p99={p99:.1f} ms "
        f"max={max(ms):.1f} ms mean={statistics.fmean(ms):.1f} ms"
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=5000.0, help="lines per second (default 5000)")
    ap.add_argument("--seconds", type=float, default=20.0, help="how long to write (default 20)")
    ap.add_argument("--incident-every", type=float, default=0.4, help="seconds between alerting lines")
    ap.add_argument("--group-interval", default="0s", help="delivery.group_interval (default 0s: off)")
    args = ap.parse_args(argv)
    print(machine())

    receiver = TimedReceiver()
    with tempfile.TemporaryDirectory(prefix="xinf-watch-latency-") as tmp:
        ws = Workspace(Path(tmp))
        ws.log.touch()
        ws.write_rules(rules=[ALERT_RULE], notify={"bench": [f"json://127.0.0.1:{receiver.port}/bench"]},
                       extra={"delivery": {"group_interval": args.group_interval}})  # fmt: skip
        daemon = ws.daemon()
        try:
            daemon.start()
            total = int(args.rate * args.seconds)
            every = max(1, int(args.rate * args.incident_every))
            incident_index: dict[str, int] = {}
            writer: LogWriter

            def incident(seq: int) -> list[str]:
                if seq % every != every - 1:
                    return []
                ip = f"203.0.113.{len(incident_index) % 250 + 1}"
                if ip in incident_index:
                    return []
                incident_index[ip] = writer.count  # the index the incident line gets
                return [denied_line(seq, ip)]

            poller = Poller(daemon.url)
            writer = LogWriter(
                FileSink(ws.log), total=total, rate=args.rate, extra=incident, record_times=True
            )
            poller.thread.start()
            writer.start()
            writer.join(timeout=args.seconds * 3 + 60)
            deadline = time.monotonic() + 10
            while (
                not poller.samples or poller.samples[-1][1] < writer.count
            ) and time.monotonic() < deadline:
                time.sleep(0.01)
            while len(receiver.arrivals) < len(incident_index) and time.monotonic() < deadline:
                time.sleep(0.01)
            poller.stop.set()
            poller.thread.join()
            daemon.terminate()
        finally:
            daemon.close()
            receiver.stop()

    assert writer.times is not None
    took = writer.finished_at - writer.started_at
    achieved = writer.count / took
    print(
        f"wrote {writer.count} lines in {took:.1f}s ({achieved:,.0f} lines/s), "
        f"{len(incident_index)} alerting lines; {len(poller.samples)} scrapes"
    )
    metrics_lat = line_latencies(writer.times, poller.samples, 0)
    by_ip = {a["group"]["ip"]: at for at, a in receiver.arrivals if a["status"] == "firing"}
    alert_lat = [by_ip[ip] - writer.times[i] for ip, i in incident_index.items() if ip in by_ip]
    missing = len(incident_index) - len(alert_lat)
    print(summary("(a) line written -> counted on /metrics", metrics_lat))
    print(summary("    /metrics scrape itself", poller.scrape_seconds))
    print(summary("(b) line written -> alert at the HTTP receiver", alert_lat))
    if missing:
        print(f"    {missing} alerts did not arrive")
    print()
    print("| rate | lines | (a) p50 | (a) p99 | (a) max | (b) alerts | (b) p50 | (b) p99 | (b) max |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    a = [v * 1000 for v in metrics_lat]
    b = [v * 1000 for v in alert_lat]
    row = [f"{achieved:,.0f}/s", f"{writer.count:,}"]
    row += [f"{percentile(a, 50):.0f} ms", f"{percentile(a, 99):.0f} ms", f"{max(a):.0f} ms", str(len(b))]
    row += [f"{percentile(b, 50):.0f} ms", f"{percentile(b, 99):.0f} ms", f"{max(b):.0f} ms"]
    print("| " + " | ".join(row) + " |")
    return 0 if len(metrics_lat) == writer.count and not missing else 1


if __name__ == "__main__":
    raise SystemExit(main())
