"""Database files on this machine: SQLite and DuckDB.

They let the app run on bundled sample data (see `esg_workbench.sample_data`) and on
the many small ERP extracts that arrive as a file. Both open the file read-only: a
missing file is reported, never created, and the source is never written.

Discovery and planning go through SQLAlchemy like every SQL source; reads are
Arrow-native (ADBC for SQLite, DuckDB's own Arrow export for DuckDB).

SQLite is dynamically typed, which needs care in three places:

* **Reading.** ADBC's SQLite driver infers each column's Arrow type from the first batch
  of a result, and fails on a later value of another storage class (an all-NULL first
  batch is taken as int64). The read query therefore selects every column as one
  storage class (numbers as REAL in float/decimal columns, text in text-like columns,
  blobs in binary columns), a nullable column as ``coalesce(value, <typed dummy>)`` plus
  an ``IS NULL`` flag, and every batch is then cast to a schema derived from the
  declared column types, so every chunk of a table has the same schema:

  ======================================  ===============================================
  declared type (SQLAlchemy family)       Arrow type
  ======================================  ===============================================
  INTEGER... (integer)                    int64
  BOOLEAN (boolean)                       bool
  REAL, FLOAT, DOUBLE (float)             float64
  NUMERIC(p, s), DECIMAL(p, s) (decimal)  decimal128(p, s), rounded to s digits
  NUMERIC, DECIMAL without (p, s)         float64 (SQLite holds them as REAL/INTEGER)
  DATE (date)                             date32 from 'YYYY-MM-DD' text
  TIMESTAMP, DATETIME (timestamp)         timestamp[us] from ISO text
  TIMESTAMPTZ, ... WITH TIME ZONE         timestamp[us, UTC]
  BLOB (binary)                           binary
  TEXT, JSON, TIME, anything else         string
  ======================================  ===============================================

  Timestamps stored as ISO text are read as naive ``timestamp[us]``, unless the
  column's values carry a UTC offset ('...Z', '...+02:00') or its declared type names a
  time zone: then ``timestamp[us, UTC]`` (values converted to UTC; values without an
  offset are taken as UTC). A value that does not fit its declared type (text in an
  INTEGER column, say) stops the read with an error naming the column.

* **Comparing.** SQLite compares such timestamps as text. A datetime bound (a chunk
  bound, a checkpoint, a window start) is rendered in the text format the column's
  values use — separator ' ' or 'T', fraction digits, offset suffix — detected once per
  column from its latest value and the spread of value lengths, so that the bound equals
  the stored text of the same instant: '2024-03-01 10:00:00' where values are written
  that way, '2024-03-01 10:00:00.000000' where every value carries six fraction digits
  (SQLAlchemy's own storage format). Values in one column are expected to use one
  offset (normally none, or UTC).

* **Windows** (day, ISO week, month) are taken from the date as written, the first ten
  characters, so that they agree with those text comparisons.

* **Returning.** Key values, cursor maxima and window starts of timestamp and date
  columns come back as ``datetime``/``date`` objects (aware in UTC for columns with
  offsets), like every other connector, not as the stored text.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import sqlalchemy as sa

from esg_workbench.core.errors import (
    ConfigError,
    DatabaseMissing,
    EsgError,
    PermissionDenied,
    SchemaDrift,
    SourceError,
    TableMissing,
    TransientSourceError,
)
from esg_workbench.core.specs import (
    CancelToken,
    ChunkRange,
    ColumnInfo,
    ForeignKey,
    ReadScope,
    StreamRef,
    TableInfo,
)
from esg_workbench.connectors.base import close_quietly
from esg_workbench.connectors.sql import SqlConnector

if TYPE_CHECKING:
    import pyarrow as pa

_UTC = dt.timezone.utc
#: a trailing UTC offset after a time of day ('12:00:00Z', '12:00:00.5+02:00', '12:00-0500')
_OFFSET = r"\d:\d\d(?::\d\d(?:\.\d*)?)?\s*(?:[Zz]|[+-]\d\d(?::?\d\d)?)$"
_OFFSET_RE = re.compile(_OFFSET)
_FRACTION_RE = re.compile(r"\d:\d\d:\d\d\.(\d+)")


class _LocalFileConnector(SqlConnector):
    """What SQLite and DuckDB share: a `path` option naming a file that must exist."""

    random_samples = True  # ORDER BY random(): both have it, and files are local

    kind = "database"  # "SQLite" / "DuckDB" in messages
    #: rows per Arrow batch of a read
    batch_rows = 65_536

    @property
    def path(self) -> Path:
        value = self.spec.option("path")
        if not value:
            raise ConfigError(f"The {self.kind} connector '{self.spec.name}' needs a path: the database file to read.")
        return Path(str(value)).expanduser()

    def _check_file(self) -> Path:
        path = self.path
        if not path.exists():
            raise DatabaseMissing(
                f"The file {path} does not exist.",
                hint=f"Check the path in the connector settings; it must name an existing {self.kind} file.",
            )
        if path.is_dir():
            raise ConfigError(f"{path} is a folder, not a {self.kind} database file.",
                              hint=f"Choose the {self.kind} file itself in the connector settings.")
        return path

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._check_file()
        return super().engine

    def validate(self) -> str:
        """The file exists, is a database of this kind, and a table of it can be read."""
        self._check_file()
        streams = self._engine_dispose_on_failure(self.list_streams)
        where = f"schema {self.schema} of {self.path.name}" if self.schema else self.path.name
        if streams:
            first = self.table_clause(streams[0], [])
            with self.errors(f"Reading {where}"), self.engine.connect() as conn:
                conn.execute(sa.select(sa.literal(1)).select_from(first).limit(1)).all()
        return f"Connected. {len(streams)} tables readable in {where}."

    def _engine_dispose_on_failure(self, work):
        try:
            return work()
        except EsgError:
            self.close()  # a file replaced after a failure is opened afresh next time
            raise

    def _missing_or(self, what: str, error: EsgError) -> EsgError:
        """A vanished file explains most open failures: say so rather than the driver's words."""
        try:
            path = self.path
        except ConfigError as exc:
            return exc
        if not path.exists():
            return DatabaseMissing(f"{what}: the file {path} does not exist (any more).",
                                   hint="Check the path in the connector settings.")
        return error


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


