"""External programs and optional modules the tests use (Debian's prometheus and
prometheus-alertmanager packages; kubernetes-validate from the `test` extra).

CI installs them (.ci/run), so there a missing one fails the test; on a developer machine
without them the test is skipped.
"""

from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType

import pytest


def require_program(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    if os.environ.get("CI"):
        pytest.fail(f"{names[0]} is missing (CI installs it: .ci/run)")
    pytest.skip(f"{names[0]} is not installed")


def require_module(name: str) -> ModuleType:
    """At a test module's top: the module, or the whole test module skipped (failed in CI) when it
    is not installed (an environment set up before the `test` extra listed it)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing (pip install -e '.[test]')", pytrace=False)
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')", allow_module_level=True)
