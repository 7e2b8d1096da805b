#!/usr/bin/env python3
"""Throughput, side by side in one run on the same seeded log: Python floors, `xinf-watch replay`,
its stages in process, mtail and fail2ban (issue 10).

Generates (once, into --dir, reused later) N lines of nginx `combined` + `"$http_authorization"` +
`$request_time` with bench/gen_combined_key.py (40 keys, 2,000 addresses, 4 % 401, 1 % 403) and
the same requests as nginx's `escape=json` log, then measures on each:

  Python floors (each loop timed inside its own child process):
    read + decode            read the file line by line and decode each line
    1 regex + dict incr      one precompiled regex match (JSON: orjson.loads) and a dict increment
    per-line sketch          the per-line work in plain dicts: parse (regex or orjson, timestamp
                             through a last-value cache), key lookup, scope by path prefix, counts
  xinf-watch (`python -m xinf_watch replay --quiet --metrics-out M --rules R`, the whole process):
    no rules                 the generated keys, no rules
    7 rules                  the 7 rules of the issue (bench/rules7.yaml)
    shipped rules            the `rules:` section of rules/rules.yaml
  Other tools (combined log only, when installed; whole process):
    mtail --one_shot         bench/mtail/xinf.mtail: parse, count per key/path/status
    fail2ban-regex           bench/fail2ban/xinf.conf: one failregex for 401/403
  In process (--stage-lines lines, each stage over all of them before the next, GC off):
    parse / attribute / metrics / rules, microseconds per line, and their sum next to the
    whole-process replay with the shipped rules

Every replay's `xinf_watch_lines_total{result="parsed"}` must equal the lines written, and mtail's
and fail2ban's match counts are checked, so a row never measures a tool that matched nothing.
Columns: seconds (best of --runs; wall time of the whole process, or of the loop for the floors),
CPU s (user + system of that process: more than `seconds` means more than one core), lines/s,
lines/s w/o startup (minus `xinf-watch --version`'s time), vs mtail (lines/s divided by mtail's,
on the combined log, for both tables), vs mtail, CPU (mtail's CPU s divided by the row's: the
same ratio by CPU time, which a machine shared with other work disturbs less), time vs
read+decode, peak RSS (the child's ru_maxrss).

    python bench/throughput.py                                   # 1,000,000 lines, best of 1
    python bench/throughput.py --lines 300000 --runs 3 --dir /tmp/tp
    python bench/throughput.py --lines 2000 --skip-external      # seconds; what tests/test_bench.py runs
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GENERATOR = HERE / "gen_combined_key.py"
SHIPPED_RULES = REPO / "rules" / "rules.yaml"
RULES7 = HERE / "rules7.yaml"
MTAIL_PROGRAM = HERE / "mtail" / "xinf.mtail"
FAIL2BAN_FILTER = HERE / "fail2ban" / "xinf.conf"
# The log of issue 10: 40 keys, 2,000 addresses, ~4 % 401, ~1 % 403.
MIX = ["--keys", "40", "--addresses", "2000", "--p401", "0.04", "--p403", "0.01"]

# -- the Python floors: child programs that print "<seconds> <lines>" ------------------------

_IMPORTS = """
import datetime, re, sys, time
import orjson, yaml
"""
_LOOP = """
t = time.perf_counter()
n = 0
counts = {}
with open(sys.argv[1], "rb") as f:
    for raw in f:
        line = raw.rstrip(b"\\r\\n").decode("utf-8", "replace")
        n += 1
%s
print(time.perf_counter() - t, n)
"""


def program(setup: str, body: str) -> str:
    """A floor loop's child program: `setup` once, `body` per line (indented 8, `line` decoded)."""
    return _IMPORTS + setup + _LOOP % body


