#!/usr/bin/env python3
"""Live throughput: the real daemon tailing a log that a writer appends to as fast as it can.

The daemon (`python -m xinf_watch --rules R`, tests/harness.py's DaemonProcess, as
bench/latency.py runs it, at `--log-level info`) runs the shipped rules (the `rules:` section of
rules/rules.yaml) on one `combined_key` source, an empty file at the start, with the keys of
bench/gen_combined_key.py's issue-10 mix (40 keys, 2,000 addresses, 4 % 401, 1 % 403).
A writer thread renders that mix's requests (a pool of --pool of them, cycled) with the current
time and appends them one write(2) per line, as nginx does without `buffer=`, for --seconds.

Reported: lines/s written; lines/s processed while writing (`xinf_watch_lines_total`, every result);
what the daemon was behind when the writer stopped (lines, and `xinf_watch_source_lag_bytes`);
how long it took to get to zero (waiting at most --drain seconds); the daemon's RSS
(/proc/PID/status VmRSS) idle before the run, the largest sample during it (every --sample s),
its VmHWM (the kernel's peak), and idle after catching up. With --notify the rules' `ops` group
has one apprise URL (json:// to a local receiver: apprise and its plugins loaded, as in a deployment
that notifies); without it the group is empty and the daemon never loads apprise.

    python bench/live.py                      # 30 s
    python bench/live.py --seconds 2 --rate 5000 --pool 2000   # what tests/test_bench.py runs
    python bench/live.py --notify             # the same with a notify URL
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from gen_combined_key import Traffic, combined_key  # noqa: E402
from harness import DaemonProcess, Metrics, Workspace, json_url, total  # noqa: E402
from latency import machine  # noqa: E402
from receivers import HTTPReceiver  # noqa: E402

SHIPPED_RULES = HERE.parent / "rules" / "rules.yaml"
MIX = {"keys": 40, "addresses": 2000}  # and 4 % 401, 1 % 403: as bench/throughput.py's log


def rss_mib(pid: int, field_name: str = "VmRSS") -> float:
    """A `Vm*` field of /proc/PID/status, in MiB (0 once the process is gone)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024  # kB
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system time of the process so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14, 15


def processed(m: Metrics) -> int:
    return int(total(m, "xinf_watch_lines_total"))


def lag_bytes(m: Metrics) -> int:
    return int(total(m, "xinf_watch_source_lag_bytes"))


class Writer(threading.Thread):
    """Appends pre-rendered requests, stamped with the current second, one write(2) a line."""

    def __init__(
        self, path: Path, pool: list[tuple[bytes, bytes]], seconds: float, rate: float | None
    ) -> None:
        super().__init__(name="writer", daemon=True)
        self.path, self.pool, self.seconds, self.rate = path, pool, seconds, rate
        self.lines = self.bytes = 0
        self.started = self.finished = 0.0

    def run(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        pool, n_pool = self.pool, len(self.pool)
        second, stamp = 0, b""
        self.started = time.monotonic()
        lines = written = 0
        try:
            while True:
                if lines % 256 == 0:
                    now, elapsed = time.time(), time.monotonic() - self.started
                    if elapsed >= self.seconds:
                        break
                    if self.rate is not None and lines / self.rate > elapsed:
                        time.sleep(lines / self.rate - elapsed)
                    if int(now) != second:
                        second = int(now)
                        stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)).encode()
                head, tail = pool[lines % n_pool]
                written += os.write(fd, head + stamp + tail)  # a short write of a regular file: disk full
                lines += 1
        finally:
            self.finished = time.monotonic()
            os.close(fd)
            self.lines, self.bytes = lines, written


class Sampler(threading.Thread):
    """Every `every` seconds until `stop`: the daemon's VmRSS and its processed-line count."""

    def __init__(self, daemon: DaemonProcess, every: float) -> None:
        super().__init__(name="sampler", daemon=True)
        assert daemon.proc is not None
        self.xinf_watch, self.pid, self.every = daemon, daemon.proc.pid, every
        self.rss: list[float] = []
        self.counts: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.every):
            self.rss.append(rss_mib(self.pid))
            with contextlib.suppress(OSError):
                self.counts.append((time.monotonic(), processed(self.xinf_watch.metrics())))