# =====================================================================================
# SQLite
# =====================================================================================


@dataclasses.dataclass(frozen=True)
class _TextTime:
    """How a column writes instants as text, so that bounds are written the same way."""

    sep: str = " "
    #: fixed number of fraction digits; None: six digits only when the value has a fraction
    fraction: int | None = None
    #: offset suffix every value carries ("Z" or "+00:00"); None: naive text
    zone: str | None = None

    @classmethod
    def detect(cls, latest: str | None, shortest: int | None, longest: int | None) -> "_TextTime":
        if not isinstance(latest, str) or len(latest) < 10:
            return cls()
        sep = latest[10] if len(latest) > 10 and latest[10] in "Tt " else " "
        zone = None
        if _OFFSET_RE.search(latest):
            zone = "Z" if latest.rstrip()[-1] in "Zz" else "+00:00"
        fraction = None
        found = _FRACTION_RE.search(latest)
        if found and shortest == longest:
            fraction = len(found.group(1))
        return cls(sep="T" if sep in "Tt" else " ", fraction=fraction, zone=zone)

    def render(self, value: dt.datetime | dt.date, family: str) -> str:
        if not isinstance(value, dt.datetime):
            if family == "date":
                return value.isoformat()
            value = dt.datetime(value.year, value.month, value.day)
        if value.tzinfo is not None:
            value = value.astimezone(_UTC).replace(tzinfo=None)
        if family == "date" and value.time() == dt.time():
            return value.date().isoformat()
        text = (f"{value.year:04d}-{value.month:02d}-{value.day:02d}{self.sep}"
                f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}")
        if self.fraction:
            text += "." + f"{value.microsecond:06d}"[: self.fraction].ljust(self.fraction, "0")
        elif value.microsecond:
            text += f".{value.microsecond:06d}"
        if self.zone:
            text += self.zone
        return text


def _parse_instant(value: Any, aware: bool) -> Any:
    """Stored ISO text as a datetime (UTC-aware where the column has offsets)."""
    if not isinstance(value, str):
        return value
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return value
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(_UTC)
        return parsed if aware else parsed.replace(tzinfo=None)
    return parsed.replace(tzinfo=_UTC) if aware else parsed


