"""A spike rule's baseline: what a group usually does in one window, by its own history.

Without `daily`, the group's rate over `baseline` before the current window, scaled to one window
(`expected`; None while the history is shorter than a window). With `daily: true`, each event is
also counted in its hour, and each closed window's level toward its day's busiest window
(`count_daily`); the baseline is then what the group does at this time of day, or its own bursts at
other hours (`_expected_daily`; None with less than a day of history). The hours and days kept are
those of `baseline` and the current day. `rules/eventkinds.py`'s spike handler counts and compares.
"""

from __future__ import annotations

from typing import Any

from xinf_watch.rules.memory import GroupState


def expected(state: GroupState, cfg: Any, now: float) -> float | None:
    """Requests the group usually makes in one window, from its own history; None: too new."""
    if state.hours is not None:
        return _expected_daily(state, cfg, now)
    assert state.counter is not None and state.long_counter is not None and state.first_seen is not None
    history = min(cfg.baseline, now - state.first_seen - cfg.window)
    if history < cfg.window:
        return None
    before = state.long_counter.count(now) - state.counter.count(now)
    return float(before) * float(cfg.window) / float(history)


def count_daily(state: GroupState, ts: float, now: float, level: int, cfg: Any) -> None:
    """Count the event in its hour, and note the window's level for the day's busiest window."""
    assert state.hours is not None and state.day_peaks is not None and state.open_slots is not None
    hour = int(ts // 3600)
    hours = state.hours
    count = hours.get(hour)
    if count is not None:
        hours[hour] = count + 1
    else:  # a new hour: the time to forget the oldest ones
        hours[hour] = 1
        if len(hours) > cfg.baseline / 3600 + 48:  # keep `baseline` days and the current one
            _forget_before(state, hour - int(cfg.baseline // 3600) - 26)
    # A window's level counts toward its day's peak only once two windows have passed, and never
    # while the group is firing: the peak must not include the burst being judged (it would hide,
    # or resolve, itself), nor teach the group that a runaway is normal.
    slot = int(now // cfg.window)
    slots = state.open_slots
    if state.episode.firing:
        slots.clear()
    elif slots and slots[-1][0] == slot:  # most events: one more in the current window
        if level > slots[-1][1]:
            slots[-1][1] = level
    else:
        slots.append([slot, level])
        while slots[0][0] < slot - 1:
            closed, peak = slots.pop(0)
            day = int(closed * cfg.window // 86400)
            state.day_peaks[day] = max(state.day_peaks.get(day, 0), peak)


def _forget_before(state: GroupState, oldest_hour: int) -> None:
    assert state.hours is not None and state.day_peaks is not None
    for stale in [h for h in state.hours if h < oldest_hour]:
        del state.hours[stale]
    for stale in [d for d in state.day_peaks if d < oldest_hour // 24]:
        del state.day_peaks[stale]


def _expected_daily(state: GroupState, cfg: Any, now: float) -> float | None:
    """What the group usually does in one window at this time of day, by its own history: the
    busiest of the previous days in the same hour (one hour either side, for jobs that drift),
    and, so that its own bursts at other hours (a CI run, a nightly batch) are not news, half its
    busiest window in `baseline` over `factor`. None: less than a day of history.

    Computed once per window: the peaks change only when a window closes, and the hours it reads
    are of previous days (an hour that starts inside a window longer than it shows at the next)."""
    window_number = int(now // cfg.window)
    if state.expected_memo[0] == window_number:
        return state.expected_memo[1]
    expected = _expected_daily_now(state, cfg, now)
    state.expected_memo = (window_number, expected)
    return expected


def _expected_daily_now(state: GroupState, cfg: Any, now: float) -> float | None:
    assert state.hours is not None and state.day_peaks is not None and state.first_seen is not None
    if now - state.first_seen < 86400:
        return None
    hour, hours = int(now // 3600), state.hours
    days = max(1, int(cfg.baseline // 86400))
    same_hour = max(
        (hours.get(hour - 24 * day + shift, 0) for day in range(1, days + 1) for shift in (-1, 0, 1)),
        default=0,
    )
    peak = max(state.day_peaks.values(), default=0)
    return max(same_hour * float(cfg.window) / 3600, 2 * peak / float(cfg.factor))
