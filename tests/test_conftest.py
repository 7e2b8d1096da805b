"""The test suite's own guard: run on a Python without the project's dependencies, it names them."""

from __future__ import annotations

from pathlib import Path

from conftest import missing_requirements

REPO = Path(__file__).resolve().parents[1]


def test_this_python_has_every_dependency_and_test_extra() -> None:
    assert missing_requirements(REPO / "pyproject.toml") == []


def test_names_each_missing_distribution_and_only_those(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        "[project]\n"
        'dependencies = ["pyyaml>=6.0", "no-such-distribution-xw>=1.0"]\n'
        "[project.optional-dependencies]\n"
        'test = ["pytest>=8", "another_missing_one_xw[extra]>=2; python_version>=\'3.11\'"]\n',
        encoding="utf-8",
    )
    assert missing_requirements(pyproject) == ["no-such-distribution-xw", "another_missing_one_xw"]
