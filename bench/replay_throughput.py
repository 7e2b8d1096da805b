#!/usr/bin/env python3
"""Replay throughput: xinf-watch against the I/O floor and a grep-level tool, on 1M nginx lines.

Generates N `combined_key` lines with gen_combined_key.py (and its keys.yaml) into a work
directory (reused when it already holds the same N lines), then measures, in one run:

  a) baseline 1: read the file line by line in Python and decode each line (the I/O floor)
  b) baseline 2: the same plus one precompiled regex match per line (what a grep-level tool does)
  c) `xinf-watch replay --quiet --metrics-out` with the keys and no rules
  d) the same with the shipped rules (rules/rules.yaml's rules section)
  e) d) with `--events` written to /dev/null

Every measurement runs in a child process; peak RSS is that child's `ru_maxrss` (os.wait4).
Baselines time their loop inside the child (best of --baseline-runs); the xinf-watch rows are
wall-clock times of the whole command, interpreter start and imports included (the `startup`
row shows that part), best of --runs.

    python bench/replay_throughput.py                 # 1,000,000 lines in $TMPDIR/xinf-watch-bench
    python bench/replay_throughput.py --lines 200000 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GENERATOR = HERE / "gen_combined_key.py"
SHIPPED_RULES = REPO / "rules" / "rules.yaml"

# The child programs of the two baselines: they print the seconds their loop took.
READ_DECODE = """
import sys, time
t = time.perf_counter()
n = 0
with open(sys.argv[1], "rb") as f:
    for raw in f:
        line = raw.rstrip(b"\\r\\n").decode("utf-8", "replace")
        n += 1
print(time.perf_counter() - t, n)
"""
READ_DECODE_REGEX = """
import re, sys, time
COMBINED_KEY = re.compile(
    r'(?P<ip>\\S+) \\S+ (?P<user>\\S+) \\[(?P<time>[^\\]]+)\\] "(?P<method>\\S+) (?P<path>\\S+) [^"]*" '
    r'(?P<status>\\d{3}) (?P<bytes>\\d+|-) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)" '
    r'"(?P<auth>[^"]*)" (?P<duration>\\S+)$'
)
match = COMBINED_KEY.match
t = time.perf_counter()
n = matched = 0
with open(sys.argv[1], "rb") as f:
    for raw in f:
        line = raw.rstrip(b"\\r\\n").decode("utf-8", "replace")
        n += 1
        if match(line) is not None:
            matched += 1
assert matched == n, (matched, n)
print(time.perf_counter() - t, n)
"""


@dataclass(frozen=True)
class Result:
    name: str
    seconds: float
    lines: int
    peak_rss_mib: float
    runs: int


def run_child(argv: Sequence[str], stdout: int | None = subprocess.PIPE) -> tuple[float, str, float]:
    """(wall seconds, stdout, peak RSS MiB) of one child process; raises if it fails."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE)
    out = proc.stdout.read().decode() if proc.stdout is not None else ""
    err = proc.stderr.read().decode() if proc.stderr is not None else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{err}")
    return wall, out, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def baseline(name: str, program: str, log: Path, runs: int) -> Result:
    best, rss, lines = float("inf"), 0.0, 0
    for _ in range(runs):
        _, out, peak = run_child([sys.executable, "-c", program, str(log)])
        seconds, n = out.split()
        best, rss, lines = min(best, float(seconds)), max(rss, peak), int(n)
    return Result(name, best, lines, rss, runs)


def xinf_watch(name: str, argv: Sequence[str], lines: int, runs: int, to_devnull: bool = False) -> Result:
    best, rss = float("inf"), 0.0
    for _ in range(runs):
        stdout = subprocess.DEVNULL if to_devnull else subprocess.PIPE
        wall, _, peak = run_child([sys.executable, "-m", "xinf_watch", *argv], stdout=stdout)
        best, rss = min(best, wall), max(rss, peak)
    return Result(name, best, lines, rss, runs)


