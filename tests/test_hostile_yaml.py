"""Hostile YAML in rules.yaml and key files (issue 11): one clear error line, never a crash, a
runaway or a crash loop. A key file rewritten badly while the daemon runs leaves it running on
the keys it had.

Each input is what an attacker with write access to a key file, or an unlucky editor, can make:
a NUL or ESC byte, 1,000 nested `[`, an alias bomb of under 1 KB.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import FIXTURE_KEYS, Workspace, access_line, parsed_lines, total
from receivers import wait_until
from test_daemon import append

from xinf_watch.config.schema import ConfigError, load_config
from xinf_watch.keys.files import KeyFileError, load_registry
from xinf_watch.keys.sources import RACY_NS, SETTLE_NS, KeySources


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
            "from xinf_watch.app.cli import main\n"
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
@pytest.mark.parametrize("name", ["nul", "nested", "bomb", "fifo"])
def test_a_key_file_rewritten_badly_leaves_the_daemon_running_on_its_keys(tmp_path: Path, name: str) -> None:
    """...or replaced by a FIFO, whose open() would block until a writer comes: refused like the
    others (without the regular-file check the daemon hangs there and ignores SIGTERM)."""
    ws = Workspace(tmp_path)
    keys = ws.root / "keys.yaml"
    keys.write_text(FIXTURE_KEYS.read_text())
    ws.write_rules(keys=[keys], rules=[])
    d = ws.daemon().start()
    try:
        chatbot = access_line(0, ip="127.0.1.21").rsplit('"Bearer ', 1)[0] + '"Bearer sk-Yn9ggOg8DoIku" 0.02'
        append(ws.log, [chatbot])
        d.wait_until(lambda m: parsed_lines(m) == 1)
        if name == "fifo":
            keys.unlink()
            os.mkfifo(keys)
        else:
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


def test_a_key_file_being_written_is_read_once_it_is_whole(tmp_path: Path) -> None:
    """Truncate, then write in two goes (an editor or a script not writing by rename): the half
    written is a valid keys.yaml with fewer keys; it is not read until the file has settled."""
    keys = tmp_path / "keys.yaml"
    text = FIXTURE_KEYS.read_text()
    keys.write_text(text)
    clock = [time.time_ns() + 10 * SETTLE_NS]
    sources = KeySources([keys], clock=lambda: clock[0])
    assert len(sources.load()) == 12
    cut = text.index("  - key:", len(text) // 2)  # between two entries: valid YAML on its own
    keys.write_text(text[:cut])
    assert len(load_registry([keys])) < 12  # what a reader would get now
    clock[0] = keys.stat().st_mtime_ns + SETTLE_NS // 2
    assert sources.reload_if_changed() is None  # changed half a second ago: not yet
    with keys.open("a") as f:
        f.write(text[cut:])
    clock[0] = keys.stat().st_mtime_ns + SETTLE_NS // 2
    assert sources.reload_if_changed() is None  # changed again: settling starts over
    clock[0] = keys.stat().st_mtime_ns + SETTLE_NS
    assert sources.reload_if_changed() is None  # whole now, and the same 12 keys: no new registry
    clock[0] += RACY_NS
    assert sources.reload_if_changed() is None and not sources.changed()


def test_the_daemon_never_counts_a_key_of_a_half_written_file_as_unknown(tmp_path: Path) -> None:
    """A slow writer: keys.yaml truncated, then written an entry at a time, 0.2 s apart, for 2.4 s
    (the daemon looks at key files every second); every part is a valid keys.yaml with fewer keys."""
    ws = Workspace(tmp_path)
    keys = ws.root / "keys.yaml"
    text = FIXTURE_KEYS.read_text()
    keys.write_text(text)
    ws.write_rules(keys=[keys], rules=[])
    d = ws.daemon().start()
    try:
        starts = [i for i in range(len(text)) if text.startswith("  - key:", i)]
        secret = text[starts[-1] :].split("key:", 1)[1].split()[0]  # the last entry's key
        request = access_line(0, ip="127.0.1.21").rsplit('"Bearer ', 1)[0] + f'"Bearer {secret}" 0.02'
        keys.write_text(text[: starts[0]])  # truncated: the header, no key yet
        for start, end in zip(starts, [*starts[1:], len(text)], strict=True):
            append(ws.log, [request])
            time.sleep(0.2)
            with keys.open("a") as f:
                f.write(text[start:end])
        d.wait_until(lambda m: parsed_lines(m) == len(starts), timeout=20)
        assert total(d.metrics(), "xinf_requests_total", key="unknown") == 0
        assert "Traceback" not in d.stderr()
    finally:
        d.terminate()