COMBINED_RE = (
    r'(?P<ip>\S+) \S+ (?P<user>\S+) \[(?P<time>[^\]]+)\] "(?P<method>\S+) (?P<path>\S+) [^"]*" '
    r'(?P<status>\d{3}) (?P<bytes>\d+|-) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)" '
    r'"(?P<auth>[^"]*)" (?P<duration>\S+)$'
)
MATCH = f"match = re.compile({COMBINED_RE!r}).match\n"
READ_DECODE = program("", "")
REGEX_COUNT = program(
    MATCH,
    """
        s = match(line)["status"]
        counts[s] = counts.get(s, 0) + 1
""",
)
JSON_COUNT = program(
    "",
    """
        s = orjson.loads(line)["status"]
        counts[s] = counts.get(s, 0) + 1
""",
)
# The per-line sketch: what xinf-watch must do per line at the least, in plain dicts. argv[2] is
# the keys.yaml; scopes by path prefix (the longest first), cached per path as xinf-watch does.
_SKETCH_SETUP = """
keys = {"Bearer " + k["key"]: k["alias"] for k in yaml.safe_load(open(sys.argv[2]))["keys"]}
PREFIXES = sorted([("/v1/models", "models:list"), ("/v1/models/", "models:read"),
    ("/v1/chat/", "models:read"), ("/v1/embeddings", "models:read"), ("/v1/rerank", "models:read"),
    ("/v1/cluster/", "admin"), ("/v1/", "other"), ("/", "webui")], key=lambda p: -len(p[0]))
scope_of = {}
last_stamp, ts = None, 0.0
ips = {}
"""
_SKETCH_COUNT = """
        key = keys.get(auth)
        if key is None:
            key = "none" if auth in ("-", "") else "unknown"
        scope = scope_of.get(path)
        if scope is None:
            bare = path.split("?", 1)[0]
            scope = scope_of[path] = next(s for p, s in PREFIXES if bare.startswith(p))
        k = (key, scope, status // 100)
        counts[k] = counts.get(k, 0) + 1
        ips[(key, ip)] = ts
"""
SKETCH_COMBINED = program(
    MATCH + _SKETCH_SETUP,
    """
        m = match(line)
        ip, stamp, path, auth = m.group("ip", "time", "path", "auth")
        status = int(m["status"])
        if stamp != last_stamp:
            last_stamp = stamp
            ts = datetime.datetime.strptime(stamp, "%d/%b/%Y:%H:%M:%S %z").timestamp()
"""
    + _SKETCH_COUNT,
)
SKETCH_JSON = program(
    _SKETCH_SETUP,
    """
        o = orjson.loads(line)
        ip, stamp, path, auth, status = (
            o["remote_addr"], o["time_iso8601"], o["request_uri"], o["http_authorization"], o["status"])
        if stamp != last_stamp:
            last_stamp = stamp
            ts = datetime.datetime.fromisoformat(stamp).timestamp()
"""
    + _SKETCH_COUNT,
)

PARSED = re.compile(r'^xinf_watch_lines_total\{[^}]*result="parsed"[^}]*\} ([0-9.e+]+)$', re.M)


@dataclass
class Row:
    name: str
    seconds: float  # best of the runs
    lines: int
    rss_mib: float  # peak, of the child
    cpu: float | None = None  # user + system seconds of the fastest run (whole-process rows)
    startup: float = 0.0  # seconds of it that are interpreter start and imports (whole-process rows)

    @property
    def rate(self) -> float:
        return self.lines / self.seconds


@dataclass(frozen=True)
class Variant:
    name: str  # "combined_key" | "nginx-json"
    log: Path
    configs: dict[str, Path]  # "no rules" | "7 rules" | "shipped rules" -> rules.yaml


def run_child(argv: Sequence[str | Path]) -> tuple[float, str, float, float]:
    """(wall seconds, stdout, peak RSS MiB, CPU seconds) of one child process; raises if it fails."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([str(a) for a in argv], stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        code = os.waitstatus_to_exitcode(status)
        proc.returncode = code
        if code != 0:
            raise SystemExit(f"{' '.join(map(str, argv))} failed ({code}):\n{err.read().decode()[-4000:]}")
        cpu = usage.ru_utime + usage.ru_stime
        return wall, out.read().decode(errors="replace"), usage.ru_maxrss / 1024, cpu  # maxrss: KiB


def best(name: str, argv: Sequence[str | Path], lines: int, runs: int, check: Callable[[str], None]) -> Row:
    """Whole-process row: the best wall time of `runs`; `check` sees each run's stdout."""
    seconds, rss, cpu = float("inf"), 0.0, 0.0
    for _ in range(runs):
        wall, out, peak, used = run_child(argv)
        check(out)
        if wall < seconds:
            seconds, cpu = wall, used
        rss = max(rss, peak)
    return Row(name, seconds, lines, rss, cpu)


def floor(name: str, program: str, log: Path, keys: Path, runs: int) -> Row:
    """A Python floor loop, timed inside its child."""
    seconds, rss, lines = float("inf"), 0.0, 0
    for _ in range(runs):
        _, out, peak, _ = run_child([sys.executable, "-c", program, log, keys])
        took, n = out.split()
        seconds, rss, lines = min(seconds, float(took)), max(rss, peak), int(n)
    return Row(name, seconds, lines, rss)


