"""`replay --summary`: per rule, firings per UTC day and top groups, equal to what the alert lines say.

The recorded nginx log (one day) with examples/rules.yaml, and a multi-day log made of its real
lines with timestamps shifted by whole days (a day left empty in between). Every figure of the
summary is checked against the plain replay's alert lines over the same input, and the summary
function is also driven directly with the alerts of an in-process replay.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from paths import FIXTURES

from xinf_watch.app.alertsummary import format_table, summarize, to_json
from xinf_watch.app.cli import main
from xinf_watch.app.pipeline import Pipeline
from xinf_watch.app.replay import ReplayInput, replay
from xinf_watch.config.schema import load_config
from xinf_watch.keys.files import load_registry
from xinf_watch.metrics.store import MetricsStore
from xinf_watch.model import Alert

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "examples" / "rules.yaml"
NGINX_LOG = FIXTURES / "nginx" / "access_combined_key.log"
_TIME = re.compile(r"\[(\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2}) \+0000\]")
_NGINX_TIME = "%d/%b/%Y:%H:%M:%S"
Capture = pytest.CaptureFixture[str]


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> str:
    code = main(["replay", "--rules", str(RULES), "--quiet", *map(str, argv)])
    out, err = capsys.readouterr()
    assert (code, err) == (0, ""), err
    return out


def alert_lines(capsys: pytest.CaptureFixture[str], log: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in run(capsys, log).splitlines()]


def day(iso: str) -> str:
    return iso[:10]  # alert timestamps are ISO 8601 UTC


def expected_from_lines(alerts: list[dict[str, Any]], days: list[str]) -> dict[str, dict[str, Any]]:
    """Per rule: firings, resolved, per day and per group, counted straight from the alert lines."""
    out: dict[str, dict[str, Any]] = {}
    for a in alerts:
        r = out.setdefault(a["rule"], {"firings": 0, "resolved": 0, "per_day": dict.fromkeys(days, 0),
                                       "groups": Counter()})  # fmt: skip
        if a["status"] == "resolved":
            r["resolved"] += 1
            continue
        r["firings"] += 1
        r["per_day"][day(a["last_ts"])] += 1
        r["groups"][" ".join(f"{k}={v}" for k, v in a["group"].items())] += 1
    return out


def check_against_lines(summary: dict[str, Any], alerts: list[dict[str, Any]], top: int = 5) -> None:
    expected = expected_from_lines(alerts, summary["days"])
    configured = {r["rule"] for r in summary["rules"]}
    assert set(expected) <= configured
    for r in summary["rules"]:
        want = expected.get(r["rule"], {"firings": 0, "resolved": 0, "groups": Counter(),
                                        "per_day": dict.fromkeys(summary["days"], 0)})  # fmt: skip
        assert (r["firings"], r["resolved"]) == (want["firings"], want["resolved"]), r["rule"]
        assert r["per_day"] == want["per_day"], r["rule"]
        assert r["per_day_average"] == round(want["firings"] / len(summary["days"]), 3)
        assert r["groups"] == len(want["groups"])
        ranked = sorted(want["groups"].items(), key=lambda item: (-item[1], item[0]))[:top]
        got = [(" ".join(f"{k}={v}" for k, v in g["group"].items()), g["firings"]) for g in r["top_groups"]]
        assert got == ranked, r["rule"]
        if want["firings"]:
            best = max(want["per_day"].values())
            first_best = next(d for d, n in want["per_day"].items() if n == best)
            assert r["max_day"] == {"day": first_best, "firings": best}
        else:
            assert r["max_day"] is None
    firing = [a for a in alerts if a["status"] == "firing"]
    assert summary["total"]["firings"] == len(firing)
    assert summary["total"]["resolved"] == len(alerts) - len(firing)


def test_summary_equals_the_alert_lines_on_the_recorded_log(capsys: pytest.CaptureFixture[str]) -> None:
    alerts = alert_lines(capsys, NGINX_LOG)
    assert len(alerts) >= 10  # the recording's incidents
    summary = orjson.loads(run(capsys, "--summary", "--json", NGINX_LOG))
    check_against_lines(summary, alerts)
    assert [r["rule"] for r in summary["rules"]] == [r.name for r in load_config(RULES).rules]
    events = [orjson.loads(line) for line in run(capsys, "--events", NGINX_LOG).splitlines()]
    lines = len(NGINX_LOG.read_bytes().splitlines())
    assert summary["lines"] == {"parsed": lines, "unparsed": 0, "skipped": 0} and len(events) == lines
    times = sorted(e["ts"] for e in events)
    assert (summary["first_ts"], summary["last_ts"]) == (times[0], times[-1])
    assert summary["days"] == ["2026-11-28"]
    # the one threshold episode that resolves is counted apart, not as a second alert
    assert next(r for r in summary["rules"] if r["rule"] == "denied-burst")["resolved"] == 1


def test_the_table_shows_the_same_figures(capsys: pytest.CaptureFixture[str]) -> None:
    summary = orjson.loads(run(capsys, "--summary", "--json", "--top", "2", NGINX_LOG))
    table = run(capsys, "--summary", "--top", "2", NGINX_LOG).splitlines()
    lines = len(NGINX_LOG.read_bytes().splitlines())
    assert table[0] == f"lines: {lines:,} ({lines:,} parsed, 0 unparsed, 0 skipped)"
    assert table[1] == f"span: {summary['first_ts']} .. {summary['last_ts']} (1 UTC day: 2026-11-28)"
    header = table[3].split()
    assert header[:4] == ["RULE", "KIND", "SEVERITY", "FIRINGS"]
    rows = {line.split()[0]: line for line in table[4:] if line and not line.startswith("firings:")}
    for r in summary["rules"]:
        cells = rows[r["rule"]].split()
        assert cells[1:5] == [r["kind"], r["severity"], str(r["firings"]), f"{r['per_day_average']:.1f}"]
        tops = ", ".join(" ".join(f"{k}={v}" for k, v in g["group"].items()) + f" ({g['firings']})"
                         for g in r["top_groups"])  # fmt: skip
        assert rows[r["rule"]].endswith(tops or "-")
        assert len(r["top_groups"]) <= 2
    total = rows["(all"].split()
    assert total[2] == str(summary["total"]["firings"])


def shifted(line: str, days: int) -> str:
    def shift(m: re.Match[str]) -> str:
        ts = datetime.strptime(m.group(1), _NGINX_TIME).replace(tzinfo=UTC) + timedelta(days=days)
        return f"[{ts.strftime(_NGINX_TIME)} +0000]"

    return _TIME.sub(shift, line, count=1)


@pytest.fixture(scope="module")
def multi_day_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The recorded log on 28 Nov, again on 29 Nov and on 1 Dec (30 Nov empty), 3 garbage lines."""
    lines = NGINX_LOG.read_text(encoding="utf-8").splitlines()
    out = [shifted(line, 0) for line in lines]
    out += [shifted(line, 1) for line in lines] + ["this is not an access log line"] * 3
    out += [shifted(line, 3) for line in lines]
    path = tmp_path_factory.mktemp("multi") / "access.log"
    path.write_text("".join(line + "\n" for line in out), encoding="utf-8")
    return path


