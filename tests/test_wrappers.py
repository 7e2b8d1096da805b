"""Container log wrappers (ingest/wrappers.py) through `replay` and the pipeline, and kubelet's file names.

Which lines are real: the inner lines are the recorded nginx traffic of
`fixtures/nginx/access_combined_key.log` (written by a real nginx, fixtures/README.md). No
container runtime runs here (no containerd, kubelet or Docker daemon), so the wrapping around them
follows the documented formats: CRI (`<RFC 3339 nano time> <stream> <P|F> <text>`, as containerd
and CRI-O write under /var/log/pods) and Docker's json-file driver (`{"log": "...\\n", "stream":
..., "time": ...}`, a `log` without "\\n" being a part). Long lines are cut into parts at random
points (seeded), as containerd cuts lines over 16 KiB and Docker splits its messages.
"""

from __future__ import annotations

import gzip
import json
import os
import random
from pathlib import Path

import pytest
import yaml
from harness import DaemonProcess, Workspace, parsed_lines, total
from paths import FIXTURES

from xinf_watch.app.cli import main
from xinf_watch.app.pipeline import Pipeline
from xinf_watch.app.replay import ReplayInput, replay, rotation_order, source_files
from xinf_watch.config.schema import ConfigError, empty_config, load_config
from xinf_watch.config.sources import SourceConfig
from xinf_watch.ingest.lines import MAX_LINE_BYTES
from xinf_watch.ingest.wrappers import Unwrapper, runtime_time, unwrapped
from xinf_watch.keys.registry import KeyRegistry
from xinf_watch.model import LineResult

NGINX_LOG = FIXTURES / "nginx" / "access_combined_key.log"
PLAIN = NGINX_LOG.read_text(encoding="utf-8").splitlines()


def cuts(rng: random.Random, line: str, most: int = 4) -> list[str]:
    """`line` cut into 1..`most` parts at random points (a line is cut about one time in two)."""
    if len(line) < 2 or rng.random() < 0.5:
        return [line]
    points = sorted(rng.sample(range(1, len(line)), k=min(rng.randint(1, most - 1), len(line) - 1)))
    return [line[a:b] for a, b in zip([0, *points], [*points, len(line)], strict=True)]


def runtime_stamp(i: int) -> str:
    return f"2026-12-04T10:{i // 60 % 60:02d}:{i % 60:02d}.{i * 7919 % 10**9:09d}Z"


def cri(lines: list[str], seed: int, stream: str = "stdout") -> list[str]:
    rng = random.Random(seed)
    out = []
    for i, line in enumerate(lines):
        parts = cuts(rng, line)
        out += [f"{runtime_stamp(i)} {stream} {'P' if j < len(parts) - 1 else 'F'} {part}"
                for j, part in enumerate(parts)]  # fmt: skip
    return out


