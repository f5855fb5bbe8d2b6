"""Operating hours: the weekly windows of local time in which alarms may be raised (no I/O, clock injected)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60


def parse_clock(text: str, allow_24: bool = False) -> int:
    """'HH:MM' (24-hour clock) as minutes after midnight; '24:00' only with allow_24 (the end of a day).

    Raises:
        ValueError: not HH:MM with HH 00-23 (or 24:00) and MM 00-59.
    """
    hours, sep, minutes = text.partition(":")
    if not (sep and len(hours) == 2 and len(minutes) == 2 and hours.isdigit() and minutes.isdigit()):
        raise ValueError(f"{text[:20]!r} is not a time of day as HH:MM (e.g. '06:00')")
    h, m = int(hours), int(minutes)
    if (h, m) == (24, 0) and allow_24:
        return MINUTES_PER_DAY
    if h > 23 or m > 59:
        raise ValueError(
            f"{text!r} is not a time of day: hours 00-23, minutes 00-59" + (", or 24:00" if allow_24 else "")
        )
    return h * 60 + m


@dataclass(frozen=True)
class HoursWindow:
    """One recurring window: on each of `days` from `start_minute` to `end_minute` (local time).

    An end at or before the start runs past midnight into the next day (22:00 to 06:00 on fri is
    Friday 22:00 to Saturday 06:00).
    """

    days: frozenset[int]  # 0 = Monday
    start_minute: int
    end_minute: int

    def contains(self, weekday: int, minute: float) -> bool:
        if self.start_minute < self.end_minute:
            return weekday in self.days and self.start_minute <= minute < self.end_minute
        return (weekday in self.days and minute >= self.start_minute) or (
            (weekday - 1) % 7 in self.days and minute < self.end_minute
        )


class OperatingHours:
    """Whether an instant lies in the operating hours.

    Args:
        windows: the weekly windows; none at all means always in hours.
        timezone: an IANA zone name (e.g. 'Europe/Berlin'), or None for the system's local time.

    Raises:
        ValueError: an unknown time zone (zoneinfo's message, one line).
    """

    def __init__(self, windows: Sequence[HoursWindow], timezone: str | None = None):
        self.windows = tuple(windows)
        self.timezone = timezone
        self._tz = ZoneInfo(timezone) if timezone else None

    @property
    def always(self) -> bool:
        return not self.windows

    def in_hours(self, epoch_seconds: float) -> bool:
        """True when alarms may be raised at this wall-clock time (seconds since the epoch)."""
        if not self.windows:
            return True
        local = (
            dt.datetime.fromtimestamp(epoch_seconds, self._tz) if self._tz else dt.datetime.fromtimestamp(epoch_seconds)
        )
        minute = local.hour * 60 + local.minute + local.second / 60.0
        weekday = local.weekday()
        return any(w.contains(weekday, minute) for w in self.windows)


def hours_window(days: Iterable[str], start: str, end: str) -> HoursWindow:
    """A window from its config form: day names ('mon'..'sun') and 'HH:MM' times (end may be '24:00').

    Raises:
        ValueError: an unknown day, a malformed time, no day, or start equal to end.
    """
    names = list(days)
    unknown = [d for d in names if d not in DAY_NAMES]
    if unknown:
        raise ValueError(f"unknown day {str(unknown[0])[:20]!r}: use {', '.join(DAY_NAMES)}")
    if not names:
        raise ValueError("days must name at least one day")
    start_minute, end_minute = parse_clock(start), parse_clock(end, allow_24=True)
    if start_minute == end_minute % MINUTES_PER_DAY and end_minute != MINUTES_PER_DAY:
        raise ValueError(f"start and end are both {start}: for the whole day write start '00:00', end '24:00'")
    return HoursWindow(frozenset(DAY_NAMES.index(d) for d in names), start_minute, end_minute)