def generate(work: Path, lines: int) -> tuple[Path, Path, Path]:
    """The combined log, the JSON log and keys.yaml in `work`; reused when already generated alike."""
    work.mkdir(parents=True, exist_ok=True)
    log, json_log, keys, stamp = (
        work / n for n in ("access.log", "access.json.log", "keys.yaml", "generated.json")
    )
    wanted = {"lines": lines, "mix": MIX, "generator": GENERATOR.read_text()}
    if not (
        log.exists() and json_log.exists() and stamp.exists() and json.loads(stamp.read_text()) == wanted
    ):
        print(f"generating {lines:,} lines (combined and JSON) into {work} ...", file=sys.stderr, flush=True)
        base: list[str | Path] = [sys.executable, GENERATOR, "--lines", str(lines), *MIX]
        subprocess.run([*base, "--out", log, "--keys-out", keys], check=True)
        subprocess.run([*base, "--json", "--out", json_log], check=True)
        stamp.write_text(json.dumps(wanted))
    return log, json_log, keys


def configs(work: Path, name: str, source: dict[str, str], keys: Path) -> dict[str, Path]:
    """The three rules.yaml of one log: keys and no rules, the 7 rules, the shipped rules."""
    out = {}
    for label, base in (("no rules", None), ("7 rules", RULES7), ("shipped rules", SHIPPED_RULES)):
        config = yaml.safe_load(base.read_text(encoding="utf-8")) if base else {"rules": []}
        config.update(sources=[source], keys=[str(keys)])
        config.pop("metrics", None)
        config.pop("state", None)
        path = out[label] = work / f"rules-{name}-{label.replace(' ', '-')}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
    return out


def replay_row(name: str, config: Path, lines: int, runs: int, work: Path) -> Row:
    metrics = work / "metrics.prom"

    def check(_: str) -> None:
        m = PARSED.search(metrics.read_text())
        parsed = int(float(m.group(1))) if m else 0
        if parsed != lines:
            raise SystemExit(f"{name}: replay parsed {parsed:,} of {lines:,} lines ({config})")

    argv: list[str | Path] = [
        sys.executable,
        "-m",
        "xinf_watch",
        "replay",
        "--quiet",
        "--metrics-out",
        metrics,
        "--rules",
        config,
    ]
    return best(name, argv, lines, runs, check)


def mtail_row(log: Path, lines: int, runs: int) -> Row | str:
    if shutil.which("mtail") is None:
        return "mtail: not installed (apt-get install mtail)"

    def check(out: str) -> None:
        m = re.search(r"^xinf_lines_matched\{[^}]*\} ([0-9.e+]+)", out, re.M)
        if m is None or int(float(m.group(1))) != lines:
            raise SystemExit(f"mtail matched {m.group(1) if m else 'no'} lines of {lines:,}")

    argv: list[str | Path] = ["mtail", "--one_shot", "--one_shot_format", "prometheus", "--progs",
                              MTAIL_PROGRAM, "--logs", log, "--logtostderr", "--disable_fsnotify",
                              "--address", "127.0.0.1", "--port", "0"]  # fmt: skip
    return best("mtail --one_shot", argv, lines, runs, check)


def fail2ban_row(log: Path, lines: int, runs: int) -> Row | str:
    if shutil.which("fail2ban-regex") is None:
        return "fail2ban-regex: not installed (apt-get install fail2ban)"
    expected = 0
    with log.open("rb") as f:
        for raw in f:
            expected += raw.split(b'" ', 2)[1][:4] in (b"401 ", b"403 ")

    def check(out: str) -> None:
        m = re.search(r"^Lines: (\d+) lines, \d+ ignored, (\d+) matched", out, re.M)
        if m is None or (int(m.group(1)), int(m.group(2))) != (lines, expected):
            raise SystemExit(
                f"fail2ban-regex: expected {lines} lines, {expected} matched; got:\n{out[-2000:]}"
            )

    argv: list[str | Path] = ["fail2ban-regex", "--print-no-missed", "--raw", log, FAIL2BAN_FILTER]
    return best("fail2ban-regex", argv, lines, runs, check)


# -- in process, per stage ------------------------------------------------------------------------


ALL_STAGES = "all four stages (combined_key, shipped rules)"


