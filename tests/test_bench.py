"""The benchmarks of bench/ still run: bench/throughput.py and bench/live.py with tiny sizes give every
row they promise with a number above zero, rules7.yaml's rules are the shipped ones, and
gen_combined_key.py without its new options writes what it always wrote."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import yaml
from tools import require_program

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"

THROUGHPUT_ROWS = [
    "Python: read + decode",
    "Python: 1 regex match + dict increment",
    "Python: per-line sketch in plain dicts",
    "xinf-watch replay, no rules",
    "xinf-watch replay, 7 rules",
    "xinf-watch replay, shipped rules",
]
JSON_ROWS = ["Python: read + decode", "Python: orjson.loads + dict increment", *THROUGHPUT_ROWS[2:]]
STAGES = ["parse (combined_key)", "parse (nginx-json)", "attribute", "metrics", "rules (7 rules)",
          "rules (shipped rules)",
          "for comparison: all four stages (combined_key, shipped rules), as one loop"]  # fmt: skip
LIVE_ROWS = [
    "lines written",
    "written lines/s",
    "processed lines/s while writing",
    "caught up (lag 0) after the writer stopped, s",
    "daemon CPU s (user + system, writing to the end), lines per CPU s",
    "RSS idle before, MiB",
    "RSS during, max of samples, MiB",
    "RSS peak (VmHWM), MiB",
    "RSS idle after, MiB",
]


def number(cell: str) -> float:
    m = re.match(r"[0-9][0-9,]*(?:\.[0-9]+)?", cell.strip())
    assert m, f"not a number: {cell!r}"
    return float(m.group().replace(",", ""))


def rows(section: str) -> dict[str, list[str]]:
    """The markdown table rows of `section`: first cell -> the other cells."""
    out = {}
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            out[cells[0]] = cells[1:]
    return out


def test_throughput_and_live_run_and_report_every_row(tmp_path: Path) -> None:
    throughput = subprocess.Popen(
        [sys.executable, BENCH / "throughput.py", "--lines", "2000", "--runs", "1", "--skip-external",
         "--dir", tmp_path / "tp"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    live = subprocess.Popen(
        [sys.executable, BENCH / "live.py", "--seconds", "1.5", "--rate", "3000", "--pool", "1000",
         "--drain", "20", "--settle", "0.3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    tp_out, tp_err = throughput.communicate(timeout=120)
    live_out, live_err = live.communicate(timeout=120)
    assert throughput.returncode == 0, tp_err
    assert live.returncode == 0, live_out + live_err

    assert "load average" in tp_out and "load average" in live_out
    combined, rest = tp_out.split("### combined_key log")[1].split("### nginx-json log")
    json_part, stages = rest.split("### In process, per stage")
    for section, names in ((combined, THROUGHPUT_ROWS), (json_part, JSON_ROWS)):
        table = rows(section)
        for name in names:
            seconds, rate = table[name][0], table[name][2]
            assert number(seconds) >= 0 and number(rate) > 0, (name, table[name])
            assert number(table[name][-1]) > 0, f"{name}: no peak RSS"
    assert "mtail: skipped (--skip-external)" in rows(combined)
    stage_table = rows(stages)
    for name in STAGES:
        assert number(stage_table[name][0]) > 0, (name, stage_table[name])

    assert "Traceback" not in live_err, live_err  # a sampler thread that died still lets the script end
    sampled = re.search(r"; (\d+) samples while writing", live_out)
    assert sampled is not None and int(sampled.group(1)) > 0, live_out
    live_table = rows(live_out)
    for name in LIVE_ROWS:
        assert number(live_table[name][0]) > 0, (name, live_table[name])
    assert "parsed " in live_out
    written = number(live_table["lines written"][0])
    assert f"parsed {written:,.0f} of {written:,.0f} lines" in live_out


def test_rules7_are_the_shipped_definitions() -> None:
    seven = yaml.safe_load((BENCH / "rules7.yaml").read_text())["rules"]
    shipped = {r["name"]: r for r in yaml.safe_load((ROOT / "rules" / "rules.yaml").read_text())["rules"]}
    assert [r["name"] for r in seven] == [
        "denied-burst", "key-spraying", "new-ip-for-key", "expired-key-used", "revoked-key-used",
        "scope-violation", "webui-external",
    ]  # fmt: skip
    for rule in seven:
        assert rule == shipped[rule["name"]], rule["name"]


def test_generator_defaults_write_what_they_always_wrote(tmp_path: Path) -> None:
    log, keys = tmp_path / "access.log", tmp_path / "keys.yaml"
    subprocess.run(
        [sys.executable, BENCH / "gen_combined_key.py", "--lines", "3000", "--out", log, "--keys-out", keys],
        check=True, timeout=60,
    )  # fmt: skip
    # sha256 of the output of the generator before its options were added (commit 5a98e00)
    assert hashlib.sha256(log.read_bytes()).hexdigest() == (
        "e1530949f411a02ce69a9dc558a56ab17a2da061af3ebd03f2af2513c55f7517"
    )
    assert hashlib.sha256(keys.read_bytes()).hexdigest() == (
        "6a3807dc79391971190a0d853bd97c4a65c41111e2c42ab3d0ba95d2ed323a49"
    )


def test_shared_state_benchmark_reports_every_row(tmp_path: Path) -> None:
    """bench/shared.py on a tiny log, against its own redis-server: every row with lines/s above zero
    (it also checks that every instance of its fleet was fed every line)."""
    require_program("redis-server")
    done = subprocess.run(
        [sys.executable, BENCH / "shared.py", "--lines", "2000", "--batch", "100", "--dir", tmp_path / "sh"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    table = rows(done.stdout)
    for name in ("local", "shared, one instance", "local, per instance of 3", "fleet of 3, per instance"):
        assert number(table[name][2]) > 0 and number(table[name][5]) > 0, (name, table[name])