def _parse_date(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return dt.date.fromisoformat(value.strip()[:10]) if len(value.strip()) == 10 else _parse_instant(value, False)
    except ValueError:
        return value


_DATE_WORDS = ("TIMESTAMP", "DATETIME", "DATE", "TIME")


def _declared_family(declared: str, reflected: str) -> str:
    """SQLAlchemy gives NUMERIC affinity to date-ish names it does not know
    ('TIMESTAMPTZ', 'TIMESTAMP WITH TIME ZONE', 'DATETIME2'): name them properly."""
    name = declared.upper()
    if reflected not in ("decimal", "other") or not any(w in name for w in _DATE_WORDS):
        return reflected
    if any(w in name for w in ("TZ", "ZONE", "OFFSET")):
        return "timestamptz"
    if "DATETIME" in name or "TIMESTAMP" in name:
        return "timestamp"
    if "DATE" in name:
        return "date"
    return "time"


class SqliteConnector(_LocalFileConnector):
    """A SQLite file, opened read-only (``mode=ro``): never created, never written."""

    kind = "SQLite"
    default_schema = None

    def __init__(self, spec):
        super().__init__(spec)
        self._adbc = None
        self._text_times: dict[tuple[StreamRef, str], _TextTime] = {}
        self._counting: set[str] | None = None

    @property
    def schema(self) -> str | None:
        return None  # SQLite has no schemas (attached databases are not offered)

    def _uri(self) -> str:
        return self.path.resolve().as_uri() + "?mode=ro"

    def sqlalchemy_url(self) -> sa.URL:
        return sa.URL.create("sqlite")  # the connection itself comes from `creator`

    def engine_options(self) -> dict[str, Any]:
        uri = self._uri()
        return {"creator": lambda: sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=10)}

    # --- errors -----------------------------------------------------------------------

    def translate_error(self, exc: BaseException, what: str) -> EsgError:
        text = str(exc)
        low = text.lower()
        path = self.spec.option("path")
        if "not a database" in low or "file is encrypted" in low:
            return SourceError(f"{what}: the file {path} is not a SQLite database.",
                               hint="Choose a SQLite database file (often .sqlite, .sqlite3 or .db).")
        if "unable to open database" in low or "failed to open" in low or "cannot open" in low:
            return self._missing_or(what, PermissionDenied(
                f"{what}: the file {path} cannot be opened for reading.",
                hint="Check that this user may read the file and the folder it is in."))
        if "no such table" in low:
            return TableMissing(f"{what}: the table no longer exists in {path}.")
        if "no such column" in low:
            return SchemaDrift(f"{what}: the table's columns changed in {path} ({_first_line(exc)}).")
        if "database is locked" in low or "database table is locked" in low or "sqlite_busy" in low:
            return TransientSourceError(f"{what}: {path} is locked by a program writing to it.",
                                        hint="The sync retries by itself; if it keeps failing, close the program writing the file.")
        if "malformed" in low or "disk i/o error" in low:
            return SourceError(f"{what}: the file {path} is damaged or could not be read ({_first_line(exc)}).",
                               hint="Copy a healthy version of the file, or repair it with the sqlite3 tool (.recover).")
        return SourceError(f"{what} failed: {_first_line(exc)}")

    # --- discovery ----------------------------------------------------------------------

    def row_estimates(self, conn: sa.Connection, schema: str | None) -> dict[str, int]:
        """Exact counts; skipped for files with more than 200 tables."""
        names = sa.inspect(conn).get_table_names()
        if len(names) > 200:
            return {}
        if self._counting is not None:
            names = [n for n in names if n in self._counting]
        return {
            name: int(conn.execute(sa.select(sa.func.count()).select_from(sa.table(name))).scalar_one())
            for name in names
        }

    def describe(self, streams: list[StreamRef] | None = None) -> list[TableInfo]:
        self._counting = None if streams is None else {s.table for s in streams}
        try:
            infos = self._engine_dispose_on_failure(lambda: super(SqliteConnector, self).describe(streams))
        finally:
            self._counting = None
        with self.errors("Reading the schema"), self.engine.connect() as conn:
            for info in infos:
                declared = {
                    row[0]: row[1] or ""
                    for row in conn.execute(sa.text("SELECT name, type FROM pragma_table_info(:t)"), {"t": info.stream.table})
                }
                single_int_pk = len(info.primary_key) == 1 and "INT" in declared.get(info.primary_key[0], "").upper()
                columns = []
                for col in info.columns:
                    family = _declared_family(declared.get(col.name, ""), col.family)
                    changes: dict[str, Any] = {}
                    if family != col.family:
                        changes.update(family=family, type=declared[col.name])
                    if single_int_pk and col.primary_key and declared.get(col.name, "").upper() == "INTEGER":
                        changes["nullable"] = False  # the rowid alias can never be NULL
                    columns.append(dataclasses.replace(col, **changes) if changes else col)
                info.columns = columns
        return infos

    # --- planning: datetimes in and out as the column stores them ------------------------

    def window_start(self, column: sa.ColumnElement, window: str) -> sa.ColumnElement:
        """Start of the day, ISO week (Monday) or month, as 'YYYY-MM-DD' text.

        Windows are taken from the date as written (the first ten characters), because
        that is what the text comparisons of chunk bounds see. SQLite's own date
        functions would not do: they keep milliseconds only and round, so
        '2024-03-03 23:59:59.999999' would fall on 4 March while the text sorts before
        '2024-03-04 00:00:00'.

        `weekday 0` moves a date forward to the next Sunday, or keeps it if it is one;
        6 days back from that Sunday is the Monday that starts the date's ISO week (a
        Monday moves to its Sunday and back to itself; a Sunday goes back 6 days).
        """
        day = sa.func.substr(column, 1, 10)
        if window == "day":
            return day
        if window == "week":
            return sa.func.date(day, sa.literal_column("'weekday 0'"), sa.literal_column("'-6 days'"))
        if window == "month":
            return sa.func.substr(column, 1, 7).op("||")(sa.literal_column("'-01'"))
        raise ConfigError(f"window must be day, week or month, not '{window}'.")

    def _family(self, stream: StreamRef, column: str | None) -> str:
        if column is None:
            return "other"
        info = self._tables.get(stream)
        col = info.column(column) if info is not None else None
        return col.family if col is not None else "other"

    def _text_time(self, stream: StreamRef, column: str) -> _TextTime:
        key = (stream, column)
        if key not in self._text_times:
            t = self.table_clause(stream, [column])
            c = t.c[column]
            query = sa.select(sa.func.max(c), sa.func.min(sa.func.length(c)), sa.func.max(sa.func.length(c))).where(
                sa.func.typeof(c) == "text")
            row = self._scalar_row(query, f"Reading the time format of {stream.qualified}.{column}")
            found = _TextTime.detect(row[0], row[1], row[2])
            if row[0] is None:
                return found  # an empty column: detect again once it holds values
            self._text_times[key] = found
        return self._text_times[key]

    def _as_text(self, stream: StreamRef, column: str | None, value: Any) -> Any:
        if column is None or not isinstance(value, (dt.date, dt.datetime)):
            return value
        return self._text_time(stream, column).render(value, self._family(stream, column))

    def _bound_as_text(self, stream: StreamRef, key: list[str], bound: tuple | None) -> tuple | None:
        if bound is None:
            return None
        return tuple(self._as_text(stream, k, v) for k, v in zip(key, bound)) + tuple(bound[len(key):])

    def _filtered(self, stream: StreamRef, scope: ReadScope, chunk: ChunkRange | None):
        if stream not in self._tables:
            self._table(stream)
        key = list(scope.key)
        scope = dataclasses.replace(
            scope,
            after=self._bound_as_text(stream, key, scope.after),
            cursor_max=self._as_text(stream, scope.cursor_field, scope.cursor_max),
        )
        if chunk is not None:
            chunk_key = [k for k in key if k != scope.cursor_field] if chunk.null_cursor else key
            chunk = dataclasses.replace(
                chunk,
                lower=self._bound_as_text(stream, chunk_key, chunk.lower),
                upper=self._bound_as_text(stream, chunk_key, chunk.upper),
            )
        return super()._filtered(stream, scope, chunk)

    def _typed(self, stream: StreamRef, column: str, value: Any) -> Any:
        family = self._family(stream, column)
        if family in ("timestamp", "timestamptz"):
            aware = family == "timestamptz" or (isinstance(value, str) and self._text_time(stream, column).zone is not None)
            return _parse_instant(value, aware)
        if family == "date":
            return _parse_date(value)
        return value

    def _window_value(self, stream: StreamRef, column: str, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            start = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
        family = self._family(stream, column)
        if family == "timestamptz" or (family == "timestamp" and self._text_time(stream, column).zone is not None):
            start = start.replace(tzinfo=_UTC)
        return start

    def cursor_max(self, stream: StreamRef, cursor_field: str) -> Any:
        self._table(stream)
        return self._typed(stream, cursor_field, super().cursor_max(stream, cursor_field))

    def key_range(self, stream: StreamRef, scope: ReadScope) -> tuple[Any, Any, int]:
        low, high, count = super().key_range(stream, scope)
        column = scope.key[0]
        return self._typed(stream, column, low), self._typed(stream, column, high), count

    def boundaries(self, stream: StreamRef, scope: ReadScope, every: int,
                   within: ChunkRange | None = None) -> list[tuple]:
        rows = super().boundaries(stream, scope, every, within)
        key = list(scope.key)
        if within is not None and within.null_cursor:
            key = [k for k in key if k != scope.cursor_field]
        return [tuple(self._typed(stream, k, v) for k, v in zip(key, row)) for row in rows]

    def window_counts(self, stream: StreamRef, scope: ReadScope, window: str) -> list[tuple[Any, int]]:
        rows = super().window_counts(stream, scope, window)
        return [(self._window_value(stream, scope.cursor_field, start), n) for start, n in rows]

    # --- reading --------------------------------------------------------------------------

    def _read_plan(self, stream: StreamRef, scope: ReadScope) -> list[tuple[str, str, "pa.DataType", bool]]:
        """(column, family, Arrow type, nullable) for every column read."""
        info = self._table(stream)
        plan = []
        for name in scope.columns:
            col = info.column(name)
            if col is None:
                raise SchemaDrift(f"Reading {stream.qualified}: the column '{name}' is not in the table (any more).")
            plan.append((name, col.family, self._arrow_type(stream, col), col.nullable))
        return plan

    def _arrow_type(self, stream: StreamRef, col: ColumnInfo) -> "pa.DataType":
        import pyarrow as pa

        family = col.family
        if family == "integer":
            return pa.int64()
        if family == "boolean":
            return pa.bool_()
        if family == "float":
            return pa.float64()
        if family == "decimal":
            found = re.search(r"\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)", col.type)
            if found:
                precision, scale = int(found.group(1)), int(found.group(2) or 0)
                if 0 < precision <= 76 and 0 <= scale <= precision:
                    return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
            return pa.float64()
        if family == "date":
            return pa.date32()
        if family == "timestamptz":
            return pa.timestamp("us", tz="UTC")
        if family == "timestamp":
            zone = self._text_time(stream, col.name).zone
            return pa.timestamp("us", tz="UTC") if zone else pa.timestamp("us")
        if family == "binary":
            return pa.binary()
        return pa.string()

    def read_sql(self, stream: StreamRef, scope: ReadScope, chunk: ChunkRange) -> str:
        """The chunk's query with every column as one SQLite storage class (see the
        module notes): value ``v<i>`` and, for nullable columns, a NULL flag ``n<i>``."""
        plan = self._read_plan(stream, scope)
        t, key_cols, conds = self._filtered(stream, scope, chunk)
        selected = []
        for i, (name, family, _, nullable) in enumerate(plan):
            c = t.c[name]
            if family in ("integer", "boolean"):
                value, dummy = c, sa.literal_column("0")
            elif family in ("float", "decimal"):
                value = sa.case((sa.func.typeof(c) == "integer", sa.cast(c, sa.REAL)), else_=c)
                dummy = sa.literal_column("0.0")
            elif family == "binary":
                value, dummy = sa.cast(c, sa.LargeBinary), sa.literal_column("X''")
            else:
                value, dummy = sa.cast(c, sa.Text), sa.literal_column("''")
            if nullable:
                selected.append(sa.func.coalesce(value, dummy).label(f"v{i}"))
                selected.append(c.is_(None).label(f"n{i}"))
            else:
                selected.append(value.label(f"v{i}"))
        query = sa.select(*selected).select_from(t).where(*conds).order_by(*key_cols)
        return str(query.compile(dialect=self.engine.dialect, compile_kwargs={"literal_binds": True}))

    def read(self, stream: StreamRef, scope: ReadScope, chunk: ChunkRange,
             cancel: CancelToken | None = None) -> "Iterator[pa.RecordBatch]":
        import pyarrow as pa

        what = f"Reading {stream.qualified} {chunk.describe()}"
        with self.errors(what):
            plan = self._read_plan(stream, scope)
            sql = self.read_sql(stream, scope, chunk)
        schema = pa.schema([pa.field(name, typ, nullable) for name, _, typ, nullable in plan])
        result_names = [name for i, (name, _, _, nullable) in enumerate(plan) for _ in range(2 if nullable else 1)]
        try:
            for batch in self._read_arrow(sql, cancel):
                yield self._conform(batch, plan, schema, what)
        except EsgError:
            raise
        except Exception as exc:
            raise self._read_error(exc, what, result_names) from exc

    def _read_error(self, exc: BaseException, what: str, result_names: list[str]) -> EsgError:
        found = re.search(r"type mismatch in column (\d+): expected (\w+) but got ([\w/]+)", str(exc), re.I)
        if found and int(found.group(1)) < len(result_names):
            column = result_names[int(found.group(1))]
            return SourceError(
                f"{what}: the column '{column}' holds a {found.group(3).lower()} value among "
                f"{found.group(2).lower()} values, which its declared type does not allow.",
                hint="Correct the value in the source, or declare the column with a type that fits all its values.")
        return self.translate_error(exc, what)

    def _conform(self, batch: "pa.RecordBatch", plan, schema: "pa.Schema", what: str) -> "pa.RecordBatch":
        import pyarrow as pa
        import pyarrow.compute as pc

        arrays = []
        position = 0
        for i, (name, family, target, nullable) in enumerate(plan):
            raw = batch.column(position)
            position += 1
            if nullable:
                is_null = pc.equal(batch.column(position), 1)
                position += 1
                raw = pc.if_else(is_null, pa.scalar(None, raw.type), raw)
            try:
                arrays.append(_to_arrow_type(raw, family, target))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                raise SourceError(
                    f"{what}: a value of the column '{name}' is not a valid {family} ({_first_line(exc)}).",
                    hint="Correct the value in the source, or declare the column with a type that fits all its values.",
                ) from exc
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    def _connection(self):
        if self._adbc is None:
            import adbc_driver_sqlite.dbapi as adbc

            self._check_file()
            # autocommit: without it the DB-API facade keeps a transaction open, which
            # pins an old snapshot (new rows and tables stay invisible) and, in rollback
            # journal mode, holds a shared lock that keeps writers from committing
            self._adbc = adbc.connect(self._uri(), autocommit=True)
        return self._adbc

    def _read_arrow(self, sql: str, cancel: CancelToken | None) -> "Iterator[pa.RecordBatch]":
        try:
            cursor = self._connection().cursor()
            try:
                cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(int(self.batch_rows))})
                cursor.execute(sql)
                for batch in cursor.fetch_record_batch():
                    if cancel is not None:
                        cancel.raise_if_cancelled()
                    yield batch
            finally:
                cursor.close()
        except BaseException:
            self._drop_connection()
            raise

    def _drop_connection(self) -> None:
        close_quietly(self._adbc)
        self._adbc = None

    def close(self) -> None:
        self._drop_connection()
        super().close()


