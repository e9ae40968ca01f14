"""Microsoft SQL Server (and Azure SQL): SQLAlchemy's `mssql+mssqlpython` dialect over
Microsoft's `mssql-python` driver, which bundles the ODBC Driver 18 and fetches result
sets as Arrow batches in C (`cursor.arrow_reader`), so no row becomes a Python object.
On Linux the bundled driver needs the system's `libltdl7` (Debian/Ubuntu package).

**Not yet tested against a live SQL Server**: no server can run on the machines this is
built on. The tests compile every planning and read query for the mssql dialect and
check the driver's error handling (a refused connection, and the driver's own
exception objects carrying SQL Server's messages).

SQL Server specifics handled here:

* **No row-value comparisons.** `(a, b) > (x, y)` does not exist in T-SQL; key bounds
  are written `a > x OR (a = x AND b > y)` (`expanded_prefix_compare`).
* **Literals are typed.** A `datetime2` bound is rendered `CAST('2024-03-01
  10:00:00.123456' AS datetime2(7))`, an aware one `CAST('...+00:00' AS
  datetimeoffset(7))`, a date `CAST('2024-03-01' AS date)`, bytes as `0x...`: a bare
  string would be converted to the column's type, and a string with six fraction digits
  cannot be converted to the legacy `datetime` type (error 241), nor is 'YYYY-MM-DD'
  language independent for it.
* **datetime2 has 100 ns ticks; Python has microseconds.** Cursor values reach Python
  (checkpoints, chunk bounds, the upper bound of a sync) truncated to the microsecond,
  i.e. never above the true value. Lower bounds (the checkpoint, chunk bounds) are
  compared at the server's full precision, so a truncated bound re-reads at most the
  rows of the same microsecond (upserted by primary key: no duplicate) and never skips
  one; chunks stay a partition because both sides of a bound use the same literal. The
  upper bound is written `cursor < DATEADD(microsecond, 1, <max>)`, so the latest rows
  (whose sub-microsecond digits the truncated maximum lost) are included. Landed
  timestamps keep what the driver returns, truncated to microseconds if it returns
  nanoseconds.
* **Time windows** use `DATEADD`/`DATEDIFF`/`DATEFROMPARTS` (SQL Server 2012 and later;
  `DATETRUNC` needs 2022): day `CAST(x AS date)`, ISO week from Monday 1900-01-01,
  month `DATEFROMPARTS(YEAR(x), MONTH(x), 1)`; `datetimeoffset` columns are first
  switched to UTC.
* **rowversion cursors** (binary(8), increasing per database) are paged as keys, never
  by time windows; their bounds are `0x...` literals.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Any, Iterator

import sqlalchemy as sa

from esg_workbench.core.errors import (
    AuthenticationFailed,
    ConfigError,
    DatabaseMissing,
    EsgError,
    PermissionDenied,
    SchemaDrift,
    SourceError,
    SourceUnreachable,
    TableMissing,
    TransientSourceError,
)
from esg_workbench.core.specs import CancelToken, ChunkStrategy, StreamRef, Timeouts
from esg_workbench.connectors.sql import SqlConnector, expanded_prefix_compare

if TYPE_CHECKING:
    import pyarrow as pa

DEFAULT_PORT = 1433
LOGIN_TIMEOUT = 15  # seconds
BATCH_ROWS = 65_536

#: SQL Server error numbers (sys.messages) and the English text each one starts with;
#: the ODBC driver reports only the text and the SQLSTATE, pymssql reports the number.
_NUMBER_TEXTS = (
    (18456, "login failed for user"),
    (18452, "login failed. the login is from an untrusted domain"),
    (4060, "cannot open database"),
    (229, "permission was denied on the object"),
    (230, "permission was denied on the column"),
    (262, "permission denied in database"),
    (208, "invalid object name"),
    (207, "invalid column name"),
    (1205, "deadlocked on lock"),
    (-2, "query timeout expired"),
    (258, "login timeout expired"),
    (258, "connection timeout expired"),
    (40613, "is not currently available"),  # Azure SQL: database unavailable (failover)
    (40501, "the service is currently busy"),
)
_AUTH_NUMBERS = {18456, 18452, 18470, 18486, 18487, 18488}
_DATABASE_NUMBERS = {4060, 911}
_PERMISSION_NUMBERS = {229, 230, 262, 297, 300, 916}
_TABLE_NUMBERS = {208}
_DRIFT_NUMBERS = {207, 8114, 245}
#: deadlock, query and login timeouts, Azure's transient errors, connection broken
_TRANSIENT_NUMBERS = {1205, -2, 258, 40613, 40501, 40197, 49918, 49919, 49920, 10928, 10929, 233, 10053, 10054, 10060}

#: mssql-python raises one exception per SQLSTATE with a fixed `driver_error` text
#: (mssql_python.exceptions.sqlstate_to_exception); this reads the SQLSTATE back.
_DRIVER_TEXT_STATES = {
    "client unable to establish connection": "08001",
    "connection failure": "08001",  # older wording
    "communication link failure": "08S01",
    "connection not open": "08003",
    "connection name in use": "08002",
    "server rejected the connection": "08004",
    "timeout expired": "HYT00",
    "connection timeout expired": "HYT01",
    "invalid authorization specification": "28000",
    "base table or view not found": "42S02",
    "column not found": "42S22",
    "serialization failure": "40001",
    "syntax error or access violation": "42000",
}


class SqlServerConnector(SqlConnector):
    default_schema = "dbo"

    @property
    def _where(self) -> str:
        return f"{self.spec.option('host', 'localhost')}:{self.spec.option('port', DEFAULT_PORT)}"

    def sqlalchemy_url(self) -> sa.URL:
        query = {
            # ODBC Driver 18 encrypts by default; a server with a self-signed certificate
            # (the usual on-premises case) needs trust_server_certificate=yes.
            "Encrypt": "yes" if _truthy(self.spec.option("encrypt", "yes")) else "no",
            "TrustServerCertificate": "yes" if _truthy(self.spec.option("trust_server_certificate", "no")) else "no",
        }
        return sa.URL.create(
            "mssql+mssqlpython",
            username=self.spec.option("username"),
            password=self.spec.password,
            host=self.spec.option("host", "localhost"),
            port=int(self.spec.option("port", DEFAULT_PORT)),
            database=self.spec.option("database"),
            query=query,
        )

    def engine_options(self) -> dict[str, Any]:
        # mssql-python's `timeout` is the login timeout (not `Connection Timeout`).
        # qmark, not the driver's default pyformat: with pyformat SQLAlchemy writes a
        # literal % as %%, which the driver only turns back into % when the statement has
        # parameters, so a read query (all literals) would search for '50%%'.
        login = self.spec.option("login_timeout") or Timeouts.given(self.spec.options, "connect", LOGIN_TIMEOUT)
        return {"connect_args": {"timeout": int(float(login))},
                "paramstyle": "qmark"}

    # --- SQL Server dialect details -------------------------------------------------------

    @property
    def schema(self) -> str | None:
        # quoted_name(quote=True): the mssql dialect would otherwise read "a.b" or
        # "[a]" in a schema name as database.owner syntax
        name = super().schema
        return None if name is None else sa.sql.quoted_name(name, quote=True)

    def table_clause(self, stream: StreamRef, columns: list[str]) -> sa.TableClause:
        schema = None if stream.schema is None else sa.sql.quoted_name(stream.schema, quote=True)
        return sa.table(stream.table, *[sa.column(c) for c in columns], schema=schema)

    def compare_prefix(self, columns: list[sa.ColumnElement], bound: tuple, op: str) -> sa.ColumnElement:
        return expanded_prefix_compare(columns, bound, op, literal=sql_literal)

    def cursor_at_most(self, column: sa.ColumnElement, value: Any) -> sa.ColumnElement:
        if isinstance(value, dt.datetime):  # the maximum lost its sub-microsecond digits
            return column < sa.func.DATEADD(sa.literal_column("microsecond"), 1, sql_literal(value))
        return column <= sql_literal(value)

    def window_start(self, column: sa.ColumnElement, window: str) -> sa.ColumnElement:
        if self._family(column) == "timestamptz":
            column = sa.func.SWITCHOFFSET(column, sa.literal_column("'+00:00'"))
        day = sa.cast(column, _Date())
        if window == "day":
            return day
        if window == "week":  # 1900-01-01 was a Monday: whole weeks since then
            monday = sa.literal_column("CAST('19000101' AS date)")
            days = sa.func.DATEDIFF(sa.literal_column("day"), monday, day)
            return sa.func.DATEADD(sa.literal_column("day"), days - days % 7, monday)
        if window == "month":
            return sa.func.DATEFROMPARTS(sa.func.YEAR(day), sa.func.MONTH(day), 1)
        raise ConfigError(f"Unknown time window '{window}'.")

    def _family(self, column: sa.ColumnElement) -> str | None:
        table = getattr(column, "table", None)
        info = self._tables.get(StreamRef(getattr(table, "schema", None), getattr(table, "name", "")))
        found = info.column(column.name) if info else None
        return found.family if found else None

    def row_estimates(self, conn: sa.Connection, schema: str | None) -> dict[str, int]:
        rows = conn.execute(
            sa.text(
                "SELECT t.name, SUM(p.rows) FROM sys.tables t "
                "JOIN sys.schemas s ON s.schema_id = t.schema_id "
                "JOIN sys.partitions p ON p.object_id = t.object_id AND p.index_id IN (0, 1) "
                "WHERE s.name = :schema GROUP BY t.name"
            ),
            {"schema": schema},
        )
        return {name: int(n) for name, n in rows if n is not None}

    def plan_chunks(self, stream: StreamRef, scope, settings):
        """rowversion (binary) cursors are keys, not times: page them by key ranges."""
        from esg_workbench.sync import planner

        info = self._table(stream)
        cursor = info.column(scope.cursor_field) if scope.cursor_field else None
        if cursor is not None and cursor.family == "binary":
            settings = settings.with_overrides(chunk_strategy=ChunkStrategy.ID)
        return planner.plan(self, stream, scope, settings)

    # --- reading ------------------------------------------------------------------------------

    def _read_arrow(self, sql: str, cancel: CancelToken | None) -> "Iterator[pa.RecordBatch]":
        raw = self.engine.raw_connection()
        try:
            cursor = raw.driver_connection.cursor()
            try:
                cursor.execute(sql)
                reader = cursor.arrow_reader(batch_size=BATCH_ROWS)
                try:
                    for batch in reader:
                        if cancel is not None:
                            cancel.raise_if_cancelled()
                        if batch.num_rows:
                            yield microsecond_timestamps(batch)
                finally:
                    reader.close()
            finally:
                cursor.close()
        finally:
            raw.close()

    # --- errors ------------------------------------------------------------------------------

    def translate_error(self, exc: BaseException, what: str) -> EsgError:
        number = error_number(exc)
        state = sqlstate(exc)
        text = _message(exc)
        if self.spec.password:  # a driver message must never echo the secret
            text = text.replace(self.spec.password, "***")
        low = text.lower()
        code = str(number) if number is not None else state
        database = self.spec.option("database")
        user = self.spec.option("username")
        if "failed to load the driver" in low:
            return SourceError(f"{what}: the SQL Server ODBC driver bundled with mssql-python cannot be loaded.",
                               hint="On Linux install the system library libltdl7 (Debian/Ubuntu: "
                                    "apt-get install libltdl7), then try again.")
        if number in _AUTH_NUMBERS or (number is None and state == "28000"):
            return AuthenticationFailed(
                f"{what}: SQL Server at {self._where} refused the login '{user}' (login failed).", code=code)
        if number in _DATABASE_NUMBERS:
            return DatabaseMissing(
                f"{what}: the database '{database}' on {self._where} does not exist or the login '{user}' "
                "may not open it.", code=code)
        if number in _PERMISSION_NUMBERS:
            return PermissionDenied(f"{what}: the login '{user}' lacks permission ({_first_line(text)}).", code=code)
        if number in _TABLE_NUMBERS or state == "42S02":
            return TableMissing(f"{what}: the table no longer exists in the source ({_first_line(text)}).", code=code)
        if number in _DRIFT_NUMBERS or state == "42S22":
            return SchemaDrift(f"{what}: the table's columns changed in the source ({_first_line(text)}).", code=code)
        if state in ("08001", "08004") and number is None:
            tcp = re.search(r"tcp provider: error code (0x[0-9a-f]+)", low)
            detail = f" (TCP provider error {tcp.group(1)})" if tcp else ""
            if "login timeout" in low or "timeout expired" in low:
                detail = " (login timeout expired)"
            return SourceUnreachable(f"{what}: SQL Server at {self._where} cannot be reached{detail}.", code=code)
        if number in _TRANSIENT_NUMBERS or state in ("08S01", "08003", "HYT00", "HYT01", "40001"):
            reason = {1205: "chosen as a deadlock victim", -2: "query timeout", 258: "timeout"}.get(number) \
                or _first_line(text)
            return TransientSourceError(f"{what}: SQL Server at {self._where}: {reason}.", code=code)
        if any(w in low for w in ("could not open a connection", "server was not found", "network-related",
                                  "unable to connect", "name or service not known")):
            return SourceUnreachable(f"{what}: SQL Server at {self._where} cannot be reached.", code=code)
        return SourceError(f"{what} failed: {_first_line(text)}", code=code)


# --- literals ----------------------------------------------------------------------------------


class _Date(sa.types.UserDefinedType):
    """T-SQL `date` whatever server version the dialect assumes before connecting (it
    renders sa.Date as DATETIME for servers it takes for older than 2008)."""

    cache_ok = True

    def get_col_spec(self, **kw) -> str:
        return "date"


def sql_literal(value: Any) -> sa.ColumnElement:
    """A typed T-SQL literal for a key or cursor value (see the module docstring)."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            text = value.astimezone(dt.timezone.utc).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
            return sa.literal_column(f"CAST('{text}+00:00' AS datetimeoffset(7))")
        return sa.literal_column(f"CAST('{value.isoformat(sep=' ', timespec='microseconds')}' AS datetime2(7))")
    if isinstance(value, dt.date):
        return sa.literal_column(f"CAST('{value.isoformat()}' AS date)")
    if isinstance(value, dt.time):
        return sa.literal_column(f"CAST('{value.isoformat(timespec='microseconds')}' AS time(7))")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return sa.literal_column("0x" + bytes(value).hex())
    if isinstance(value, str):  # N'...': Unicode whatever the database's code page
        return sa.literal_column("N'" + value.replace("'", "''") + "'")
    return sa.literal(value)


