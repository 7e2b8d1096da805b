"""External programs the tests use (Debian's prometheus and prometheus-alertmanager packages).

CI installs them (.ci/run), so there a missing one fails the test; on a developer machine
without them the test is skipped.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require_program(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    if os.environ.get("CI"):
        pytest.fail(f"{names[0]} is missing (CI installs it: .ci/run)")
    pytest.skip(f"{names[0]} is not installed")