def prepare(work: Path, lines: int) -> tuple[Path, Path, Path, Path]:
    """The log, its keys.yaml and two rules files (no rules / shipped rules); the log is reused."""
    work.mkdir(parents=True, exist_ok=True)
    log, keys, stamp = work / "access.log", work / "keys.yaml", work / "generated.json"
    wanted = {"lines": lines, "generator_mtime_ns": GENERATOR.stat().st_mtime_ns}
    if not (log.exists() and keys.exists() and stamp.exists() and json.loads(stamp.read_text()) == wanted):
        print(f"generating {lines:,} lines into {log} ...", file=sys.stderr)
        subprocess.run(
            [sys.executable, GENERATOR, "--lines", str(lines), "--out", log, "--keys-out", keys],
            check=True,
        )
        stamp.write_text(json.dumps(wanted))
    shipped = yaml.safe_load(SHIPPED_RULES.read_text(encoding="utf-8"))
    source = {"name": "gateway", "path": str(log), "format": "nginx", "log_format": "combined_key"}
    no_rules, with_rules = work / "rules-keys-only.yaml", work / "rules-shipped.yaml"
    no_rules.write_text(yaml.safe_dump({"sources": [source], "keys": [str(keys)], "rules": []}))
    shipped.update(sources=[source], keys=[str(keys)])
    with_rules.write_text(yaml.safe_dump(shipped, sort_keys=False))
    return log, keys, no_rules, with_rules


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu}; "
        f"Python {platform.python_version()} ({platform.python_implementation()}); "
        f"{platform.system()} {platform.release()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument(
        "--dir", type=Path, default=Path(tempfile.gettempdir()) / "xinf-watch-bench", help="work directory"
    )
    parser.add_argument("--runs", type=int, default=1, help="runs of each xinf-watch row (best is shown)")
    parser.add_argument("--baseline-runs", type=int, default=3, help="runs of each baseline (best is shown)")
    args = parser.parse_args()

    log, _, no_rules, with_rules = prepare(args.dir, args.lines)
    size_mib = log.stat().st_size / 2**20
    metrics = args.dir / "metrics.prom"
    base = ["replay", "--quiet", "--metrics-out", str(metrics)]
    startup, _, startup_rss = run_child([sys.executable, "-m", "xinf_watch", "--version"])
    results = [
        baseline("a) read + decode (I/O floor)", READ_DECODE, log, args.baseline_runs),
        baseline("b) read + decode + 1 regex match", READ_DECODE_REGEX, log, args.baseline_runs),
    ]
    lines = results[0].lines
    results += [
        xinf_watch("c) replay, keys, no rules", [*base, "--rules", str(no_rules)], lines, args.runs),
        xinf_watch("d) replay, keys, shipped rules", [*base, "--rules", str(with_rules)], lines, args.runs),
        xinf_watch(
            "e) d) + --events > /dev/null",
            [*base, "--rules", str(with_rules), "--events"],
            lines,
            args.runs,
            to_devnull=True,
        ),
    ]
    parsed = [ln for ln in metrics.read_text().splitlines() if ln.startswith("xinf_watch_lines_total{")]

    print(f"\n{lines:,} lines, {size_mib:,.0f} MiB ({log}); {machine()}\n")
    header = ["measurement", "runs", "seconds (best)", "lines/s", "lines/s w/o startup", "vs. I/O floor"]
    print("| " + " | ".join([*header, "peak RSS (MiB)"]) + " |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    floor = results[0].seconds
    for i, r in enumerate(results):
        net = "-" if i < 2 else f"{r.lines / (r.seconds - startup):,.0f}"
        print(
            f"| {r.name} | {r.runs} | {r.seconds:.2f} | {r.lines / r.seconds:,.0f} | {net} | "
            f"{r.seconds / floor:.1f}x | {r.peak_rss_mib:,.0f} |"
        )
    print(f"| startup: `xinf-watch --version` | 1 | {startup:.2f} | - | - | - | {startup_rss:,.0f} |")
    print(f"\nlast replay counted: {'; '.join(parsed)}")


if __name__ == "__main__":
    main()
