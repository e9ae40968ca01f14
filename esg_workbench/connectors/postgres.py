"""PostgreSQL: discovery and planning through SQLAlchemy (psycopg), reads through ADBC.

ADBC's PostgreSQL driver reads with `COPY ... TO STDOUT (FORMAT binary)` and builds Arrow
batches in C, so no row becomes a Python object. What each PostgreSQL type lands as, and
the cast or fix used where ADBC cannot decode it, is the table in `pg_types`; a read
reports what it could not land as the source had it (`read_warnings`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import socket
import warnings
from typing import TYPE_CHECKING, Any, Callable, Iterator
from urllib.parse import quote

import sqlalchemy as sa

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
from esg_workbench.core.specs import WORKSPACE_TYPE_KEY, CancelToken, ChunkRange, ReadScope, StreamRef, Timeouts
from esg_workbench.connectors import pg_types
from esg_workbench.connectors.base import close_quietly
from esg_workbench.connectors.sql import SqlConnector, prefix_compare

if TYPE_CHECKING:
    import pyarrow as pa

# SQLSTATE classes and codes (https://www.postgresql.org/docs/current/errcodes-appendix.html)
_AUTH = {"28P01", "28000"}
_TRANSIENT_PREFIXES = ("08", "53", "57P", "40")  # connection, resources, shutdown, rollback
_TRANSIENT_WORDS = ("connection refused", "could not connect", "server closed the connection",
                    "connection reset", "terminating connection", "timeout expired",
                    "timed out", "broken pipe", "no connection to the server",
                    "connection to server", "the database system is")


class _ByteaLiteral(sa.types.UserDefinedType):
    """Bytes rendered as `decode('00ff', 'hex')`: SQLAlchemy's literal for bytes is a text
    literal, which PostgreSQL reads as bytea escapes (a backslash in the key breaks it)."""

    cache_ok = True

    def get_col_spec(self, **kw) -> str:
        return "BYTEA"

    def literal_processor(self, dialect):
        return lambda value: f"decode('{bytes(value).hex()}', 'hex')"


class _Bytea(bytes):
    """A bytea key value: `sa.literal()` gives it the type above."""

    __sa_type_engine__ = _ByteaLiteral()


class PostgresConnector(SqlConnector):
    default_schema = "public"
    #: what a read imports (the sync engine loads them early: engine._warm_up_reads)
    read_modules = ("adbc_driver_manager", "adbc_driver_postgresql")

    def __init__(self, spec):
        super().__init__(spec)
        self._adbc = None
        self._socket: socket.socket | None = None  # a duplicate of the ADBC connection's socket (abort)
        self._catalog: dict[StreamRef, dict[str, pg_types.SourceColumn]] = {}
        self._money_digits: int | None = None
        self._read_counts: dict[tuple[StreamRef, ChunkRange], dict[str, dict[str, int]]] = {}
        self._read_notes: dict[StreamRef, set[str]] = {}

    @property
    def _where(self) -> str:
        return f"{self.spec.option('host', 'localhost')}:{self.spec.option('port', 5432)}"

    def sqlalchemy_url(self) -> sa.URL:
        return sa.URL.create(
            "postgresql+psycopg",
            username=self.spec.option("username"),
            password=self.spec.password,
            host=self.spec.option("host", "localhost"),
            port=int(self.spec.option("port", 5432)),
            database=self.spec.option("database"),
        )

    def _session_parameters(self) -> dict[str, Any]:
        """libpq parameters of every connection: the connector's timeouts (Timeouts) and
        TCP keepalives, so no wait on the server or the network is endless."""
        t = Timeouts.from_options(self.spec.options)
        options = (f"-c TimeZone=UTC -c statement_timeout={int(t.statement * 1000)} "
                   f"-c lock_timeout={int(t.lock * 1000)}")
        return {"connect_timeout": max(2, int(round(t.connect))), "options": options, "keepalives": 1,
                "keepalives_idle": max(1, int(t.keepalive)), "keepalives_interval": 10, "keepalives_count": 3}

    def engine_options(self) -> dict[str, Any]:
        return {"connect_args": self._session_parameters()}

    def _adbc_uri(self) -> str:
        user = quote(self.spec.option("username") or "", safe="")
        password = quote(self.spec.password or "", safe="")
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        host = self.spec.option("host", "localhost")
        database = quote(self.spec.option("database") or "", safe="")
        query = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in self._session_parameters().items())
        return f"postgresql://{auth}{host}:{int(self.spec.option('port', 5432))}/{database}?{query}"

    def translate_error(self, exc: BaseException, what: str) -> EsgError:
        state = getattr(exc, "sqlstate", None) or ""
        text = str(exc).lower()
        database = self.spec.option("database")
        user = self.spec.option("username")
        if state in _AUTH or "password authentication failed" in text or "no password supplied" in text:
            return AuthenticationFailed(f"{what}: PostgreSQL at {self._where} refused the user '{user}' (authentication failed).", code=state or None)
        if state == "3D000" or ("database" in text and "does not exist" in text):
            return DatabaseMissing(f"{what}: the database '{database}' does not exist on {self._where}.", code=state or None)
        if state == "42501" or "permission denied" in text:
            return PermissionDenied(f"{what}: the user '{user}' lacks permission ({_first_line(exc)}).", code=state or None)
        if state == "42P01" or ("relation" in text and "does not exist" in text):
            return TableMissing(f"{what}: the table no longer exists in the source.", code=state or None)
        if state in ("42703", "42804", "22P02") or ("column" in text and "does not exist" in text):
            return SchemaDrift(f"{what}: the table's columns changed in the source ({_first_line(exc)}).", code=state or None)
        if state == "55P03" or "lock timeout" in text:
            return TransientSourceError(
                f"{what}: the table is locked by another session in PostgreSQL at {self._where} "
                f"(waited {Timeouts.from_options(self.spec.options).lock:.0f} s, the connector's lock_timeout).",
                hint="Someone holds a lock on the table (e.g. LOCK TABLE, ALTER TABLE, VACUUM FULL). "
                     "Sync again when it is released, or ask a database administrator which session holds it.",
                code=state or None)
        if state == "57014" and "statement timeout" in text:
            return TransientSourceError(
                f"{what}: the query ran longer than the connector's statement_timeout "
                f"({Timeouts.from_options(self.spec.options).statement:.0f} s) on {self._where}.",
                hint="Use a smaller chunk_size, or raise statement_timeout.", code=state)
        if state.startswith(_TRANSIENT_PREFIXES) or any(w in text for w in _TRANSIENT_WORDS):
            if "connection refused" in text or "could not translate host name" in text or "could not connect" in text:
                return SourceUnreachable(f"{what}: PostgreSQL at {self._where} cannot be reached.", code=state or None)
            return TransientSourceError(f"{what}: the connection to PostgreSQL at {self._where} was lost ({_first_line(exc)}).", code=state or None)
        if "could not translate host name" in text or "name or service not known" in text:
            return SourceUnreachable(f"{what}: the host of {self._where} is unknown.", code=state or None)
        return SourceError(f"{what} failed: {_first_line(exc)}", code=state or None)

    def row_estimates(self, conn: sa.Connection, schema: str | None) -> dict[str, int]:
        rows = conn.execute(
            sa.text(
                "SELECT c.relname, c.reltuples::bigint FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = :schema AND c.relkind IN ('r', 'p')"
            ),
            {"schema": schema},
        )
        return {name: int(n) for name, n in rows if n is not None and n >= 0}

    # --- types: connectors/pg_types.py decides, per column, what the query selects and
    # how each Arrow batch is fixed ---------------------------------------------------------
    # Performance: ADBC turns PostgreSQL's binary numeric into text in C, slowly. Three
    # numeric(14,3) columns of 1,000,000 rows took 2.1-2.7 s through ADBC here, against
    # 0.5 s for psql's binary COPY of the same columns, and were the largest single cost
    # of a sync of a wide ERP table. For numeric(p, s) with p <= 18 the server sends
    # (value * 10^s)::bigint instead, and the int64 column is viewed as decimal128(p, s):
    # the same unscaled integers, exact, no text in between.

    def _source_columns(self, stream: StreamRef) -> dict[str, pg_types.SourceColumn]:
        if stream not in self._catalog:
            with self.errors(f"Reading the column types of {stream.qualified}"), self.engine.connect() as conn:
                rows = conn.execute(sa.text(pg_types.CATALOG_SQL),
                                    {"schema": stream.schema or self.schema, "table": stream.table}).all()
            self._catalog[stream] = pg_types.source_columns(rows)
        return self._catalog[stream]

    def _money_scale(self) -> int:
        """Fraction digits of money under the server's lc_monetary (2 for most locales)."""
        if self._money_digits is None:
            with self.errors("Reading the money format"), self.engine.connect() as conn:
                self._money_digits = int(conn.execute(sa.text("SELECT scale(1::money::numeric)")).scalar_one())
        return self._money_digits

    def _column_read(self, t: sa.TableClause, name: str) -> _ColumnRead:
        """The select expression of one column and the fix of its Arrow values."""
        column = t.c[name]
        source = self._source_columns(self._stream_of(t)).get(name)
        if source is None:  # a column the catalog does not know (yet): as ADBC reads it
            return _ColumnRead(column, pg_types.FIXES["plain"], None, None)
        rule = pg_types.rule_of(source)
        note = (f"{name}: type {source.typname} is not known to ESG Workbench and landed as text"
                if rule is pg_types.UNKNOWN else None)
        if source.element is None and source.typname == "numeric":
            shape = pg_types.numeric_shape(source.typmod)
            if shape is None:
                return _ColumnRead(sa.cast(column, _Named("double precision")).label(name), None, None, None)
            precision, scale = shape
            if precision <= 18:
                scaled = sa.cast(column * sa.literal_column(str(10 ** scale)), sa.BigInteger)
                expr = sa.case((column == sa.literal_column("'NaN'"),
                                sa.literal_column(str(pg_types.NAN_SENTINEL))), else_=scaled).label(name)
                return _ColumnRead(expr, functools.partial(pg_types._scaled, precision=precision, scale=scale),
                                   None, None)
            import pyarrow as pa

            # decimal256 beyond 38 digits: exact here (keys, checkpoints); the workspace
            # decides how to hold it (raw_tables: text in DuckDB)
            target = pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
            return _ColumnRead(column, functools.partial(pg_types._nan_to_null, target=target), None, None)
        if source.element is None and source.typname == "money":
            return _ColumnRead(column, functools.partial(pg_types._scaled, precision=19, scale=self._money_scale(),
                                                 nan_sentinel=False),
                               None, None)
        if rule.cast == "json":
            expr = sa.cast(sa.func.to_json(column), _Named("text")).label(name)
        elif rule.cast:
            expr = sa.cast(column, _Named(rule.cast)).label(name)
        else:
            expr = column
        return _ColumnRead(expr, pg_types.FIXES.get(rule.fix or "plain"), rule.workspace, note)

    def describe(self, streams: list[StreamRef] | None = None):
        """Types SQLAlchemy does not know (point, xml, pg_lsn, composites ...) are named as
        PostgreSQL names them, and families come from the type table (pg_types)."""
        for stream in streams or list(self._catalog):  # reads follow a re-discovery
            self._catalog.pop(stream, None)
        with warnings.catch_warnings():  # "Did not recognize type": named below from the catalog
            warnings.filterwarnings("ignore", message="Did not recognize type", category=sa.exc.SAWarning)
            infos = super().describe(streams)
        for info in infos:
            unknown = any(c.type == "NullType" for c in info.columns)
            catalog = self._source_columns(info.stream) if unknown else {}
            for i, column in enumerate(info.columns):
                source = catalog.get(column.name)
                if column.type == "NullType" and source is not None:
                    column = dataclasses.replace(column, type=source.declared, family=pg_types.rule_of(source).family)
                elif column.family == "other":
                    column = dataclasses.replace(column, family=pg_types.family_of_name(column.type) or "other")
                info.columns[i] = column
        return infos

    random_samples = True

    def random_sample_query(self, t: sa.TableClause, names: list[str], limit: int,
                            estimate: int | None) -> sa.Select:
        """A large table is sampled by TABLESAMPLE SYSTEM (whole pages, read without a
        scan): about four times `limit` rows and at least 20 pages (rows of one page are
        alike), of which `limit` are kept at random; a small one is shuffled whole."""
        source = t
        if estimate and estimate > 20 * limit:
            query = sa.text("SELECT relpages FROM pg_class WHERE oid = to_regclass(quote_ident(:schema) || '.' || quote_ident(:table))")
            with self.errors("Measuring the table"), self.engine.connect() as conn:
                pages = conn.execute(query, {"schema": t.schema or self.schema, "table": t.name}).scalar() or 0
            percent = max(400.0 * limit / estimate, 2000.0 / pages if pages > 0 else 100.0)
            if percent < 100.0:
                source = t.tablesample(sa.func.system(round(percent, 4)))
        return sa.select(*[source.c[n] for n in names]).order_by(sa.func.random()).limit(limit)

    def sample_connection(self) -> sa.Connection:
        """Dates and timestamps Python cannot hold (infinity, BC, after 9999) come as
        PostgreSQL writes them, so a sample of such a table shows them instead of failing."""
        conn = self.engine.connect()
        adapters = conn.connection.driver_connection.adapters
        for name, loader in _lenient_loaders().items():
            adapters.register_loader(name, loader)
        return conn

    @staticmethod
    def _stream_of(t: sa.TableClause) -> StreamRef:
        return StreamRef(t.schema, t.name)

    def read_sql(self, stream: StreamRef, scope: ReadScope, chunk: ChunkRange) -> str:
        t, key_cols, conds = self._filtered(stream, scope, chunk)
        reads = [self._column_read(t, c) for c in scope.columns]
        query = sa.select(*[r.expr for r in reads]).select_from(t).where(*conds).order_by(*key_cols)
        return str(query.compile(dialect=self.literal_dialect, compile_kwargs={"literal_binds": True}))

    def read(self, stream: StreamRef, scope: ReadScope, chunk: ChunkRange,
             cancel: CancelToken | None = None) -> "Iterator[pa.RecordBatch]":
        what = f"Reading {stream.qualified} {chunk.describe()}"
        with self.errors(what):
            t = self.table_clause(stream, list(scope.columns))
            reads = [self._column_read(t, c) for c in scope.columns]
        counts: dict[str, dict[str, int]] = {}
        self._read_counts[(stream, chunk)] = counts  # a retried read starts its counts afresh
        self._read_notes.setdefault(stream, set()).update(r.note for r in reads if r.note)
        for batch in super().read(stream, scope, chunk, cancel):
            yield _apply_reads(batch, reads, counts)

    def read_warnings(self, stream: StreamRef) -> list[str]:
        """What the reads of `stream` since the last call landed differently from the
        source (counted per column), and the columns landed as text; then forgets them."""
        totals: dict[str, dict[str, int]] = {}
        for (s, _), counts in list(self._read_counts.items()):
            if s == stream:
                for column, per in counts.items():
                    for what, n in per.items():
                        totals.setdefault(column, {}).setdefault(what, 0)
                        totals[column][what] += n
                del self._read_counts[(s, _)]
        lines = [f"{column}: {n} {what}" for column, per in totals.items() for what, n in per.items()]
        return lines + sorted(self._read_notes.pop(stream, set()))

    # --- tables without a key: chunks are ranges of heap pages (ctid) -----------------------
    # As pg_dump and DuckDB's postgres scanner read them: `ctid >= '(lo,0)' AND ctid <
    # '(hi,0)'` is a TID range scan (PostgreSQL 14+), so each chunk reads only its pages and
    # memory stays bounded by the chunk size. Bounds are page numbers; the last chunk is
    # open, so pages added since planning are read too.

    def keyless_chunks(self, stream: StreamRef, scope: ReadScope, rows: int, chunk_size: int) -> list[ChunkRange]:
        query = sa.text("SELECT pg_relation_size(to_regclass(quote_ident(:schema) || '.' || quote_ident(:table))) "
                        "/ current_setting('block_size')::bigint")
        with self.errors(f"Measuring {stream.qualified}"), self.engine.connect() as conn:
            pages = int(conn.execute(query, {"schema": stream.schema or self.schema, "table": stream.table}).scalar() or 0)
        if rows <= chunk_size or pages <= 1:
            return [ChunkRange()]
        per_chunk = max(1, -(-pages * chunk_size // rows))  # pages holding about chunk_size rows
        edges = [None, *[(page,) for page in range(per_chunk, pages, per_chunk)], None]
        return [ChunkRange(lo, hi) for lo, hi in zip(edges, edges[1:])]

    def _filtered(self, stream: StreamRef, scope: ReadScope, chunk: ChunkRange | None):
        if scope.key or chunk is None or chunk.null_cursor or (chunk.lower is None and chunk.upper is None):
            return super()._filtered(stream, scope, chunk)
        t, key_cols, conds = super()._filtered(stream, scope, None)
        ctid = sa.literal_column("ctid")
        if chunk.lower is not None:
            conds.append(ctid >= sa.literal_column(f"'({int(chunk.lower[0])},0)'::tid"))
        if chunk.upper is not None:
            conds.append(ctid < sa.literal_column(f"'({int(chunk.upper[0])},0)'::tid"))
        return t, key_cols, conds

    def compare_prefix(self, columns: list[sa.ColumnElement], bound: tuple, op: str) -> sa.ColumnElement:
        bound = tuple(_Bytea(v) if isinstance(v, (bytes, bytearray, memoryview)) else v for v in bound)
        return prefix_compare(columns, bound, op)

    @property
    def literal_dialect(self) -> sa.Dialect:
        return type(self.engine.dialect)(paramstyle="named")  # no %% doubling for ADBC

    def _connection(self):
        if self._adbc is None:
            before = _server_sockets(self._server_address())
            self._adbc = _AdbcConnection(self._adbc_uri())
            self._socket = _own_socket(self._server_address(), before)
        return self._adbc

    def _server_address(self) -> tuple[str, int]:
        return str(self.spec.option("host", "localhost")), int(self.spec.option("port", 5432))

    def abort(self) -> None:
        """End a read under way from another thread (GuardedConnector, when it abandons a
        stalled or cancelled read): the read's socket is shut down, so libpq's wait
        returns at once with "server closed the connection" and the abandoned thread
        ends (and closes its connection) instead of waiting for TCP keepalives. Where the
        socket is unknown (not Linux; see _own_socket) the thread ends with its socket."""
        sock = self._socket
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _read_arrow(self, sql: str, cancel: CancelToken | None) -> "Iterator[pa.RecordBatch]":
        try:
            with self._connection().query(sql) as reader:
                empty = True
                for batch in reader:
                    if cancel is not None:
                        cancel.raise_if_cancelled()
                    empty = False
                    yield batch
                if empty:  # no rows: still the columns' types (an empty table lands typed)
                    import pyarrow as pa

                    yield pa.RecordBatch.from_pylist([], schema=reader.schema)
        except BaseException:
            self._drop_connection()  # a failed connection is not reused by the next chunk
            raise

    def _drop_connection(self) -> None:
        close_quietly(self._adbc)
        self._adbc = None
        sock, self._socket = self._socket, None
        close_quietly(sock)  # our duplicate of the descriptor, after libpq closed its own

    def close(self) -> None:
        self._drop_connection()
        super().close()


class _AdbcConnection:
    """ADBC's PostgreSQL driver through adbc_driver_manager's own objects rather than its
    DB-API module, which imports pyarrow.dataset (for bulk ingest, never used here):
    about 25 MB of memory and 0.1-0.4 s of start-up. ADBC connections are in autocommit
    mode: no session left "idle in transaction" between chunks, holding locks."""

    def __init__(self, uri: str):
        import adbc_driver_manager
        import adbc_driver_postgresql

        self._database = adbc_driver_postgresql.connect(uri)
        try:
            self._connection = adbc_driver_manager.AdbcConnection(self._database)
        except BaseException:
            self._database.close()
            raise

    @contextlib.contextmanager
    def query(self, sql: str) -> "Iterator[pa.RecordBatchReader]":
        """The result of `sql` as a reader of Arrow record batches (ADBC's COPY binary)."""
        import adbc_driver_manager
        import pyarrow as pa

        statement = adbc_driver_manager.AdbcStatement(self._connection)
        try:
            statement.set_sql_query(sql)
            stream, _ = statement.execute_query()
            reader = pa.RecordBatchReader._import_from_c(stream.address)
            try:
                yield reader
            finally:
                reader.close()
        finally:
            statement.close()

    def close(self) -> None:
        try:
            self._connection.close()
        finally:
            self._database.close()


def _server_sockets(address: tuple[str, int]) -> dict[int, tuple[int, int]]:
    """This process's TCP sockets connected to `address`: descriptor -> (device, inode).
    Linux only (/proc/self/fd); elsewhere empty, and abort() has nothing to shut down."""
    found: dict[int, tuple[int, int]] = {}
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return found
    try:
        peers = {info[4][:2] for info in socket.getaddrinfo(address[0], address[1], proto=socket.IPPROTO_TCP)}
    except OSError:
        return found
    for name in fds:
        fd = int(name)
        try:
            st = os.fstat(fd)
            if not (st.st_mode & 0o170000 == 0o140000):  # S_IFSOCK
                continue
            with socket.socket(fileno=os.dup(fd)) as probe:
                if probe.type != socket.SOCK_STREAM or probe.getpeername()[:2] not in peers:
                    continue
        except (OSError, ValueError):
            continue
        found[fd] = (st.st_dev, st.st_ino)
    return found


def _own_socket(address: tuple[str, int], before: dict[int, tuple[int, int]]) -> "socket.socket | None":
    """A duplicate of the socket a connection just opened: the one socket to the
    server that is new since `before`. When another thread connected to the same server
    at the same moment (two new sockets), none: better no abort than shutting down
    another connection's socket."""
    new = [fd for fd, ident in _server_sockets(address).items() if before.get(fd) != ident]
    if len(new) != 1:
        return None
    with contextlib.suppress(OSError):
        return socket.socket(fileno=os.dup(new[0]))
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@functools.lru_cache(maxsize=1)
def _lenient_loaders() -> dict[str, type]:
    import psycopg
    from psycopg.types import datetime as pgdt

    def lenient(base: type) -> type:
        class Lenient(base):
            def load(self, data):
                try:
                    return super().load(data)
                except psycopg.DataError:  # out of Python's range: the text itself
                    return bytes(data).decode()

        return Lenient

    return {"date": lenient(pgdt.DateLoader), "timestamp": lenient(pgdt.TimestampLoader),
            "timestamptz": lenient(pgdt.TimestamptzLoader)}


class _Named(sa.types.UserDefinedType):
    """A PostgreSQL type by its name, for CAST(... AS name) in read queries."""

    cache_ok = True

    def __init__(self, name: str):
        self.name = name

    def get_col_spec(self, **kw) -> str:
        return self.name


@dataclasses.dataclass(frozen=True)
class _ColumnRead:
    expr: sa.ColumnElement
    fix: Callable | None  # (array, column, counts) -> array
    workspace: str | None  # the workspace type its text is parsed into
    note: str | None  # said once with the run


def _apply_reads(batch: "pa.RecordBatch", reads: list[_ColumnRead], counts: dict) -> "pa.RecordBatch":
    """Each column fixed as its plan says; text meant for another workspace type carries it."""
    import pyarrow as pa

    arrays, fields = [], []
    for field, column, read in zip(batch.schema, batch.columns, reads):
        if read.fix is not None:
            column = read.fix(column, field.name, counts)
        if isinstance(column.type, pa.BaseExtensionType):  # never hand the workspace an extension
            column = column.storage
        metadata = {WORKSPACE_TYPE_KEY: read.workspace.encode()} if read.workspace else None
        arrays.append(column)
        fields.append(pa.field(field.name, column.type, True, metadata))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))
