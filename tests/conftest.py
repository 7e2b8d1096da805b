"""Shared pytest options (`--update-goldens` rewrites tests/golden/) and fixtures for every test."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from xinf_watch.state.outbox import Outbox
from xinf_watch.state.store import StateStore


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-goldens",
        action="store_true",
        default=False,
        help="rewrite tests/golden/* from the current replay output (review the diff before committing)",
    )


@pytest.fixture
def update_goldens(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-goldens"))


@pytest.fixture(autouse=True)
def close_state_databases(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Close every StateStore and Outbox a test opened and left open. Python 3.13 reports an
    SQLite connection collected unclosed as a ResourceWarning, which fails whichever later test
    the garbage collector happens to run in."""
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
