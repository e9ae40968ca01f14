"""The few SQL spellings that differ between DuckDB and PostgreSQL workspaces.

Everything the mapping compiler writes goes through here: identifiers are quoted by the
dialect, literals are escaped, casts that may fail on bad data return NULL instead.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Any

#: value types of mapping expressions
NUMBER, TEXT, BOOLEAN, DATE, TIMESTAMP, NULL, ANY = "number", "text", "boolean", "date", "timestamp", "null", "any"

_NUMBER_PATTERN = r"^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$"
_DATE_PATTERN = r"^\s*[0-9]{4}-[0-9]{2}-[0-9]{2}"
TRUE_WORDS = ("true", "t", "yes", "y", "1", "on")
FALSE_WORDS = ("false", "f", "no", "n", "0", "off")


def value_type(type_text: str | None) -> str:
    """The mapping value type of a workspace column type or a source type family."""
    t = (type_text or "").lower()
    if t in ("integer", "decimal", "float"):  # ColumnInfo.family
        return NUMBER
    if t in ("timestamptz",):
        return TIMESTAMP
    if any(k in t for k in ("int", "numeric", "decimal", "double", "real", "float", "number")):
        return NUMBER
    if "timestamp" in t or "datetime" in t:
        return TIMESTAMP
    if t == "date":
        return DATE
    if "bool" in t:
        return BOOLEAN
    if t in ("text", "json", "other", "") or "char" in t or "text" in t or "string" in t:
        return TEXT
    return TEXT


class Dialect:
    def __init__(self, name: str):
        if name not in ("duckdb", "postgresql"):
            raise ValueError(f"unknown dialect {name}")
        self.name = name

    @property
    def is_duckdb(self) -> bool:
        return self.name == "duckdb"

    # names and literals ---------------------------------------------------------------

    def quote(self, identifier: str) -> str:
        return '"' + identifier.replace('"', '""') + '"'

    def literal(self, value: Any) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, bool):
            return "TRUE" if value else "FALSE"
        if isinstance(value, (int, Decimal)):
            return str(value)
        if isinstance(value, float):
            if math.isnan(value) or math.isinf(value):
                return "NULL"
            return repr(value)
        if isinstance(value, dt.datetime):
            return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
        if isinstance(value, dt.date):
            return f"DATE '{value.isoformat()}'"
        return "'" + str(value).replace("'", "''") + "'"

    def number_literal(self, value: float) -> str:
        return f"CAST({self.literal(float(value))} AS {self.double})"

    # types ------------------------------------------------------------------------------

    @property
    def double(self) -> str:
        return "DOUBLE" if self.is_duckdb else "DOUBLE PRECISION"

    @property
    def text(self) -> str:
        return "VARCHAR" if self.is_duckdb else "TEXT"

    # casts that never fail: bad values become NULL ------------------------------------

    def to_number(self, expr: str, from_type: str) -> str:
        if from_type == NUMBER:
            return f"CAST({expr} AS {self.double})"
        if from_type == BOOLEAN:
            return f"CASE WHEN {expr} THEN 1.0 WHEN NOT {expr} THEN 0.0 END"
        if from_type in (NULL,):
            return f"CAST(NULL AS {self.double})"
        text = self.to_text(expr, from_type)
        if self.is_duckdb:
            return f"TRY_CAST(replace(trim({text}), ',', '') AS {self.double})"
        return (f"CASE WHEN replace({text}, ',', '') ~ '{_NUMBER_PATTERN}' "
                f"THEN CAST(replace({text}, ',', '') AS {self.double}) END")

    def to_text(self, expr: str, from_type: str) -> str:
        if from_type == TEXT:
            return expr
        if from_type == DATE:
            return self.format_date(expr, "%Y-%m-%d")
        if from_type == TIMESTAMP and not self.is_duckdb:
            return f"to_char({expr}, 'YYYY-MM-DD\"T\"HH24:MI:SS')"
        return f"CAST({expr} AS {self.text})"

    def to_date(self, expr: str, from_type: str) -> str:
        if from_type == DATE:
            return expr
        if from_type == TIMESTAMP:
            return f"CAST({expr} AS DATE)"
        if from_type == NULL:
            return "CAST(NULL AS DATE)"
        text = self.to_text(expr, from_type)
        if self.is_duckdb:
            return f"TRY_CAST(substr(trim({text}), 1, 10) AS DATE)"
        return f"CASE WHEN {text} ~ '{_DATE_PATTERN}' THEN CAST(substr(trim({text}), 1, 10) AS DATE) END"

    def to_timestamp(self, expr: str, from_type: str) -> str:
        if from_type == TIMESTAMP:
            return expr
        if from_type == DATE:
            return f"CAST({expr} AS TIMESTAMP)"
        text = self.to_text(expr, from_type)
        if self.is_duckdb:
            return f"TRY_CAST(trim({text}) AS TIMESTAMP)"
        return f"CASE WHEN {text} ~ '{_DATE_PATTERN}' THEN CAST(trim({text}) AS TIMESTAMP) END"

    def to_boolean(self, expr: str, from_type: str) -> str:
        if from_type == BOOLEAN:
            return expr
        if from_type == NUMBER:
            return f"CASE WHEN {expr} IS NULL THEN NULL ELSE {expr} <> 0 END"
        text = f"lower(trim({self.to_text(expr, from_type)}))"
        trues = ", ".join(self.literal(w) for w in TRUE_WORDS)
        falses = ", ".join(self.literal(w) for w in FALSE_WORDS)
        return f"CASE WHEN {text} IN ({trues}) THEN TRUE WHEN {text} IN ({falses}) THEN FALSE END"

    def cast(self, expr: str, from_type: str, to_type: str) -> str:
        if to_type == from_type or to_type == ANY:
            return expr
        return {NUMBER: self.to_number, TEXT: self.to_text, DATE: self.to_date, TIMESTAMP: self.to_timestamp,
                BOOLEAN: self.to_boolean}[to_type](expr, from_type)

    # dates ------------------------------------------------------------------------------

    def format_date(self, expr: str, fmt: str) -> str:
        if self.is_duckdb:
            return f"strftime({expr}, '{fmt}')"
        pg = fmt.replace("%Y", "YYYY").replace("%m", "MM").replace("%d", "DD")
        return f"to_char({expr}, '{pg}')"

    def month_label(self, expr: str, from_type: str) -> str:
        """'YYYY-MM' of a date, timestamp or ISO text; NULL when it is none."""
        if from_type == TEXT:
            # a text that already is a month label passes as it is
            text = f"trim({expr})"
            pattern = "^[0-9]{4}-[0-9]{2}$"
            matches = f"regexp_matches({text}, '{pattern}')" if self.is_duckdb else f"{text} ~ '{pattern}'"
            return f"CASE WHEN {matches} THEN {text} ELSE {self.format_date(self.to_date(expr, TEXT), '%Y-%m')} END"
        return self.format_date(self.to_date(expr, from_type), "%Y-%m")

    def json_string(self, expr: str) -> str:
        """A text value as a JSON string literal (or null), built without JSON functions."""
        e = expr
        for a, b in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
            e = f"replace({e}, {self.literal(a)}, {self.literal(b)})"
        return f"CASE WHEN {expr} IS NULL THEN 'null' ELSE '\"' || {e} || '\"' END"

    def temp_table(self, name: str, select_sql: str) -> str:
        if self.is_duckdb:
            return f"CREATE OR REPLACE TEMP TABLE {self.quote(name)} AS {select_sql}"
        return f"CREATE TEMP TABLE {self.quote(name)} ON COMMIT DROP AS {select_sql}"

    def drop_temp(self, name: str) -> str:
        return f"DROP TABLE IF EXISTS {self.quote(name)}"


DUCKDB = Dialect("duckdb")
POSTGRESQL = Dialect("postgresql")


def dialect_of(workspace) -> Dialect:
    return DUCKDB if workspace.is_duckdb else POSTGRESQL
