"""Operating hours: weekly windows in local time, across midnight, in a named time zone through DST, and
malformed windows."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from device.decisions.schedule import OperatingHours, hours_window, parse_clock

BERLIN = ZoneInfo("Europe/Berlin")


def _at(year, month, day, hour, minute=0, tz=BERLIN) -> float:
    return dt.datetime(year, month, day, hour, minute, tzinfo=tz).timestamp()


def test_weekday_window():
    hours = OperatingHours([hours_window(["mon", "tue", "wed", "thu", "fri"], "06:00", "22:00")], "Europe/Berlin")
    assert hours.in_hours(_at(2025, 3, 3, 6, 0))  # Monday 06:00: the start is in
    assert hours.in_hours(_at(2025, 3, 3, 21, 59))
    assert not hours.in_hours(_at(2025, 3, 3, 22, 0))  # the end is out
    assert not hours.in_hours(_at(2025, 3, 3, 5, 59))
    assert not hours.in_hours(_at(2025, 3, 8, 12, 0))  # Saturday
    assert hours.in_hours(_at(2025, 3, 7, 12, 0))  # Friday


def test_night_shift_runs_past_midnight_and_24_00_ends_a_day():
    hours = OperatingHours(
        [hours_window(["fri"], "22:00", "06:00"), hours_window(["sun"], "00:00", "24:00")], "Europe/Berlin"
    )
    assert hours.in_hours(_at(2025, 3, 7, 23, 0))  # Friday night
    assert hours.in_hours(_at(2025, 3, 8, 5, 59))  # Saturday morning, the same shift
    assert not hours.in_hours(_at(2025, 3, 8, 6, 0))
    assert not hours.in_hours(_at(2025, 3, 8, 23, 0))  # Saturday night: no shift starts on Saturday
    assert hours.in_hours(_at(2025, 3, 9, 0, 0)) and hours.in_hours(_at(2025, 3, 9, 23, 59))  # all Sunday


def test_local_time_follows_the_zone_through_daylight_saving():
    hours = OperatingHours(
        [hours_window(["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "08:00", "09:00")], "Europe/Berlin"
    )
    # 07:30 UTC is 08:30 in Berlin in winter (UTC+1) and 09:30 in summer (UTC+2).
    winter = dt.datetime(2025, 1, 15, 7, 30, tzinfo=dt.timezone.utc).timestamp()
    summer = dt.datetime(2025, 7, 15, 7, 30, tzinfo=dt.timezone.utc).timestamp()
    assert hours.in_hours(winter) and not hours.in_hours(summer)
    utc = OperatingHours(hours.windows, "UTC")
    assert not utc.in_hours(winter)


def test_no_windows_means_always():
    assert OperatingHours([]).in_hours(0.0) and OperatingHours([]).always


@pytest.mark.parametrize(
    "days, start, end, needle",
    [
        (["mon"], "6:00", "07:00", "HH:MM"),
        (["mon"], "24:00", "07:00", "hours 00-23"),
        (["mon"], "06:60", "07:00", "minutes 00-59"),
        (["mon"], "06:00", "06:00", "whole day"),
        (["monday"], "06:00", "07:00", "unknown day"),
        ([], "06:00", "07:00", "at least one day"),
        (["mon"], "aa:bb", "07:00", "HH:MM"),
    ],
)
def test_malformed_windows_are_one_line(days, start, end, needle):
    with pytest.raises(ValueError, match=needle) as info:
        hours_window(days, start, end)
    assert "\n" not in str(info.value)


def test_parse_clock():
    assert parse_clock("00:00") == 0 and parse_clock("23:59") == 1439 and parse_clock("24:00", allow_24=True) == 1440
