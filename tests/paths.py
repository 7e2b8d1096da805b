"""Where the recorded fixtures are: `tests/fixtures/` (its README says how each file was recorded).

Import it as `from paths import FIXTURES` (pytest puts `tests/` on sys.path).
"""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
