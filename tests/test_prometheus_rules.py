"""The fleet-wide Prometheus rules in rules/prometheus/ pass `promtool check` and their unit tests,
and every xinf-watch metric they use is one the daemon exports."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from tools import require_program

RULES_DIR = Path(__file__).resolve().parents[1] / "rules" / "prometheus"
README = Path(__file__).resolve().parents[1] / "README.md"


def promtool() -> str:
    return require_program("promtool")


@pytest.mark.parametrize("rules", sorted(RULES_DIR.glob("*.rules.yml")), ids=lambda p: p.name)
def test_rules_are_valid(rules: Path) -> None:
    done = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("tests", sorted(RULES_DIR.glob("*.test.yml")), ids=lambda p: p.name)
def test_rule_unit_tests_pass(tests: Path) -> None:
    done = subprocess.run([promtool(), "test", "rules", tests.name], capture_output=True, text=True,
                          cwd=RULES_DIR)
    assert done.returncode == 0, done.stdout + done.stderr


def test_rules_use_only_exported_metrics() -> None:
    exported = set(re.findall(r"`(xinf_[a-z_]+)`", README.read_text()))
    for rules in RULES_DIR.glob("*.rules.yml"):
        used = set(re.findall(r"\b(xinf_[a-z_]+)\b", rules.read_text()))
        assert used <= exported, f"{rules.name} uses metrics the README does not list: {used - exported}"
