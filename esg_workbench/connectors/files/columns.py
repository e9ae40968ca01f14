"""Column names and types: how names are cleaned, types merged and values made to fit
a table's types (Arrow arrays, and Python values from sheets and odd JSON lines)."""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

import pyarrow as pa

from esg_workbench.connectors.files.model import UTC, BadFile

def text_of(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    return str(value)


def clean_names(raw: list[Any]) -> list[str]:
    """Column names as landed: whitespace folded, empty ones named by position,
    duplicates (ignoring case, as DuckDB does) numbered, lineage names kept free."""
    out: list[str] = []
    seen: set[str] = set()
    for i, value in enumerate(raw):
        name = " ".join(text_of(value).split()) if value is not None else ""
        name = name or f"column_{i + 1}"
        if name.lower().startswith("_esg_"):
            name = "source" + name
        base, n = name, 2
        while name.lower() in seen:
            name, n = f"{base}_{n}", n + 1
        seen.add(name.lower())
        out.append(name)
    return out


def is_nested(t: pa.DataType) -> bool:
    return pa.types.is_nested(t) or pa.types.is_map(t)


def normalize_type(t: pa.DataType) -> pa.DataType:
    """The type a column lands with: no null, dictionary, nested or odd-unit types."""
    if pa.types.is_null(t) or is_nested(t):
        return pa.string()
    if pa.types.is_dictionary(t):
        return normalize_type(t.value_type)
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz="UTC" if t.tz else None)
    if pa.types.is_date64(t):
        return pa.date32()
    if pa.types.is_float16(t):
        return pa.float32()
    if pa.types.is_time(t):
        return pa.time64("us")
    return t


def merge_types(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """A type holding values of both (int and float: float; date and timestamp:
    timestamp); text where there is none."""
    if a == b:
        return a
    if pa.types.is_null(a):
        return b
    if pa.types.is_null(b):
        return a
    def temporal(t: pa.DataType) -> bool:
        return pa.types.is_date(t) or pa.types.is_timestamp(t)

    if temporal(a) and temporal(b):
        return pa.timestamp("us", tz=getattr(a, "tz", None) or getattr(b, "tz", None))
    try:
        merged = pa.unify_schemas([pa.schema([("x", a)]), pa.schema([("x", b)])],
                                  promote_options="permissive").field("x").type
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return pa.string()
    if pa.types.is_string(merged) or pa.types.is_large_string(merged) or pa.types.is_floating(merged) \
            or pa.types.is_integer(merged) or pa.types.is_decimal(merged) or pa.types.is_timestamp(merged):
        return merged
    return pa.string()


def type_family(t: pa.DataType) -> str:
    checks = (
        (pa.types.is_boolean, "boolean"), (pa.types.is_integer, "integer"), (pa.types.is_floating, "float"),
        (pa.types.is_decimal, "decimal"), (pa.types.is_date, "date"), (pa.types.is_time, "time"),
        (pa.types.is_string, "text"), (pa.types.is_large_string, "text"),
        (pa.types.is_binary, "binary"), (pa.types.is_large_binary, "binary"),
    )
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    return next((family for check, family in checks if check(t)), "other")


def json_text(array: pa.Array) -> pa.Array:
    from esg_workbench.connectors.sql import json_safe

    return pa.array([None if v is None else json.dumps(json_safe(v), ensure_ascii=False) for v in array.to_pylist()],
                    pa.string())


def first_bad(array: pa.Array, target: pa.DataType, safe: bool) -> int:
    """The index of the first value that does not cast (by bisection over prefixes)."""
    lo, hi = 0, len(array)  # a prefix of length lo casts, one of length hi does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            array.slice(0, mid).cast(target, safe=safe)
            lo = mid
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            hi = mid
    return hi - 1


def _type_words(t: pa.DataType) -> str:
    family = type_family(t)
    return {"integer": "a whole number", "float": "a number", "decimal": f"a decimal number ({t})",
            "boolean": "true or false", "date": "a date", "timestamp": "a date and time",
            "timestamptz": "a date and time with a zone", "time": "a time of day"}.get(family, str(t))


_LOCAL_NUMBER = re.compile(r"^\s*[+-]?[\d.,' ]*\d[\d.,' ]*\s*$")
_LOCAL_DATE = re.compile(r"^\s*\d{1,4}[./-]\d{1,2}[./-]\d{1,4}")


def value_misfit(where: str, column: str, value: Any, target: pa.DataType) -> BadFile:
    hint = (f"Fix the value, or set the column's type in the connector option column_types "
            f"(e.g. {column}:text), then use Retry failed chunks.")
    numeric = pa.types.is_integer(target) or pa.types.is_floating(target) or pa.types.is_decimal(target)
    if isinstance(value, str) and numeric and _LOCAL_NUMBER.match(value):
        hint = ("If the file writes numbers the local way (1.234,56), set the connector options decimal and "
                "thousands (e.g. decimal=, thousands=.); else " + hint[0].lower() + hint[1:])
    elif isinstance(value, str) and (pa.types.is_date(target) or pa.types.is_timestamp(target)) \
            and _LOCAL_DATE.match(value):
        hint = ("If the file writes dates the local way (31.12.2024), set the connector option date_format "
                "(e.g. %d.%m.%Y); else " + hint[0].lower() + hint[1:])
    return BadFile(
        f"{where}, column '{column}': {value!r} is not {_type_words(target)}, the column's type "
        f"(inferred from the table's first files).", hint=hint)


def conform(batch: pa.RecordBatch, schema: pa.Schema, where: str, row0: int,
            renames: dict[str, str] | None = None, missing_ok: bool = False) -> pa.RecordBatch:
    """The batch's columns in the table's order and types. `renames` maps landed names
    to the file's own; `row0` is the position of the batch's first row in the file."""
    arrays = []
    names = batch.schema.names
    for field in schema:
        source = (renames or {}).get(field.name, field.name)
        if source not in names:
            if not missing_ok:
                raise BadFile(f"{where} has no column '{field.name}'.")
            arrays.append(pa.nulls(batch.num_rows, field.type))
            continue
        array = batch.column(names.index(source))
        if pa.types.is_dictionary(array.type):
            array = array.dictionary_decode()
        if is_nested(array.type):
            array = json_text(array)
        if array.type != field.type:
            # timestamps of a finer unit are cut to microseconds, as the workspace keeps them
            safe = not (pa.types.is_timestamp(array.type) and pa.types.is_timestamp(field.type))
            try:
                array = array.cast(field.type, safe=safe)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                i = first_bad(array, field.type, safe)
                raise value_misfit(f"{where}, row {row0 + i + 1}", field.name, array[i].as_py(), field.type) from None
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def check_columns(where: str, found: list[str], schema: pa.Schema, missing_ok: bool = False) -> None:
    expected = schema.names
    missing = [n for n in expected if n not in found]
    extra = [n for n in found if n not in expected]
    if extra or (missing and not missing_ok):
        parts = []
        if missing and not missing_ok:
            parts.append("missing " + ", ".join(f"'{n}'" for n in missing))
        if extra:
            parts.append("not in the table " + ", ".join(f"'{n}'" for n in extra))
        raise BadFile(
            f"{where}: its columns differ from its table's (inferred from the table's first files): "
            + "; ".join(parts) + ".",
            hint="Give the file the same header as the table's other files (or move it to a folder of its "
                 "own: each subfolder is a table), then use Retry failed chunks.")


# --- Python values (sheet cells, JSON values) -------------------------------------------------


def value_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, (float, Decimal)):
        return "float"
    if isinstance(value, dt.datetime):
        return "date" if value.time() == dt.time(0) and value.tzinfo is None else "ts"
    if isinstance(value, dt.date):
        return "date"
    if isinstance(value, dt.time):
        return "time"
    return "str"


