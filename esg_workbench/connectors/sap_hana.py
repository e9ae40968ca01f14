"""SAP HANA (on premise and HANA Cloud) over SQL: SQLAlchemy's `hana+hdbcli` dialect
(the `sqlalchemy-hana` package) for discovery and planning, SAP's own `hdbcli` driver
for reads, fetched in batches and built into Arrow columns typed from the reflected
table.

**Not yet tested against a live HANA**: no HANA server can run on the machines this is
built on. The tests compile every planning and read query for the HANA dialect, build
Arrow batches from the values hdbcli returns, and check the driver's error handling (a
refused connection through the real hdbcli, and its error codes).

HANA specifics handled here:

* **Names.** HANA folds unquoted names to upper case; SQLAlchemy shows such names in
  lower case and quotes anything else (`"MixedCase"`, `"/BIC/AZSALES"`). A schema typed
  as HANA shows it (`SAPHANADB`) is normalized the same way.
* **No row-value comparisons** are relied on: key bounds are written
  `a > x OR (a = x AND b > y)`.
* **Literals are typed**: `TO_TIMESTAMP('2024-03-01 10:00:00.123456')` (aware values
  in UTC), `TO_DATE('2024-03-01')`, `TO_TIME(...)`, `X'00ff'` for binary keys and
  `N'O''Brien'` for text.
* **TIMESTAMP has 100 ns ticks; Python has microseconds.** The sync's upper bound is
  written `cursor < ADD_NANO100(<max>, 10)` so the latest rows (whose last digit the
  maximum lost) are included; lower bounds re-read at most the rows of that microsecond.
* **No `%` operator and no `date_trunc`**: chunk boundaries use `MOD(ROW_NUMBER() ...)`;
  time windows are `TO_DATE(x)` (day), `ADD_DAYS(TO_DATE(x), -WEEKDAY(x))` (ISO week,
  Monday) and `ADD_DAYS(TO_DATE(x), 1 - DAYOFMONTH(x))` (month).
* Paging in samples uses `LIMIT n` (and `OFFSET`), which HANA supports.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
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
from esg_workbench.core.specs import CancelToken, ChunkRange, ReadScope, StreamRef, Timeouts
from esg_workbench.connectors.sql import SqlConnector, expanded_prefix_compare

if TYPE_CHECKING:
    import pyarrow as pa

DEFAULT_PORT = 443  # HANA Cloud; on premise the SQL port is 3<instance>15 (e.g. 30015)
CONNECT_TIMEOUT_MS = 15_000
BATCH_ROWS = 10_000

# hdbcli error codes (SAP HANA SQL reference, "SQL Error Codes")
_AUTH = {10, 414, 416, 663}  # authentication failed, password change forced, user deactivated/locked
_PERMISSION = {258}  # insufficient privilege
_TABLE = {259}  # invalid table name
_DRIFT = {260, 266}  # invalid column name, inconsistent datatype
_SCHEMA = {362}  # invalid schema name
#: deadlock, lock wait timeout, statement timeout, cancelled, connection lost/reset,
#: out of memory, too many sessions
_TRANSIENT = {131, 133, 139, 613, 614, 4, 1033, -10807, -10108, -10821, -10709, -10715, 1038}


class HanaConnector(SqlConnector):
    default_schema = None  # the user's own schema

    @property
    def _where(self) -> str:
        return f"{self.spec.option('host', 'localhost')}:{self.spec.option('port', DEFAULT_PORT)}"

    def sqlalchemy_url(self) -> sa.URL:
        return sa.URL.create(
            "hana+hdbcli",
            username=self.spec.option("username"),
            password=self.spec.password,
            host=self.spec.option("host", "localhost"),
            port=int(self.spec.option("port", DEFAULT_PORT)),
            database=self.spec.option("database"),
        )

    def engine_options(self) -> dict[str, Any]:
        port = int(self.spec.option("port", DEFAULT_PORT))
        encrypt = _truthy(self.spec.option("encrypt", "yes" if port == 443 else "no"))
        args: dict[str, Any] = {
            "connectTimeout": int(Timeouts.given(self.spec.options, "connect", CONNECT_TIMEOUT_MS / 1000) * 1000),
            "encrypt": encrypt}
        if encrypt:
            args["sslValidateCertificate"] = _truthy(self.spec.option("validate_certificate", "yes"))
        return {"connect_args": args}

    # --- HANA dialect details ------------------------------------------------------------

    @property
    def schema(self) -> str | None:
        name = self.spec.option("schema", self.default_schema)
        if name is None:
            return None
        return _normalize(name)

    def compare_prefix(self, columns: list[sa.ColumnElement], bound: tuple, op: str) -> sa.ColumnElement:
        return expanded_prefix_compare(columns, bound, op, literal=hana_literal)

    def cursor_at_most(self, column: sa.ColumnElement, value: Any) -> sa.ColumnElement:
        if isinstance(value, dt.datetime):  # the maximum lost its last (100 ns) digit
            return column < sa.func.ADD_NANO100(hana_literal(value), 10)
        return column <= hana_literal(value)

    def window_start(self, column: sa.ColumnElement, window: str) -> sa.ColumnElement:
        day = sa.func.TO_DATE(column)
        if window == "day":
            return day
        if window == "week":  # WEEKDAY: Monday 0 .. Sunday 6
            return sa.func.ADD_DAYS(day, -sa.func.WEEKDAY(column))
        if window == "month":
            return sa.func.ADD_DAYS(day, 1 - sa.func.DAYOFMONTH(column))
        raise ConfigError(f"Unknown time window '{window}'.")

    def row_estimates(self, conn: sa.Connection, schema: str | None) -> dict[str, int]:
        query = sa.text("SELECT TABLE_NAME, RECORD_COUNT FROM M_TABLES WHERE SCHEMA_NAME = "
                        + (":schema" if schema is not None else "CURRENT_SCHEMA"))
        rows = conn.execute(query, {"schema": self.engine.dialect.denormalize_name(schema)} if schema is not None else {})
        normalize = self.engine.dialect.normalize_name
        return {normalize(name): int(n) for name, n in rows if n is not None}

    def modulo(self, value: sa.ColumnElement, divisor: int) -> sa.ColumnElement:
        return sa.func.MOD(value, divisor)  # HANA has no `%`

    # --- reading ------------------------------------------------------------------------------

    def read(self, stream: StreamRef, scope: ReadScope, chunk: ChunkRange,
             cancel: CancelToken | None = None) -> "Iterator[pa.RecordBatch]":
        schema = self.arrow_schema(stream, list(scope.columns))
        sql = self.read_sql(stream, scope, chunk)
        with self.errors(f"Reading {stream.qualified} {chunk.describe()}"):
            yield from self._read_rows(sql, schema, cancel)

    def arrow_schema(self, stream: StreamRef, columns: list[str]) -> "pa.Schema":
        import pyarrow as pa

        info = self._table(stream)
        fields = []
        for name in columns:
            column = info.column(name)
            fields.append(pa.field(name, arrow_type(column.family if column else "other",
                                                    column.type if column else ""),
                                   column.nullable if column else True))
        return pa.schema(fields)

    def _read_rows(self, sql: str, schema: "pa.Schema", cancel: CancelToken | None) -> "Iterator[pa.RecordBatch]":
        raw = self.engine.raw_connection()
        try:
            cursor = raw.driver_connection.cursor()
            try:
                cursor.execute(sql)
                while True:
                    if cancel is not None:
                        cancel.raise_if_cancelled()
                    rows = cursor.fetchmany(BATCH_ROWS)
                    if not rows:
                        break
                    yield rows_to_batch(rows, schema)
            finally:
                cursor.close()
        finally:
            raw.close()

    # --- errors ---------------------------------------------------------------------------------

    def translate_error(self, exc: BaseException, what: str) -> EsgError:
        code = getattr(exc, "errorcode", None)
        text = str(getattr(exc, "errortext", None) or (exc.args[1] if len(getattr(exc, "args", ())) > 1 else exc))
        if self.spec.password:
            text = text.replace(self.spec.password, "***")
        low = text.lower()
        code_text = str(code) if code is not None else None
        user = self.spec.option("username")
        if code in _AUTH or "authentication failed" in low:
            reason = {414: "the password must be changed first", 416: "the user is deactivated",
                      663: "the user is locked"}.get(code, "authentication failed")
            return AuthenticationFailed(f"{what}: SAP HANA at {self._where} refused the user '{user}' ({reason}).",
                                        code=code_text)
        if code in _PERMISSION:
            return PermissionDenied(f"{what}: the user '{user}' lacks a privilege ({_first_line(text)}).",
                                    hint="Ask the HANA administrator to grant SELECT on the schema to this user.",
                                    code=code_text)
        if code in _TABLE:
            return TableMissing(f"{what}: the table no longer exists in the source ({_first_line(text)}).",
                                code=code_text)
        if code in _DRIFT:
            return SchemaDrift(f"{what}: the table's columns changed in the source ({_first_line(text)}).",
                               code=code_text)
        if code in _SCHEMA:
            return DatabaseMissing(f"{what}: the schema '{self.spec.option('schema')}' does not exist on {self._where}.",
                                   hint="Check the schema name in the connector settings.", code=code_text)
        if code == 4321 or "only secure connections" in low:
            return SourceError(f"{what}: SAP HANA at {self._where} accepts only encrypted connections.",
                               hint="Set encrypt=yes in the connector settings.", code=code_text)
        if "database" in low and ("not found" in low or "does not exist" in low or "unknown" in low):
            return DatabaseMissing(f"{what}: the tenant database '{self.spec.option('database')}' does not exist on "
                                   f"{self._where}.", hint="Check the database (tenant) name.", code=code_text)
        if code == -10709 or any(w in low for w in ("connection refused", "cannot resolve host", "connect' failed",
                                                    "name or service not known")):
            if "ssl" in low or "certificate" in low or "tls" in low:
                return SourceUnreachable(f"{what}: the TLS handshake with SAP HANA at {self._where} failed "
                                         f"({_first_line(text)}).",
                                         hint="Check encrypt and validate_certificate in the connector settings.",
                                         code=code_text)
            detail = "connection refused" if "refused" in low else (
                "unknown host" if "resolve host" in low or "name or service" in low else _first_line(text))
            return SourceUnreachable(f"{what}: SAP HANA at {self._where} cannot be reached ({detail}).", code=code_text)
        if code in _TRANSIENT or "connection lost" in low or "timeout" in low:
            return TransientSourceError(f"{what}: SAP HANA at {self._where}: {_first_line(text)}.", code=code_text)
        return SourceError(f"{what} failed: {_first_line(text)}", code=code_text)


# --- literals and types -------------------------------------------------------------------------


def _normalize(name: str) -> str:
    """A schema or table name as HANA shows it, in SQLAlchemy's convention."""
    from sqlalchemy_hana.dialect import HANAHDBCLIDialect

    return HANAHDBCLIDialect().normalize_name(name)


