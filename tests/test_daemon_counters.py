"""Every counter the real daemon exports continues across a restart: the self-metrics
(reloads, batches, batch time) as well as the request and line counters.

A counter that starts again from 0 is a reset to Prometheus: rate() and increase() show a spike,
and the dashboard shows the restart as a reload.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Metrics, Workspace, access_line, parsed_lines, total

pytestmark = pytest.mark.system


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    w = Workspace(tmp_path)
    yield w
    w.close()


def append(path: Path, first: int, n: int) -> None:
    with path.open("a") as f:
        f.write("".join(access_line(seq) + "\n" for seq in range(first, first + n)))


def changed_counters(before: Metrics, after: Metrics) -> dict[str, tuple[float | None, float | None]]:
    """Every counter sample whose value differs: {name{labels}: (before, after)}."""
    keys = {k for k in (*before, *after) if k[0].endswith("_total")}
    return {f"{k[0]}{dict(sorted(k[1]))}": (before.get(k), after.get(k))
            for k in sorted(keys, key=str) if before.get(k) != after.get(k)}


def reloads(m: Metrics, result: str) -> float:
    return total(m, "xinf_watch_config_reloads_total", result=result)


def test_self_metric_counters_continue_across_restarts(ws: Workspace) -> None:
    ws.write_rules()
    append(ws.log, 0, 300)
    d = ws.daemon().start()
    d.wait_until(lambda m: parsed_lines(m) == 300, what="300 lines")

    d.hup()  # a good reload, then a broken one
    d.wait_for("RELOADING=1")
    d.wait_for("READY=1")
    good = ws.rules.read_text()
    ws.rules.write_text(good.replace("sources:", "sourcez:", 1))
    d.hup()
    d.wait_for("RELOADING=1")
    d.wait_for("READY=1")
    ws.rules.write_text(good)
    append(ws.log, 300, 200)
    before = d.wait_until(lambda m: parsed_lines(m) == 500, what="500 lines")
    assert (reloads(before, "success"), reloads(before, "failure")) == (1, 1)
    batches = total(before, "xinf_watch_batches_total")
    seconds = total(before, "xinf_watch_batch_duration_seconds_total")
    assert batches >= 2 and seconds > 0  # the first read, and the 200 lines after the reloads

    d.terminate()
    d.start()
    after = d.metrics()  # READY: restored, nothing new read; every counter exactly where it was
    assert changed_counters(before, after) == {}
    assert total(after, "xinf_watch_batches_total") == batches

    # they go on counting from there, and a reload in the new run adds to the old run's count
    append(ws.log, 500, 100)
    d.wait_until(lambda m: parsed_lines(m) == 600, what="600 lines")
    d.hup()
    d.wait_for("RELOADING=1")
    d.wait_for("READY=1")
    m = d.metrics()
    assert (reloads(m, "success"), reloads(m, "failure")) == (2, 1)
    assert total(m, "xinf_watch_batches_total") > batches
    assert total(m, "xinf_watch_batch_duration_seconds_total") > seconds

    d.terminate()
    d.start()
    again = d.metrics()
    assert changed_counters(m, again) == {}
    d.terminate()
