"""A batch of lines through `Pipeline.process_lines` (the daemon's batches, replay's blocks) does
what `process_line` does for each of them, on every recorded fixture with the shipped rules: the
same alerts, in the same order, and the same counters; a line that raises costs that line only."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from paths import FIXTURES
from test_golden import CASES, NAMES, write_rules

from xinf_watch.app.pipeline import Pipeline
from xinf_watch.app.replay import ReplayInput, replay
from xinf_watch.config.schema import load_config
from xinf_watch.keys.files import load_registry
from xinf_watch.model import Alert


def build(rules: Path) -> Pipeline:
    config = load_config(rules)
    return Pipeline.build(config, load_registry(config.keys, config.key_sites))


def replayed(rules: Path, log: Path, *, one_record_at_a_time: bool) -> tuple[list[Alert], dict[str, Any]]:
    pipeline = build(rules)
    alerts: list[Alert] = []
    on_event = (lambda event: None) if one_record_at_a_time else None  # an event callback: no blocks
    replay(pipeline, [ReplayInput("gateway", log)], on_event=on_event, on_alert=alerts.append, progress=None)
    return alerts, pipeline.store.snapshot()


@pytest.mark.parametrize("name", NAMES)
def test_replay_in_blocks_equals_one_record_at_a_time(name: str, tmp_path: Path) -> None:
    rules = write_rules(CASES[name], tmp_path / "rules.yaml")
    log = FIXTURES / CASES[name].log
    blocks = replayed(rules, log, one_record_at_a_time=False)
    one_by_one = replayed(rules, log, one_record_at_a_time=True)
    if CASES[name].records != 0:  # xinference.log of 4.x has no access records
        assert blocks[0], "the fixture raises no alert: the comparison would prove little"
    assert blocks == one_by_one


GARBAGE = ["", "not a log line at all", '1.2.3.4 - - [garbage] "GET / HTTP/1.1" 200', "\x00\xff" * 40]


def test_process_lines_equals_process_line_with_garbage_between(tmp_path: Path) -> None:
    case = CASES["nginx-access_combined_key"]
    rules = write_rules(case, tmp_path / "rules.yaml")
    lines = (FIXTURES / case.log).read_text(encoding="utf-8").splitlines()
    mixed = [x for i, line in enumerate(lines) for x in ([line, GARBAGE[i % 4]] if i % 7 == 0 else [line])]
    batched, single = build(rules), build(rules)
    records, alerts = batched.process_lines("gateway", mixed[:1000])
    more_records, more_alerts = batched.process_lines("gateway", mixed[1000:])
    expected = [a for line in mixed for a in single.process_line("gateway", line)]
    assert alerts + more_alerts == expected and expected
    assert records + more_records == len(lines)
    # the same counts (a batch counts its records at its end: the order the counters were first
    # met in may differ, which the exposition does not depend on)
    assert vars(batched.store) == vars(single.store)
    counted = batched.store.lines
    assert counted[("gateway", "parsed")] == len(lines) and counted[("gateway", "unparsed")] > 0


def test_a_line_that_raises_costs_that_line_only(tmp_path: Path) -> None:
    case = CASES["nginx-access_combined_key"]
    lines = (FIXTURES / case.log).read_text(encoding="utf-8").splitlines()[:20]
    pipeline = build(write_rules(case, tmp_path / "rules.yaml"))
    stage = pipeline.stages["gateway"]

    def flaky(line: str) -> Any:
        if line == lines[5]:
            raise RuntimeError("a bug in some stage")
        return stage.parse(line)

    pipeline.stages["gateway"] = dataclasses.replace(stage, parse=flaky)
    failed: list[None] = []
    records, _ = pipeline.process_lines("gateway", lines, on_error=lambda: failed.append(None))
    assert (records, len(failed)) == (19, 1)
    assert pipeline.store.lines[("gateway", "parsed")] == 19
    with pytest.raises(RuntimeError):  # without on_error the batch ends there: the lines before count
        pipeline.process_lines("gateway", lines)
    assert pipeline.store.lines[("gateway", "parsed")] == 19 + 5
