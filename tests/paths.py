"""Where the shared fixtures are: `$XINF_WATCH_FIXTURES`, else `../shared/fixtures` beside the repo.

Import it as `from paths import FIXTURES` (pytest puts `tests/` on sys.path; there is no conftest).
"""

from __future__ import annotations

import os
from pathlib import Path

FIXTURES = Path(
    os.environ.get("XINF_WATCH_FIXTURES") or Path(__file__).resolve().parents[2] / "shared" / "fixtures"
)
