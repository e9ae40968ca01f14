"""Reporting periods.

Staging rows carry a calendar month, 'YYYY-MM'. KPIs are computed per month and rolled
up to quarters ('YYYY-Qn') and years ('YYYY'); with a fiscal year that starts in another
month, 'FY2024' is the fiscal year that ends in 2024 and 'FY2024-Q1' its first quarter.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_QUARTER = re.compile(r"^(FY)?(\d{4})-Q([1-4])$")
_YEAR = re.compile(r"^(FY)?(\d{4})$")


@dataclass(frozen=True)
class Period:
    label: str
    kind: str  # month | quarter | year
    start: dt.date  # first day
    end: dt.date  # last day

    def months(self) -> list[str]:
        out, d = [], self.start
        while d <= self.end:
            out.append(f"{d.year:04d}-{d.month:02d}")
            d = _add_months(d, 1)
        return out

    def contains(self, month: str) -> bool:
        return self.start <= parse_period(month).start <= self.end


def _add_months(d: dt.date, n: int) -> dt.date:
    index = d.year * 12 + d.month - 1 + n
    return dt.date(index // 12, index % 12 + 1, 1)


def _last_day(first: dt.date, months: int) -> dt.date:
    return _add_months(first, months) - dt.timedelta(days=1)


def month_of(value: dt.date | dt.datetime | str) -> str:
    """'YYYY-MM' of a date, a datetime or an ISO date text."""
    if isinstance(value, str):
        value = dt.date.fromisoformat(value[:10])
    return f"{value.year:04d}-{value.month:02d}"


def parse_period(label: str, fiscal_start: int = 1) -> Period:
    """A period from its label: '2024-03', '2024-Q1', '2024', 'FY2024', 'FY2024-Q2'."""
    text = label.strip()
    if m := _MONTH.match(text):
        start = dt.date(int(m.group(1)), int(m.group(2)), 1)
        return Period(text, "month", start, _last_day(start, 1))
    if m := _QUARTER.match(text):
        start = _year_start(int(m.group(2)), fiscal_start if m.group(1) else 1)
        start = _add_months(start, 3 * (int(m.group(3)) - 1))
        return Period(text, "quarter", start, _last_day(start, 3))
    if m := _YEAR.match(text):
        start = _year_start(int(m.group(2)), fiscal_start if m.group(1) else 1)
        return Period(text, "year", start, _last_day(start, 12))
    raise ValueError(f"'{label}' is not a period; write 2024-03, 2024-Q1, 2024 or FY2024.")


def _year_start(year: int, fiscal_start: int) -> dt.date:
    """The first day of calendar year `year`, or of the fiscal year ending in `year`."""
    if fiscal_start == 1:
        return dt.date(year, 1, 1)
    return dt.date(year - 1, fiscal_start, 1)


def rollups(month: str, fiscal_start: int = 1) -> tuple[str, str]:
    """(quarter label, year label) a month belongs to."""
    start = parse_period(month).start
    if fiscal_start == 1:
        return f"{start.year}-Q{(start.month - 1) // 3 + 1}", f"{start.year}"
    offset = (start.month - fiscal_start) % 12
    fy = start.year + (1 if start.month >= fiscal_start else 0)
    return f"FY{fy}-Q{offset // 3 + 1}", f"FY{fy}"


def month_range(first: str, last: str) -> list[str]:
    """Every month from `first` to `last`, both included."""
    return Period("", "range", parse_period(first).start, parse_period(last).end).months()


def is_month(label: str | None) -> bool:
    return bool(label) and bool(_MONTH.match(label))