def stage_costs(variants: Sequence[Variant], lines: int) -> list[tuple[str, float]]:
    """Microseconds per line of each stage. The one part of this script that knows the pipeline's
    internals (`Pipeline.build`, `stages[source].parse`, `.attributor.attribute`, `store.observe`,
    `engine.observe`, `process_lines`): adapt it here when they move. Each stage runs over all
    lines before the next one, with the garbage collector off (a stage's outputs are kept in a list
    here, which would make every collection walk all of them; in a run they die young): the sum
    leaves out the loop, the reading and the collector, which the whole-process rows include.
    Then all four stages line after line, as replay and the daemon run them (`process_lines` on a
    fresh pipeline, collector on): the whole process but reading and startup. Both logs hold the
    same requests: attribution, metrics, rules and the loop are measured on the first."""
    from xinf_watch.app.checkcmd import load_everything
    from xinf_watch.app.pipeline import Pipeline
    from xinf_watch.model import Record

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        gc.collect()
        gc.disable()
        try:
            started = time.perf_counter()
            result = fn()
            out.append((name, (time.perf_counter() - started) * 1e6 / lines))
        finally:
            gc.enable()
        return result

    def first_lines(variant: Variant) -> list[str]:
        with variant.log.open("rb") as f:
            return [
                raw.rstrip(b"\r\n").decode("utf-8", "replace")
                for _, raw in zip(range(lines), f, strict=False)
            ]

    def shipped(variant: Variant) -> Pipeline:
        return Pipeline.build(*load_everything(variant.configs["shipped rules"]))

    out: list[tuple[str, float]] = []
    parsed = []  # (stage, records) of each log
    for variant in variants:
        text = first_lines(variant)
        stage = next(iter(shipped(variant).stages.values()))
        records = timed(f"parse ({variant.name})", lambda: [stage.parse(line) for line in text])  # noqa: B023
        assert all(type(r) is Record for r in records), f"{variant.name}: a line did not parse"
        parsed.append((stage, records))
    stage, records = parsed[0]
    events = timed("attribute", lambda: [stage.attributor.attribute(r) for r in records])
    store = shipped(variants[0]).store
    timed("metrics", lambda: [store.observe(e) for e in events])
    for label in ("7 rules", "shipped rules"):
        engine = Pipeline.build(*load_everything(variants[0].configs[label])).engine
        timed(f"rules ({label})", lambda: [engine.observe(e) for e in events])  # noqa: B023
    whole, text = shipped(variants[0]), first_lines(variants[0])
    gc.collect()
    started = time.perf_counter()
    whole.process_lines(next(iter(whole.stages)), text)
    out.append((ALL_STAGES, (time.perf_counter() - started) * 1e6 / lines))
    return out


# -- output ---------------------------------------------------------------------------------------