# --- error reading ---------------------------------------------------------------------------


def _message(exc: BaseException) -> str:
    args = getattr(exc, "args", ())
    if len(args) >= 2 and isinstance(args[0], int):  # pymssql: (number, b"message")
        msg = args[1]
        return msg.decode("utf-8", "replace") if isinstance(msg, (bytes, bytearray)) else str(msg)
    return str(getattr(exc, "ddbc_error", None) or getattr(exc, "message", None) or exc)


def error_number(exc: BaseException) -> int | None:
    """SQL Server's error number: from pymssql's args, a `number` attribute, a 'Msg N' or
    '(N)' in the text, or the text of the message itself."""
    for attr in ("number", "native_error", "msgno"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    text = _message(exc)
    match = re.search(r"\bMsg (-?\d+)\b|\(SQL Server error (-?\d+)\)|\[SQL Server\].*\((-?\d+)\)\s*$", text)
    if match:
        return int(next(g for g in match.groups() if g))
    low = text.lower()
    for number, words in _NUMBER_TEXTS:
        if words in low:
            return number
    return None


def sqlstate(exc: BaseException) -> str | None:
    for attr in ("sqlstate", "sql_state"):
        value = getattr(exc, attr, None)
        if isinstance(value, str) and value:
            return value
    text = str(exc)
    match = re.search(r"SQLSTATE[ :=]*([0-9A-Z]{5})", text)
    if match:
        return match.group(1)
    driver = str(getattr(exc, "driver_error", "") or "").strip().lower()
    return _DRIVER_TEXT_STATES.get(driver)


def _first_line(text: str) -> str:
    # the driver prefixes "[Microsoft][ODBC Driver 18 for SQL Server][SQL Server]"
    text = re.sub(r"^(\[[^\]]*\])+", "", text.strip())
    lines = text.splitlines()
    return lines[0] if lines else "unknown error"


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "yes", "true", "on", "mandatory", "strict")


def microsecond_timestamps(batch: "pa.RecordBatch") -> "pa.RecordBatch":
    """Nanosecond timestamps truncated to microseconds (the workspace's and Python's unit)."""
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
