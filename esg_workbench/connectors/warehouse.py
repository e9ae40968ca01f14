"""What the cloud warehouses (Snowflake, Databricks) share: planning and read queries
rendered as SQL text here, results taken as Arrow batches.

These sources are reached through their own clients (no SQLAlchemy dialect works with
SQLAlchemy 2.1 for Snowflake; Databricks is reached over its REST statement API), so
the planning queries of `SqlConnector` are written out here. Every identifier goes
through the subclass's `quote` and every value through its `literal`, which render them
the source's way; nothing is pasted. Key bounds are compared without row values,
`a > x OR (a = x AND b > y)`, which every SQL engine reads alike.

A subclass provides: `quote`, `literal`, `table_ref`, `window_start_sql`, `run_arrow`
(the batches of one statement), `describe`, `validate`, `list_streams` and
`translate_error`.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Iterator

from esg_workbench.core.errors import EsgError, SourceError, TableMissing
from esg_workbench.core.specs import CancelToken, ChunkRange, ConnectorSpec, ReadScope, StreamRef, TableInfo
from esg_workbench.connectors.base import TranslatesErrors
from esg_workbench.connectors.sql import json_safe

if TYPE_CHECKING:
    import pyarrow as pa


class RenderedSqlConnector(TranslatesErrors):
    default_schema: str | None = None

    def __init__(self, spec: ConnectorSpec):
        self.spec = spec
        self._tables: dict[StreamRef, TableInfo] = {}

    # --- hooks ---------------------------------------------------------------------------

    def quote(self, name: str) -> str:
        raise NotImplementedError

    def literal(self, value: Any) -> str:
        """A value written into SQL. The type dispatch is shared; each dialect spells
        strings, timestamps, dates, times, bytes and non-finite numbers its own way."""
        if value is None:
            return "NULL"
        if isinstance(value, bool):
            return "TRUE" if value else "FALSE"
        if isinstance(value, int):
            return str(value)
        if isinstance(value, Decimal):
            return format(value, "f") if value.is_finite() else self.nonfinite_literal(str(value))
        if isinstance(value, float):
            return repr(value) if math.isfinite(value) else self.nonfinite_literal(repr(value))
        if isinstance(value, dt.datetime):
            if value.tzinfo is not None:
                text = value.astimezone(dt.timezone.utc).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
                return self.timestamp_literal(text + "+00:00", aware=True)
            return self.timestamp_literal(value.isoformat(sep=" ", timespec="microseconds"), aware=False)
        if isinstance(value, dt.date):
            return self.date_literal(value.isoformat())
        if isinstance(value, dt.time):
            return self.time_literal(value)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return self.binary_literal(bytes(value).hex())
        return self.string_literal(str(value))

    # the spellings (ANSI / DuckDB by default)
    def string_literal(self, text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    def nonfinite_literal(self, text: str) -> str:
        return f"CAST({self.string_literal(text)} AS DOUBLE)"

    def timestamp_literal(self, text: str, aware: bool) -> str:
        return f"TIMESTAMP '{text}'"

    def date_literal(self, text: str) -> str:
        return f"DATE '{text}'"

    def time_literal(self, value: "dt.time") -> str:
        return self.string_literal(str(value))

    def binary_literal(self, hex_digits: str) -> str:
        return f"unhex('{hex_digits}')"

    def table_ref(self, stream: StreamRef) -> str:
        raise NotImplementedError

    def window_start_sql(self, column_sql: str, window: str, family: str | None) -> str:
        return f"DATE_TRUNC('{window}', {column_sql})"

    def run_arrow(self, sql: str, what: str, cancel: CancelToken | None = None) -> "Iterator[pa.RecordBatch]":
        raise NotImplementedError

    def translate_error(self, exc: BaseException, what: str) -> EsgError:
        return SourceError(f"{what} failed: {type(exc).__name__}")

    def describe(self, streams: list[StreamRef] | None = None) -> list[TableInfo]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    # --- plumbing --------------------------------------------------------------------------

    @property
    def schema(self) -> str | None:
        return self.spec.option("schema", self.default_schema)

    def rows(self, sql: str, what: str) -> list[tuple]:
        """A small result (planning, discovery) as tuples of Python values."""
        out: list[tuple] = []
        for batch in self.run_arrow(sql, what):
            out += list(zip(*[col.to_pylist() for col in batch.columns]))
        return out

    def _table(self, stream: StreamRef) -> TableInfo:
        if stream not in self._tables:
            if not self.describe([stream]):
                raise TableMissing(f"The table {stream.qualified} does not exist in the source (any more).")
        return self._tables[stream]

    def _family(self, stream: StreamRef, column: str) -> str | None:
        info = self._tables.get(stream)
        found = info.column(column) if info else None
        return found.family if found else None

    # --- conditions --------------------------------------------------------------------------

    def compare(self, columns: list[str], bound: tuple, op: str) -> str:
        """`(c1..ck) op (v1..vk)` for a bound of length k, without row values."""
        cols = [self.quote(c) for c in columns[: len(bound)]]
        values = [self.literal(v) for v in bound]
        strict = "<" if op == "<" else ">"
        expr = f"{cols[-1]} {op} {values[-1]}"
        for c, v in zip(reversed(cols[:-1]), reversed(values[:-1])):
            expr = f"{c} {strict} {v} OR ({c} = {v} AND ({expr}))"
        return f"({expr})"

    def cursor_at_most(self, column: str, value: Any) -> str:
        """The sync's upper bound. Timestamps finer than Python's microseconds
        (Snowflake's TIMESTAMP(9)) lost digits in `value`: compare below the next
        microsecond, so the latest rows are not left out."""
        if isinstance(value, dt.datetime):
            return f"{self.quote(column)} < {self.literal(value + dt.timedelta(microseconds=1))}"
        return f"{self.quote(column)} <= {self.literal(value)}"

    def _conditions(self, scope: ReadScope, chunk: ChunkRange | None) -> tuple[list[str], list[str]]:
        conds: list[str] = []
        key = list(scope.key)
        if chunk is not None and chunk.null_cursor:
            conds.append(f"{self.quote(scope.cursor_field)} IS NULL")
            key = [k for k in key if k != scope.cursor_field]
        else:
            if scope.cursor_field and scope.cursor_field in key:
                conds.append(f"{self.quote(scope.cursor_field)} IS NOT NULL")
            if scope.after is not None:
                conds.append(self.compare(key, scope.after, ">=" if scope.after_inclusive else ">"))
            if scope.cursor_max is not None:
                conds.append(self.cursor_at_most(scope.cursor_field, scope.cursor_max))
        if chunk is not None:
            if chunk.lower is not None:
                conds.append(self.compare(key, chunk.lower, ">="))
            if chunk.upper is not None:
                conds.append(self.compare(key, chunk.upper, "<"))
        return key, conds

    @staticmethod
    def _where(conds: list[str]) -> str:
        return f" WHERE {' AND '.join(conds)}" if conds else ""

    # --- discovery ------------------------------------------------------------------------------

    def list_streams(self) -> list[StreamRef]:
        return [info.stream for info in self.describe()]

    def sample(self, stream: StreamRef, limit: int) -> list[dict[str, Any]]:
        info = self._table(stream)
        names = [c.name for c in info.columns]
        sql = f"SELECT {', '.join(self.quote(n) for n in names)} FROM {self.table_ref(stream)} LIMIT {int(limit)}"
        rows = self.rows(sql, f"Reading sample rows of {stream.qualified}")
        return [{n: json_safe(v) for n, v in zip(names, row)} for row in rows]

    # --- planning ------------------------------------------------------------------------------

    def cursor_max(self, stream: StreamRef, cursor_field: str) -> Any:
        sql = f"SELECT MAX({self.quote(cursor_field)}) FROM {self.table_ref(stream)}"
        return self.rows(sql, f"Reading the latest {cursor_field} of {stream.qualified}")[0][0]

    def count(self, stream: StreamRef, scope: ReadScope, within: ChunkRange | None = None) -> int:
        _, conds = self._conditions(scope, within)
        sql = f"SELECT COUNT(*) FROM {self.table_ref(stream)}{self._where(conds)}"
        return int(self.rows(sql, f"Counting rows of {stream.qualified}")[0][0])

    def key_range(self, stream: StreamRef, scope: ReadScope) -> tuple[Any, Any, int]:
        key, conds = self._conditions(scope, None)
        col = self.quote(key[0])
        sql = f"SELECT MIN({col}), MAX({col}), COUNT(*) FROM {self.table_ref(stream)}{self._where(conds)}"
        lo, hi, n = self.rows(sql, f"Measuring {stream.qualified}")[0]
        return lo, hi, int(n)

    def boundaries(self, stream: StreamRef, scope: ReadScope, every: int,
                   within: ChunkRange | None = None) -> list[tuple]:
        key, conds = self._conditions(scope, within)
        cols = ", ".join(self.quote(k) for k in key)
        rn = self.quote("_esg_rn")
        sql = (f"SELECT {cols} FROM (SELECT {cols}, ROW_NUMBER() OVER (ORDER BY {cols}) AS {rn} "
               f"FROM {self.table_ref(stream)}{self._where(conds)}) AS {self.quote('_esg_numbered')} "
               f"WHERE {rn} > 1 AND MOD({rn} - 1, {int(every)}) = 0 ORDER BY {cols}")
        return [tuple(r) for r in self.rows(sql, f"Planning chunks of {stream.qualified}")]

    def window_counts(self, stream: StreamRef, scope: ReadScope, window: str) -> list[tuple[Any, int]]:
        _, conds = self._conditions(scope, None)
        start = self.window_start_sql(self.quote(scope.cursor_field), window, self._family(stream, scope.cursor_field))
        w = self.quote("_esg_w")
        sql = (f"SELECT {w}, COUNT(*) FROM (SELECT {start} AS {w} FROM {self.table_ref(stream)}{self._where(conds)}) "
               f"AS {self.quote('_esg_windows')} GROUP BY {w} ORDER BY {w}")
        return [(r[0], int(r[1])) for r in self.rows(sql, f"Planning time windows of {stream.qualified}")]

    def null_cursor_count(self, stream: StreamRef, cursor_field: str) -> int:
        sql = f"SELECT COUNT(*) FROM {self.table_ref(stream)} WHERE {self.quote(cursor_field)} IS NULL"
        return int(self.rows(sql, f"Counting rows of {stream.qualified}")[0][0])

    # --- reading ----------------------------------------------------------------------------------

    def read_sql(self, stream: StreamRef, scope: ReadScope, chunk: ChunkRange) -> str:
        key, conds = self._conditions(scope, chunk)
        order = f" ORDER BY {', '.join(self.quote(k) for k in key)}" if key else ""
        cols = ", ".join(self.quote(c) for c in scope.columns)
        return f"SELECT {cols} FROM {self.table_ref(stream)}{self._where(conds)}{order}"

    def read(self, stream: StreamRef, scope: ReadScope, chunk: ChunkRange,
             cancel: CancelToken | None = None) -> "Iterator[pa.RecordBatch]":
        sql = self.read_sql(stream, scope, chunk)
        for batch in self.run_arrow(sql, f"Reading {stream.qualified} {chunk.describe()}", cancel):
            if cancel is not None:
                cancel.raise_if_cancelled()
            yield batch


def microsecond_timestamps(batch: "pa.RecordBatch") -> "pa.RecordBatch":
    """Nanosecond timestamps truncated to microseconds (the workspace's and Python's unit:
    pyarrow cannot turn a nanosecond value into a datetime without pandas)."""
    import pyarrow as pa

    if not any(pa.types.is_timestamp(f.type) and f.type.unit == "ns" for f in batch.schema):
        return batch
    arrays, fields = [], []
    for field, column in zip(batch.schema, batch.columns):
        if pa.types.is_timestamp(field.type) and field.type.unit == "ns":
            column = column.cast(pa.timestamp("us", field.type.tz), safe=False)
            field = pa.field(field.name, column.type, field.nullable, field.metadata)
        arrays.append(column)
        fields.append(field)
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def first_line(exc: BaseException | str) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else (type(exc).__name__ if isinstance(exc, BaseException) else "unknown error")
