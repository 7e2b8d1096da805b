"""`xinf-watch init` on the real gateway configs of the recordings and on broken ones.

The recorded configs (tests/fixtures/config/) name the logs where they were written during the
recording (/srv/recording/run/...); `--path-map` reads them where they are now, as a user reads
a container's log volume. Each working case ends as a user's would: `check` passes and a replay
of the matching recorded log through the written rules.yaml parses every line and names the
keys by the aliases of the keys.yaml written. No raw key, password or JWT secret of the auth
configs appears in anything init prints or writes. nginx's own `nginx -T` and `nginx -t` run for
real (Debian package nginx-light).
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from paths import FIXTURES
from prometheus_client.parser import text_string_to_metric_families
from tools import require_program

from xinf_watch import SHIPPED_RULES
from xinf_watch.app.cli import main

CONFIG = FIXTURES / "config"
DATA = Path(__file__).parent / "data" / "init"
RECORDING_LOGS = "/srv/recording/run/logs"
SHIPPED_RULE_COUNT = len(yaml.safe_load(SHIPPED_RULES.read_text())["rules"])


def secrets_of(auth_json: Path) -> list[str]:
    """Every key, password and the JWT secret of an --auth-config file."""
    doc = json.loads(auth_json.read_text())
    users = doc["user_config"]
    return [
        doc["auth_config"]["secret_key"],
        *(u["password"] for u in users),
        *(k for u in users for k in u["api_keys"]),
    ]


SECRETS = secrets_of(CONFIG / "auth.json") + secrets_of(CONFIG / "legacy" / "auth.json")
SECRETS += [
    v["key"]
    for k, v in json.loads((CONFIG / "native_keys.json").read_text()).items()
    if k != "all_keys_listing"
]


def init(capsys: pytest.CaptureFixture[str], tmp_path: Path, *argv: str | Path) -> tuple[int, str, str, Path]:
    """`xinf-watch init` into tmp_path/out; Xinference's home is an empty directory unless given."""
    out = tmp_path / "out"
    defaults: list[str | Path] = ["--out", out, "--state-dir", tmp_path / "state"]
    if "--xinference-home" not in argv:
        defaults += ["--xinference-home", tmp_path / "no-xinference"]
    code = main([str(a) for a in ["init", *defaults, *argv]])
    stdout, stderr = capsys.readouterr()
    written = "".join(p.read_text() for p in sorted(out.glob("*"))) if out.is_dir() else ""
    for secret in SECRETS:
        assert secret not in stdout + stderr + written
    return code, stdout, stderr, out


def replay(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, rules: Path, *argv: str | Path
) -> tuple[dict[tuple[str, str], float], list[dict[str, Any]]]:
    """Lines per (source, result) and the events of a replay through `rules`."""
    metrics = tmp_path / "replay.prom"
    code = main(["replay", "--rules", str(rules), "--quiet", "--events", "--metrics-out", str(metrics),
                 *map(str, argv)])  # fmt: skip
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    lines = {
        (s.labels["source"], s.labels["result"]): s.value
        for family in text_string_to_metric_families(metrics.read_text())
        for s in family.samples
        if s.name == "xinf_watch_lines_total"
    }
    return lines, [json.loads(line) for line in stdout.splitlines()]


def check(capsys: pytest.CaptureFixture[str], rules: Path) -> str:
    code = main(["check", "--rules", str(rules)])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    return stdout


