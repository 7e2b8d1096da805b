#!/usr/bin/env python3
"""The per-line cost of shared rule state (`state.shared`, issue 12), side by side in one run.

On the seeded combined log of bench/throughput.py (generated into --dir, or reused) with the
shipped rules, in process, the daemon's turn shape: lines in read batches of --batch lines, the
rules' clock advanced after each batch. Rows:

  local                       Pipeline.process_line per line, no shared state (today's daemon)
  shared, one instance        the same lines through a deferred pipeline and FleetSync: one round
                              trip per batch to a real redis-server (publish + read back), the
                              events decoded from the stream and judged, alerts claimed
  fleet of 3, per instance    three instances in this process, the lines dealt round robin per
                              batch: each parses and attributes its third and judges all of them;
                              lines/s is the fleet's lines over the time of one instance's share
                              of the work (total time / 3), i.e. what each instance's core must do
                              per line of the whole fleet
  local, per instance of 3    the same split without shared state: each instance does a third

The redis-server is this script's own (a free loopback port, a temporary directory), stopped by
its process id at the end. CPU seconds here are this process's: the Redis server's own CPU is
reported apart.

    python bench/shared.py                          # 200,000 lines, batches of 1,000
    python bench/shared.py --lines 2000 --batch 100 # seconds: what tests/test_bench.py runs
"""

from __future__ import annotations

import argparse
import gc
import logging
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from throughput import SHIPPED_RULES, generate  # noqa: E402

from xinf_watch.app.checkcmd import load_everything  # noqa: E402
from xinf_watch.app.fleetsync import FleetSync  # noqa: E402
from xinf_watch.app.pipeline import Pipeline  # noqa: E402
from xinf_watch.fleet.feed import FleetFeed  # noqa: E402
from xinf_watch.fleet.link import SharedLink  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (apt install redis-server)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit("redis-server did not start") from None
                time.sleep(0.05)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / 100  # utime, stime in clock ticks

    def flush(self) -> None:
        import redis

        redis.Redis.from_url(self.url).flushall()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def batches(lines: Sequence[str], size: int) -> list[Sequence[str]]:
    return [lines[i : i + size] for i in range(0, len(lines), size)]


def run_local(config: Path, parts: list[Sequence[str]], instances: int) -> tuple[float, float]:
    pipelines = [Pipeline.build(*load_everything(config)) for _ in range(instances)]
    source = next(iter(pipelines[0].stages))

    def work() -> None:
        for n, part in enumerate(parts):
            pipeline = pipelines[n % instances]
            for line in part:
                pipeline.process_line(source, line)
            if pipeline.engine.last_write is not None:
                pipeline.advance(pipeline.engine.last_write)

    return timed(work)


def run_shared(config: Path, parts: list[Sequence[str]], instances: int, url: str) -> tuple[float, float]:
    pipelines = [Pipeline.build(*load_everything(config), defer_rules=True) for _ in range(instances)]
    quiet = logging.getLogger("bench-shared")
    syncs = [FleetSync(FleetFeed(f"bench-{n}"), SharedLink(url), quiet) for n in range(instances)]
    source = next(iter(pipelines[0].stages))

    def work() -> None:
        for n, part in enumerate(parts):
            own = n % instances
            pipeline = pipelines[own]
            for line in part:
                pipeline.process_line(source, line)
            for sync, p in zip(syncs, pipelines, strict=True):  # every instance takes its turn
                engine = p.engine
                sync.turn(p, lambda engine=engine: engine.last_write)  # type: ignore[misc]
        for sync, p in zip(syncs, pipelines, strict=True):  # what the others published after its turn
            sync.turn(p, lambda: None)
            while sync.behind:
                sync.turn(p, lambda: None)

    seconds = timed(work)
    for sync in syncs:
        assert sync.feed.fed_events == sum(map(len, parts)), "an instance missed events of the fleet"
        sync.link.close()
    return seconds


def timed(work: Callable[[], None]) -> tuple[float, float]:
    """CPU seconds of this process, and wall seconds (round trips wait for Redis)."""
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    work()
    return time.process_time() - cpu, time.perf_counter() - wall


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000, help="lines per read batch (one round trip)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "xinf-watch-bench-shared")
    args = parser.parse_args(argv)

    log, _, keys = generate(args.dir, args.lines)
    config = yaml.safe_load(SHIPPED_RULES.read_text(encoding="utf-8"))
    config.update(sources=[{"name": "gateway", "path": str(log), "format": "nginx",
                            "log_format": "combined_key"}], keys=[str(keys)])  # fmt: skip
    config.pop("metrics", None)
    config.pop("state", None)
    rules = args.dir / "rules-shared.yaml"
    rules.write_text(yaml.safe_dump(config, sort_keys=False))
    lines = log.read_text(encoding="utf-8").splitlines()[: args.lines]
    parts = batches(lines, args.batch)

    with tempfile.TemporaryDirectory() as tmp:
        redis = Redis(Path(tmp))
        try:
            rows = [("local", run_local(rules, parts, 1), 1)]
            cpu = redis.cpu_seconds()
            rows.append(("shared, one instance", run_shared(rules, parts, 1, redis.url), 1))
            one_redis = redis.cpu_seconds() - cpu
            redis.flush()
            rows.append(("local, per instance of 3", run_local(rules, parts, 3), 3))
            cpu = redis.cpu_seconds()
            rows.append(("fleet of 3, per instance", run_shared(rules, parts, 3, redis.url), 3))
            three_redis = redis.cpu_seconds() - cpu
        finally:
            redis.stop()

    n = len(lines)
    print(f"\n{n:,} lines of the combined log, shipped rules, read batches of {args.batch:,} lines, "
          f"Python {sys.version.split()[0]}\n")  # fmt: skip
    print("| run | CPU s | wall s | lines/s (CPU) | µs CPU per line | vs local (CPU) | lines/s (wall) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    local = {1: rows[0][1][0], 3: rows[2][1][0]}
    for name, (cpu_s, wall_s), instances in rows:
        per_instance, wall_per_instance = cpu_s / instances, wall_s / instances
        cells = [name, f"{cpu_s:.2f}", f"{wall_s:.2f}", f"{n / per_instance:,.0f}",
                 f"{per_instance * 1e6 / n:.2f}", f"{local[instances] / cpu_s:.2f}x",
                 f"{n / wall_per_instance:,.0f}"]  # fmt: skip
        print("| " + " | ".join(cells) + " |")
    print(f"\nredis-server CPU: {one_redis:.2f} s (one instance), {three_redis:.2f} s (fleet of 3); "
          f"round trips: {len(parts):,} per instance, {len(parts) * 3:,} for the fleet")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