def _to_arrow_type(raw: "pa.Array", family: str, target: "pa.DataType") -> "pa.Array":
    import pyarrow as pa
    import pyarrow.compute as pc

    if raw.type == target:
        return raw
    if raw.null_count == len(raw):
        return pa.nulls(len(raw), target)
    if pa.types.is_timestamp(target) and pa.types.is_string(raw.type):
        # values with an offset become UTC; values without one are UTC (aware target) or
        # left as written (naive target)
        has_offset = pc.match_substring_regex(raw, _OFFSET)
        aware = pc.if_else(has_offset, raw, pa.scalar(None, pa.string())).cast(pa.timestamp("us", tz="UTC"))
        naive = pc.if_else(has_offset, pa.scalar(None, pa.string()), raw).cast(pa.timestamp("us"))
        if target.tz:
            return pc.if_else(has_offset, aware, naive.cast(target))
        return pc.if_else(has_offset, aware.cast(pa.timestamp("us")), naive)
    if pa.types.is_date32(target) and pa.types.is_string(raw.type):
        return raw.cast(target)
    return raw.cast(target)


# =====================================================================================
# DuckDB
# =====================================================================================


def duckdb_family(type_name: str) -> str:
    """The coarse family of a DuckDB type name as duckdb_columns() spells it."""
    name = type_name.upper().strip()
    if name.endswith("]") or name.startswith(("STRUCT", "MAP", "UNION", "LIST", "ARRAY")):
        return "other"
    if name in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
                "UINTEGER", "UBIGINT", "UHUGEINT", "INT", "INT2", "INT4", "INT8"):
        return "integer"
    if name.startswith(("DECIMAL", "NUMERIC")):
        return "decimal"
    if name in ("FLOAT", "DOUBLE", "REAL", "FLOAT4", "FLOAT8"):
        return "float"
    if name == "BOOLEAN":
        return "boolean"
    if name in ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"):
        return "timestamptz"
    if name.startswith("TIMESTAMP") or name == "DATETIME":
        return "timestamp"
    if name == "DATE":
        return "date"
    if name.startswith("TIME"):
        return "time"
    if name in ("BLOB", "BYTEA", "BIT", "BITSTRING"):
        return "binary"
    if name == "JSON":
        return "json"
    if name.startswith(("VARCHAR", "CHAR", "TEXT", "STRING", "UUID", "ENUM")):
        return "text"
    return "other"


