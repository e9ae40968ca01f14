"""Numbers and dates written as text the local way: `1.234,56`, `1,234.56`, `31.12.2024`,
`12/31/2024 13:45`. A text column of a CSV file is read as numbers or dates when every
value reads one way only (or as the options `decimal`, `thousands` and `date_format`
say); the format found travels with the table's schema (field metadata), so every file of
the table is read the same way, and discovery shows it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from esg_workbench.connectors.files.model import FileOptions

META = b"esg.text_format"

#: (decimal, thousands) pairs tried on a text column, the common ones first
_NUMBER_STYLES = ((",", "."), (",", ""), (".", ","), (",", " "), (".", " "), (".", "'"), (".", ""),
                  (",", "\u00a0"), (",", "\u202f"))  # French exports group thousands with (narrow) no-break spaces
#: date formats tried on a text column; day-first and month-first slashes tell
#: themselves apart only when a value has a day above 12
_DATE_FORMATS = ("%d.%m.%Y", "%d.%m.%y", "%d/%m/%Y", "%m/%d/%Y", "%Y/%m/%d", "%d-%m-%Y", "%Y.%m.%d")
_TIME_SUFFIXES = ("", " %H:%M", " %H:%M:%S")
#: values looked at per column when detecting
DETECT_VALUES = 2000


def _number_pattern(decimal: str, thousands: str) -> str:
    d = re.escape(decimal)
    digits = rf"(?:\d{{1,3}}(?:{re.escape(thousands)}\d{{3}})+|\d+)" if thousands else r"\d+"
    return rf"^\s*[+-]?(?:{digits}(?:{d}\d+)?|{d}\d+)\s*$"


@dataclasses.dataclass(frozen=True)
class TextFormat:
    """How a text column is read: as a number with these separators, or as a date or
    date-time in this strptime format."""

    kind: str  # number | date | timestamp
    decimal: str = "."
    thousands: str = ""
    date_format: str = ""

    def describe(self) -> str:
        if self.kind == "number":
            sample = "1" + (self.thousands + "234" if self.thousands else "234") + self.decimal + "56"
            return f"numbers written like {sample} (decimal '{self.decimal}'" + (
                f", thousands '{self.thousands}')" if self.thousands else ")")
        example = dt.datetime(2024, 12, 31, 13, 45, 0).strftime(self.date_format)
        return f"{'dates' if self.kind == 'date' else 'dates and times'} written like {example} ({self.date_format})"

    def to_meta(self) -> dict[bytes, bytes]:
        return {META: json.dumps(dataclasses.asdict(self)).encode()}

    @classmethod
    def of(cls, field: pa.Field) -> "TextFormat | None":
        meta = field.metadata or {}
        return cls(**json.loads(meta[META])) if META in meta else None

    # --- reading ----------------------------------------------------------------------------

    def misfits(self, array: pa.Array) -> pa.Array:
        """True where a (non-null) value does not read in this format."""
        if self.kind == "number":
            ok = pc.match_substring_regex(array, _number_pattern(self.decimal, self.thousands))
        else:
            ok = pc.is_valid(pc.strptime(pc.utf8_trim_whitespace(array), format=self.date_format, unit="us",
                                         error_is_null=True))
        return pc.and_(pc.is_valid(array), pc.invert(pc.fill_null(ok, False)))

    def parse(self, array: pa.Array, target: pa.DataType) -> pa.Array:
        """The values as `target`; raises ValueError(index) at the first that does not read."""
        bad = self.misfits(array)
        if pc.any(bad).as_py():
            raise ValueError(pc.index(bad, True).as_py())
        if self.kind == "number":
            text = pc.utf8_trim_whitespace(array)
            if self.thousands:
                text = pc.replace_substring(text, self.thousands, "")
            if self.decimal != ".":
                text = pc.replace_substring(text, self.decimal, ".")
            text = pc.replace_substring_regex(text, r"^\+", "")
            numbers = text.cast(pa.float64() if pa.types.is_integer(target) else target) \
                if not pa.types.is_string(target) else array
            if pa.types.is_integer(target):
                whole = pc.equal(numbers, pc.floor(numbers))
                if not pc.all(pc.fill_null(whole, True)).as_py():
                    raise ValueError(pc.index(pc.fill_null(pc.invert(whole), False), True).as_py())
                return numbers.cast(target)
            return numbers
        stamps = pc.strptime(pc.utf8_trim_whitespace(array), format=self.date_format, unit="us")
        if pa.types.is_string(target):
            return array
        if pa.types.is_timestamp(target) and target.tz:
            stamps = pc.assume_timezone(stamps, "UTC")
        return stamps.cast(target)


def _number_values(values: list[str], decimal: str, thousands: str) -> list[float] | None:
    pattern = re.compile(_number_pattern(decimal, thousands))
    out = []
    for value in values:
        if not pattern.match(value):
            return None
        text = value.strip().replace(thousands, "") if thousands else value.strip()
        out.append(float(text.replace(decimal, ".")))
    return out


def _detect_number(values: list[str], options: FileOptions) -> tuple[TextFormat, pa.DataType] | str | None:
    styles = _NUMBER_STYLES
    if options.decimal is not None or options.thousands is not None:
        styles = tuple(s for s in styles if (options.decimal is None or s[0] == options.decimal)
                       and (options.thousands is None or s[1] == options.thousands))
        if options.decimal is not None and options.thousands is not None and not styles:
            styles = ((options.decimal, options.thousands),)
    readings = {}
    for decimal, thousands in styles:
        numbers = _number_values(values, decimal, thousands)
        if numbers is not None:
            readings[(decimal, thousands)] = numbers
    if not readings:
        return None
    distinct = {tuple(v) for v in readings.values()}
    if len(distinct) > 1:  # "1,500" is 1.5 or 1500: leave it to the options decimal and thousands
        return "ambiguous"
    (decimal, thousands), numbers = next(iter(readings.items()))
    if not any(decimal in v for v in values) and options.decimal is None:
        # no value has a decimal part: the sign is not known, nor needed; not the thousands'
        decimal = "," if thousands == "." else "."
        if not any(thousands in v for v in values if thousands):
            return None  # plain whole numbers: nothing local about them
    whole = all(n.is_integer() for n in numbers) and not any(decimal in v for v in values)
    return TextFormat("number", decimal, thousands if any(thousands in v for v in values) or
                      options.thousands is not None else ""), pa.int64() if whole else pa.float64()


def _reads(values: list[str], fmt: str) -> bool:
    try:
        for value in values:
            dt.datetime.strptime(value.strip(), fmt)
    except ValueError:
        return False
    return True


def _detect_date(values: list[str], options: FileOptions) -> tuple[TextFormat, pa.DataType] | str | None:
    if options.date_format:
        formats = [options.date_format]
    else:
        formats = [d + t for d in _DATE_FORMATS for t in _TIME_SUFFIXES]
    fitting = [f for f in formats if _reads(values, f)]
    if not fitting:
        return None
    if len(fitting) > 1:
        return "ambiguous"
    fmt = fitting[0]
    timed = any(code in fmt for code in ("%H", "%M", "%S", "%I", "%p"))
    return TextFormat("timestamp" if timed else "date", date_format=fmt), pa.timestamp("us") if timed else pa.date32()


def detect(values: Iterable[str | None], options: FileOptions) -> tuple[TextFormat, pa.DataType] | str | None:
    """The format every value of a text column reads in, with the column's type; the
    string "ambiguous" when several formats read the values differently; None when the
    values are no numbers or dates of a local format."""
    sample = [v for v in values if v is not None and v.strip()][:DETECT_VALUES]
    if not sample:
        return None
    number = _detect_number(sample, options)
    if number is not None:
        return number
    return _detect_date(sample, options)