def hana_literal(value: Any) -> sa.ColumnElement:
    """A typed HANA literal for a key or cursor value (see the module docstring)."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return sa.literal_column(f"TO_TIMESTAMP('{value.isoformat(sep=' ', timespec='microseconds')}')")
    if isinstance(value, dt.date):
        return sa.literal_column(f"TO_DATE('{value.isoformat()}')")
    if isinstance(value, dt.time):
        return sa.literal_column(f"TO_TIME('{value.replace(microsecond=0).isoformat()}')")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return sa.literal_column(f"X'{bytes(value).hex().upper()}'")
    if isinstance(value, bool):
        return sa.literal_column("TRUE" if value else "FALSE")
    if isinstance(value, str):
        return sa.literal_column("N'" + value.replace("'", "''") + "'")
    return sa.literal(value)


_DECIMAL = re.compile(r"(?:DECIMAL|NUMERIC|DEC)\s*\(\s*(\d+)\s*(?:,\s*(\d+))?\s*\)", re.I)


def arrow_type(family: str, type_name: str) -> "pa.DataType":
    """The Arrow type for a reflected HANA column (family and type name)."""
    import pyarrow as pa

    name = type_name.upper()
    if family == "integer":
        if name.startswith(("TINYINT", "SMALLINT")):
            return pa.int16()
        if name.startswith("INTEGER") or name == "INT":
            return pa.int32()
        return pa.int64()
    if family == "decimal":
        match = _DECIMAL.search(name)
        if match:
            precision, scale = int(match.group(1)), int(match.group(2) or 0)
            return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
        return pa.decimal128(38, 10)  # HANA's floating DECIMAL / SMALLDECIMAL
    if family == "float":
        return pa.float32() if name.startswith("REAL") else pa.float64()
    if family == "boolean":
        return pa.bool_()
    if family == "date":
        return pa.date32()
    if family in ("timestamp", "timestamptz"):
        return pa.timestamp("us")
    if family == "time":
        return pa.time64("us")
    if family == "binary":
        return pa.binary()
    return pa.string()


def _plain(value: Any) -> Any:
    """LOBs read whole; memoryviews as bytes."""
    if value is None:
        return None
    if hasattr(value, "read") and not isinstance(value, (str, bytes)):
        value = value.read()
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def rows_to_batch(rows: list, schema: "pa.Schema") -> "pa.RecordBatch":
    """hdbcli result rows (tuples of Python values) as one Arrow batch of `schema`."""
    import pyarrow as pa

    columns = list(zip(*[tuple(r) for r in rows])) if rows else [() for _ in schema]
    arrays = []
    for field, values in zip(schema, columns):
        values = [_plain(v) for v in values]
        typ = field.type
        if pa.types.is_decimal(typ):
            quantum = Decimal(1).scaleb(-typ.scale)
            values = [None if v is None else (v if isinstance(v, Decimal) else Decimal(str(v))).quantize(quantum)
                      for v in values]
        elif pa.types.is_string(typ):
            values = [v if v is None or isinstance(v, str) else str(v) for v in values]
        elif pa.types.is_timestamp(typ):
            values = [v.astimezone(dt.timezone.utc).replace(tzinfo=None) if isinstance(v, dt.datetime) and v.tzinfo
                      else v for v in values]
        arrays.append(pa.array(values, type=typ))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _first_line(text: str) -> str:
    lines = str(text).strip().splitlines()
    return lines[0] if lines else "unknown error"


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "yes", "true", "on")
