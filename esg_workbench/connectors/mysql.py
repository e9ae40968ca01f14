"""MySQL and MariaDB: discovery and planning through SQLAlchemy (PyMySQL), reads through
ConnectorX.

Why ConnectorX. It decodes MySQL's binary result protocol in Rust straight into Arrow
batches, so no row becomes a Python object. On a 200,000-row, ten-column table (bigint,
varchar, datetime(6), decimal(18,4), text, timestamp(6), tinyint(1), double) against a
local MariaDB 10.11 it reads ~730,000 rows/s; PyMySQL (server-side cursor, columns handed
to pyarrow) reads ~65,000 rows/s and mysqlclient (C) ~93,000 rows/s, both spending their
time building Python datetimes and Decimals. mysql-connector-python's wheel ships no C
extension here. So ConnectorX it is, with the traps below designed around.

What ConnectorX gets wrong on its own, and what this module does about it (each is
covered by tests/test_connector_mysql.py):

* DECIMAL arrives as decimal128(38, 10) through a 96-bit `rust_decimal`: a declared scale
  above 10 is silently cut (0.000000000000001 arrives as 0), and more than 28 digits
  abort the read with a Rust panic. Decimals of at most 28 digits and scale <= 10 are read
  natively and cast (safely: a cast that would lose a digit fails) to the declared
  decimal(p, s); wider ones are selected as `CAST(col AS CHAR)` - MySQL prints them
  exactly - and parsed by Arrow into decimal128(p, s), or decimal256 beyond 38 digits.
* Zero and partial-zero dates ('0000-00-00', '2024-00-00', which MariaDB accepts unless
  NO_ZERO_DATE / NO_ZERO_IN_DATE are set) abort the read with a panic. They are "no
  date" in MySQL's own words, so DATE / DATETIME / TIMESTAMP columns are selected through
  `CASE WHEN MONTH(c) = 0 OR DAYOFMONTH(c) = 0 THEN NULL ELSE c END` and land as NULL
  (like Connector/J's zeroDateTimeBehavior=CONVERT_TO_NULL). Filters and ordering still
  use the column itself.
* Spatial columns are not implemented in ConnectorX (panic); they are read as WKB
  (`ST_AsBinary`). Unknown extension types (INET6, UUID) arrive as text.
* TIME values outside 00:00-24:00 (MySQL's TIME is an interval up to +-838 h) cannot be
  held by Arrow's time64; such a value stops the read with a plain SourceError naming it,
  instead of a panic.
* Panics (`pyo3_runtime.PanicException` derives from BaseException, so a plain
  `except Exception` misses it) are turned into SourceErrors.
* A connection failure inside ConnectorX is retried by its pool for ~30 s before it
  raises; planning queries run first through PyMySQL, so a wrong host or password is
  reported at once by them.

Kept as MySQL has them: TINYINT(1)/BOOLEAN is int8 (MySQL stores any small integer
there, and discovery reports the family `integer`), JSON (LONGTEXT in MariaDB), ENUM and
SET are text, BIT(n) is big-endian binary, YEAR is int16, BIGINT UNSIGNED is uint64.
Both sessions (PyMySQL and ConnectorX) run with `time_zone = '+00:00'`, so TIMESTAMP
columns read and compare in UTC, consistently between planning and reading; DATETIME
has no zone and is compared as stored.

In MySQL the "schema" is the database: `schema` is the database name unless a schema
option names another database on the same server.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from typing import TYPE_CHECKING, Any, Iterator
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_types_sa

from esg_workbench.connectors import mysql_types
from esg_workbench.connectors.sql import SqlConnector, prefix_compare
from esg_workbench.core.errors import (
    AuthenticationFailed,
    DatabaseMissing,
    EsgError,
    PermissionDenied,
    SchemaDrift,
    SourceError,
    SourceUnreachable,
    TableMissing,
    TransientSourceError,
)
from esg_workbench.core.specs import CancelToken, ChunkRange, ReadScope, StreamRef, TableInfo, Timeouts

if TYPE_CHECKING:
    import pyarrow as pa

#: rows per Arrow batch from ConnectorX (speed is flat from 10k to 100k; this bounds memory)
BATCH_ROWS = 32_768
#: run at the start of every session, PyMySQL and ConnectorX alike
SESSION_SETUP = "SET time_zone = '+00:00'"

# MySQL / MariaDB error numbers
_AUTH = {1045, 1251, 1698}  # access denied (password), client auth protocol, plugin auth
_NO_DATABASE = {1049}
_PERMISSION = {1044, 1142, 1143, 1227, 1370}
_NO_TABLE = {1146}
_DRIFT = {1054}
_UNREACHABLE = {2002, 2003, 2005}
_TRANSIENT = {
    1040,  # too many connections
    1053,  # server shutdown in progress
    1205,  # lock wait timeout
    1213,  # deadlock
    1317,  # query interrupted
    1927,  # MariaDB: connection killed
    1969,  # MariaDB: max_statement_time exceeded
    3024,  # MySQL: max_execution_time exceeded
    2006,  # server has gone away
    2013,  # lost connection during query
    2055,  # lost connection (system error)
}
_LOST = {1927, 2006, 2013, 2055}
#: ConnectorX/rust-mysql words for failures that carry no error number
_CX_WORDS = (
    ("failed to lookup address", 2005),
    ("name or service not known", 2005),
    ("nodename nor servname", 2005),
    ("temporary failure in name resolution", 2005),
    ("could not connect to address", 2003),
    ("timed out waiting for connection", 2003),
    ("connection refused", 2003),
    ("connection reset", 2013),
    ("broken pipe", 2013),
    ("unexpected eof", 2013),
    ("unexpectedeof", 2013),
    ("connection aborted", 2013),
    ("timed out", 2013),
)
_ERRNO_IN_TEXT = re.compile(r"ERROR (\d{4}) \(([0-9A-Z]{5})\)")


class MySqlConnector(SqlConnector):
    default_schema = None

    def __init__(self, spec):
        super().__init__(spec)
        self._catalog: dict[StreamRef, dict[str, mysql_types.SourceColumn]] = {}
        self._zero_dates: dict[tuple[StreamRef, ChunkRange], dict[str, int]] = {}
        self._notes: dict[StreamRef, set[str]] = {}
        self._unique_keys: dict[StreamRef, tuple[str, ...]] = {}

    # --- location -----------------------------------------------------------------------

    @property
    def schema(self) -> str | None:
        return self.spec.option("schema") or self.spec.option("database")

    @property
    def _host(self) -> str:
        return str(self.spec.option("host", "localhost"))

    @property
    def _port(self) -> int:
        return int(self.spec.option("port", 3306))

    @property
    def _where(self) -> str:
        return f"{self._host}:{self._port}"

    def sqlalchemy_url(self) -> sa.URL:
        return sa.URL.create(
            "mysql+pymysql",
            username=self.spec.option("username"),
            password=self.spec.password,
            host=self._host,
            port=self._port,
            database=self.spec.option("database"),
            query={"charset": "utf8mb4"},
        )

    @property
    def _timeouts(self) -> Timeouts:
        return Timeouts.from_options(self.spec.options)

    def _session_setup(self) -> str:
        """UTC, and the connector's lock and statement timeouts. MariaDB alone runs the
        `/*M! */` part (max_statement_time); MySQL has no session-wide equivalent for all
        statements, so there the read timeout bounds a query."""
        t = self._timeouts
        lock = max(1, int(round(t.lock)))
        return (f"{SESSION_SETUP}, lock_wait_timeout = {lock}, innodb_lock_wait_timeout = {lock}"
                f" /*M!100100 , max_statement_time = {t.statement:.3f} */")

    def engine_options(self) -> dict[str, Any]:
        t = self._timeouts
        return {"connect_args": {"connect_timeout": max(1, int(round(t.connect))), "init_command": self._session_setup(),
                                 "read_timeout": max(1, int(round(t.read))), "write_timeout": max(1, int(round(t.read)))}}

    def _cx_url(self) -> str:
        user = quote(str(self.spec.option("username") or ""), safe="")
        password = quote(self.spec.password or "", safe="")
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        host = self._host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 address
        database = quote(str(self.spec.option("database") or ""), safe="")
        t = self._timeouts
        return (f"mysql://{auth}{host}:{self._port}/{database}?tcp_connect_timeout_ms={int(t.connect * 1000)}"
                f"&tcp_keepalive_time_ms={int(t.keepalive * 1000)}")

    # --- errors ---------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        """A driver message with any trace of the password removed."""
        password = self.spec.password
        if password:
            for form in {password, quote(password, safe=""), quote(password)}:
                text = text.replace(form, "***")
        return text

    def _first_line(self, exc: BaseException) -> str:
        args = getattr(exc, "args", ())
        text = args[1] if len(args) > 1 and isinstance(args[0], int) and isinstance(args[1], str) else str(exc)
        lines = self._scrub(text).strip().splitlines()
        text = lines[0] if lines else type(exc).__name__
        match = re.search(r"MySqlError \{ (.*) \}", text)  # ConnectorX wraps the server's words
        if match:
            text = match.group(1)
        return text[:300]

    @staticmethod
    def errno(exc: BaseException) -> int | None:
        """The MySQL error number of a PyMySQL error or of a ConnectorX message."""
        args = getattr(exc, "args", ())
        if args and isinstance(args[0], int):
            return args[0]
        text = str(exc)
        match = _ERRNO_IN_TEXT.search(text)
        if match:
            return int(match.group(1))
        lower = text.lower()
        for words, number in _CX_WORDS:
            if words in lower:
                return number
        return None

    def translate_error(self, exc: BaseException, what: str) -> EsgError:
        if isinstance(exc, _ConnectorXPanic):
            return self._panic_error(exc, what)
        number = self.errno(exc)
        code = str(number) if number is not None else None
        user = self.spec.option("username") or "(none)"
        database = self.spec.option("database")
        where = self._where
        detail = self._first_line(exc)
        if number in _AUTH:
            return AuthenticationFailed(
                f"{what}: the MySQL server at {where} refused the user '{user}' (wrong user name or password).",
                code=code)
        if number in _NO_DATABASE:
            return DatabaseMissing(f"{what}: the database '{database}' does not exist on {where}.", code=code)
        if number in _PERMISSION:
            return PermissionDenied(
                f"{what}: the user '{user}' lacks permission on database '{database}' at {where} ({detail}).",
                code=code)
        if number in _NO_TABLE:
            return TableMissing(
                f"{what}: the table no longer exists in database '{database}' at {where}.", code=code)
        if number in _DRIFT:
            return SchemaDrift(f"{what}: the table's columns changed in the source ({detail}).", code=code)
        if number in _UNREACHABLE:
            lower = str(exc).lower()
            if number == 2005 or "name or service not known" in lower or "lookup address" in lower:
                return SourceUnreachable(f"{what}: the host of {where} is unknown (user '{user}').", code=code)
            return SourceUnreachable(
                f"{what}: the MySQL server at {where} cannot be reached (user '{user}', database '{database}').",
                code=code)
        if number in _TRANSIENT:
            if number == 1205:
                return TransientSourceError(
                    f"{what}: the table is locked by another session on the MySQL server at {where} "
                    f"(waited {self._timeouts.lock:.0f} s, the connector's lock_timeout).",
                    hint="Someone holds a lock on the table (LOCK TABLES, ALTER TABLE, a long transaction). "
                         "Sync again when it is released, or ask a database administrator which session holds it.",
                    code=code)
            if number == 1213:
                return TransientSourceError(
                    f"{what}: the MySQL server at {where} aborted the query with a deadlock.", code=code)
            if number in _LOST:
                return TransientSourceError(
                    f"{what}: the connection to the MySQL server at {where} was lost ({detail}).", code=code)
            return TransientSourceError(f"{what}: the MySQL server at {where} could not serve the query ({detail}).",
                                        code=code)
        return SourceError(f"{what} failed on {where}, database '{database}': {detail}", code=code)

    # --- discovery ------------------------------------------------------------------------

    def row_estimates(self, conn: sa.Connection, schema: str | None) -> dict[str, int]:
        rows = conn.execute(
            sa.text(
                "SELECT table_name, table_rows FROM information_schema.tables "
                "WHERE table_schema = :schema AND table_type = 'BASE TABLE'"
            ),
            {"schema": schema},
        )
        return {name: int(n) for name, n in rows if n is not None}

    def describe(self, streams: list[StreamRef] | None = None) -> list[TableInfo]:
        for stream in streams or [*self._catalog, *self._unique_keys]:  # reads follow a re-discovery
            self._catalog.pop(stream, None)
            self._unique_keys.pop(stream, None)
        with warnings.catch_warnings():  # INET6, POINT, ...: named below from information_schema
            warnings.filterwarnings("ignore", message="Did not recognize type", category=sa.exc.SAWarning)
            infos = super().describe(streams)
        unknown = {info.stream.table for info in infos for c in info.columns if c.type == "NullType"}
        if unknown:
            query = sa.text(
                "SELECT table_name, column_name, column_type, data_type FROM information_schema.columns "
                "WHERE table_schema = :schema AND table_name IN :names"
            ).bindparams(sa.bindparam("names", expanding=True))
            with self.errors("Reading the schema"), self.engine.connect() as conn:
                found = {(t, c): (ct, dt) for t, c, ct, dt in conn.execute(
                    query, {"schema": self.schema, "names": sorted(unknown)})}
            for info in infos:
                for i, col in enumerate(info.columns):
                    if col.type == "NullType" and (info.stream.table, col.name) in found:
                        column_type, data_type = found[(info.stream.table, col.name)]
                        family = mysql_types.MYSQL_TYPES.get(data_type.lower(), mysql_types.UNKNOWN).family
                        info.columns[i] = dataclasses.replace(col, type=column_type.upper(), family=family)
        return infos

    # --- planning ---------------------------------------------------------------------------

    def window_start(self, column: sa.ColumnElement, window: str) -> sa.ColumnElement:
        """Midnight starting the day, ISO week (Monday) or month holding `column`, as a
        DATETIME (like PostgreSQL's date_trunc gives a timestamp), for DATE, DATETIME and
        TIMESTAMP columns alike. TIMESTAMPs are in UTC (the session's time zone)."""
        day = sa.func.date(column)
        if window == "day":
            start = day
        elif window == "week":
            start = sa.func.subdate(day, sa.func.weekday(column))
        elif window == "month":
            start = sa.func.subdate(day, sa.func.dayofmonth(column) - 1)
        else:
            raise ValueError(f"unknown window {window!r}")
        return sa.cast(start, sa.DateTime)

    def compare_prefix(self, columns: list[sa.ColumnElement], bound: tuple, op: str) -> sa.ColumnElement:
        """The row-value comparison, plus a plain bound on the leading key column.

        MySQL and MariaDB do not use an index range for a row-value comparison such as
        `(updated_at, id) >= (x, 5)`: every chunk would scan the whole index. The extra
        `updated_at >= x` (`<= x` for an upper bound) is implied by the row-value
        comparison, so it changes no result, and lets the optimizer range-scan.

        Binary key values (a BINARY(16) id, say) are rendered as X'..' literals: the
        generic SQLAlchemy literal for bytes decodes them as UTF-8 text, which fails or
        compares wrongly.
        """
        bound = _hex(bound)
        exact = prefix_compare(columns, bound, op)
        if len(bound) < 2:
            return exact
        lead, value = columns[0], sa.literal(bound[0])
        return sa.and_(lead >= value if op in (">", ">=") else lead <= value, exact)

    def cursor_at_most(self, column: sa.ColumnElement, value: Any) -> sa.ColumnElement:
        return column <= sa.literal(_hex((value,))[0])

    # --- samples -------------------------------------------------------------------------------

    random_samples = True

    def random_sample_query(self, t: sa.TableClause, names: list[str], limit: int,
                            estimate: int | None) -> sa.Select:
        """MySQL has no TABLESAMPLE: a large table keeps each row with a probability
        giving about four times `limit` rows (`RAND() < p`, one pass, nothing sorted but
        those), of which `limit` are kept at random."""
        query = sa.select(*[t.c[n] for n in names])
        if estimate and estimate > 20 * limit:
            query = query.where(sa.func.rand() < sa.literal(min(1.0, 4.0 * limit / estimate)))
        return query.order_by(sa.func.rand()).limit(limit)

    # --- tables without a primary key: chunks along a unique index ---------------------------
    # A unique index over NOT NULL columns orders rows as well as a key does: chunks are its
    # ranges, and memory stays bounded by the chunk size. Without one the table is one
    # chunk (MySQL has no stable row address like PostgreSQL's ctid).

    def unique_key(self, stream: StreamRef) -> tuple[str, ...]:
        """The columns of the first (by name) unique index whose columns are all NOT NULL
        and whole (no prefix index); () when there is none. Asked once per connector (every
        chunk's read needs it)."""
        if stream in self._unique_keys:
            return self._unique_keys[stream]
        query = sa.text(
            "SELECT s.index_name, s.column_name, c.is_nullable, s.sub_part FROM information_schema.statistics s "
            "JOIN information_schema.columns c ON c.table_schema = s.table_schema AND c.table_name = s.table_name "
            "AND c.column_name = s.column_name WHERE s.table_schema = :schema AND s.table_name = :table "
            "AND s.non_unique = 0 ORDER BY s.index_name, s.seq_in_index")
        with self.errors(f"Reading the indexes of {stream.qualified}"), self.engine.connect() as conn:
            rows = conn.execute(query, {"schema": stream.schema or self.schema, "table": stream.table}).all()
        indexes: dict[str, list] = {}
        for index, column, nullable, sub_part in rows:
            indexes.setdefault(index, []).append((column, nullable == "NO" and sub_part is None))
        usable = [tuple(c for c, _ in columns) for columns in indexes.values() if all(whole for _, whole in columns)]
        self._unique_keys[stream] = usable[0] if usable else ()
        return self._unique_keys[stream]

    def keyless_chunks(self, stream: StreamRef, scope: ReadScope, rows: int, chunk_size: int) -> list[ChunkRange]:
        key = self.unique_key(stream) if rows > chunk_size else ()
        if not key:
            return [ChunkRange()]
        bounds = self.boundaries(stream, dataclasses.replace(scope, key=key), chunk_size)
        edges = [None, *bounds, None]
        return [ChunkRange(lo, hi) for lo, hi in zip(edges, edges[1:])]

    def _filtered(self, stream: StreamRef, scope: ReadScope, chunk: ChunkRange | None):
        if not scope.key and chunk is not None and (chunk.lower is not None or chunk.upper is not None):
            scope = dataclasses.replace(scope, key=self.unique_key(stream))  # a chunk of keyless_chunks
        return super()._filtered(stream, scope, chunk)

    # --- reading ------------------------------------------------------------------------------

    def _source_columns(self, stream: StreamRef) -> dict[str, mysql_types.SourceColumn]:
        if stream not in self._catalog:
            with self.errors(f"Reading the column types of {stream.qualified}"), self.engine.connect() as conn:
                rows = conn.execute(sa.text(mysql_types.CATALOG_SQL),
                                    {"schema": stream.schema or self.schema, "table": stream.table}).all()
            self._catalog[stream] = mysql_types.source_columns(rows)
        return self._catalog[stream]

    def _read_plan(self, stream: StreamRef, scope: ReadScope, t: sa.TableClause) -> list[_ColumnRead]:
        """Per column: how the query selects it and what its Arrow values become
        (the table in mysql_types)."""
        import pyarrow as pa

        sources = self._source_columns(stream)
        reads = []
        for name in scope.columns:
            column, source = t.c[name], sources.get(name)
            if source is None:  # unknown to the catalog: the read itself reports what is wrong
                reads.append(_ColumnRead(name, column))
                continue
            rule = mysql_types.rule_of(source)
            note = (f"{name}: type {source.column_type} is not known to ESG Workbench and landed as text"
                    if rule is mysql_types.UNKNOWN else None)
            if rule.read == "decimal":
                precision, scale = source.precision or 10, source.scale or 0
                natively = mysql_types.decimal_natively(precision, scale)
                expr = column if natively else sa.cast(column, mysql_types_sa.CHAR).label(name)
                # decimal256 beyond 38 digits: exact here (keys, checkpoints); the
                # workspace decides how to hold it (raw_tables: text in DuckDB)
                target = pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
                reads.append(_ColumnRead(name, expr, target))
            elif rule.read == "zero_dates":
                zero = sa.or_(sa.func.month(column) == 0, sa.func.dayofmonth(column) == 0)
                expr = sa.case((zero, sa.null()), else_=column).label(name)
                reads.append(_ColumnRead(name, expr, zero_flag=zero))
            elif rule.read == "interval":
                micros = sa.cast(sa.func.time_to_sec(column) * 1_000_000, mysql_types_sa.INTEGER).label(name)
                reads.append(_ColumnRead(name, micros, pa.duration("us")))
            elif rule.read == "bits":
                expr = sa.func.lpad(sa.func.bin(column), source.bits or 1, "0").label(name)
                reads.append(_ColumnRead(name, expr, pa.string(), workspace=rule.workspace))
            elif rule.read == "wkb":
                reads.append(_ColumnRead(name, sa.func.ST_AsBinary(column).label(name)))
            elif rule.read == "char":
                reads.append(_ColumnRead(name, sa.cast(column, mysql_types_sa.CHAR).label(name), pa.string(),
                                         workspace=rule.workspace, note=note))
            else:
                reads.append(_ColumnRead(name, column))
        return reads

    def _read_query(self, stream: StreamRef, scope: ReadScope, chunk: ChunkRange):
        t, key_cols, conds = self._filtered(stream, scope, chunk)
        reads = self._read_plan(stream, scope, t)
        flags = [sa.cast(r.zero_flag, mysql_types_sa.INTEGER).label(f"_esg_zero_{i}")
                 for i, r in enumerate(reads) if r.zero_flag is not None]
        query = sa.select(*[r.expr for r in reads], *flags).select_from(t).where(*conds).order_by(*key_cols)
        dialect = self.engine.dialect
        if dialect.server_version_info is None:
            # literals depend on the server's sql_mode (NO_BACKSLASH_ESCAPES), which the
            # dialect learns on its first connection
            with self.engine.connect():
                pass
        sql = str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
        if dialect.identifier_preparer._double_percents:
            # PyMySQL's "format" paramstyle makes SQLAlchemy write every % as %% (for the
            # DBAPI to undo); ConnectorX takes the text as it is, so undo it here.
            sql = sql.replace("%%", "%")
        return sql, reads

    def read_sql(self, stream: StreamRef, scope: ReadScope, chunk: ChunkRange) -> str:
        return self._read_query(stream, scope, chunk)[0]

    def read(self, stream: StreamRef, scope: ReadScope, chunk: ChunkRange,
             cancel: CancelToken | None = None) -> "Iterator[pa.RecordBatch]":
        what = f"Reading {stream.qualified} {chunk.describe()}"
        counts: dict[str, int] = {}
        self._zero_dates[(stream, chunk)] = counts  # a retried read starts its counts afresh
        with self.errors(what):
            sql, reads = self._read_query(stream, scope, chunk)
            self._notes.setdefault(stream, set()).update(r.note for r in reads if r.note)
            for batch in self._read_arrow(sql, cancel):
                yield self._conform(batch, reads, counts, what)

    def read_warnings(self, stream: StreamRef) -> list[str]:
        """Zero dates landed as NULL (per column) and columns landed as text, for the
        reads of `stream` since the last call; then forgets them."""
        totals: dict[str, int] = {}
        for key in [k for k in self._zero_dates if k[0] == stream]:
            for column, n in self._zero_dates.pop(key).items():
                totals[column] = totals.get(column, 0) + n
        lines = [f"{column}: {n} zero dates landed as NULL" for column, n in totals.items() if n]
        return lines + sorted(self._notes.pop(stream, set()))

    @staticmethod
    def _conform(batch: "pa.RecordBatch", reads: list[_ColumnRead], counts: dict[str, int],
                 what: str) -> "pa.RecordBatch":
        """Source column names and the landed types of the read plan; zero-date flags
        counted and dropped."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from esg_workbench.core.specs import WORKSPACE_TYPE_KEY

        flags = iter(batch.columns[len(reads):])
        arrays, fields = [], []
        for read, column in zip(reads, batch.columns):
            target = read.target
            if read.zero_flag is not None:
                counts[read.name] = counts.get(read.name, 0) + int(pc.sum(next(flags)).as_py() or 0)
            if target is not None and column.type != target:
                try:
                    if pa.types.is_duration(target):
                        column = column.cast(pa.int64()).view(target)
                    else:
                        column = column.cast(target)  # safe: fails rather than drop a digit
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise SchemaDrift(
                        f"{what}: the values of column {read.name} no longer fit its discovered type {target} ({exc})."
                    ) from None
            metadata = {WORKSPACE_TYPE_KEY: read.workspace.encode()} if read.workspace else None
            arrays.append(column)
            fields.append(pa.field(read.name, column.type, True, metadata))
        return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))

    _cx = None  # the CxWorker of this connector's reads, started on the first read

    def _read_arrow(self, sql: str, cancel: CancelToken | None) -> "Iterator[pa.RecordBatch]":
        # ConnectorX holds Python's GIL while it waits on the server: it runs in a child
        # process (cx_worker), so a stalled server cannot freeze the app
        from esg_workbench.connectors.cx_worker import CxWorker, WorkerError

        if self._cx is None:
            self._cx = CxWorker()
        try:
            for batch in self._cx.read(self._cx_url(), sql, [self._session_setup()], BATCH_ROWS):
                if cancel is not None:
                    cancel.raise_if_cancelled()
                yield batch
        except WorkerError as exc:
            if exc.panic:
                raise _ConnectorXPanic(str(exc)) from None
            raise RuntimeError(str(exc)) from None
        except ConnectionError as exc:
            raise TransientSourceError(f"the read from the MySQL server at {self._where} stopped ({exc}).") from None

    def abort(self) -> None:
        """End a read under way from another thread (a stalled server): the child dies."""
        if self._cx is not None:
            self._cx.abort()

    def close(self) -> None:
        self.abort()
        super().close()

    def _panic_error(self, exc: BaseException, what: str) -> EsgError:
        """A ConnectorX panic: a value it cannot convert (permanent) or a connection that
        broke under it (a killed or lost connection panics too; transient)."""
        text = self._scrub(str(exc))
        first = text.strip().splitlines()[0][:300] if text.strip() else "panic"
        match = re.search(r"Couldn't convert the value `(\w+)\((.*?)\)` to a desired type", text)
        if match and match.group(1) == "Time":
            value = match.group(2).strip("'\"")
            return SourceError(
                f"{what}: a TIME value ({value}) lies outside 00:00-24:00 and cannot be read as a time of day.",
                hint="Exclude the column, or store durations as numbers in the source.")
        if match or "not implemented" in text.lower():
            return SourceError(f"{what}: ConnectorX cannot read a value of the MySQL server at {self._where} ({first}).")
        if self.errno(exc) is not None:
            return self.translate_error(RuntimeError(text), what)
        if "io error" in text.lower() or "codec" in text.lower():
            return TransientSourceError(
                f"{what}: the connection to the MySQL server at {self._where} was lost during the read ({first}).",
                code="2013")
        return SourceError(f"{what}: ConnectorX failed reading from the MySQL server at {self._where} ({first}).")

    def validate(self) -> str:
        message = super().validate()
        with self.errors("Testing the fast read path (ConnectorX)"):
            for _ in self._read_arrow("SELECT 1 AS ok", None):
                pass
        return message


@dataclasses.dataclass(frozen=True)
class _ColumnRead:
    name: str
    expr: sa.ColumnElement
    target: "pa.DataType | None" = None  # the Arrow type the values are cast to
    workspace: str | None = None  # the workspace type its text is parsed into
    zero_flag: sa.ColumnElement | None = None  # true where a zero date became NULL
    note: str | None = None  # said once with the run


class _ConnectorXPanic(RuntimeError):
    """A Rust panic inside ConnectorX, carried as an ordinary exception to translate_error."""


class _BinaryLiteral(sa.types.UserDefinedType):
    """Bytes rendered as a MySQL hex literal (X'00ff'), bound as plain bytes."""

    cache_ok = True

    def get_col_spec(self, **kw) -> str:
        return "VARBINARY"

    def literal_processor(self, dialect):
        return lambda value: f"X'{bytes(value).hex()}'"

    def bind_processor(self, dialect):
        return lambda value: None if value is None else bytes(value)


class _HexBytes(bytes):
    """A key value of bytes: `sa.literal()` gives it the type above."""

    __sa_type_engine__ = _BinaryLiteral()


def _hex(values: tuple | None) -> tuple | None:
    if values is None or not any(isinstance(v, (bytes, bytearray, memoryview)) for v in values):
        return values
    return tuple(_HexBytes(bytes(v)) if isinstance(v, (bytes, bytearray, memoryview)) else v for v in values)
