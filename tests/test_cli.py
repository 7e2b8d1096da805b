"""The command line (docs/DESIGN.md section 2): exit codes, one-line errors, replay inputs and outputs.

A few cases run `python -m xinf_watch` as a real process (what the shell sees: exit status,
broken pipes, progress on a slow file); the rest call `xinf_watch.app.cli.main(argv)` in-process.
"""

from __future__ import annotations

import gc
import gzip
import os
import re
import shutil
import subprocess
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from paths import FIXTURES
from prometheus_client.parser import text_string_to_metric_families

from xinf_watch import __version__
from xinf_watch.app import replay as replay_module
from xinf_watch.app.cli import main
from xinf_watch.config.schema import ConfigError

REPO = Path(__file__).resolve().parents[1]
BAD = Path(__file__).parent / "data" / "bad"
GENERATOR = REPO / "bench" / "gen_combined_key.py"
NGINX_LOG = FIXTURES / "nginx" / "access_combined_key.log"
NGINX_LINES = len(NGINX_LOG.read_bytes().splitlines())

# docs/DESIGN.md section 7: the fields every `replay --events` line has; plus ip_allowed and fingerprint.
EVENT_FIELDS = {
    "ts", "source", "ip", "ip_forwarded", "method", "path", "status", "outcome", "reason",
    "credential", "key", "owner", "key_state", "scope", "scope_allowed", "duration", "bytes",
    "user_agent", "request_id",
} | {"ip_allowed", "fingerprint", "scope_denied_by"}  # fmt: skip


