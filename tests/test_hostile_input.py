"""Input chosen by an attacker (user agents, paths, line lengths, odd files under a glob) against
the real config loader, parsers, `replay` and tailer: every cost stays bounded and nothing raises.
See README "Hostile input"."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path
from urllib.parse import unquote

from paths import FIXTURES
from ruletools import T0, event, load_rules
from test_cli import lines_total
from test_tail import Harness

from xinf_watch.app.cli import main
from xinf_watch.attribution.scopes import MAX_PATH, decode_path
from xinf_watch.formats import build_parser
from xinf_watch.ingest.lines import MAX_LINE_BYTES, read_lines
from xinf_watch.model import LineResult, Record
from xinf_watch.rules.filters import compile_filter
from xinf_watch.userregex import MATCH_SECONDS, UserRegex

NGINX_LINE = (FIXTURES / "nginx" / "access_combined_key.log").read_text(encoding="utf-8").splitlines()[1]

# -- user regexes: a time bound, not a heuristic ------------------------------------------------


def _agent_filter(tmp_path: Path, pattern: str) -> tuple[UserRegex, object]:
    rule = f"- {{name: r, kind: match, when: {{user_agent: '{pattern}'}}}}"
    when = load_rules(tmp_path, rule).rules[0].when
    assert isinstance(when.user_agent, UserRegex)
    return when.user_agent, compile_filter(when)


def test_nested_quantifier_from_the_issue_costs_no_time(tmp_path: Path) -> None:
    _, match = _agent_filter(tmp_path, "^(a+)+$")
    started = time.perf_counter()
    assert match(event(T0, user_agent="a" * 30 + "!")) is False  # 20 s with stdlib re
    assert match(event(T0, user_agent="a" * 30)) is True
    assert time.perf_counter() - started < 0.5


def test_a_pattern_that_backtracks_in_any_engine_runs_out_of_time_and_does_not_match(tmp_path: Path) -> None:
    pattern, match = _agent_filter(tmp_path, "(a|a)+b")
    started = time.perf_counter()
    for _ in range(3):
        assert match(event(T0, user_agent="a" * 40)) is False
    assert time.perf_counter() - started < 3 * MATCH_SECONDS + 0.5
    assert pattern.timeouts == 3
    assert match(event(T0, user_agent="aab")) is True  # the bound does not change real matches


def test_regex_format_line_that_runs_out_of_time_is_unparsed() -> None:
    parse = build_parser(
        "regex", pattern=r"(?P<ts>\S+) (?P<ip>\S+) (?P<status>\d+) (?P<path>(?:/|/)+)(?:x|x)+y"
    )
    started = time.perf_counter()
    assert parse("1764313556 10.0.0.1 200 " + "/" * 30 + "x" * 40) is LineResult.UNPARSED
    assert time.perf_counter() - started < MATCH_SECONDS + 0.5
    record = parse("1764313556 10.0.0.1 200 /xy")
    assert isinstance(record, Record) and record.path == "/" and record.status == 200


def test_check_refuses_what_the_matcher_cannot_compile(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "sources:\n  - {name: s, path: /var/log/s.log, format: regex, pattern: '(?P<ts>\\S+'}\n",
        encoding="utf-8",
    )
    assert main(["check", "--rules", str(rules)]) != 0


# -- paths and lines: capped before anything is decoded -----------------------------------------


def test_long_percent_encoded_path_is_cut_before_decoding() -> None:
    path = "/v1/" + "%41%e2%82%ac" * 500_000 + "?q=1"  # 6 MB raw
    tracemalloc.start()
    decoded = decode_path(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert decoded == unquote(path.partition("?")[0])[:MAX_PATH]
    assert peak < 1 << 20  # hundreds of MB when the whole path was decoded first


def _replay_lines(tmp_path: Path, log: Path) -> dict[tuple[str, str], float]:
    metrics = tmp_path / "replay.prom"
    code = main(["replay", "--format", "combined_key", "--metrics-out", str(metrics), str(log)])
    assert code == 0
    return lines_total(metrics.read_text(encoding="utf-8"))


def test_replay_skips_an_overlong_line_without_holding_it(tmp_path: Path) -> None:
    huge = NGINX_LINE.replace("/v1/models", "/v1/" + "%41" * 2_000_000, 1)  # a valid 6 MB line
    log = tmp_path / "access.log"
    log.write_text(f"{NGINX_LINE}\n{huge}\n{NGINX_LINE}\n", encoding="utf-8")
    tracemalloc.start()
    counts = _replay_lines(tmp_path, log)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert counts == {("replay", "parsed"): 2, ("replay", "skipped"): 1}
    assert peak < 24 << 20


def test_replay_and_the_tailer_read_the_same_lines(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    cases = [
        b"a",
        b"m" * MAX_LINE_BYTES,  # exactly the limit: kept
        b"n" * (MAX_LINE_BYTES + 1),  # one over: skipped
        b"crlf\r",
        b"r" * MAX_LINE_BYTES + b"\r",  # the "\r" counts: over
        b"\xff\xfebad utf-8",
        b"w" * (3 * MAX_LINE_BYTES),
        b"",
        b"last",
    ]
    log.write_bytes(b"".join(c + b"\n" for c in cases))
    with open(log, "rb") as f:
        replayed = list(read_lines(f))
    tailed = Harness(log).lines()
    assert replayed == tailed
    assert replayed == [
        "a", "m" * MAX_LINE_BYTES, "", "crlf", "", "\ufffd\ufffdbad utf-8", "", "", "last",
    ]  # fmt: skip


# -- late (out-of-order) events and protected eviction in rules/windows.py ---------------------------

from xinf_watch.rules.windows import BUCKETS, BoundedMap, WindowCounter  # noqa: E402


def test_late_event_inside_the_window_is_counted_in_its_own_bucket() -> None:
    c = WindowCounter(300.0)  # 10 s buckets
    c.add(1000.0, 1000.0)
    c.add(1200.0, 1200.0)
    c.add(1105.0, 1200.0)  # late, between the two: a bucket of its own, in order
    c.add(1001.0, 1200.0, n=2)  # late, into the existing first bucket
    c.add(995.0, 1200.0)  # late, before every bucket
    assert [b[0] for b in c.buckets] == [99, 100, 110, 120]
    assert c.count(1200.0) == 6 and c.oldest(1200.0) == 995.0
    assert c.buckets[1] == [100, 3, 1000.0]


def test_late_event_older_than_the_window_is_dropped() -> None:
    c = WindowCounter(300.0)
    c.add(2000.0, 2000.0)
    c.add(2000.0 - 10 * BUCKETS, 2000.0)  # exactly a window back: out
    c.add(1000.0, 2000.0)
    assert c.count(2000.0) == 1 and len(c.buckets) == 1


def test_bounded_map_eviction_passes_over_kept_entries_until_all_are_kept() -> None:
    m: BoundedMap[str, int] = BoundedMap(3, keep=lambda v: v < 0)
    for key, value in [("a", -1), ("b", 1), ("c", -1)]:
        m.setdefault(key, lambda v=value: v)  # type: ignore[misc]
    m.setdefault("d", lambda: 2)  # "a" is kept: "b" goes instead
    assert [k for k, _ in m.items()] == ["a", "c", "d"] and m.evicted == 1
    m.put("e", -1)  # "d" is the only one not kept
    assert [k for k, _ in m.items()] == ["a", "c", "e"]
    m.put("f", -1)  # all kept: the bound wins, the oldest goes
    assert [k for k, _ in m.items()] == ["c", "e", "f"] and m.evicted == 3
