"""Cron expressions: parsing, next run times in a time zone, and a plain-English reading.

Five fields, as in Vixie cron: minute, hour, day of month, month, day of week; with
``*``, lists (``1,15``), ranges (``1-5``), steps (``*/15``, ``8-18/2``, ``5/20``),
names (``JAN``, ``MON-FRI``), ``7`` for Sunday, and the shorthands ``@hourly``,
``@daily``/``@midnight``, ``@weekly``, ``@monthly``, ``@yearly``/``@annually``.

When day of month and day of week are both restricted, a day matches if *either* matches
(cron's rule: ``0 0 1 * MON`` runs on the 1st and on every Monday). A field counts as
unrestricted when it starts with ``*`` (so ``*/2`` in day of month is still "and").

Time zones and daylight saving time follow Vixie cron:

* A *fixed-time* job (neither minute nor hour starts with ``*``) whose wall-clock time
  does not exist on the day the clocks go forward runs once, at the first moment after
  the gap (a 02:30 job in Europe/Berlin runs at 03:00 on the last Sunday of March).
  When the clocks go back, it runs once, at the first of the two 02:30s.
* A *wildcard* job (``*/15 * * * *``, ``30 * * * *``) follows the clock: slots inside
  the gap do not happen, and slots in the repeated hour happen twice (real time passes
  twice through them).

No I/O here: the scheduler and the GUI call these functions.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..core.errors import ConfigError

__all__ = [
    "CronError",
    "CronSchedule",
    "parse",
    "next_runs",
    "next_run_utc",
    "describe",
    "local_timezone",
    "zone",
]


class CronError(ConfigError):
    hint = (
        "Write five fields separated by spaces: minute hour day-of-month month day-of-week, "
        "for example '0 2 * * *' (every day at 02:00) or '*/15 * * * *' (every 15 minutes)."
    )


_SHORTHANDS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}

_MONTH_NAMES = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAY_NAMES = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
_MONTH_WORDS = ["January", "February", "March", "April", "May", "June", "July", "August",
                "September", "October", "November", "December"]
_DAY_WORDS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
_DAYS_IN_MONTH = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]  # February at its longest


@dataclass(frozen=True)
class _FieldSpec:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] stands for low + i


_FIELDS = (
    _FieldSpec("minute", 0, 59),
    _FieldSpec("hour", 0, 23),
    _FieldSpec("day of month", 1, 31),
    _FieldSpec("month", 1, 12, tuple(_MONTH_NAMES)),
    _FieldSpec("day of week", 0, 7, tuple(_DAY_NAMES) + ("SUN",)),
)


@dataclass(frozen=True)
class CronSchedule:
    """A parsed expression: the allowed values of each field, and how it was written."""

    expression: str  # as given (stripped)
    fields: tuple[str, str, str, str, str]  # the five fields, shorthands expanded, upper case
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday ... 6 = Saturday (7 folded into 0)

    @property
    def day_of_month_restricted(self) -> bool:
        return not self.fields[2].startswith("*")

    @property
    def day_of_week_restricted(self) -> bool:
        return not self.fields[4].startswith("*")

    @property
    def fixed_time(self) -> bool:
        """Vixie's "fixed-time job": neither minute nor hour is a wildcard."""
        return not (self.fields[0].startswith("*") or self.fields[1].startswith("*"))

    def day_matches(self, day: date) -> bool:
        in_month = day.day in self.days
        cron_weekday = (day.weekday() + 1) % 7  # Python: Monday = 0; cron: Sunday = 0
        in_week = cron_weekday in self.weekdays
        if self.day_of_month_restricted and self.day_of_week_restricted:
            return in_month or in_week
        return in_month and in_week

    def next_wall_time(self, start: datetime) -> datetime:
        """The first naive wall-clock minute at or after ``start`` that matches."""
        t = start.replace(second=0, microsecond=0)
        if t < start:
            t += timedelta(minutes=1)
        limit = t.year + 30
        minutes, hours = sorted(self.minutes), sorted(self.hours)
        while t.year <= limit:
            if t.month not in self.months:
                t = _first_of_next_month(t)
                continue
            if not self.day_matches(t.date()):
                t = datetime(t.year, t.month, t.day) + timedelta(days=1)
                continue
            if t.hour not in self.hours:
                later = [h for h in hours if h > t.hour]
                if not later:
                    t = datetime(t.year, t.month, t.day) + timedelta(days=1)
                    continue
                t = t.replace(hour=later[0], minute=0)
            if t.minute not in self.minutes:
                later = [m for m in minutes if m > t.minute]
                if not later:
                    t = t.replace(minute=0) + timedelta(hours=1)
                    continue
                t = t.replace(minute=later[0])
            return t
        # parse() refuses expressions that can never run, so this is a safety net only
        raise CronError(f"'{self.expression}' has no run time in the next 30 years.")