def rules_of(out: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((out / "rules.yaml").read_text())
    return doc


def aliases_of(out: Path) -> set[str]:
    return {k["alias"] for k in yaml.safe_load((out / "keys.yaml").read_text())["keys"] or []}


def n_lines(path: Path) -> int:
    return len(path.read_bytes().splitlines())


def assert_keys_named(events: list[dict[str, Any]], out: Path, at_least: int) -> None:
    """Events name keys only by the aliases of the keys.yaml written, and name many of them."""
    aliases = aliases_of(out)
    seen = {e["key"] for e in events} - {"unknown", "none"}
    assert {k for k in seen if not k.startswith("jwt:")} <= aliases
    assert len(seen & aliases) >= at_least, (seen, aliases)


# --- the configs of the recordings ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "upstream", "path_map", "log", "auth"),
    [
        ("nginx.conf", ":9997", f"{RECORDING_LOGS}={FIXTURES}", "nginx/access_combined_key.log", "auth.json"),
        ("legacy/nginx-text.conf", "127.0.0.1:9995", f"/srv/recording/run/f={FIXTURES}/xinference-legacy",
         "xinference-legacy/text/nginx_access_combined_key.log", "legacy/auth.json"),
        ("legacy/nginx-json.conf", "localhost:9995", f"/srv/recording/run/f={FIXTURES}/xinference-legacy",
         "xinference-legacy/json/nginx_access_combined_key.log", "legacy/auth.json"),
    ],
)  # fmt: skip
def test_nginx_configs_of_the_recordings(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    config: str,
    upstream: str,
    path_map: str,
    log: str,
    auth: str,
) -> None:
    code, stdout, stderr, out = init(
        capsys, tmp_path, "--nginx-config", CONFIG / config, "--upstream", upstream,
        "--path-map", path_map, "--auth-config", CONFIG / auth,
    )  # fmt: skip
    assert code == 0, stderr
    n_keys = len([k for u in json.loads((CONFIG / auth).read_text())["user_config"] for k in u["api_keys"]])
    assert f"ok: 1 sources, {n_keys} keys, {SHIPPED_RULE_COUNT} rules" in stdout
    assert "does not carry the Authorization header" not in stdout
    doc = rules_of(out)
    assert doc["sources"] == [
        {"name": "gateway", "path": str(FIXTURES / log), "format": "nginx", "log_format": "combined_key"}
    ]
    assert doc["keys"] == [str(CONFIG / auth), str(out / "keys.yaml")]
    assert doc["metrics"]["listen"].startswith("127.0.0.1:")
    assert doc["state"]["dir"] == str(tmp_path / "state")
    assert doc["rules"] == yaml.safe_load(SHIPPED_RULES.read_text())["rules"]
    assert stat.S_IMODE((out / "keys.yaml").stat().st_mode) == 0o600
    assert "ok:" in check(capsys, out / "rules.yaml")
    lines, events = replay(capsys, tmp_path, out / "rules.yaml")
    assert lines == {("gateway", "parsed"): n_lines(FIXTURES / log)}
    assert_keys_named(events, out, at_least=4)


