"""Shared pytest options (`--update-goldens` rewrites tests/golden/) and fixtures for every test."""

from __future__ import annotations

import contextlib
import re
import sys
import tomllib
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # imported by the fixture: pytest_configure checks the dependencies first
    from xinf_watch.state.outbox import Outbox
    from xinf_watch.state.store import StateStore


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-goldens",
        action="store_true",
        default=False,
        help="rewrite tests/golden/* from the current replay output (review the diff before committing)",
    )


def missing_requirements(pyproject: Path) -> list[str]:
    """The distributions of `pyproject`'s dependencies and its `test` extra that this Python lacks."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    missing = []
    for requirement in wanted:
        name = re.match(r"[A-Za-z0-9._-]+", requirement).group()  # type: ignore[union-attr]
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def pytest_configure(config: pytest.Config) -> None:
    """One clear line instead of an ImportError per test module when the tests run on a Python
    that has not installed the project (`pytest` from another environment's PATH)."""
    missing = missing_requirements(Path(__file__).resolve().parents[1] / "pyproject.toml")
    if missing:
        raise pytest.UsageError(
            f"{sys.executable} lacks {', '.join(missing)}: install the project and its test extra "
            f"into it first, as the README says: {sys.executable} -m pip install -e '.[test]' "
            "(or use the venv the README makes: .venv/bin/python -m pytest)"
        )


@pytest.fixture
def update_goldens(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-goldens"))


@pytest.fixture(autouse=True)
def close_state_databases(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Close every StateStore and Outbox a test opened and left open. Python 3.13 reports an
    SQLite connection collected unclosed as a ResourceWarning, which fails whichever later test
    the garbage collector happens to run in."""
    from xinf_watch.state.outbox import Outbox
    from xinf_watch.state.store import StateStore

    opened: list[StateStore | Outbox] = []
    for cls in (StateStore, Outbox):
        original = cls.__init__

        def init(self: Any, *args: Any, __original: Callable[..., None] = original, **kwargs: Any) -> None:
            __original(self, *args, **kwargs)
            opened.append(self)

        monkeypatch.setattr(cls, "__init__", init)
    yield
    for thing in opened:
        with contextlib.suppress(Exception):
            thing.close()