def _first_of_next_month(t: datetime) -> datetime:
    if t.month == 12:
        return datetime(t.year + 1, 1, 1)
    return datetime(t.year, t.month + 1, 1)


def _parse_value(text: str, spec: _FieldSpec) -> int:
    upper = text.upper()
    if spec.names and upper in spec.names:
        return spec.low + spec.names.index(upper)
    if not text.isdigit():
        if spec.names:
            allowed = ", ".join(dict.fromkeys(spec.names))
            raise CronError(
                f"{spec.name} '{text}' is not a number or a name ({allowed})."
            )
        raise CronError(f"{spec.name} '{text}' is not a number.")
    value = int(text)
    if not spec.low <= value <= spec.high:
        raise CronError(f"{spec.name} {value} is out of range {spec.low}-{spec.high}.")
    return value


def _parse_field(text: str, spec: _FieldSpec) -> set[int]:
    if not text:
        raise CronError(f"{spec.name} is empty.")
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"{spec.name} '{text}' has an empty item between commas.")
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(
                    f"{spec.name} step '/{step_text}' must be a whole number of 1 or more."
                )
            step = int(step_text)
        if base == "*":
            low, high = spec.low, spec.high
            if spec.name == "day of week":
                high = 6  # 7 is Sunday again; */2 must not add Sunday twice
        elif "-" in base:
            first, _, last = base.partition("-")
            low, high = _parse_value(first, spec), _parse_value(last, spec)
            if low > high:
                raise CronError(
                    f"{spec.name} range '{base}' runs backwards; write it from the smaller "
                    f"to the larger value (or as two ranges separated by a comma)."
                )
        else:
            low = _parse_value(base, spec)
            # '5/20' means 'from 5 to the end, every 20' (as in cronie)
            high = spec.high if slash else low
        values.update(range(low, high + 1, step))
    return values


def parse(expr: str) -> CronSchedule:
    """Parse a cron expression; :class:`CronError` says which field is wrong and why."""
    if not isinstance(expr, str) or not expr.strip():
        raise CronError("The cron expression is empty.")
    text = expr.strip()
    if text.startswith("@"):
        expanded = _SHORTHANDS.get(text.lower())
        if expanded is None:
            known = ", ".join(_SHORTHANDS)
            raise CronError(f"'{text}' is not a known shorthand (known: {known}).")
        parts = expanded.split()
    else:
        parts = text.split()
    if len(parts) != 5:
        raise CronError(
            f"'{text}' has {len(parts)} field{'s' if len(parts) != 1 else ''}; a cron "
            "expression has 5: minute hour day-of-month month day-of-week."
        )
    sets = [_parse_field(part, spec) for part, spec in zip(parts, _FIELDS)]
    weekdays = frozenset(d % 7 for d in sets[4])
    schedule = CronSchedule(
        expression=text,
        fields=tuple(p.upper() for p in parts),  # type: ignore[arg-type]
        minutes=frozenset(sets[0]),
        hours=frozenset(sets[1]),
        days=frozenset(sets[2]),
        months=frozenset(sets[3]),
        weekdays=weekdays,
    )
    _refuse_impossible_days(schedule)
    return schedule


def _refuse_impossible_days(schedule: CronSchedule) -> None:
    """'0 0 31 2 *' (31 February) parses but never runs: say so now, not never."""
    if schedule.day_of_week_restricted and schedule.day_of_month_restricted:
        return  # any matching weekday makes it run
    if any(min(schedule.days) <= _DAYS_IN_MONTH[m - 1] for m in schedule.months):
        return
    months = _join([_MONTH_WORDS[m - 1] for m in sorted(schedule.months)])
    raise CronError(
        f"'{schedule.expression}' never runs: {months} never has a day "
        f"{_join([str(d) for d in sorted(schedule.days)], 'or')}."
    )


# --- time zones ----------------------------------------------------------------------