def test_summary_per_day_over_a_multi_day_log(multi_day_log: Path, capsys: Capture) -> None:
    alerts = alert_lines(capsys, multi_day_log)
    summary = orjson.loads(run(capsys, "--summary", "--json", multi_day_log))
    assert summary["days"] == ["2026-11-28", "2026-11-29", "2026-11-30", "2026-12-01"]
    check_against_lines(summary, alerts)
    lines = len(NGINX_LOG.read_bytes().splitlines())
    assert summary["lines"] == {"parsed": 3 * lines, "unparsed": 3, "skipped": 0}
    assert (day(summary["first_ts"]), day(summary["last_ts"])) == ("2026-11-28", "2026-12-01")
    by_rule = {r["rule"]: r for r in summary["rules"]}
    # the empty day counts in the average and has no firing
    assert all(r["per_day"]["2026-11-30"] == 0 for r in summary["rules"])
    assert summary["total"]["per_day_average"] == round(summary["total"]["firings"] / 4, 3)
    # the days differ: a key's addresses are learnt on the first day, and replayed again later
    new_ip = by_rule["new-ip-for-key"]["per_day"]
    assert new_ip["2026-11-28"] == 3 and new_ip["2026-11-29"] < new_ip["2026-11-28"]
    # a match rule forgets nothing between two identical days: the same alerts on both
    revoked = by_rule["revoked-key-used"]
    assert revoked["per_day"]["2026-11-28"] == revoked["per_day"]["2026-11-29"] > 0
    assert revoked["max_day"] == {"day": "2026-11-28", "firings": revoked["per_day"]["2026-11-28"]}
    assert revoked["per_day_average"] == round(revoked["firings"] / 4, 3)


def test_summarize_is_a_function_of_the_alerts(multi_day_log: Path, capsys: Capture) -> None:
    """The pure function on the alerts of an in-process replay: the same object as the CLI prints."""
    config = load_config(RULES)
    pipeline = Pipeline.build(config, load_registry(config.keys), MetricsStore())
    alerts: list[Alert] = []
    times: list[float] = []
    replay(pipeline, [ReplayInput("gateway", multi_day_log)], on_event=lambda e: times.append(e.ts),
           on_alert=alerts.append, progress=None)  # fmt: skip
    lines = {"parsed": len(times), "unparsed": 3}
    summary = summarize(config.rules, alerts, lines, (min(times), max(times)))
    assert to_json(summary) == orjson.loads(run(capsys, "--summary", "--json", multi_day_log))
    assert format_table(summary) == run(capsys, "--summary", multi_day_log)
    # and without alerts or records: every rule listed with zeros, no day
    empty = summarize(config.rules, [], {}, None)
    assert empty.days == () and [r.firings for r in empty.rules] == [0] * len(config.rules)
    header = ["lines: 0 (0 parsed, 0 unparsed, 0 skipped)", "span: no records"]
    assert format_table(empty).splitlines()[:2] == header


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--summary", "--events"], "--summary and --events are two different outputs: choose one"),
        (["--json"], "--json goes with --summary"),
        (["--top", "3"], "--top goes with --summary"),
        (["--summary", "--top", "0"], "--top 0: expected at least 1"),
    ],
)
def test_summary_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["replay", "--rules", str(RULES), *argv, str(NGINX_LOG)])
    out, err = capsys.readouterr()
    assert (code, out, err) == (2, "", f"xinf-watch: {message}\n")