def _duckdb_compiler(base: type) -> type:
    """A statement compiler that writes date and time literals with their type, which
    DuckDB needs in row-value comparisons: (ts, id) > (TIMESTAMP '...', 5)."""

    class TypedLiteralCompiler(base):
        def render_literal_value(self, value, type_):
            if isinstance(value, dt.datetime):
                if value.tzinfo is not None:
                    return f"TIMESTAMPTZ '{value.astimezone(_UTC).isoformat(sep=' ')}'"
                return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
            if isinstance(value, dt.date):
                return f"DATE '{value.isoformat()}'"
            if isinstance(value, dt.time):
                return f"TIME '{value.isoformat()}'"
            return super().render_literal_value(value, type_)

    return TypedLiteralCompiler


class DuckDbConnector(_LocalFileConnector):
    """A DuckDB file, opened read-only; sessions run in UTC."""

    kind = "DuckDB"
    default_schema = "main"

    def __init__(self, spec):
        super().__init__(spec)
        self._compiler = None

    def sqlalchemy_url(self) -> sa.URL:
        return sa.URL.create("duckdb", database=str(self.path))

    def engine_options(self) -> dict[str, Any]:
        return {"connect_args": {"read_only": True}}

    @property
    def engine(self) -> sa.Engine:
        fresh = self._engine is None
        engine = super().engine
        if fresh:
            sa.event.listen(engine, "connect", lambda dbapi_conn, _: dbapi_conn.execute("SET TimeZone = 'UTC'"))
        return engine

    # --- errors -----------------------------------------------------------------------

    def translate_error(self, exc: BaseException, what: str) -> EsgError:
        text = str(exc)
        low = text.lower()
        path = self.spec.option("path")
        if "could not set lock" in low or "conflicting lock" in low:
            holder = re.search(r"held in (.+?) \(pid (\d+)\)", text, re.I)
            by = f" by {Path(holder.group(1)).name} (process {holder.group(2)})" if holder else " by another program"
            return SourceError(
                f"{what}: the DuckDB file {path} is locked{by}.",
                hint="Close the program that has the file open for writing (DuckDB lets one program write a "
                     "file, and nobody read it meanwhile), or copy the file and point the connector at the copy.")
        if "not a valid duckdb database" in low:
            return SourceError(f"{what}: the file {path} is not a DuckDB database.",
                               hint="Choose a DuckDB database file (often .duckdb or .db).")
        if "database does not exist" in low or "no such file" in low:
            return self._missing_or(what, DatabaseMissing(f"{what}: the file {path} does not exist."))
        if "different configuration" in low:
            return SourceError(
                f"{what}: the DuckDB file {path} is already open in this program with other settings.",
                hint="A DuckDB file used as the workspace cannot also be a source; copy it and read the copy.")
        if "version number" in low or "newer version" in low or ("older" in low and "version" in low):
            return SourceError(f"{what}: the file {path} was written by another DuckDB version ({_first_line(exc)}).",
                               hint="Export the data with the DuckDB version that wrote it, or update ESG Workbench.")
        if "permission denied" in low:
            return PermissionDenied(f"{what}: this user may not read {path}.",
                                    hint="Check that this user may read the file and the folder it is in.")
        if "catalog error" in low and ("table with name" in low or "does not exist" in low):
            return TableMissing(f"{what}: the table no longer exists in {path}.")
        if "binder error" in low and ("column" in low and ("not found" in low or "does not" in low)):
            return SchemaDrift(f"{what}: the table's columns changed in {path} ({_first_line(exc)}).")
        return SourceError(f"{what} failed: {_first_line(exc)}")

    # --- discovery: DuckDB's own catalog functions (duckdb-engine's pg_catalog reflection
    # does not work with DuckDB 2 for columns, keys or foreign keys) -----------------------

    def validate(self) -> str:
        self._check_file()
        with self.errors("Connecting"), self.engine.connect() as conn:
            found = conn.execute(
                sa.text("SELECT count(*) FROM duckdb_schemas() WHERE database_name = current_database() "
                        "AND schema_name = :s"), {"s": self.schema}).scalar_one()
        if not found:
            raise DatabaseMissing(f"The schema '{self.schema}' does not exist in {self.path}.",
                                  hint="Check the schema name in the connector settings (DuckDB's default is main).")
        return super().validate()

    def _table_names(self, conn: sa.Connection) -> list[str]:
        rows = conn.execute(
            sa.text("SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
                    "AND schema_name = :s AND NOT internal AND NOT temporary ORDER BY table_name"),
            {"s": self.schema},
        )
        return [r[0] for r in rows]

    def list_streams(self) -> list[StreamRef]:
        with self.errors("Listing tables"), self.engine.connect() as conn:
            names = self._table_names(conn)
        return [StreamRef(self.schema, name) for name in sorted(names)]

    def row_estimates(self, conn: sa.Connection, schema: str | None) -> dict[str, int]:
        rows = conn.execute(
            sa.text("SELECT table_name, estimated_size FROM duckdb_tables() "
                    "WHERE database_name = current_database() AND schema_name = :s"),
            {"s": schema},
        )
        return {name: int(n) for name, n in rows if n is not None and n >= 0}

    def describe(self, streams: list[StreamRef] | None = None) -> list[TableInfo]:
        wanted = None if streams is None else {s.table for s in streams}
        params = {"s": self.schema}
        with self.errors("Reading the schema"), self.engine.connect() as conn:
            names = [n for n in self._table_names(conn) if wanted is None or n in wanted]
            if not names:
                return []
            columns: dict[str, list[tuple]] = {}
            for table, column, type_name, nullable in conn.execute(sa.text(
                    "SELECT table_name, column_name, data_type, is_nullable FROM duckdb_columns() "
                    "WHERE database_name = current_database() AND schema_name = :s "
                    "ORDER BY table_name, column_index"), params):
                columns.setdefault(table, []).append((column, type_name, bool(nullable)))
            pks: dict[str, list[str]] = {}
            fks: dict[str, list[ForeignKey]] = {}
            for table, kind, cols, ref_table, ref_cols in conn.execute(sa.text(
                    "SELECT table_name, constraint_type, constraint_column_names, referenced_table, "
                    "referenced_column_names FROM duckdb_constraints() "
                    "WHERE database_name = current_database() AND schema_name = :s "
                    "AND constraint_type IN ('PRIMARY KEY', 'FOREIGN KEY') ORDER BY table_name, constraint_index"),
                    params):
                if kind == "PRIMARY KEY":
                    pks[table] = list(cols)
                else:
                    fks.setdefault(table, []).append(
                        ForeignKey(tuple(cols), self.schema, ref_table, tuple(ref_cols)))
            estimates = self.row_estimates(conn, self.schema)
        infos = []
        for name in sorted(names):
            pk = pks.get(name, [])
            info = TableInfo(
                stream=StreamRef(self.schema, name),
                columns=[
                    ColumnInfo(name=c, type=type_name, nullable=nullable and c not in pk,
                               primary_key=c in pk, family=duckdb_family(type_name))
                    for c, type_name, nullable in columns.get(name, [])
                ],
                primary_key=pk,
                foreign_keys=fks.get(name, []),
                row_estimate=estimates.get(name),
            )
            self._tables[info.stream] = info
            infos.append(info)
        return infos

    # --- reading --------------------------------------------------------------------------

    def read_sql(self, stream: StreamRef, scope: ReadScope, chunk: ChunkRange) -> str:
        t, key_cols, conds = self._filtered(stream, scope, chunk)
        query = sa.select(*[t.c[c] for c in scope.columns]).select_from(t).where(*conds).order_by(*key_cols)
        dialect = self.engine.dialect
        if self._compiler is None:
            self._compiler = _duckdb_compiler(dialect.statement_compiler)
        return str(self._compiler(dialect, query, compile_kwargs={"literal_binds": True}))

    def _read_arrow(self, sql: str, cancel: CancelToken | None) -> "Iterator[pa.RecordBatch]":
        # The engine's own connection: DuckDB refuses a second connection to one file
        # with a different configuration (duckdb-engine sets a user agent), and this one
        # is already read-only and in UTC.
        raw = self.engine.raw_connection()
        try:
            reader = raw.driver_connection.sql(sql).to_arrow_reader(int(self.batch_rows))
            try:
                for batch in reader:
                    if cancel is not None:
                        cancel.raise_if_cancelled()
                    yield batch
            finally:
                reader.close()
        finally:
            raw.close()