def zone(name: str | None) -> ZoneInfo:
    """The zone called ``name`` (None = this machine's); CronError for an unknown name."""
    key = name or local_timezone()
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CronError(
            f"'{key}' is not a known time zone.",
            hint="Use an IANA time zone name such as Europe/Berlin, America/New_York or UTC.",
        ) from None


def local_timezone() -> str:
    """The IANA name of this machine's time zone, or "UTC" when it cannot be told."""
    candidates: list[str] = []
    env = os.environ.get("TZ", "").lstrip(":")
    if env:
        candidates.append(env)
    if sys.platform == "win32":
        try:  # Windows names its zones differently; tzlocal knows the IANA mapping
            import tzlocal

            candidates.append(tzlocal.get_localzone_name())
        except Exception:  # noqa: BLE001 - any failure means "unknown", hence UTC
            pass
    else:
        try:  # /etc/localtime -> /usr/share/zoneinfo/Europe/Berlin (Linux, macOS)
            target = str(Path("/etc/localtime").resolve())
            if "zoneinfo/" in target:
                candidates.append(target.split("zoneinfo/", 1)[1])
        except OSError:
            pass
        try:  # Debian and Ubuntu also write the name here
            candidates.append(Path("/etc/timezone").read_text().strip())
        except OSError:
            pass
    for candidate in candidates:
        try:
            ZoneInfo(candidate)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            continue
        return "UTC" if candidate in ("Etc/UTC", "Etc/UCT", "UCT", "Universal", "Zulu") else candidate
    return "UTC"


# --- next run times ------------------------------------------------------------------


