"""The shipped unit, systemd/xinf-watch.service, checked by systemd's own analyzer.

`systemd-analyze security --offline=true` scores its sandboxing (0 = locked down, 10 = none; the
unit must score 2.0 or lower) and `systemd-analyze verify` must be clean: no unknown setting, no
bad value, every command present. verify needs the programs the unit runs to exist, so it checks a
copy whose /opt/xinf-watch/bin/xinf-watch is replaced by the `xinf-watch` entry point of the
Python running the tests (the venv the package is installed in); nothing else is changed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tools import require_program

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "xinf-watch.service"
INSTALLED = "/opt/xinf-watch/bin/xinf-watch"
MAX_EXPOSURE = 2.0


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    program = require_program("systemd-analyze")
    return subprocess.run([program, *args], capture_output=True, text=True, timeout=120)


def exposure(unit: Path) -> float:
    result = analyze("security", "--offline=true", "--no-pager", str(unit))
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(rf"Overall exposure level for {re.escape(unit.name)}: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    return float(found.group(1))


def directives(text: str) -> dict[tuple[str, str], list[str]]:
    """{(section, key): [values in order]}: systemd allows a key more than once."""
    out: dict[tuple[str, str], list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault((section, key), []).append(value)
    return out


def entry_point() -> Path:
    path = Path(sys.executable).parent / "xinf-watch"
    assert path.is_file(), f"{path} is missing: install the package in this venv (pip install -e .)"
    return path


def test_unit_scores_at_most_2_in_systemd_analyze_security() -> None:
    score = exposure(UNIT)
    print(f"systemd-analyze security --offline=true {UNIT.relative_to(ROOT)}: {score}")
    assert score <= MAX_EXPOSURE


def test_unit_verifies_clean(tmp_path: Path) -> None:
    text = UNIT.read_text()
    assert INSTALLED in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(INSTALLED, str(entry_point())))
    result = analyze("verify", "--man=no", str(copy))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_analyzer_sees_what_it_should(tmp_path: Path) -> None:
    """The two checks above can fail: a misspelt setting is reported, a bare unit scores high."""
    bare = tmp_path / "bare.service"
    bare.write_text("[Service]\nExecStart=/bin/true\nProtectSystm=strict\n")
    result = analyze("verify", "--man=no", str(bare))
    assert "Unknown key 'ProtectSystm'" in result.stdout + result.stderr
    assert exposure(bare) > 9.0


def test_unit_contract() -> None:
    """What README's production install relies on."""
    d = directives(UNIT.read_text())
    service = {key: values for (section, key), values in d.items() if section == "Service"}
    assert service["Type"] == ["notify"]
    assert int(service["WatchdogSec"][0]) > 0
    [start] = service["ExecStart"]
    rules = start.split("--rules ", 1)[1].split()[0]
    # reload: check the same rules first (a failing ExecReload command stops the sequence), then SIGHUP
    assert service["ExecReload"] == [f"{INSTALLED} check --rules {rules}", "/bin/kill -HUP $MAINPID"]
    assert service["StateDirectory"] == ["xinf-watch"] and service["ConfigurationDirectory"] == ["xinf-watch"]
    assert service["DynamicUser"] == ["yes"] and service["User"] == ["xinf-watch"]
    assert "adm" in service["SupplementaryGroups"][0].split()
    # notifications need IPv4/IPv6, sd_notify needs AF_UNIX; nothing else
    assert service["RestrictAddressFamilies"][0].split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
    assert d[("Install", "WantedBy")] == ["multi-user.target"]

