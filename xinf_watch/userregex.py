"""Regular expressions written by users (a rule's `when: user_agent`, a `format: regex` pattern):
compiled here and nowhere else, and run with a time bound.

stdlib `re` backtracks without limit and cannot be interrupted, so one pattern such as `(a|a)+b`
and a 30-character attacker-chosen user agent would stall the daemon's main loop for as long as
the match runs. These patterns run in the `regex` module (same syntax as `re`, version 0) with
`timeout=MATCH_SECONDS`: a match that runs out of time is no match. For a `user_agent` filter the
rule does not match the event; for a `regex` format the line is unparsed (counted as such). The
first timeout of each pattern is logged (the pattern, never the input); `timeouts` counts them all.
Our own patterns (the nginx parser's, ...) stay stdlib `re`: they are ours and known to be linear.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import regex

MATCH_SECONDS = 0.05  # per match; an ordinary pattern takes microseconds on a 1 MiB line's worth

_log = logging.getLogger(__name__)


class UserRegex:
    """A compiled user pattern: `search` / `fullmatch` return a match or None, never run long."""

    __slots__ = ("pattern", "groupindex", "timeouts", "_search", "_fullmatch")

    def __init__(self, pattern: str) -> None:
        """ValueError (a one-line message) if `pattern` does not compile."""
        try:
            compiled = regex.compile(pattern, regex.VERSION0)
        except (regex.error, OverflowError, RecursionError) as exc:
            raise ValueError(f"regex does not compile: {_stdlib_error(pattern) or exc}") from None
        self.pattern = pattern
        self.groupindex: Mapping[str, int] = dict(compiled.groupindex)
        self.timeouts = 0
        self._search = compiled.search
        self._fullmatch = compiled.fullmatch

    def search(self, text: str) -> Any:
        try:
            return self._search(text, timeout=MATCH_SECONDS)
        except TimeoutError:
            return self._timed_out(text)

    def fullmatch(self, text: str) -> Any:
        try:
            return self._fullmatch(text, timeout=MATCH_SECONDS)
        except TimeoutError:
            return self._timed_out(text)

    def _timed_out(self, text: str) -> None:
        self.timeouts += 1
        if self.timeouts == 1:
            _log.warning(
                "regex %r ran out of its %.0f ms on a %d-character input: taken as no match "
                "(logged once for this pattern)",
                self.pattern, MATCH_SECONDS * 1000, len(text),
            )
        return None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UserRegex) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash(self.pattern)

    def __repr__(self) -> str:
        return f"UserRegex({self.pattern!r})"


def _stdlib_error(pattern: str) -> str | None:
    """stdlib's message for a bad pattern: it names where the problem starts (an unclosed group at
    its "("), where `regex` names where it noticed (the end)."""
    try:
        re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as exc:
        return str(exc)
    return None