def table(title: str, rows: Sequence[Row | str], mtail: Row | None, floor_row: Row) -> None:
    print(f"\n### {title}\n")
    columns = ["run", "seconds", "CPU s", "lines/s", "lines/s w/o startup", "vs mtail", "vs mtail, CPU"]
    columns.append("time vs read+decode")
    print("| " + " | ".join([*columns, "peak RSS MiB"]) + " |")
    print("| --- |" + " ---: |" * len(columns))
    for row in rows:
        if isinstance(row, str):
            print(f"| {row} |" + " - |" * len(columns))
            continue
        cpu = "-" if row.cpu is None else f"{row.cpu:.2f}"
        net = f"{row.lines / (row.seconds - row.startup):,.0f}" if row.startup else "-"
        ratio = f"{row.rate / mtail.rate:.2f}x" if mtail else "-"
        by_cpu = f"{mtail.cpu / row.cpu:.2f}x" if mtail and mtail.cpu and row.cpu else "-"
        print(
            f"| {row.name} | {row.seconds:.2f} | {cpu} | {row.rate:,.0f} | {net} | {ratio} | {by_cpu} | "
            f"{row.seconds / floor_row.seconds:.1f}x | {row.rss_mib:,.0f} |"
        )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=1_000_000, help="lines of each log (default 1,000,000)")
    ap.add_argument("--runs", type=int, default=1, help="runs of every row, the best is shown (default 1)")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "xinf-watch-bench",
                    help="where the generated files are kept and reused")  # fmt: skip
    ap.add_argument("--stage-lines", type=int, default=200_000, help="lines of the in-process stage costs")
    ap.add_argument("--skip-external", action="store_true", help="no mtail and fail2ban rows")
    args = ap.parse_args(argv)
    # the full machine line (bench/latency.py's) at the end: importing it here would load
    # xinf_watch into this process, whose RSS every child's ru_maxrss then starts from
    print("load average before: " + ", ".join(f"{x:.1f}" for x in os.getloadavg()), flush=True)

    log, json_log, keys = generate(args.dir, args.lines)
    variants = [
        Variant("combined_key", log, configs(args.dir, "combined", {"name": "gateway", "path": str(log),
                "format": "nginx", "log_format": "combined_key"}, keys)),
        Variant("nginx-json", json_log, configs(args.dir, "json", {"name": "gateway", "path": str(json_log),
                "format": "json", "preset": "nginx-json"}, keys)),
    ]  # fmt: skip
    startup = min(run_child([sys.executable, "-m", "xinf_watch", "--version"])[0] for _ in range(args.runs))

    results: dict[str, list[Row | str]] = {}
    reads: dict[str, Row] = {}  # the read + decode row of each log
    for variant in variants:
        loops = (
            [("Python: read + decode", READ_DECODE), ("Python: 1 regex match + dict increment", REGEX_COUNT),
             ("Python: per-line sketch in plain dicts", SKETCH_COMBINED)]
            if variant.name == "combined_key" else
            [("Python: read + decode", READ_DECODE), ("Python: orjson.loads + dict increment", JSON_COUNT),
             ("Python: per-line sketch in plain dicts", SKETCH_JSON)]
        )  # fmt: skip
        floors = [floor(name, program, variant.log, keys, args.runs) for name, program in loops]
        reads[variant.name] = floors[0]
        lines = floors[0].lines
        rows: list[Row | str] = list(floors)
        for label, config in variant.configs.items():
            row = replay_row(f"xinf-watch replay, {label}", config, lines, args.runs, args.dir)
            row.startup = startup
            rows.append(row)
        if variant.name == "combined_key":
            if args.skip_external:
                rows += ["mtail: skipped (--skip-external)", "fail2ban-regex: skipped (--skip-external)"]
            else:
                rows += [
                    mtail_row(variant.log, lines, args.runs),
                    fail2ban_row(variant.log, lines, args.runs),
                ]
        results[variant.name] = rows
        print(f"{variant.name}: done", file=sys.stderr, flush=True)

    stages = stage_costs(variants, min(args.stage_lines, args.lines))

    mtail = next(
        (r for r in results["combined_key"] if isinstance(r, Row) and r.name.startswith("mtail")), None
    )
    sizes = [f.stat().st_size / 2**20 for f in (log, json_log)]
    print(
        f"\n{args.lines:,} lines ({sizes[0]:,.0f} MiB combined, {sizes[1]:,.0f} MiB JSON) in {args.dir}; "
        f"best of {args.runs}; xinf-watch startup (`--version`) {startup:.2f} s"
    )
    for variant in variants:
        table(f"{variant.name} log", results[variant.name], mtail, reads[variant.name])
    print(f"\n### In process, per stage ({min(args.stage_lines, args.lines):,} lines)\n")
    print("| stage | µs per line | lines/s alone |")
    print("| --- | ---: | ---: |")
    for name, cost in stages:
        if name != ALL_STAGES:
            print(f"| {name} | {cost:.2f} | {1e6 / cost:,.0f} |")
    by = dict(stages)
    total = by["parse (combined_key)"] + by["attribute"] + by["metrics"] + by["rules (shipped rules)"]
    name = "sum: parse (combined_key) + attribute + metrics + rules (shipped)"
    print(f"| {name} | {total:.2f} | {1e6 / total:,.0f} |")
    whole = next(
        r for r in results["combined_key"] if isinstance(r, Row) and r.name.endswith("shipped rules")
    )
    net = whole.lines / (whole.seconds - whole.startup)
    print(f"| for comparison: {whole.name} (combined_key), w/o startup | {1e6 / net:.2f} | {net:,.0f} |")
    loop = by[ALL_STAGES]
    print(f"| for comparison: {ALL_STAGES}, as one loop | {loop:.2f} | {1e6 / loop:,.0f} |")
    print()
    if mtail is not None:
        for variant in variants:
            for r in results[variant.name]:
                if isinstance(r, Row) and r.name.startswith("xinf-watch"):
                    by_cpu = f"{mtail.cpu / r.cpu:.2f}x" if mtail.cpu and r.cpu else "-"
                    ratio = f"{r.rate / mtail.rate:.2f}x"
                    print(f"ratio: {variant.name}: {r.name} / mtail = {ratio} (CPU: {by_cpu})")
    from latency import machine

    print(f"machine: {machine()} (the load average at the end of the run)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