def run_process(
    *argv: str | Path, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xinf_watch", *map(str, argv)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def run_main(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def write_rules(path: Path, sources: Sequence[dict[str, str]] = (), keys: Sequence[Path] = ()) -> Path:
    doc = {"sources": list(sources), "keys": [str(k) for k in keys]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def gateway(log: Path = NGINX_LOG) -> dict[str, str]:
    return {"name": "gateway", "path": str(log), "format": "nginx", "log_format": "combined_key"}


def lines_total(exposition: str) -> dict[tuple[str, str], float]:
    return {
        (s.labels["source"], s.labels["result"]): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
        if s.name == "xinf_watch_lines_total"
    }


# -- version, help --------------------------------------------------------------------------------


def test_version_as_a_process() -> None:
    done = run_process("--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"xinf-watch {__version__}\n", "")


def test_version_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"xinf-watch {__version__}\n"


def test_help_names_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for command in ("check", "replay", "--version"):
        assert command in out


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys)
    assert code == 2 and out == ""
    assert "check" in err and "replay" in err  # the help, on stderr


# -- check --------------------------------------------------------------------------------------------


def test_check_valid_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = write_rules(tmp_path / "rules.yaml", [gateway()], [FIXTURES / "keys.yaml"])
    doc = yaml.safe_load(rules.read_text()) | {"state": {"dir": str(tmp_path / "state")}}
    rules.write_text(yaml.safe_dump(doc))
    code, out, err = run_main(capsys, "check", "--rules", rules)
    assert (code, err) == (0, "")
    assert out == f"{rules}: ok: 1 sources, 12 keys, 0 rules\n"


def test_check_notes_a_state_dir_the_daemon_could_not_create(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "taken").write_text("a file, not a directory")
    rules = write_rules(tmp_path / "rules.yaml", [gateway()], [FIXTURES / "keys.yaml"])
    doc = yaml.safe_load(rules.read_text()) | {"state": {"dir": str(tmp_path / "taken" / "state")}}
    rules.write_text(yaml.safe_dump(doc))
    code, out, err = run_main(capsys, "check", "--rules", rules)
    assert (code, out) == (0, f"{rules}: ok: 1 sources, 12 keys, 0 rules\n")  # a note, not an error
    assert err == (
        f"{rules}: note: state.dir {tmp_path}/taken/state: {tmp_path}/taken is not a directory; run as "
        "this user, the daemon would keep its state and alerts in memory until it can write there\n"
    )


def test_check_valid_config_as_a_process(tmp_path: Path) -> None:
    shutil.copy(REPO / "rules" / "rules.yaml", tmp_path / "rules.yaml")
    doc = yaml.safe_load((tmp_path / "rules.yaml").read_text(encoding="utf-8"))
    doc.update(sources=[gateway()], keys=[str(FIXTURES / "keys.yaml")])
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    done = run_process("check", "--rules", "rules.yaml", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert re.fullmatch(r"rules\.yaml: ok: 1 sources, 12 keys, \d+ rules\n", done.stdout), done.stdout


@pytest.mark.parametrize("name", sorted(p.name for p in BAD.glob("*.yaml")))
def test_check_bad_config(
    name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(BAD)  # messages name the file as given on the command line
    monkeypatch.delenv("XINF_WATCH_TEST_UNSET_TOKEN", raising=False)
    code, out, err = run_main(capsys, "check", "--rules", name)
    assert (code, out) == (2, "")
    assert err == (BAD / name).with_suffix(".expected").read_text(encoding="utf-8")
    assert "Traceback" not in err


def test_check_bad_config_as_a_process() -> None:
    done = run_process("check", "--rules", "multiple-errors.yaml", cwd=BAD)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (BAD / "multiple-errors.expected").read_text(encoding="utf-8")


def test_check_missing_rules_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "check", "--rules", tmp_path / "nope.yaml")
    assert (code, out) == (2, "")
    assert err == f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory\n"


@pytest.mark.parametrize(
    "text",
    [
        "keys:\n  - {key: sk-Yn9ggOg8DoIku, alias: a, revoked: maybe}\n",
        "keys:\n  - {key: sk-Yn9ggOg8DoIku, alias: a}\n  - {key: sk-Yn9ggOg8DoIku, alias: b}\n",
        "keys:\n  - {key: sk-Yn9ggOg8DoIku, alias: [\n",
        "keys: {alias: a}\n",
    ],
    ids=["bad-revoked", "duplicate-key", "yaml-syntax", "not-a-list"],
)
def test_check_broken_key_file(text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(text, encoding="utf-8")
    rules = write_rules(tmp_path / "rules.yaml", [gateway()], [keys])
    code, out, err = run_main(capsys, "check", "--rules", rules)
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1 and err.endswith("\n"), err
    assert err.startswith(f"{keys}:"), err
    assert "Traceback" not in err


def test_check_missing_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = write_rules(tmp_path / "rules.yaml", [gateway()], [tmp_path / "missing.yaml"])
    code, out, err = run_main(capsys, "check", "--rules", rules)
    assert (code, out) == (2, "")
    line = rules.read_text().splitlines().index(f"- {tmp_path / 'missing.yaml'}") + 1
    assert err == (
        f"{rules}:{line}: keys[0]: {tmp_path / 'missing.yaml'} does not exist "
        "(expected a key file: Xinference's auth config, auth.db or keys.yaml)\n"
    )


def binding_permissions() -> list[str]:
    """A command prefix under which permission bits bind: root reads anything unless its DAC
    capabilities are dropped (the tests run as root in CI)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to see a permission denied as root"
    drop = "-dac_override,-dac_read_search"
    return [setpriv, f"--bounding-set={drop}", f"--inh-caps={drop}"]


def test_check_reports_every_key_file_that_cannot_be_used(tmp_path: Path) -> None:
    (tmp_path / "keys.d").mkdir()
    locked = tmp_path / "locked.yaml"
    locked.write_bytes((FIXTURES / "keys.yaml").read_bytes())
    locked.chmod(0)
    (tmp_path / "broken.yaml").write_text("keys: {alias: a}\n", encoding="utf-8")
    listed = ["missing-1.yaml", "keys.d", "locked.yaml", FIXTURES / "keys.yaml", "broken.yaml"]
    listed.append("missing-2.yaml")
    (tmp_path / "rules.yaml").write_text(
        f"sources: [{{name: gateway, path: {NGINX_LOG}, format: nginx}}]\n\nkeys:\n"
        + "".join(f"  - {name}\n" for name in listed),
        encoding="utf-8",
    )
    done = subprocess.run(
        [*binding_permissions(), sys.executable, "-m", "xinf_watch", "check", "--rules", "rules.yaml"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (2, "")
    key_file = "expected a key file: Xinference's auth config, auth.db or keys.yaml"
    assert done.stderr.splitlines() == [
        f"rules.yaml:4: keys[0]: {tmp_path / 'missing-1.yaml'} does not exist ({key_file})",
        f"rules.yaml:5: keys[1]: {tmp_path / 'keys.d'} is a directory ({key_file})",
        f"rules.yaml:6: keys[2]: {locked} cannot be read: permission denied "
        "(expected a key file readable by xinf-watch's user)",
        f"{tmp_path / 'broken.yaml'}:1: keys: expected a list of keys",
        f"rules.yaml:9: keys[5]: {tmp_path / 'missing-2.yaml'} does not exist ({key_file})",
    ]


# -- replay: inputs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "log"),
    [
        ("combined_key", "nginx/access_combined_key.log"),
        ("nginx-json", "nginx/access_json.log"),
        ("caddy", "caddy/access_log_credentials.log"),
        ("haproxy", "haproxy/haproxy_stdout_raw.log"),
    ],
)
def test_replay_with_format_and_no_rules(
    fmt: str, log: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = tmp_path / "metrics.prom"
    lines = len((FIXTURES / log).read_bytes().splitlines())
    code, out, err = run_main(capsys, "replay", "--format", fmt, "--metrics-out", metrics, FIXTURES / log)
    assert (code, out, err) == (0, "", "")  # no rules: no alerts
    assert lines_total(metrics.read_text(encoding="utf-8")) == {("replay", "parsed"): lines}
    code, out, err = run_main(
        capsys, "replay", "--format", fmt, "--source", "edge", "--events", FIXTURES / log
    )
    assert (code, err) == (0, "")
    events = [orjson.loads(line) for line in out.splitlines()]
    assert len(events) == lines
    assert {e["source"] for e in events} == {"edge"}
    assert {e["key_state"] for e in events} <= {"unknown", "none"}  # no registry: no key is known


def gzip_copies(tmp_path: Path) -> tuple[Path, Path, Path]:
    plain = tmp_path / "access.log"
    shutil.copy(NGINX_LOG, plain)
    compressed = tmp_path / "access.log.2.gz"
    misnamed = tmp_path / "access.log.3"  # gzip is recognised by its content, not its name
    for path in (compressed, misnamed):
        with gzip.open(path, "wb") as out:
            out.write(NGINX_LOG.read_bytes())
    return plain, compressed, misnamed


def test_replay_gzip_gives_the_same_events(tmp_path: Path) -> None:
    outputs = []
    for path in gzip_copies(tmp_path):
        done = run_process("replay", "--format", "combined_key", "--events", path)
        assert (done.returncode, done.stderr) == (0, "")
        outputs.append(done.stdout)
    assert len(outputs[0].splitlines()) == NGINX_LINES
    assert outputs[1] == outputs[0]
    assert outputs[2] == outputs[0]


def test_replay_closes_gzip_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No file is left for the garbage collector to close (ResourceWarning: unclosed file)."""
    _, compressed, _ = gzip_copies(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        code, out, err = run_main(capsys, "replay", "--format", "combined_key", compressed)
        gc.collect()
    assert (code, out, err) == (0, "", "")
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_replay_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.log"
    code, out, err = run_main(capsys, "replay", "--format", "combined_key", missing)
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1 and str(missing) in err, err


def test_replay_missing_file_as_a_process(tmp_path: Path) -> None:
    rules = write_rules(tmp_path / "rules.yaml", [gateway()], [FIXTURES / "keys.yaml"])
    done = run_process("replay", "--rules", rules, "--source", "gateway", tmp_path / "nope.log")
    assert (done.returncode, done.stdout) == (2, "")
    assert len(done.stderr.splitlines()) == 1 and str(tmp_path / "nope.log") in done.stderr
    assert "Traceback" not in done.stderr


def test_replay_missing_rules_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "replay", "--rules", tmp_path / "nope.yaml", NGINX_LOG)
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1 and str(tmp_path / "nope.yaml") in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--format", "combined_key"], "name at least one"),
        (["--source", "elsewhere"], "not in rules.yaml"),
        (["--format", "combined_key", "--source", "gateway", str(NGINX_LOG)], "is a configured source"),
    ],
)
def test_replay_usage_errors(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = write_rules(tmp_path / "rules.yaml", [gateway()], [FIXTURES / "keys.yaml"])
    code, out, err = run_main(capsys, "replay", "--rules", rules, *argv)
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1 and message in err, err


def test_replay_reads_the_configured_sources(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = write_rules(tmp_path / "rules.yaml", [gateway()], [FIXTURES / "keys.yaml"])
    code, by_config, err = run_main(capsys, "replay", "--rules", rules, "--events")
    assert (code, err) == (0, "")
    code, by_name, err = run_main(capsys, "replay", "--rules", rules, "--events", NGINX_LOG)
    assert (code, err) == (0, "")
    assert by_config == by_name and len(by_config.splitlines()) == NGINX_LINES


def test_replay_skips_a_globbed_file_rotated_away_before_it_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """logrotate deleting `access.log.2` between the glob and its turn to be read: the others are
    replayed, a note says which one went; a file named on the command line must exist."""
    logs = tmp_path / "logs"
    logs.mkdir()
    shutil.copy(NGINX_LOG, logs / "access.log")
    (logs / "access.log.2").write_text("")
    rules = write_rules(tmp_path / "rules.yaml", [gateway(logs / "access.log*")], [FIXTURES / "keys.yaml"])
    real_records = replay_module._records

    def rotated_away_first(pipeline: Any, item: Any, seq: int, progress: Any) -> Any:
        (logs / "access.log.2").unlink(missing_ok=True)  # gone once reading begins
        return real_records(pipeline, item, seq, progress)

    monkeypatch.setattr(replay_module, "_records", rotated_away_first)
    code, out, err = run_main(capsys, "replay", "--rules", rules, "--events")
    assert code == 0 and len(out.splitlines()) == NGINX_LINES
    assert err == f"replay: note: {logs}/access.log.2 vanished before it was read (rotated away?): skipped\n"
    code, out, err = run_main(capsys, "replay", "--rules", rules, "--events", logs / "access.log.2")
    assert (code, out, err) == (2, "", f"xinf-watch: {logs}/access.log.2: no such file\n")


# -- replay: outputs ------------------------------------------------------------------------------


def test_replay_events_have_exactly_the_contract_fields(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = write_rules(tmp_path / "rules.yaml", [gateway()], [FIXTURES / "keys.yaml"])
    code, out, err = run_main(capsys, "replay", "--rules", rules, "--events")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == NGINX_LINES
    for line in lines:
        event = orjson.loads(line)
        assert set(event) == EVENT_FIELDS, sorted(set(event) ^ EVENT_FIELDS)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z", event["ts"]), event["ts"]
        assert "?" not in event["path"]
        assert isinstance(event["status"], int)
        assert event["source"] == "gateway"
    keys = {orjson.loads(line)["key"] for line in lines}
    assert {"chatbot-prod", "unknown", "none", "jwt:platform"} <= keys


def test_replay_alerts_are_json_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = yaml.safe_load((REPO / "rules" / "rules.yaml").read_text(encoding="utf-8"))
    doc.update(
        sources=[gateway()], keys=[str(FIXTURES / "keys.yaml")], networks={"internal": ["127.0.1.0/24"]}
    )
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(doc), encoding="utf-8")
    code, out, err = run_main(capsys, "replay", "--rules", rules)
    assert (code, err) == (0, "")
    alerts = [orjson.loads(line) for line in out.splitlines()]
    assert alerts, "the shipped rules raise alerts on the nginx recording"
    contract = {"rule", "kind", "severity", "status", "group", "key", "count", "first_ts", "last_ts"}
    contract |= {"summary", "source", "id"}
    for alert in alerts:
        assert contract <= set(alert), alert
        assert alert["status"] in ("firing", "resolved")


# -- replay: progress and pipes -------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400,000 generated combined_key lines: a replay of more than a second."""
    out = tmp_path_factory.mktemp("big") / "access.log"
    subprocess.run(
        [sys.executable, str(GENERATOR), "--lines", "400000", "--out", str(out)], check=True, timeout=60
    )
    return out


def test_progress_on_a_slow_file_and_quiet(big_log: Path) -> None:
    argv = [sys.executable, "-m", "xinf_watch", "replay", "--format", "combined_key", str(big_log)]
    # both at once: the test takes one replay's time
    loud = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    quiet = subprocess.Popen([*argv, "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    loud_out, loud_err = loud.communicate(timeout=120)
    quiet_out, quiet_err = quiet.communicate(timeout=120)
    assert (loud.returncode, loud_out) == (0, "")
    assert (quiet.returncode, quiet_out, quiet_err) == (0, "", "")
    progress = loud_err.splitlines()
    assert progress, "no progress line for a replay of more than a second"
    for line in progress:
        assert line.startswith(f"replay: {big_log.name}: "), line
    assert re.fullmatch(
        r"replay: access\.log: done, 400,000 lines in [\d.]+ s \([\d,]+ lines/s\)", progress[-1]
    )


def test_closed_stdout_is_not_an_error() -> None:
    """`xinf-watch replay --events ... | head -1`: no traceback, no error message, exit 0."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout block-buffered
    proc = subprocess.Popen(
        [sys.executable, "-m", "xinf_watch", "replay", "--format", "combined_key", "--events", NGINX_LOG],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # the output (~600 kB) is far larger than the pipe buffer
    stderr = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    code = proc.wait(timeout=60)
    assert orjson.loads(first)["source"] == "replay"
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert (code, stderr) == (0, ""), f"exit code {code}, stderr {stderr!r}"


@pytest.mark.parametrize("argv", [["--debug", "check"], ["check", "--debug"]])
def test_debug_shows_the_traceback_before_or_after_the_command(tmp_path: Path, argv: list[str]) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match="cannot read"):
        main([*argv, "--rules", str(missing)])
