"""Cron expressions: parsing, next runs in time zones across DST changes, plain English."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from esg_workbench.core.errors import ConfigError
from esg_workbench.sync import cron
from esg_workbench.sync.cron import CronError

UTC = dt.timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")


def local(zone: str, *args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=ZoneInfo(zone))


def wall(runs: list[dt.datetime]) -> list[str]:
    """Runs as 'YYYY-MM-DD HH:MM+offset', which shows both the wall time and the real instant."""
    return [r.strftime("%Y-%m-%d %H:%M%z") for r in runs]


# --- parsing ----------------------------------------------------------------------------

def test_fields_accept_lists_ranges_steps_and_names():
    s = cron.parse("0,30 8-18/2 1,15 JAN-MAR,dec mon-fri")
    assert s.minutes == {0, 30}
    assert s.hours == {8, 10, 12, 14, 16, 18}
    assert s.days == {1, 15}
    assert s.months == {1, 2, 3, 12}
    assert s.weekdays == {1, 2, 3, 4, 5}
    assert cron.parse("*/20 * * * *").minutes == {0, 20, 40}
    assert cron.parse("5/20 * * * *").minutes == {5, 25, 45}  # from 5 to the end, every 20
    assert cron.parse("0 0 * * 7").weekdays == {0}  # 7 is Sunday too
    assert cron.parse("0 0 * * 5-7").weekdays == {5, 6, 0}
    assert cron.parse("0 0 * * */2").weekdays == {0, 2, 4, 6}  # not Sunday twice


@pytest.mark.parametrize("short, long", [
    ("@hourly", "0 * * * *"), ("@daily", "0 0 * * *"), ("@midnight", "0 0 * * *"),
    ("@weekly", "0 0 * * 0"), ("@monthly", "0 0 1 * *"), ("@yearly", "0 0 1 1 *"), ("@ANNUALLY", "0 0 1 1 *"),
])
def test_shorthands_mean_their_five_fields(short, long):
    after = dt.datetime(2026, 2, 3, 4, 5)
    assert cron.next_runs(short, "UTC", after, 3) == cron.next_runs(long, "UTC", after, 3)


@pytest.mark.parametrize("expr, message", [
    ("61 * * * *", "minute 61 is out of range 0-59"),
    ("0 24 * * *", "hour 24 is out of range 0-23"),
    ("0 0 0 * *", "day of month 0 is out of range 1-31"),
    ("0 0 * 13 *", "month 13 is out of range 1-12"),
    ("0 0 * * 8", "day of week 8 is out of range 0-7"),
    ("0 0 * * MOX", "day of week 'MOX' is not a number or a name (SUN, MON, TUE, WED, THU, FRI, SAT)"),
    ("0 0 * FOO *", "month 'FOO' is not a number or a name"),
    ("x * * * *", "minute 'x' is not a number"),
    ("* * *", "has 3 fields; a cron expression has 5"),
    ("* * * * * *", "has 6 fields"),
    ("", "The cron expression is empty"),
    ("   ", "The cron expression is empty"),
    ("*/0 * * * *", "minute step '/0' must be a whole number of 1 or more"),
    ("*/x * * * *", "minute step '/x'"),
    ("30-10 * * * *", "minute range '30-10' runs backwards"),
    ("1,,2 * * * *", "empty item between commas"),
    ("@reboot", "'@reboot' is not a known shorthand"),
    ("0 0 31 2 *", "never runs: February never has a day 31"),
    ("0 0 30,31 2 *", "never runs: February never has a day 30 or 31"),
    ("-5 * * * *", "minute '' is not a number"),
])
def test_bad_expressions_say_which_field_is_wrong(expr, message):
    with pytest.raises(CronError) as caught:
        cron.parse(expr)
    assert message in caught.value.message
    assert isinstance(caught.value, ConfigError) and "five fields" in caught.value.hint
    with pytest.raises(CronError):
        cron.next_runs(expr, "UTC", dt.datetime(2026, 1, 1))
    with pytest.raises(CronError):
        cron.describe(expr)


def test_31st_of_february_or_a_weekday_is_fine():
    # day of month and day of week both restricted: either matches, so it runs on Mondays
    runs = cron.next_runs("0 0 31 2 MON", "UTC", dt.datetime(2026, 2, 1), 2)
    assert wall(runs) == ["2026-02-02 00:00+0000", "2026-02-09 00:00+0000"]


def test_unknown_time_zone_is_a_clear_error():
    with pytest.raises(CronError, match="'Europe/Atlantis' is not a known time zone"):
        cron.next_runs("0 2 * * *", "Europe/Atlantis", dt.datetime(2026, 1, 1))
    with pytest.raises(CronError, match="not a known time zone"):
        cron.zone("../../etc/passwd")


# --- next runs ---------------------------------------------------------------------------

def test_next_runs_in_utc_are_strictly_after():
    after = dt.datetime(2026, 5, 4, 10, 15)  # a slot itself: the next one is later
    assert wall(cron.next_runs("*/15 * * * *", "UTC", after, 3)) == [
        "2026-05-04 10:30+0000", "2026-05-04 10:45+0000", "2026-05-04 11:00+0000"]
    assert wall(cron.next_runs("*/15 * * * *", "UTC", after + dt.timedelta(seconds=1), 1)) == ["2026-05-04 10:30+0000"]
    assert cron.next_runs("0 2 * * *", "UTC", after, 0) == []


def test_next_runs_are_in_the_jobs_zone_whatever_zone_after_is_given_in():
    naive_utc = dt.datetime(2026, 7, 1, 20, 0)  # 22:00 in Berlin (summer), 01:30 next day in Kolkata
    aware = naive_utc.replace(tzinfo=UTC).astimezone(ZoneInfo("America/Los_Angeles"))
    berlin = cron.next_runs("0 23 * * *", "Europe/Berlin", naive_utc, 2)
    assert berlin == cron.next_runs("0 23 * * *", "Europe/Berlin", aware, 2)
    assert wall(berlin) == ["2026-07-01 23:00+0200", "2026-07-02 23:00+0200"]
    assert berlin[0].tzinfo == BERLIN
    assert berlin[0].astimezone(UTC) == dt.datetime(2026, 7, 1, 21, 0, tzinfo=UTC)
    kolkata = cron.next_runs("0 1 * * *", "Asia/Kolkata", naive_utc, 1)  # +05:30: 01:00 has passed today
    assert wall(kolkata) == ["2026-07-03 01:00+0530"]
    assert wall(cron.next_runs("30 6 * * MON-FRI", "America/New_York", naive_utc, 3)) == [
        "2026-07-02 06:30-0400", "2026-07-03 06:30-0400", "2026-07-06 06:30-0400"]


def test_none_means_this_machines_zone(monkeypatch):
    monkeypatch.setenv("TZ", "Pacific/Auckland")
    assert cron.local_timezone() == "Pacific/Auckland"
    runs = cron.next_runs("0 9 * * *", None, dt.datetime(2026, 1, 1), 1)
    assert runs[0].tzinfo == ZoneInfo("Pacific/Auckland")
    monkeypatch.setenv("TZ", "No/Such_Zone")  # ignored: the system's zone, else UTC
    fallback = cron.local_timezone()
    assert fallback != "No/Such_Zone" and ZoneInfo(fallback)


def test_spring_forward_a_fixed_time_in_the_gap_runs_once_right_after_it():
    # Europe/Berlin, Sunday 29 March 2026: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
    runs = cron.next_runs("30 2 * * *", "Europe/Berlin", dt.datetime(2026, 3, 27, 12), 4)
    assert wall(runs) == ["2026-03-28 02:30+0100", "2026-03-29 03:00+0200",
                          "2026-03-30 02:30+0200", "2026-03-31 02:30+0200"]
    # the same rule in New York (8 March 2026)
    assert wall(cron.next_runs("30 2 * * *", "America/New_York", dt.datetime(2026, 3, 8), 2)) == [
        "2026-03-08 03:00-0400", "2026-03-09 02:30-0400"]
    # a job at 03:00 itself is not doubled by a 02:30 job landing there (one expression, one run)
    assert wall(cron.next_runs("30 2,3 * * *", "Europe/Berlin", dt.datetime(2026, 3, 29), 3)) == [
        "2026-03-29 03:00+0200", "2026-03-29 03:30+0200", "2026-03-30 02:30+0200"]


def test_spring_forward_wildcard_slots_in_the_gap_do_not_happen():
    runs = cron.next_runs("*/30 * * * *", "Europe/Berlin", dt.datetime(2026, 3, 29, 0, 0), 4)  # 01:00 CET
    assert wall(runs) == ["2026-03-29 01:30+0100", "2026-03-29 03:00+0200",
                          "2026-03-29 03:30+0200", "2026-03-29 04:00+0200"]
    # between 01:30 CET and 03:00 CEST only 30 minutes of real time pass: the clock jumped
    assert runs[1].astimezone(UTC) - runs[0].astimezone(UTC) == dt.timedelta(minutes=30)


def test_fall_back_a_fixed_time_in_the_repeated_hour_runs_once():
    # Europe/Berlin, Sunday 25 October 2026: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
    runs = cron.next_runs("30 2 * * *", "Europe/Berlin", dt.datetime(2026, 10, 24, 12), 3)
    assert wall(runs) == ["2026-10-25 02:30+0200", "2026-10-26 02:30+0100", "2026-10-27 02:30+0100"]
    # asked from between the two 02:30s, the second one does not count either
    between = dt.datetime(2026, 10, 25, 0, 45)  # 02:45 CEST
    assert wall(cron.next_runs("30 2 * * *", "Europe/Berlin", between, 1)) == ["2026-10-26 02:30+0100"]


def test_fall_back_wildcard_slots_follow_the_clock_through_the_repeated_hour():
    runs = cron.next_runs("*/30 * * * *", "Europe/Berlin", dt.datetime(2026, 10, 24, 23, 0), 6)  # 01:00 CEST
    assert wall(runs) == ["2026-10-25 01:30+0200", "2026-10-25 02:00+0200", "2026-10-25 02:30+0200",
                          "2026-10-25 02:00+0100", "2026-10-25 02:30+0100", "2026-10-25 03:00+0100"]
    real = [r.astimezone(UTC) for r in runs]
    assert all(b - a == dt.timedelta(minutes=30) for a, b in zip(real, real[1:]))  # real time: even steps


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "UTC"])
@pytest.mark.parametrize("expr", ["30 2 * * *", "*/20 * * * *", "15 1-3 * * SUN", "0 0 1 * *"])
def test_a_year_of_runs_is_strictly_increasing_and_on_schedule(zone, expr):
    schedule = cron.parse(expr)
    runs = cron.next_runs(expr, zone, dt.datetime(2026, 1, 1), 400 if expr.startswith("*") else 120)
    real = [r.astimezone(UTC) for r in runs]  # (same-zone comparisons use wall time)
    assert all(a < b for a, b in zip(real, real[1:]))
    assert all(r.tzinfo == ZoneInfo(zone) for r in runs)
    shifted = [r for r in runs if not (r.minute in schedule.minutes and r.hour in schedule.hours)]
    # only a fixed-time slot that fell into a spring-forward gap may be off its wall time
    assert len(shifted) <= 1 and all(schedule.fixed_time for _ in shifted)
    assert all(schedule.day_matches(r.date()) for r in runs)


def test_day_of_month_or_day_of_week():
    # both restricted: the 13th, and every Friday
    runs = cron.next_runs("0 0 13 * FRI", "UTC", dt.datetime(2026, 3, 1), 6)
    assert [r.strftime("%a %d") for r in runs] == ["Fri 06", "Fri 13", "Fri 20", "Fri 27", "Fri 03", "Fri 10"]
    runs = cron.next_runs("0 0 13 * FRI", "UTC", dt.datetime(2026, 4, 10, 1), 2)
    assert [r.strftime("%a %d") for r in runs] == ["Mon 13", "Fri 17"]
    # a '*'-field (even '*/2') is unrestricted: both must match
    runs = cron.next_runs("0 0 */2 * MON", "UTC", dt.datetime(2026, 3, 1), 3)
    assert [r.strftime("%a %d") for r in runs] == ["Mon 09", "Mon 23", "Mon 13"]


def test_leap_day_and_far_apart_runs_are_found_quickly():
    import time

    start = time.perf_counter()
    runs = cron.next_runs("0 0 29 2 *", "UTC", dt.datetime(2026, 1, 1), 3)
    assert [r.year for r in runs] == [2028, 2032, 2036]
    assert time.perf_counter() - start < 1.0
    assert [r.month for r in cron.next_runs("0 12 * JUN,dec *", "UTC", dt.datetime(2026, 6, 30, 13), 2)] == [12, 12]


def test_next_run_utc_is_naive_utc_for_the_workspace():
    assert cron.next_run_utc("0 2 * * *", "Europe/Berlin", dt.datetime(2026, 1, 10)) == dt.datetime(2026, 1, 10, 1, 0)


# --- plain English --------------------------------------------------------------------------

@pytest.mark.parametrize("expr, text", [
    ("0 2 * * *", "Every day at 02:00"),
    ("*/15 * * * *", "Every 15 minutes"),
    ("30 6 * * MON-FRI", "At 06:30 on Monday to Friday"),
    ("0 0 1 * *", "At 00:00 on day 1 of every month"),
    ("* * * * *", "Every minute"),
    ("@hourly", "Every hour"),
    ("30 * * * *", "Every hour at 30 minutes past"),
    ("0 */2 * * *", "Every 2 hours"),
    ("0 6,18 * * *", "Every day at 06:00 and 18:00"),
    ("0 0 1,15 * *", "At 00:00 on days 1 and 15 of every month"),
    ("0 0 1 1 *", "At 00:00 on day 1 of January"),
    ("5 4 * * SUN", "At 04:05 on Sunday"),
    ("0 0 * * 1,3,5", "At 00:00 on Monday, Wednesday and Friday"),
    ("*/5 9-17 * * MON-FRI", "Every 5 minutes from 09:00 to 17:59 on Monday to Friday"),
    ("0 12 * 1-3 *", "At 12:00 every day in January to March"),
    ("0 0 13 * FRI", "At 00:00 on day 13 of every month and on every Friday"),
    ("0,30 * * * *", "At 0 and 30 minutes past every hour"),
    ("0,30 9 * * *", "Every day at 09:00 and 09:30"),
    ("0 9-17 * * *", "Every hour from 09:00 to 17:00"),
    ("15 9-17 * * MON-FRI", "Every hour from 09:15 to 17:15 on Monday to Friday"),
    ("0 1,3,5,7,9,11,13 * * *", "Every day at 01:00, 03:00, 05:00, 07:00, 09:00, 11:00 and 13:00"),
    ("*/10 9-12,14-17 * * *", "Every 10 minutes from 09:00 to 12:59 and 14:00 to 17:59"),
    ("0 */6 1 * *", "At 00:00, 06:00, 12:00 and 18:00 on day 1 of every month"),
])
def test_describe_reads_as_plain_english(expr, text):
    assert cron.describe(expr) == text