def render_pool(traffic: Traffic, size: int) -> list[tuple[bytes, bytes]]:
    """`size` requests as the bytes before and after their timestamp."""
    pool = []
    for _ in range(size):
        head, tail = combined_key(traffic.request(), "\0").split("\0")
        pool.append((head.encode(), tail.encode()))
    return pool


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0, help="how long the writer writes (default 30)")
    ap.add_argument(
        "--drain", type=float, default=120.0, help="longest wait for the daemon to catch up (default 120 s)"
    )
    ap.add_argument("--pool", type=int, default=20_000, help="distinct requests the writer cycles through")
    ap.add_argument("--sample", type=float, default=0.5, help="seconds between RSS and /metrics samples")
    ap.add_argument("--rate", type=float, help="at most this many lines/s (default: as fast as it can)")
    ap.add_argument("--settle", type=float, default=1.0, help="idle seconds before the RSS before and after")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--notify", action="store_true", help="the ops group gets a json:// URL to a local receiver"
    )
    args = ap.parse_args(argv)
    print(f"machine: {machine()}", flush=True)

    traffic = Traffic(args.seed, **MIX, p401=0.04, p403=0.01)
    pool = render_pool(traffic, args.pool)
    shipped = yaml.safe_load(SHIPPED_RULES.read_text(encoding="utf-8"))
    receiver = HTTPReceiver().start() if args.notify else None
    with tempfile.TemporaryDirectory(prefix="xinf-watch-live-") as tmp:
        ws = Workspace(Path(tmp))
        keys = ws.root / "keys.yaml"
        keys.write_text(traffic.keys_yaml())
        ws.log.touch()
        notify = {"ops": [json_url(receiver, "live")] if receiver is not None else []}
        ws.write_rules(rules=shipped["rules"], keys=[keys], notify=notify, networks=shipped["networks"])
        daemon = DaemonProcess(ws.rules, ws.root, ws.port, args=["--log-level", "info"])
        try:
            daemon.start()
            assert daemon.proc is not None
            pid = daemon.proc.pid
            daemon.wait_holds_open(ws.log)
            daemon.metrics()  # a scrape, as Prometheus would make, before the idle figure
            time.sleep(args.settle)
            rss_idle, cpu_before = rss_mib(pid), cpu_seconds(pid)

            sampler = Sampler(daemon, args.sample)
            writer = Writer(ws.log, pool, args.seconds, args.rate)
            sampler.start()
            writer.start()
            writer.join()
            at_stop = daemon.metrics()
            stopped = time.monotonic()
            behind_lines, behind_bytes = writer.lines - processed(at_stop), lag_bytes(at_stop)
            caught_up: float | None = None
            now = at_stop
            while time.monotonic() - stopped < args.drain:
                if processed(now) >= writer.lines and lag_bytes(now) == 0:
                    caught_up = time.monotonic() - stopped
                    break
                time.sleep(0.05)
                now = daemon.metrics()
            sampler.stop.set()
            sampler.join()
            final = daemon.metrics()
            time.sleep(args.settle)
            rss_after, rss_peak = rss_mib(pid), rss_mib(pid, "VmHWM")
            cpu_used = cpu_seconds(pid) - cpu_before
            daemon.terminate(timeout=30)
        finally:
            daemon.close()
            if receiver is not None:
                receiver.stop()

    took = writer.finished - writer.started
    during = [n for at, n in sampler.counts if at <= writer.finished]
    processed_writing = processed(at_stop)
    parsed = int(total(final, "xinf_watch_lines_total", result="parsed"))
    capped = f", at most {args.rate:g}/s" if args.rate else ""
    notified = f"notify: json:// ({len(receiver.requests)} messages received)" if receiver else "notify: none"
    print(
        f"\n{took:.1f} s of writing, shipped rules ({len(shipped['rules'])}), pool of {args.pool:,} "
        f"requests, one write(2) per line{capped}; {notified}; {len(during)} samples while writing\n"
    )
    print("| measurement | value |")
    print("| --- | ---: |")
    print(f"| lines written | {writer.lines:,} ({writer.bytes / 2**20:,.0f} MiB) |")
    print(f"| written lines/s | {writer.lines / took:,.0f} |")
    print(f"| processed lines/s while writing | {processed_writing / took:,.0f} |")
    print(f"| behind when the writer stopped, lines | {behind_lines:,} |")
    print(f"| behind when the writer stopped, xinf_watch_source_lag_bytes | {behind_bytes:,} |")
    if caught_up is not None:
        print(f"| caught up (lag 0) after the writer stopped, s | {caught_up:.2f} |")
        if behind_lines > 0 and caught_up > 0:
            print(f"| processed lines/s while catching up | {behind_lines / caught_up:,.0f} |")
        overall = writer.lines / (took + caught_up)
        print(f"| processed lines/s overall (writing + catching up) | {overall:,.0f} |")
    else:
        print(f"| caught up (lag 0) after the writer stopped, s | not within {args.drain:g} s: "
              f"{writer.lines - processed(final):,} lines, {lag_bytes(final):,} bytes behind |")  # fmt: skip
    per_cpu = f"{processed(final) / cpu_used:,.0f}" if cpu_used > 0 else "-"
    print(
        f"| daemon CPU s (user + system, writing to the end), lines per CPU s | {cpu_used:.2f}, {per_cpu} |"
    )
    print(f"| RSS idle before, MiB | {rss_idle:.1f} |")
    print(f"| RSS during, max of samples, MiB | {max(sampler.rss, default=0.0):.1f} |")
    print(f"| RSS peak (VmHWM), MiB | {rss_peak:.1f} |")
    print(f"| RSS idle after, MiB | {rss_after:.1f} |")
    print(f"\nparsed {parsed:,} of {writer.lines:,} lines; machine at the end: {machine()}")
    return 0 if caught_up is not None and parsed == writer.lines else 1


if __name__ == "__main__":
    raise SystemExit(main())