def _as_utc(moment: datetime) -> datetime:
    """Aware UTC from a naive-UTC or aware datetime."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _instants(schedule: CronSchedule, wall: datetime, tz: ZoneInfo) -> list[datetime]:
    """The real instants (aware, UTC) at which the wall-clock slot ``wall`` happens in ``tz``."""
    first = wall.replace(tzinfo=tz, fold=0)
    second = wall.replace(tzinfo=tz, fold=1)
    first_utc, second_utc = first.astimezone(timezone.utc), second.astimezone(timezone.utc)
    if first_utc == second_utc:
        return [first_utc]  # an ordinary time
    # Round trip tells a gap (the wall time does not exist) from a repeated hour.
    if first_utc.astimezone(tz).replace(tzinfo=None) != wall:
        # In the gap (the clocks went forward past it). Fixed-time jobs run at the first
        # moment after the gap, wildcard jobs skip the slot. fold=1 reads the wall time
        # with the new offset, which lands before the change: walk to the change.
        if not schedule.fixed_time:
            return []
        old_offset = min(first_utc, second_utc).astimezone(tz).utcoffset()
        change = min(first_utc, second_utc)
        while change.astimezone(tz).utcoffset() == old_offset:
            change += timedelta(minutes=1)
        return [change]
    # The clocks went back: the wall time happens twice.
    if schedule.fixed_time:
        return [first_utc]
    return [first_utc, second_utc]


def _next_instants(schedule: CronSchedule, tz: ZoneInfo, after_utc: datetime, count: int) -> list[datetime]:
    # Wall times are walked in order, but the instants they map to are not quite in order
    # around a DST change (the repeated hour, the gap); so start a little early, collect
    # a little more than asked, then sort. No zone shifts by more than 3 hours at once.
    margin = timedelta(hours=3)
    wall = after_utc.astimezone(tz).replace(tzinfo=None) - margin
    found: set[datetime] = set()
    stop_wall: datetime | None = None
    while True:
        wall = schedule.next_wall_time(wall)
        if stop_wall is not None and wall > stop_wall:
            break
        for instant in _instants(schedule, wall, tz):
            if instant > after_utc:
                found.add(instant)
        if stop_wall is None and len(found) >= count:
            stop_wall = wall + 2 * margin
        wall += timedelta(minutes=1)
    return sorted(found)[:count]


def next_runs(expr: str, tz: str | None, after: datetime, count: int = 5) -> list[datetime]:
    """The next ``count`` run times strictly after ``after``, as aware datetimes in ``tz``.

    ``tz`` is an IANA name (None = this machine's zone); ``after`` is naive UTC or aware.
    """
    schedule = parse(expr)
    zone_info = zone(tz)
    if count <= 0:
        return []
    return [i.astimezone(zone_info) for i in _next_instants(schedule, zone_info, _as_utc(after), count)]


def next_run_utc(expr: str, tz: str | None, after: datetime) -> datetime:
    """The next run strictly after ``after`` as a naive UTC datetime (as the workspace stores it)."""
    (run,) = next_runs(expr, tz, after, 1)
    return run.astimezone(timezone.utc).replace(tzinfo=None)


# --- plain English -------------------------------------------------------------------


def _join(items: list[str], word: str = "and") -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {word} " + items[-1]


def _runs(values: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs: [1,2,3,5] -> [(1,3),(5,5)]."""
    runs: list[tuple[int, int]] = []
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    return runs


def _words(values: list[int], word) -> str:  # noqa: ANN001 - a small formatter
    parts = []
    for low, high in _runs(values):
        if high - low >= 2:
            parts.append(f"{word(low)} to {word(high)}")
        elif high == low + 1:
            parts.extend([word(low), word(high)])
        else:
            parts.append(word(low))
    return _join(parts)


def _step_of(field: str) -> int | None:
    """The n of '*/n', else None."""
    if field.startswith("*/") and field[2:].isdigit():
        return int(field[2:])
    return None


def _time_part(s: CronSchedule) -> tuple[str, bool]:
    """(text, is_fixed_times): 'at 02:00 and 14:00' or 'every 15 minutes'."""
    minutes, hours = sorted(s.minutes), sorted(s.hours)
    all_hours = len(hours) == 24
    if len(minutes) * len(hours) <= 6:  # a few times a day: name them
        times = [f"{h:02d}:{m:02d}" for h in hours for m in minutes]
        return "at " + _join(times), True
    if len(minutes) == 1 and len(_runs(hours)) == 1 and not all_hours:  # 0 9-17 * * *
        return f"every hour from {hours[0]:02d}:{minutes[0]:02d} to {hours[-1]:02d}:{minutes[0]:02d}", False
    if len(minutes) == 1 and not all_hours and _step_of(s.fields[1]) is None:  # 0 1,3,5,7,9,11,13 * * *
        return "at " + _join([f"{h:02d}:{minutes[0]:02d}" for h in hours]), True
    if len(minutes) == 60:
        minute_text = "every minute"
    elif (step := _step_of(s.fields[0])) is not None:
        minute_text = f"every {step} minutes"
    elif len(minutes) == 1 and all_hours:
        return ("every hour" if minutes[0] == 0 else f"every hour at {minutes[0]} minutes past"), False
    elif len(minutes) == 1 and (step := _step_of(s.fields[1])) is not None:
        past = "" if minutes[0] == 0 else f" at {minutes[0]} minutes past"
        return f"every {step} hours{past}", False
    else:
        minute_text = f"at {_words(minutes, str)} minutes past"
        if all_hours:
            return minute_text + " every hour", False
        return minute_text + " the hour from " + _hours_span(hours), False
    if all_hours:
        return minute_text, False
    return f"{minute_text} from {_hours_span(hours)}", False


def _hours_span(hours: list[int]) -> str:
    return _join([f"{low:02d}:00 to {high:02d}:59" for low, high in _runs(hours)])


def _day_part(s: CronSchedule) -> str:
    months = sorted(s.months)
    month_text = "every month" if len(months) == 12 else _words(months, lambda m: _MONTH_WORDS[m - 1])
    days = sorted(s.days)
    weekday_text = _words(sorted(s.weekdays, key=lambda d: (d - 1) % 7), lambda d: _DAY_WORDS[d])
    if s.day_of_month_restricted:
        label = "day" if len(days) == 1 else "days"
        dom_text = f"on {label} {_words(days, str)} of {month_text}"
        if s.day_of_week_restricted:
            return f"{dom_text} and on every {weekday_text}"
        return dom_text
    in_months = "" if len(months) == 12 else f" in {month_text}"
    if s.day_of_week_restricted:
        return f"on {weekday_text}{in_months}"
    return f"every day{in_months}" if in_months else ""


def describe(expr: str) -> str:
    """A plain-English reading: "Every day at 02:00", "At 06:30 on Monday to Friday"."""
    s = parse(expr)
    time_text, fixed = _time_part(s)
    day_text = _day_part(s)
    if fixed and not day_text:
        return f"Every day {time_text}"
    if fixed:
        return f"{time_text[0].upper()}{time_text[1:]} {day_text}"
    text = f"{time_text} {day_text}".strip() if day_text else time_text
    return text[0].upper() + text[1:]