def docker(lines: list[str], seed: int, stream: str = "stdout") -> list[str]:
    rng = random.Random(seed)
    out = []
    for i, line in enumerate(lines):
        parts = cuts(rng, line)
        parts[-1] += "\n"
        out += [json.dumps({"log": part, "stream": stream, "time": runtime_stamp(i)}) for part in parts]
    return out


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def replay_events(capsys: pytest.CaptureFixture[str], path: Path, *extra: str) -> list[str]:
    code = main(["replay", "--format", "combined_key", "--events", *extra, str(path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out.splitlines()


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("wrap", [cri, docker], ids=["cri", "docker"])
def test_replay_of_wrapped_fixture_gives_the_plain_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], wrap: object, seed: int
) -> None:
    """The acceptance of issue 12: `replay --events` of the wrapped log is the plain log's, event for
    event, with parts cut at other points for every seed."""
    assert callable(wrap)
    wrapped = wrap(PLAIN, seed)
    assert len(wrapped) > len(PLAIN) * 1.3, "the seed cut too few lines into parts to test joining"
    plain = replay_events(capsys, NGINX_LOG)
    assert len(plain) == len(PLAIN)  # every fixture line is an event
    kind = wrap.__name__  # type: ignore[attr-defined]
    assert replay_events(capsys, write(tmp_path / "0.log", wrapped), "--wrapper", kind) == plain


def pipeline_for(wrapper: str | None) -> tuple[Pipeline, str]:
    source = SourceConfig(name="k8s", path="", format="nginx", log_format="combined_key", wrapper=wrapper)
    return Pipeline.build(empty_config(), KeyRegistry(()), extra_sources=[source]), "k8s"


def line_counts(pipeline: Pipeline) -> dict[str, int]:
    return {str(result): n for (_source, result), n in pipeline.store.lines.items()}


def replay_counts(wrapper: str | None, *paths: Path) -> dict[str, int]:
    pipeline, name = pipeline_for(wrapper)
    replay(pipeline, [ReplayInput(name, p) for p in paths], progress=None)
    return line_counts(pipeline)


@pytest.mark.parametrize("wrap", [cri, docker], ids=["cri", "docker"])
def test_garbage_lines_are_unparsed_and_overlong_lines_skipped_like_plain_ones(
    tmp_path: Path, wrap: object
) -> None:
    """Lines that are not the wrapper's format count as unparsed, between good lines whose parts are
    still joined; a line joined past MAX_LINE_BYTES counts as one skipped line, as the same line
    unwrapped does, and is never held whole."""
    assert callable(wrap)
    huge = PLAIN[0].replace('"-"', '"' + "x" * (MAX_LINE_BYTES + 10) + '"', 1)
    plain_lines = [PLAIN[0], huge, PLAIN[1], PLAIN[2]]
    plain = replay_counts(None, write(tmp_path / "plain.log", plain_lines))
    assert plain == {"parsed": 3, "skipped": 1}

    wrapped = wrap([PLAIN[0]], 0)
    # the huge line in parts of 16 KiB, as containerd and Docker cut it
    parts = [huge[i : i + 16384] for i in range(0, len(huge), 16384)]
    big = wrap([parts[0]], 0)[0]
    for j, part in enumerate(parts):
        one = json.loads(big) if wrap is docker else None
        if one is not None:
            one["log"] = part + ("\n" if j == len(parts) - 1 else "")
            wrapped.append(json.dumps(one))
        else:
            wrapped.append(f"{runtime_stamp(1)} stdout {'P' if j < len(parts) - 1 else 'F'} {part}")
    garbage = [
        "not a runtime line",
        "2026-12-04T10:00:00Z stdout X tag unknown",
        "2026-12-04T10:00:00Z stdweird F " + PLAIN[1],
        '{"log": 1, "stream": "stdout", "time": "2026-12-04T10:00:00Z"}',
        '["a list"]',
        '{"log": "x\\n", "stream": ["stdout"], "time": "2026-12-04T10:00:00Z"}',
        "\x00\x1b[31m\ufffd",
        "{",
    ]
    first, rest = wrap([PLAIN[1]], 0, "stderr"), wrap([PLAIN[2]], 0)
    lines = [*wrapped, garbage[0], *first[:-1], *garbage[1:], *first[-1:], *rest]
    counts = replay_counts(wrap.__name__, write(tmp_path / "wrapped.log", lines))  # type: ignore[attr-defined]
    assert counts == {"parsed": 3, "skipped": 1, "unparsed": len(garbage)}


def test_parts_are_joined_per_stream_and_never_across_files(tmp_path: Path) -> None:
    """stdout and stderr parts interleave in one file and are joined each with its own; a file that
    ends inside a line gives what was joined as a line (here the start of a request line: unparsed),
    and the next file's first line is not glued to it."""
    head, tail = PLAIN[3][:40], PLAIN[3][40:]
    first = write(tmp_path / "0.log.20261204-100000", [
        f"{runtime_stamp(0)} stdout P {PLAIN[0][:10]}",
        f"{runtime_stamp(0)} stderr P {PLAIN[1][:25]}",
        f"{runtime_stamp(0)} stdout F {PLAIN[0][10:]}",
        f"{runtime_stamp(0)} stderr F {PLAIN[1][25:]}",
        f"{runtime_stamp(1)} stdout P {head}",
    ])  # fmt: skip
    second = write(tmp_path / "0.log", [f"{runtime_stamp(2)} stdout F {tail}", *cri([PLAIN[2]], 0)])
    assert replay_counts("cri", first, second) == {"parsed": 3, "unparsed": 2}
    # the same parts in one file make one line
    one = write(tmp_path / "one.log", [*first.read_text().splitlines(), *second.read_text().splitlines()])
    assert replay_counts("cri", one) == {"parsed": 4}


def test_a_part_pending_is_carried_over_a_reload_and_a_restart() -> None:
    """What the daemon saves with its positions (`partial_lines()`) joins the parts as if it had
    never stopped; the snapshot of another wrapper is dropped."""
    pipeline, name = pipeline_for("cri")
    key = (2049, 1234)  # the daemon names files by (device, inode)
    assert pipeline.process_line(name, f"{runtime_stamp(0)} stdout P {PLAIN[0][:30]}", key) == []
    saved = json.loads(json.dumps(pipeline.partial_lines()))  # committed as JSON
    assert saved and pipeline.has_partial_lines(name)

    source = pipeline.stages[name].config
    again = Pipeline.build(empty_config(), KeyRegistry(()), extra_sources=[source], partial_lines=saved)
    assert again.parse(name, f"{runtime_stamp(0)} stdout F {PLAIN[0][30:]}", key) is not None
    assert line_counts(again) == {"parsed": 1}
    assert again.partial_lines() == {}

    other = source.model_copy(update={"wrapper": "docker"})
    dropped = Pipeline.build(empty_config(), KeyRegistry(()), extra_sources=[other], partial_lines=saved)
    assert not dropped.has_partial_lines(name)


def test_end_files_gives_the_lines_of_files_no_longer_followed() -> None:
    pipeline, name = pipeline_for("docker")
    part = json.dumps({"log": PLAIN[0], "stream": "stdout", "time": runtime_stamp(0)})
    pipeline.process_line(name, part, (1, 1))
    pipeline.process_line(name, part, (1, 2))
    assert pipeline.end_files(name, {(1, 1), (1, 2)}) == []
    assert line_counts(pipeline) == {}
    pipeline.end_files(name, {(1, 2)})  # (1, 1) was let go: its part is a line, the whole of one here
    assert line_counts(pipeline) == {"parsed": 1}
    assert pipeline.has_partial_lines(name)


def test_the_runtime_time_is_kept_and_the_record_time_is_the_line_s_own() -> None:
    unwrapper = Unwrapper("cri")
    assert unwrapper.feed(0, f"2026-12-04T10:00:00.5Z stdout P {PLAIN[0][:5]}") is None
    assert unwrapper.feed(0, f"2026-12-04T10:00:01.123456789Z stdout F {PLAIN[0][5:]}") == PLAIN[0]
    assert unwrapper.time == "2026-12-04T10:00:01.123456789Z"  # the last part's: when the line was whole
    assert runtime_time(unwrapper.time) == pytest.approx(1796378401.123456789)
    assert runtime_time("2026-12-04T11:00:01+01:00") == 1796378401.0
    pipeline, name = pipeline_for("cri")
    record = pipeline.parse(name, f"2026-12-04T10:00:01Z stdout F {PLAIN[0]}")
    plain = pipeline_for(None)[0].parse(name, PLAIN[0])
    assert record is not None and record == plain  # 28/Nov/2026:07:05:56 from nginx, not the runtime's


def test_empty_lines_and_crlf_unwrap_like_plain_ones() -> None:
    assert list(unwrapped("cri", ["2026-12-04T10:00:00Z stdout F ", "2026-12-04T10:00:00Z stdout F"])) == [
        "",
        "",
    ]
    docker_lines = [json.dumps({"log": t, "stream": "stdout", "time": "2026-12-04T10:00:00Z"})
                    for t in ("a\r\n", "b\n", "par", "t\n", "")]  # fmt: skip
    assert list(unwrapped("docker", docker_lines)) == ["a", "b", "part", ""]
    assert list(unwrapped("cri", [""])) == [LineResult.SKIPPED]  # linereader's mark of an overlong line


def test_random_bytes_never_raise() -> None:
    rng = random.Random(5)
    for kind in ("cri", "docker"):
        unwrapper = Unwrapper(kind)
        for i in range(3000):
            line = bytes(rng.randrange(256) for _ in range(rng.randrange(40))).decode("utf-8", "replace")
            if i % 3 == 0:
                line = f"2026-12-04T10:00:00Z stdout {'PF'[i % 2]} " + line
            unwrapper.feed(i % 4, line)
        for file in range(4):
            list(unwrapper.end(file))


def test_wrapper_setting_in_rules_yaml(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "sources:\n"
        "  - {name: ingress, path: /var/log/containers/*.log, format: nginx, log_format: ingress-nginx,"
        " wrapper: cri}\n"
        "  - {name: plain, path: /var/log/nginx/access.log, format: nginx}\n"
    )
    config = load_config(rules)
    assert [s.wrapper for s in config.sources] == ["cri", None]
    rules.write_text("sources:\n  - {name: a, path: /x.log, format: nginx, wrapper: containerd}\n")
    with pytest.raises(ConfigError) as err:
        load_config(rules)
    assert "sources[0].wrapper" in str(err.value) and "cri, docker" in str(err.value)


def test_replay_wrapper_needs_format(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"sources:\n  - {{name: a, path: {NGINX_LOG}, format: nginx, wrapper: cri}}\n")
    assert main(["replay", "--rules", str(rules), "--wrapper", "cri", str(NGINX_LOG)]) == 2
    assert "--wrapper goes with --format" in capsys.readouterr().err


# -- kubelet's files ------------------------------------------------------------------------------


def test_rotation_order_knows_kubelet_names() -> None:
    names = ["0.log", "0.log.20261204-100000", "0.log.20261203-235959.gz", "0.log.20261204-090000.gz"]
    ordered = [p.name for p in rotation_order(Path("/var/log/pods/ns_pod_uid/c") / n for n in names)]
    assert ordered == [
        "0.log.20261203-235959.gz",
        "0.log.20261204-090000.gz",
        "0.log.20261204-100000",
        "0.log",
    ]


def test_replay_over_var_log_containers_reads_the_rotations_beside_the_link_target(tmp_path: Path) -> None:
    """A glob over /var/log/containers/*.log (symlinks) also reads what kubelet rotated and
    compressed beside each link's target, oldest first: every line of the fixture once."""
    pod = tmp_path / "pods" / "ingress-nginx_controller-7d9f_0c1e" / "controller"
    pod.mkdir(parents=True)
    links = tmp_path / "containers"
    links.mkdir()
    wrapped = cri(PLAIN, 9)
    # kubelet rotates between two lines the runtime wrote: after an F (whole) line
    ends = [i + 1 for i, line in enumerate(wrapped) if " stdout F " in line]
    a, b = ends[len(ends) // 3], ends[2 * len(ends) // 3]
    thirds = [wrapped[:a], wrapped[a:b], wrapped[b:]]
    with gzip.open(pod / "0.log.20261204-090000.gz", "wt", encoding="utf-8") as z:
        z.write("".join(line + "\n" for line in thirds[0]))
    write(pod / "0.log.20261204-100000", thirds[1])
    write(pod / "0.log", thirds[2])
    os.symlink(pod / "0.log", links / "controller-7d9f_ingress-nginx_controller-0c1e.log")
    files = source_files(str(links / "*.log"))
    assert [f.name for f in files] == ["0.log.20261204-090000.gz", "0.log.20261204-100000",
                                      "controller-7d9f_ingress-nginx_controller-0c1e.log"]  # fmt: skip
    assert replay_counts("cri", *files) == {"parsed": len(PLAIN)}


# -- the daemon -----------------------------------------------------------------------------------


@pytest.mark.system
def test_daemon_joins_parts_across_a_reload_and_a_restart(tmp_path: Path) -> None:
    """The real daemon reads a `P` part, then reloads (SIGHUP) or stops (SIGTERM) and starts again
    before the line's `F` part is written: the parts are still joined (the pending part is carried
    over a reload and committed with the read positions), nothing is unparsed or counted twice."""
    ws = Workspace(tmp_path)
    try:
        container = ws.logs / "pods" / "default_xinference-0_5f1c" / "gateway"
        container.mkdir(parents=True)
        live = container / "0.log"
        live.touch()
        (ws.logs / "containers").mkdir()
        os.symlink(live, ws.logs / "containers" / "xinference-0_default_gateway-5f1c.log")
        ws.write_rules(path=str(ws.logs / "containers" / "*.log"), start_at="beginning")
        rules = yaml.safe_load(ws.rules.read_text())
        rules["sources"][0]["wrapper"] = "cri"
        ws.rules.write_text(yaml.safe_dump(rules, sort_keys=False))

        def append(*lines: str) -> None:
            with live.open("a", encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in lines))

        def part_read(d: DaemonProcess, line: str) -> None:
            batches = total(d.metrics(), "xinf_watch_batches_total")
            append(f"{runtime_stamp(0)} stdout P {line[:50]}")
            d.wait_until(lambda m: total(m, "xinf_watch_batches_total") > batches, what="the part read")

        d = ws.daemon().start()
        append(*cri(PLAIN[:20], 4))
        d.wait_until(lambda m: parsed_lines(m) == 20, what="the first lines")
        part_read(d, PLAIN[20])
        d.hup()
        d.wait_for("RELOADING=1")
        d.wait_for("READY=1")
        append(f"{runtime_stamp(0)} stdout F {PLAIN[20][50:]}")
        d.wait_until(lambda m: parsed_lines(m) == 21, what="the line joined over the reload")

        part_read(d, PLAIN[21])
        d.terminate()
        append(f"{runtime_stamp(0)} stdout F {PLAIN[21][50:]}", *cri(PLAIN[22:30], 5))
        d.start()
        m = d.wait_until(lambda m: parsed_lines(m) == 30, what="the line joined over the restart")
        assert total(m, "xinf_watch_lines_total", result="unparsed") == 0
    finally:
        ws.close()


# uvicorn's default access line (`%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s`),
# as a container's stdout has it: no time of its own. Written by hand after that format (no uvicorn here).
UVICORN = r'INFO: +(?P<ip>[^ ]+):\d+ - "(?P<request>[^"]*)" (?P<status>\d{3})(?: .*)?'


def test_a_regex_without_ts_takes_the_runtime_s_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With a wrapper a `regex` source may leave `ts` out: the record's time is then the runtime's
    (of the line's last part); a runtime time that does not parse makes the line unparsed. Without a
    wrapper the pattern is refused, as before."""
    log = write(
        tmp_path / "0.log",
        [
            '2026-12-04T10:00:00.250000000Z stdout F INFO:     10.0.0.7:51234 - "GET /v1/models HTTP/1.1" 200'
            " OK",
            '2026-12-04T10:00:01.000000000Z stdout P INFO:     10.0.0.8:40000 - "POST /v1/chat/compl',
            '2026-12-04T10:00:02.500000000Z stdout F etions HTTP/1.1" 401 Unauthorized',
            '2026-13-45T99:00:00.000000000Z stdout F INFO:     10.0.0.9:1 - "GET / HTTP/1.1" 200 OK',
        ],
    )
    rules = tmp_path / "rules.yaml"
    source = {"name": "xinference", "path": str(log), "format": "regex", "pattern": UVICORN}
    rules.write_text(yaml.safe_dump({"sources": [source]}))
    with pytest.raises(ConfigError) as err:
        load_config(rules)
    assert "regex has no named group ts" in str(err.value)
    rules.write_text(yaml.safe_dump({"sources": [{**source, "wrapper": "cri"}]}))
    load_config(rules)
    assert main(["replay", "--rules", str(rules), "--events", "--metrics-out", str(tmp_path / "m.prom")]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["ts"], e["ip"], e["path"], e["status"]) for e in events] == [
        ("2026-12-04T10:00:00.250Z", "10.0.0.7", "/v1/models", 200),
        ("2026-12-04T10:00:02.500Z", "10.0.0.8", "/v1/chat/completions", 401),
    ]
    assert (
        'xinf_watch_lines_total{result="unparsed",source="xinference"} 1.0'
        in (tmp_path / "m.prom").read_text()
    )