def test_nginx_config_lists_the_other_log_of_the_same_requests(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, stdout, _, _ = init(capsys, tmp_path, "--nginx-config", CONFIG / "nginx.conf")
    assert code == 0
    assert f"found nginx: {CONFIG / 'nginx.conf'}:31 proxies to Xinference" in stdout
    assert f"also written to {RECORDING_LOGS}/nginx/access_json.log: not read (the same requests)" in stdout


def test_caddy_config_of_the_recording(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    caddyfile = CONFIG / "Caddyfile"
    code, stdout, stderr, out = init(
        capsys, tmp_path, "--caddy-config", caddyfile, "--path-map", f"{RECORDING_LOGS}={FIXTURES}",
        "--auth-config", CONFIG / "auth.json",
    )  # fmt: skip
    assert code == 0, stderr
    # Two sites proxy to Xinference: :8092 with Caddy's default log (Authorization redacted), and
    # :8094 with log_credentials. Only the first needs the option.
    sources = {s["name"]: s for s in rules_of(out)["sources"]}
    assert sources == {
        "caddy-8092": {"name": "caddy-8092", "path": str(FIXTURES / "caddy/access.log"),
                       "format": "json", "preset": "caddy"},
        "caddy-8094": {"name": "caddy-8094", "path": str(FIXTURES / "caddy/access_log_credentials.log"),
                       "format": "json", "preset": "caddy"},
    }  # fmt: skip
    assert stdout.count("does not carry the Authorization header") == 1
    assert (
        f"    in the global options block ({caddyfile}:6):\n"
        "      servers 127.0.0.1:8092 {\n"
        "          log_credentials\n"
        "      }\n"
    ) in stdout
    check(capsys, out / "rules.yaml")
    lines, events = replay(capsys, tmp_path, out / "rules.yaml", "--source", "caddy-8094",
                           FIXTURES / "caddy/access_log_credentials.log")  # fmt: skip
    assert lines == {("caddy-8094", "parsed"): 313}
    assert_keys_named(events, out, at_least=4)
    lines, events = replay(capsys, tmp_path, out / "rules.yaml", "--source", "caddy-8092",
                           FIXTURES / "caddy/access.log")  # fmt: skip
    assert lines == {("caddy-8092", "parsed"): 313}
    assert {e["key"] for e in events} <= {"none", "unknown"} or all(
        e["key"].startswith("jwt:") for e in events if e["key"] not in ("none", "unknown")
    )

    # The lines printed, added where init said, make the second site log keys too.
    text = caddyfile.read_text().replace("\tservers 127.0.0.1:8094 {", "\tservers 127.0.0.1:8092 {\n"
                                         "\t\tlog_credentials\n\t}\n\tservers 127.0.0.1:8094 {")  # fmt: skip
    fixed = tmp_path / "Caddyfile"
    fixed.write_text(text)
    code, stdout, _, _ = init(capsys, tmp_path, "--caddy-config", fixed, "--force")
    assert code == 0
    assert "does not carry the Authorization header" not in stdout


def test_haproxy_config_of_the_recording(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, stdout, stderr, out = init(
        capsys, tmp_path, "--haproxy-config", CONFIG / "haproxy.cfg",
        "--rsyslog-config", CONFIG / "rsyslog-haproxy.conf",
        "--path-map", f"{RECORDING_LOGS}={FIXTURES}", "--auth-config", CONFIG / "auth.json",
    )  # fmt: skip
    assert code == 0, stderr
    assert f"syslog writes HAProxy's lines to {RECORDING_LOGS}/haproxy/haproxy.log" in stdout
    assert "does not carry the Authorization header" not in stdout
    assert rules_of(out)["sources"] == [
        {"name": "gateway", "path": str(FIXTURES / "haproxy/haproxy.log"), "format": "haproxy",
         "fields": {"captures": "Authorization|User-Agent"}}
    ]  # fmt: skip
    check(capsys, out / "rules.yaml")
    lines, events = replay(capsys, tmp_path, out / "rules.yaml")
    assert lines == {("gateway", "parsed"): 313}
    assert_keys_named(events, out, at_least=4)
    # HAProxy's other target of the same events (`log stdout format raw`) reads the same way
    lines, _ = replay(capsys, tmp_path, out / "rules.yaml", FIXTURES / "haproxy/haproxy_stdout_raw.log")
    assert lines == {("gateway", "parsed"): 313}


# --- Xinference's auth ---------------------------------------------------------------------------


def test_auth_db_under_xinference_home_is_referenced_not_copied(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_authdb import make_auth_db

    home = tmp_path / "xinference-home"
    (home / "auth").mkdir(parents=True)
    db = make_auth_db(home / "auth" / "auth.db")
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    monkeypatch.setenv("XINFERENCE_HOME", str(home))
    code, stdout, stderr, out = init(
        capsys, tmp_path, "--nginx-config", CONFIG / "nginx.conf",
        "--path-map", f"{RECORDING_LOGS}={FIXTURES}",
        "--xinference-home", os.environ["XINFERENCE_HOME"],
    )  # fmt: skip
    assert code == 0, stderr
    assert f"found Xinference auth.db: {db} (under XINFERENCE_HOME {home})" in stdout
    assert f"ok: 1 sources, 12 keys, {SHIPPED_RULE_COUNT} rules" in stdout
    assert rules_of(out)["keys"] == [str(db), str(out / "keys.yaml")]
    assert sorted(p.name for p in out.iterdir()) == ["keys.yaml", "rules.yaml"]
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    aliases = aliases_of(out)
    # auth.db names migrated keys `migrated-sk-XXXX`, which keys.yaml refuses as an alias (it looks
    # like a key): those get <owner>:<4 hex of the hash>; native keys keep their Xinference name.
    assert {"finance-bot", "analyst-old-laptop", "mlops-2025-q3"} <= aliases
    assert not [a for a in aliases if re.search(r"sk-|xf-", a)]
    assert len(aliases) == 12
    lines, events = replay(capsys, tmp_path, out / "rules.yaml")
    assert lines == {("gateway", "parsed"): 1613}
    assert_keys_named(events, out, at_least=6)
    assert "finance-bot" in {e["key"] for e in events}


def test_keys_yaml_names_keys_by_alias_and_hash_only(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, _, out = init(capsys, tmp_path, "--nginx-config", CONFIG / "nginx.conf",
                           "--auth-config", CONFIG / "auth.json")  # fmt: skip
    assert code == 0
    entries = yaml.safe_load((out / "keys.yaml").read_text())["keys"]
    users = json.loads((CONFIG / "auth.json").read_text())["user_config"]
    expected = [
        {
            "key_sha256": hashlib.sha256(k.encode()).hexdigest(),
            "alias": f"{u['username']}:{k[-4:]}",
            "owner": u["username"],
        }
        for u in users
        for k in u["api_keys"]
    ]
    assert entries == expected
    text = (out / "keys.yaml").read_text()
    assert "# permissions: [models:list, models:read]" in text
    assert "# expires_at:" in text and "# allowed_ips:" in text


def test_a_running_xinference_is_found_by_its_command_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(CONFIG / "legacy" / "auth.json", tmp_path / "auth.json")
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; time.sleep(60)",
            "xinference-local",
            "--auth-config",
            "auth.json",
        ],
        cwd=tmp_path,
    )
    try:
        # the child's command line is the parent's until it has exec'd: wait for it (a loaded CI)
        cmdline = Path(f"/proc/{process.pid}/cmdline")
        deadline = time.monotonic() + 10
        while b"xinference-local" not in cmdline.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.02)
        monkeypatch.setenv("XINFERENCE_HOME", str(tmp_path / "no-xinference"))
        code = main(["init", "--out", str(tmp_path / "out"), "--state-dir", str(tmp_path / "state"),
                     "--nginx-config", str(CONFIG / "legacy/nginx-text.conf"),
                     "--upstream", ":9995"])  # fmt: skip
        stdout, stderr = capsys.readouterr()
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert code == 0, stdout + stderr
    found = (
        f"found Xinference auth config: {tmp_path / 'auth.json'} (the command line of process {process.pid})"
    )
    assert found in stdout, stdout
    assert str(tmp_path / "auth.json") in rules_of(tmp_path / "out")["keys"]


# --- gateways that do not log the key yet ---------------------------------------------------------


def apply_fixes(config: Path, stdout: str) -> None:
    """Insert each printed line right after the line that opens the block init named."""
    lines = config.read_text().splitlines()
    inserts: list[tuple[int, str]] = []
    for m in re.finditer(r"^    in the \w+ block \((.+):(\d+)\):\n((?:      .*\n)+)", stdout, re.MULTILINE):
        assert m.group(1) == str(config)
        inserts += [(int(m.group(2)), line[6:]) for line in m.group(3).splitlines()]
    assert inserts
    for number, line in sorted(inserts, reverse=True):
        lines.insert(number, line)
    config.write_text("\n".join(lines) + "\n")


def test_nginx_without_the_authorization_header(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    nginx = require_program("nginx")
    logs = tmp_path / "logs"
    (logs / "nginx").mkdir(parents=True)
    config = tmp_path / "nginx.conf"
    config.write_text((DATA / "nginx-no-auth.conf").read_text().replace(RECORDING_LOGS, str(logs)))
    code, stdout, stderr, out = init(
        capsys, tmp_path, "--nginx-config", config, "--auth-config", CONFIG / "auth.json"
    )
    assert code == 0, stderr
    assert f"note: {config}:6: {logs}/nginx/access.log does not log the Authorization header" in stdout
    assert (
        f"    in the http block ({config}:3):\n"
        '      log_format combined_key \'$remote_addr - $remote_user [$time_local] "$request" $status '
        '$body_bytes_sent "$http_referer" "$http_user_agent" "$http_authorization" $request_time\';\n'
        f"    in the server block ({config}:7):\n"
        f"      access_log {logs}/nginx/xinference.access.log combined_key;\n"
        "    then: nginx -t && systemctl reload nginx\n"
    ) in stdout
    assert rules_of(out)["sources"][0]["path"] == f"{logs}/nginx/xinference.access.log"
    check(capsys, out / "rules.yaml")

    # Added where init says, the lines are valid nginx, and init then finds nothing to add.
    apply_fixes(config, stdout)
    done = subprocess.run([nginx, "-t", "-p", tmp_path, "-e", logs / "error.log", "-c", config],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    code, stdout, stderr, out = init(capsys, tmp_path, "--nginx-config", config, "--auth-config",
                                     CONFIG / "auth.json", "--force")  # fmt: skip
    assert code == 0, stderr
    assert "does not carry the Authorization header" not in stdout
    # The log nginx then writes has the recorded log's format: replayed as that source, all of it parses.
    lines, events = replay(capsys, tmp_path, out / "rules.yaml", FIXTURES / "nginx/access_combined_key.log")
    assert lines == {("gateway", "parsed"): 1613}
    assert_keys_named(events, out, at_least=4)


def test_nginx_minus_capital_t_output(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The recording's nginx.conf as `nginx -T` prints it (paths moved to tmp_path so nginx accepts it)."""
    nginx = require_program("nginx")
    run = tmp_path / "run"
    for sub in ("run/nginx", "logs/nginx"):
        (run / sub).mkdir(parents=True)
    config = run / "nginx.conf"
    config.write_text((CONFIG / "nginx.conf").read_text().replace("/srv/recording/run", str(run)))
    command = f"{nginx} -T -p {run} -e {run}/logs/nginx/error.log -c {config}"
    code, stdout, stderr, out = init(capsys, tmp_path, "--nginx-command", command,
                                     "--path-map", f"{run}/logs={FIXTURES}")  # fmt: skip
    assert code == 0, stderr
    assert f"found nginx: {config}:31 proxies to Xinference" in stdout
    lines, _ = replay(capsys, tmp_path, out / "rules.yaml")
    assert lines == {("gateway", "parsed"): 1613}


def test_nginx_includes_and_upstream_blocks(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, stdout, stderr, out = init(
        capsys, tmp_path, "--nginx-config", DATA / "nginx-include" / "nginx.conf"
    )
    assert code == 0, stderr
    assert f"found nginx: {DATA}/nginx-include/conf.d/xinference.conf:6 proxies to Xinference" in stdout
    (source,) = rules_of(out)["sources"]
    assert source["path"] == "/var/log/nginx/xinference.access.log"
    assert source["log_format"] == (  # not a preset: the format string itself
        '$remote_addr [$time_iso8601] "$request" $status $body_bytes_sent '
        '"$http_user_agent" "$http_authorization" $request_time'
    )
    check(capsys, out / "rules.yaml")


def test_nginx_location_with_logging_off(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = DATA / "nginx-log-off.conf"
    code, stdout, stderr, out = init(capsys, tmp_path, "--nginx-config", config)
    assert code == 0, stderr
    assert f"note: {config}:7: access_log off turns logging off here: remove it" in stdout
    assert (
        f"    in the location block ({config}:6):\n"
        "      access_log /var/log/nginx/xinference.access.log combined_key;\n"
    ) in stdout
    assert rules_of(out)["sources"][0]["path"] == "/var/log/nginx/xinference.access.log"
    check(capsys, out / "rules.yaml")


def test_caddy_without_a_log(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    caddyfile = DATA / "Caddyfile-no-log"
    code, stdout, stderr, out = init(capsys, tmp_path, "--caddy-config", caddyfile)
    assert code == 0, stderr
    assert (
        f"    in the site block ({caddyfile}:1):\n"
        "      log {\n          output file /var/log/caddy/xinference.access.log\n"
        "          format json\n      }\n"
        f"    in a global options block at the very top of {caddyfile}:\n"
        "      {\n          servers :443 {\n              log_credentials\n          }\n      }\n"
    ) in stdout
    assert rules_of(out)["sources"][0] == {
        "name": "gateway", "path": "/var/log/caddy/xinference.access.log", "format": "json", "preset": "caddy"
    }  # fmt: skip
    check(capsys, out / "rules.yaml")


def test_haproxy_without_httplog_or_capture(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = DATA / "haproxy-no-capture.cfg"
    code, stdout, stderr, out = init(capsys, tmp_path, "--haproxy-config", cfg)
    assert code == 0, stderr
    assert (
        f"    in the frontend section ({cfg}:9):\n      option httplog\n"
        f"    in the frontend section ({cfg}:9), after its other capture lines:\n"
        "      capture request header Authorization len 256\n"
        f"    in the global section ({cfg}:1):\n      log /dev/log local0\n"
    ) in stdout
    # the capture is added after the User-Agent one: the log shows them in that order
    assert rules_of(out)["sources"][0]["fields"] == {"captures": "User-Agent|Authorization"}
    check(capsys, out / "rules.yaml")


# --- what init refuses ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--nginx-config", DATA / "nginx-no-proxy.conf"],
         f"{DATA}/nginx-no-proxy.conf: no server block proxies to Xinference (port 9997); "
         f"proxy_pass seen: http://127.0.0.1:8080 at {DATA}/nginx-no-proxy.conf:7"),
        (["--nginx-config", CONFIG / "legacy/nginx-text.conf"],  # Xinference on 9995 there: --upstream needed
         f"{CONFIG}/legacy/nginx-text.conf: no server block proxies to Xinference (port 9997); "
         f"proxy_pass seen: http://127.0.0.1:9995 at {CONFIG}/legacy/nginx-text.conf:22"),
        (["--nginx-config", DATA / "nginx-garbage.conf"],
         f"{DATA}/nginx-garbage.conf:3: unexpected end of file: this block is not closed"),
        (["--caddy-config", DATA / "Caddyfile-garbage"],
         f"{DATA}/Caddyfile-garbage:1: unexpected end of file: this block is not closed"),
        (["--haproxy-config", DATA / "haproxy-garbage.cfg"],
         f"{DATA}/haproxy-garbage.cfg:1: 'bind' outside of a section "
         "(expected global, defaults, frontend, backend or listen first)"),
        (["--haproxy-config", DATA / "haproxy-no-capture.cfg", "--upstream", "10.0.0.5:9997"],
         f"{DATA}/haproxy-no-capture.cfg: no frontend reaches a server of Xinference (10.0.0.5:9997); "
         f"servers seen: 127.0.0.1:9997 at {DATA}/haproxy-no-capture.cfg:15"),
        (["--nginx-config", DATA / "missing.conf"],
         f"{DATA}/missing.conf: cannot read (No such file or directory)"),
        (["--caddy-config", DATA], f"{DATA}: cannot read (Is a directory)"),
        (["--nginx-config", CONFIG / "nginx.conf", "--upstream", "nonsense"],
         "--upstream 'nonsense': not host:port (expected e.g. 127.0.0.1:9997)"),
        (["--nginx-config", CONFIG / "nginx.conf", "--path-map", "/srv"], "--path-map: expected FROM=TO"),
    ],
)  # fmt: skip
def test_unusable_configs_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str | Path], message: str
) -> None:
    code, stdout, stderr, out = init(capsys, tmp_path, *argv)
    assert code == 2
    assert stderr.count("\n") == 1 and stderr.startswith(f"xinf-watch: {message}"), stderr
    assert not out.exists()


def test_an_unreadable_auth_config_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, stderr, out = init(capsys, tmp_path, "--nginx-config", CONFIG / "nginx.conf",
                                "--auth-config", tmp_path / "nope.json")  # fmt: skip
    assert code == 2
    assert stderr.count("\n") == 1 and f"{tmp_path / 'nope.json'}: " in stderr
    assert not out.exists()


def test_existing_files_are_kept_unless_forced(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["--nginx-config", CONFIG / "nginx.conf", "--auth-config", CONFIG / "auth.json"]
    assert init(capsys, tmp_path, *argv)[0] == 0
    out = tmp_path / "out"
    (out / "keys.yaml").write_text("keys: []  # edited by hand\n")
    before = {p.name: p.read_text() for p in out.iterdir()}
    code, _, stderr, _ = init(capsys, tmp_path, *argv)
    assert code == 2
    assert "already there (use --force to overwrite; nothing was written)" in stderr
    assert {p.name: p.read_text() for p in out.iterdir()} == before
    code, _, stderr, _ = init(capsys, tmp_path, *argv, "--force")
    assert code == 0, stderr
    assert "edited by hand" not in (out / "keys.yaml").read_text()
    assert stat.S_IMODE((out / "keys.yaml").stat().st_mode) == 0o600
    assert sorted(p.name for p in out.iterdir()) == ["keys.yaml", "rules.yaml"]  # no temporary file left


def test_group_makes_both_files_readable_by_the_service(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    group = grp.getgrnam("nogroup")  # any group but ours; Debian has this one
    nginx = ["--nginx-config", CONFIG / "nginx.conf"]
    code, stdout, stderr, out = init(capsys, tmp_path, *nginx, "--group", "nogroup")
    assert code == 0, stderr
    assert f"wrote {out / 'keys.yaml'} (mode 0640)" in stdout
    for path, mode in ((out, 0o750), (out / "rules.yaml", 0o640), (out / "keys.yaml", 0o640)):
        st = path.stat()
        assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (group.gr_gid, mode), path
    code, _, stderr, _ = init(capsys, tmp_path, *nginx, "--group", "no-such-group", "--force")
    assert (code, stderr) == (2, "xinf-watch: --group no-such-group: no such group\n")


def test_a_state_dir_that_cannot_be_created_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, stderr, out = init(capsys, tmp_path, "--nginx-config", CONFIG / "nginx.conf",
                                "--state-dir", blocker / "state")  # fmt: skip
    assert code == 2
    assert f"--state-dir {blocker / 'state'}: cannot be created" in stderr
    assert not out.exists()
