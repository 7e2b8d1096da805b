"""The `ingress-nginx` presets on lines a real nginx wrote, and the README's ConfigMap lines.

Which lines are real: nginx (Debian's, run here as a process) writes them with
`log_format` set to the preset, in front of a small HTTP backend standing in for Xinference, with
two upstream servers of which the first refuses connections (so some lines carry two upstreams,
`127.0.0.1:A, 127.0.0.1:B` and `502, 200`). The variables ingress-nginx sets itself
(`$proxy_upstream_name`, `$proxy_alternative_upstream_name`, `$req_id`) are set in the config the
way ingress-nginx's template sets them; no ingress-nginx controller runs here. The CRI wrapping
around the same lines follows the documented format (no containerd here either).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from receivers import free_port

from xinf_watch.formats import build_parser
from xinf_watch.formats.nginx import NGINX_PRESETS
from xinf_watch.ingest.wrappers import unwrapped
from xinf_watch.model import Record

ROOT = Path(__file__).resolve().parents[1]
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)

# ingress-nginx's documented default log-format-upstream (user-guide/nginx-configuration/log-format)
DOCUMENTED_DEFAULT = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" '
    '"$http_user_agent" $request_length $request_time [$proxy_upstream_name] '
    "[$proxy_alternative_upstream_name] $upstream_addr $upstream_response_length $upstream_response_time "
    "$upstream_status $req_id"
)


def test_preset_is_the_documented_default_and_the_readme_configmap_adds_the_key() -> None:
    assert NGINX_PRESETS["ingress-nginx"] == DOCUMENTED_DEFAULT
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"^\s*log-format-upstream: '(.*)'$", readme, re.MULTILINE)
    assert m, "README: no log-format-upstream line"
    assert m.group(1) == NGINX_PRESETS["ingress-nginx-key"] == DOCUMENTED_DEFAULT + ' "$http_authorization"'


class Backend(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        ok = self.headers.get("Authorization") == "Bearer sk-good"
        body = b'{"object": "list", "data": []}' if ok else b'{"detail": "Unauthorized"}'
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET  # noqa: N815

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def nginx_log(tmp_path: Path) -> Iterator[Path]:
    """nginx in front of the backend, logging with the `ingress-nginx-key` preset."""
    if NGINX is None:
        if os.environ.get("CI") == "true":
            pytest.fail("nginx is not installed (Debian package nginx)")
        pytest.skip("nginx is not installed")
    backend = ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    port, dead = free_port(), free_port()
    log = tmp_path / "access.log"
    fmt = NGINX_PRESETS["ingress-nginx-key"].replace("'", "\\'")
    temps = "".join(f"{name}_temp_path {tmp_path}/{name};\n"
                    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))  # fmt: skip
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""
daemon off; master_process off; pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;
events {{}}
http {{
  {temps}
  map $request_id $req_id {{ default $request_id; }}
  log_format upstreaminfo '{fmt}';
  upstream upstream_balancer {{ server 127.0.0.1:{dead}; server 127.0.0.1:{backend.server_port}; }}
  server {{
    listen 127.0.0.1:{port};
    access_log {log} upstreaminfo;
    set $proxy_upstream_name "default-xinference-9997";
    set $proxy_alternative_upstream_name "";
    location / {{ proxy_pass http://upstream_balancer; }}
  }}
}}
""")
    proc = subprocess.Popen([NGINX, "-e", str(tmp_path / "error.log"), "-p", str(tmp_path), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
                break
            except urllib.error.HTTPError:
                break  # nginx answered
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    why = proc.stderr.read() if proc.stderr else b""
                    raise AssertionError(f"nginx did not start: {why!r}") from None
                time.sleep(0.05)
        for n, (path, auth) in enumerate(
            [
                ("/v1/models", "Bearer sk-good"),
                ("/v1/models", "Bearer sk-bad"),
                ("/v1/chat/completions?x=1", "Bearer sk-good"),
                ("/v1/models", None),
            ]
        ):
            method = "POST" if n == 2 else "GET"
            headers = {"Authorization": auth} if auth else {}
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, headers=headers)
            with contextlib.suppress(urllib.error.HTTPError):  # a 401 is an answer
                urllib.request.urlopen(request, timeout=5).close()
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
        backend.shutdown()
        backend.server_close()
    yield log


def test_real_nginx_lines_parse_with_the_preset_plain_and_cri_wrapped(nginx_log: Path) -> None:
    lines = nginx_log.read_text().splitlines()
    assert len(lines) == 5, lines  # /health and the 4 requests
    assert any(", " in line for line in lines), "no line with two upstreams: the test lost its point"
    parse = build_parser("nginx", log_format="ingress-nginx-key")
    records = [parse(line) for line in lines]
    assert all(type(r) is Record for r in records), list(zip(lines, records, strict=True))
    by_path = {(r.method, r.path, r.credential): r.status for r in records if isinstance(r, Record)}
    assert by_path == {
        ("GET", "/health", None): 401,
        ("GET", "/v1/models", "Bearer sk-good"): 200,
        ("GET", "/v1/models", "Bearer sk-bad"): 401,
        ("POST", "/v1/chat/completions?x=1", "Bearer sk-good"): 200,
        ("GET", "/v1/models", None): 401,
    }
    assert all(isinstance(r, Record) and r.ip == "127.0.0.1" and r.duration is not None for r in records)
    ids = [r.request_id for r in records if isinstance(r, Record)]  # $req_id: nginx's $request_id, 32 hex
    assert len(set(ids)) == 5 and all(i is not None and re.fullmatch("[0-9a-f]{32}", i) for i in ids), ids
    # without the key, the default format reads the same lines up to $req_id
    default = build_parser("nginx", log_format="ingress-nginx")
    cut = [line.rsplit(' "', 1)[0] for line in lines]
    assert [getattr(default(line), "status", None) for line in cut] == [r.status for r in records]  # type: ignore[union-attr]

    wrapped = [f"2026-12-04T10:00:0{i}.000000001Z stdout {tag} {part}"
               for i, line in enumerate(lines)
               for tag, part in (("P", line[:33]), ("F", line[33:]))]  # fmt: skip
    assert [parse(line) for line in unwrapped("cri", wrapped)] == records
