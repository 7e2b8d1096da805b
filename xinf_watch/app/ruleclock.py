"""Rule time in the live daemon: the log's own time, moved on by the wall clock while no line arrives."""

from __future__ import annotations

from collections.abc import Callable


class RuleClock:
    """Live, log time and wall time agree; for logs written with older timestamps (a backlog,
    a test appending recorded lines) rules still see the spacing of the log, as in `replay`.
    None until the first line ever: rule time starts with the logs (so `absent` fires once
    some source has written, for the sources that then stay silent).
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._last_seen = 0.0  # the last log time seen ...
        self._last_wall = 0.0  # ... and the wall time it was first seen at

    def now(self, last: float | None) -> float | None:
        """Rule time, given the log time of the latest line (None or 0: no line yet)."""
        now = self.clock()
        if not last:
            return None
        if last != self._last_seen:
            self._last_seen, self._last_wall = last, now
        return last + max(0.0, now - self._last_wall)