def kinds_type(kinds: set[str]) -> pa.DataType:
    if not kinds:
        return pa.null()
    if kinds == {"int"}:
        return pa.int64()
    if kinds <= {"int", "float"}:
        return pa.float64()
    if kinds == {"date"}:
        return pa.date32()  # date cells (Excel keeps a date as a date-time at midnight)
    if kinds <= {"date", "ts"}:
        return pa.timestamp("us")
    if kinds == {"bool"}:
        return pa.bool_()
    if kinds == {"time"}:
        return pa.time64("us")
    return pa.string()


def to_type(value: Any, target: pa.DataType) -> Any:
    """A cell's value as the column's type; raises ValueError when it does not fit."""
    if pa.types.is_string(target):
        return text_of(value)
    if isinstance(value, str):
        text = value.strip()
        if pa.types.is_integer(target) or pa.types.is_floating(target) or pa.types.is_decimal(target):
            try:
                value = Decimal(text)  # a number stored as text
            except InvalidOperation:
                raise ValueError(value) from None
        elif pa.types.is_timestamp(target) or pa.types.is_date(target):
            value = dt.datetime.fromisoformat(text)
        elif pa.types.is_boolean(target) and text.lower() in ("true", "false"):
            return text.lower() == "true"
        else:
            raise ValueError(value)
    if pa.types.is_boolean(target):
        if isinstance(value, bool):
            return value
        raise ValueError(value)
    if isinstance(value, bool):
        raise ValueError(value)
    if pa.types.is_integer(target):
        if isinstance(value, int):
            return value
        if isinstance(value, (float, Decimal)) and value == int(value):
            return int(value)
        raise ValueError(value)
    if pa.types.is_floating(target):
        if isinstance(value, (int, float, Decimal)):
            return float(value)
        raise ValueError(value)
    if pa.types.is_decimal(target):
        if isinstance(value, (int, float, Decimal)):
            return Decimal(str(value)).quantize(Decimal(1).scaleb(-target.scale))
        raise ValueError(value)
    if pa.types.is_timestamp(target):
        if not isinstance(value, dt.datetime):
            if not isinstance(value, dt.date):
                raise ValueError(value)
            value = dt.datetime(value.year, value.month, value.day)
        return value.replace(tzinfo=UTC) if target.tz and value.tzinfo is None else value
    if pa.types.is_date(target):
        if isinstance(value, dt.datetime):
            if value.time() != dt.time(0):
                raise ValueError(value)  # a time of day would be lost
            return value.date()
        if isinstance(value, dt.date):
            return value
        raise ValueError(value)
    if pa.types.is_time(target):
        if isinstance(value, dt.time):
            return value
        raise ValueError(value)
    return value
