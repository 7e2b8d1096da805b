"""Hostile YAML in rules.yaml and key files (issue 11): one clear error line, never a crash, a
runaway or a crash loop. A key file rewritten badly while the daemon runs leaves it running on
the keys it had.

Each input is what an attacker with write access to a key file, or an unlucky editor, can make:
a NUL or ESC byte, 1,000 nested `[`, an alias bomb of under 1 KB.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import FIXTURE_KEYS, Workspace, access_line, parsed_lines, total
from receivers import wait_until
from test_daemon import append

from xinf_watch.config import ConfigError, load_config
from xinf_watch.keyfiles import KeyFileError, load_registry


def bomb(levels: int = 8, width: int = 10) -> str:
    """`a: &a [x, x, ...]`, `b: &b [*a, *a, ...]`...: width**levels values in a few hundred bytes."""
    lines = [f"l0: &l0 [{', '.join(['x'] * width)}]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


HOSTILE = {
    "nul": "keys:\n  - key: sk-AAAAAAAAAAAAA\x00\n    alias: a\n",
    "esc": "keys:\n  - key: sk-AAAAAAAAAAAAA\n    alias: \x1b[31mred\n",
    "nested": "keys: " + "[" * 1000 + "]" * 1000 + "\n",
    "bomb": bomb() + "keys: []\n",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_key_file_is_one_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(HOSTILE[name], encoding="utf-8")
    started = time.monotonic()
    with pytest.raises(KeyFileError) as caught:
        load_registry([str(path)])
    assert time.monotonic() - started < 2
    message = str(caught.value)
    assert "\n" not in message and "\x00" not in message and "\x1b" not in message
    assert "sk-AAAAAAAAAAAAA" not in message


def test_hostile_rules_yaml_is_refused_by_check_quickly_and_in_bounded_memory(tmp_path: Path) -> None:
    """A 643-byte rules.yaml of nested anchors once made `check` take 10 GB."""
    cases = {
        "bomb": "sources: []\nrules: []\n" + bomb(9),
        "nested": "rules: " + "[" * 1000 + "]" * 1000 + "\n",
        "nul": "sources: []\x00\n",
    }
    for name, text in cases.items():
        rules = tmp_path / f"{name}.yaml"
        rules.write_text(text, encoding="utf-8")
        assert len(text.encode()) < 2100  # small files, all of them
        script = (
            "import resource, sys\n"
            "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"  # 1 GiB at most
            "from xinf_watch.cli import main\n"
            f"sys.exit(main(['check', '--rules', {str(rules)!r}]))\n"
        )
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert time.monotonic() - started < 20, name
        assert done.returncode == 2, (name, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{rules}:"), (name, done.stderr)
        assert "Traceback" not in done.stderr
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "bomb.yaml")
    assert "expands to more than 200,000 values (an alias bomb?)" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nested.yaml")
    assert "nested deeper than 64 levels" in str(caught.value)


@pytest.mark.system
@pytest.mark.parametrize("name", ["nul", "nested", "bomb"])
def test_a_key_file_rewritten_badly_leaves_the_daemon_running_on_its_keys(tmp_path: Path, name: str) -> None:
    ws = Workspace(tmp_path)
    keys = ws.root / "keys.yaml"
    keys.write_text(FIXTURE_KEYS.read_text())
    ws.write_rules(keys=[keys], rules=[])
    d = ws.daemon().start()
    try:
        chatbot = access_line(0, ip="127.0.1.21").rsplit('"Bearer ', 1)[0] + '"Bearer sk-Yn9ggOg8DoIku" 0.02'
        append(ws.log, [chatbot])
        d.wait_until(lambda m: parsed_lines(m) == 1)
        keys.write_text(HOSTILE[name], encoding="utf-8")
        wait_until(lambda: "keys.yaml" in d.stderr(), timeout=20, what="the key file's error line")
        append(ws.log, [chatbot.replace("127.0.1.21", "127.0.1.22")])
        d.wait_until(lambda m: parsed_lines(m) == 2)
        # still running, still on the keys it had
        assert d.proc is not None and d.proc.poll() is None
        assert total(d.metrics(), "xinf_requests_total", key="chatbot-prod") == 2
        assert "Traceback" not in d.stderr()
    finally:
        d.terminate()
    # and a restart with the bad file is refused with one line, not a crash loop of tracebacks
    d.spawn()
    assert d.proc is not None and d.proc.wait(timeout=20) == 2
    assert "Traceback" not in d.stderr()


def test_a_bad_character_is_named_with_its_line(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("sources: []\nrules:\n  - name: x\x1b[2J\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(rules)
    assert str(caught.value) == (
        f"{rules}:3: (yaml): character #x001b is not allowed in YAML at column 12 "
        "(expected valid YAML syntax)"
    )
