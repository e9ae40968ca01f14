"""What every SQL source shares: discovery through SQLAlchemy's inspector, planning
queries, and the read query for a chunk.

A subclass names its SQLAlchemy URL, turns its driver's errors into SourceErrors, and
runs the read query on the fastest Arrow-native path its driver has (`_read_arrow`).
Identifiers are quoted by SQLAlchemy; values in read queries are rendered as literals
by the dialect (so drivers without parameter binding, such as ConnectorX, work alike).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Iterator

import sqlalchemy as sa

from esg_workbench.connectors.base import TranslatesErrors
from esg_workbench.core.errors import DatabaseMissing, EsgError, SourceError, TableMissing
from esg_workbench.core.specs import (
    CancelToken,
    ChunkRange,
    ColumnInfo,
    ConnectorSpec,
    ForeignKey,
    ReadScope,
    StreamRef,
    TableInfo,
)

if TYPE_CHECKING:
    import pyarrow as pa


def type_family(sa_type: sa.types.TypeEngine) -> str:
    """A coarse type family for planning and mapping."""
    checks = (
        (sa.Boolean, "boolean"),
        (sa.Integer, "integer"),
        (sa.Float, "float"),
        (sa.Numeric, "decimal"),
        (sa.DateTime, "timestamp"),
        (sa.Date, "date"),
        (sa.Time, "time"),
        (sa.Interval, "other"),
        (sa.JSON, "json"),
        (sa.LargeBinary, "binary"),
        (sa.types._Binary, "binary"),
        (sa.String, "text"),
    )
    for cls, family in checks:
        if isinstance(sa_type, cls):
            if family == "timestamp" and getattr(sa_type, "timezone", False):
                return "timestamptz"
            return family
    name = type(sa_type).__name__.lower()
    if "json" in name:
        return "json"
    if "uuid" in name:
        return "text"
    return "other"


def json_safe(value: Any) -> Any:
    """A sample value as something JSON can hold and a grid can show."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.timedelta):  # MySQL TIME, PostgreSQL interval: as those write durations
        sign, micros = ("-", -value) if value < dt.timedelta(0) else ("", value)
        minutes, seconds = divmod(int(micros.total_seconds()), 60)
        text = f"{sign}{minutes // 60:02d}:{minutes % 60:02d}:{seconds:02d}"
        return text + (f".{micros.microseconds:06d}" if micros.microseconds else "")
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return "0x" + data[:32].hex() + ("…" if len(data) > 32 else "")
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    return str(value)


def prefix_compare(columns: list[sa.ColumnElement], bound: tuple, op: str) -> sa.ColumnElement:
    """`(c1..ck) op (v1..vk)` for a bound of length k, as a row-value comparison."""
    cols = columns[: len(bound)]
    values = [sa.literal(v) for v in bound]
    left = cols[0] if len(cols) == 1 else sa.tuple_(*cols)
    right = values[0] if len(values) == 1 else sa.tuple_(*values)
    return {">": left > right, ">=": left >= right, "<": left < right}[op]


def expanded_prefix_compare(columns: list[sa.ColumnElement], bound: tuple, op: str,
                            literal=sa.literal) -> sa.ColumnElement:
    """The same comparison without row values, for databases that have none (SQL Server):
    `(a, b) > (x, y)` becomes `a > x OR (a = x AND b > y)`. `literal` makes the values."""
    cols = columns[: len(bound)]
    values = [literal(v) for v in bound]
    strict = {">": lambda c, v: c > v, ">=": lambda c, v: c > v, "<": lambda c, v: c < v}[op]
    last = {">": lambda c, v: c > v, ">=": lambda c, v: c >= v, "<": lambda c, v: c < v}[op]
    expr = last(cols[-1], values[-1])
    for c, v in zip(reversed(cols[:-1]), reversed(values[:-1])):
        expr = sa.or_(strict(c, v), sa.and_(c == v, expr))
    return expr


class SqlConnector(TranslatesErrors):
    #: the schema used when the connector names none (None: the database has none)
    default_schema: str | None = None

    def __init__(self, spec: ConnectorSpec):
        self.spec = spec
        self._engine: sa.Engine | None = None
        self._tables: dict[StreamRef, TableInfo] = {}

    # --- hooks for subclasses -------------------------------------------------------

    def sqlalchemy_url(self) -> sa.URL:
        raise NotImplementedError

    def engine_options(self) -> dict[str, Any]:
        return {}

    def translate_error(self, exc: BaseException, what: str) -> EsgError:
        """Turn a driver error into a SourceError with a plain message."""
        return SourceError(f"{what} failed: {type(exc).__name__}")

    def _read_arrow(self, sql: str, cancel: CancelToken | None) -> "Iterator[pa.RecordBatch]":
        raise NotImplementedError

    def window_start(self, column: sa.ColumnElement, window: str) -> sa.ColumnElement:
        """The start of the day, ISO week or month holding `column`, in UTC."""
        return sa.func.date_trunc(window, column)

    def row_estimates(self, conn: sa.Connection, schema: str | None) -> dict[str, int]:
        return {}

    def compare_prefix(self, columns: list[sa.ColumnElement], bound: tuple, op: str) -> sa.ColumnElement:
        """`(c1..ck) op (v1..vk)`; a dialect without row-value comparisons overrides this
        (e.g. with `expanded_prefix_compare`)."""
        return prefix_compare(columns, bound, op)

    def cursor_at_most(self, column: sa.ColumnElement, value: Any) -> sa.ColumnElement:
        """`column <= value`: the sync's upper bound on the cursor. A source whose
        timestamps are finer than Python's microseconds overrides this."""
        return column <= sa.literal(value)

    # --- plumbing ---------------------------------------------------------------------

    @property
    def schema(self) -> str | None:
        return self.spec.option("schema", self.default_schema)

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = sa.create_engine(
                self.sqlalchemy_url(), poolclass=sa.pool.NullPool, **self.engine_options()
            )
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def table_clause(self, stream: StreamRef, columns: list[str]) -> sa.TableClause:
        return sa.table(stream.table, *[sa.column(c) for c in columns], schema=stream.schema)

    def _table(self, stream: StreamRef) -> TableInfo:
        if stream not in self._tables:
            found = self.describe([stream])
            if not found:
                raise TableMissing(f"The table {stream.qualified} does not exist in the source (any more).")
        return self._tables[stream]

    # --- validate and discover ----------------------------------------------------------

    def validate(self) -> str:
        """Connect, check the schema exists and that a table of it can be read."""
        where = f"schema {self.schema}" if self.schema else "the database"
        with self.errors("Connecting"), self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            inspector = sa.inspect(conn)
            if self.schema is not None and self.schema not in inspector.get_schema_names():
                raise DatabaseMissing(f"The schema '{self.schema}' does not exist in the database.",
                                      hint="Check the schema name in the connector settings.")
            tables = inspector.get_table_names(schema=self.schema)
        if tables:
            first = self.table_clause(StreamRef(self.schema, tables[0]), [])
            with self.errors(f"Reading {where}"), self.engine.connect() as conn:
                conn.execute(sa.select(sa.literal(1)).select_from(first).limit(1)).all()
        return f"Connected. {len(tables)} tables readable in {where}."

    def list_streams(self) -> list[StreamRef]:
        with self.errors("Listing tables"), self.engine.connect() as conn:
            names = sa.inspect(conn).get_table_names(schema=self.schema)
        return [StreamRef(self.schema, name) for name in sorted(names)]

    def describe(self, streams: list[StreamRef] | None = None) -> list[TableInfo]:
        wanted = None if streams is None else {s.table for s in streams}
        with self.errors("Reading the schema"), self.engine.connect() as conn:
            inspector = sa.inspect(conn)
            names = inspector.get_table_names(schema=self.schema)
            if wanted is not None:
                names = [n for n in names if n in wanted]
            if not names:
                return []
            kw = {"schema": self.schema, "filter_names": names}
            columns = inspector.get_multi_columns(**kw)
            pks = inspector.get_multi_pk_constraint(**kw)
            fks = inspector.get_multi_foreign_keys(**kw)
            estimates = self.row_estimates(conn, self.schema)
        infos = []
        for name in sorted(names):
            key = (self.schema, name)
            pk = list(pks.get(key, {}).get("constrained_columns") or [])
            cols = [
                ColumnInfo(
                    name=c["name"],
                    type=self._type_name(c["type"]),
                    nullable=bool(c.get("nullable", True)),
                    primary_key=c["name"] in pk,
                    family=type_family(c["type"]),
                )
                for c in columns.get(key, [])
            ]
            info = TableInfo(
                stream=StreamRef(self.schema, name),
                columns=cols,
                primary_key=pk,
                foreign_keys=[
                    ForeignKey(
                        tuple(fk["constrained_columns"]),
                        fk.get("referred_schema"),
                        fk["referred_table"],
                        tuple(fk["referred_columns"]),
                    )
                    for fk in fks.get(key, [])
                ],
                row_estimate=estimates.get(name),
            )
            self._tables[info.stream] = info
            infos.append(info)
        return infos

    def _type_name(self, sa_type: sa.types.TypeEngine) -> str:
        try:
            return sa_type.compile(dialect=self.engine.dialect)
        except Exception:  # some reflected types have no DDL rendering
            return str(type(sa_type).__name__)

    def sample_connection(self) -> sa.Connection:
        """The connection samples are read on; a driver that refuses some values (dates
        its language cannot hold) is told here to hand them over as text instead."""
        return self.engine.connect()

    #: whether sample(random=True) is known to work on this source (random_sample_query)
    random_samples = False

    def random_sample_query(self, t: sa.TableClause, names: list[str], limit: int,
                            estimate: int | None) -> sa.Select:
        """Up to `limit` rows picked at random: `ORDER BY random()` (a scan of the table);
        a source with a cheaper way (TABLESAMPLE) overrides this."""
        return sa.select(*[t.c[n] for n in names]).order_by(sa.func.random()).limit(limit)

    def sample(self, stream: StreamRef, limit: int, random: bool = False) -> list[dict[str, Any]]:
        """The first `limit` rows, or (`random`) up to `limit` rows picked at random."""
        info = self._table(stream)
        names = [c.name for c in info.columns]
        t = self.table_clause(stream, names)
        if random:
            query = self.random_sample_query(t, names, limit, info.row_estimate)
        else:
            query = sa.select(*[t.c[n] for n in names]).limit(limit)
        with self.errors(f"Reading sample rows of {stream.qualified}"), self.sample_connection() as conn:
            rows = conn.execute(query).fetchall()
        return [{n: json_safe(v) for n, v in zip(names, row)} for row in rows]

    # --- planning ------------------------------------------------------------------------

    def _filtered(self, stream: StreamRef, scope: ReadScope, chunk: ChunkRange | None):
        """The table clause, the key columns and the WHERE conditions of a scope/chunk."""
        names = list(dict.fromkeys([*scope.columns, *scope.key] + ([scope.cursor_field] if scope.cursor_field else [])))
        t = self.table_clause(stream, names)
        conds: list[sa.ColumnElement] = []
        key = list(scope.key)
        if chunk is not None and chunk.null_cursor:
            conds.append(t.c[scope.cursor_field].is_(None))
            key = [k for k in key if k != scope.cursor_field]
        else:
            if scope.cursor_field and scope.cursor_field in key:
                conds.append(t.c[scope.cursor_field].is_not(None))
            if scope.after is not None:
                op = ">=" if scope.after_inclusive else ">"
                conds.append(self.compare_prefix([t.c[k] for k in key], scope.after, op))
            if scope.cursor_max is not None:
                conds.append(self.cursor_at_most(t.c[scope.cursor_field], scope.cursor_max))
        key_cols = [t.c[k] for k in key]
        if chunk is not None:
            if chunk.lower is not None:
                conds.append(self.compare_prefix(key_cols, chunk.lower, ">="))
            if chunk.upper is not None:
                conds.append(self.compare_prefix(key_cols, chunk.upper, "<"))
        return t, key_cols, conds

    def _scalar_row(self, query, what: str):
        with self.errors(what), self.engine.connect() as conn:
            return conn.execute(query).one()

    def cursor_max(self, stream: StreamRef, cursor_field: str) -> Any:
        t = self.table_clause(stream, [cursor_field])
        return self._scalar_row(sa.select(sa.func.max(t.c[cursor_field])), f"Reading the latest {cursor_field} of {stream.qualified}")[0]

    def count(self, stream: StreamRef, scope: ReadScope, within: ChunkRange | None = None) -> int:
        t, _, conds = self._filtered(stream, scope, within)
        return int(self._scalar_row(sa.select(sa.func.count()).select_from(t).where(*conds), f"Counting rows of {stream.qualified}")[0])

    def key_range(self, stream: StreamRef, scope: ReadScope) -> tuple[Any, Any, int]:
        t, key_cols, conds = self._filtered(stream, scope, None)
        col = key_cols[0]

        # The first and last value by ORDER BY, not min()/max(): PostgreSQL has no min or
        # max of uuid or bytea (common key types), and a key's index answers either way.
        def end(order) -> sa.ScalarSelect:
            return sa.select(col).select_from(t).where(*conds, col.is_not(None)).order_by(order).limit(1).scalar_subquery()

        row = self._scalar_row(
            sa.select(end(col.asc()), end(col.desc()),
                      sa.select(sa.func.count()).select_from(t).where(*conds).scalar_subquery()),
            f"Measuring {stream.qualified}",
        )
        return row[0], row[1], int(row[2])

    def modulo(self, value: sa.ColumnElement, divisor: int) -> sa.ColumnElement:
        """`value % divisor`; a dialect without the operator overrides this."""
        return value % divisor

    def boundaries(self, stream: StreamRef, scope: ReadScope, every: int,
                   within: ChunkRange | None = None) -> list[tuple]:
        """Every `every`-th key of the scope, in key order: the bounds of key chunks."""
        t, key_cols, conds = self._filtered(stream, scope, within)
        rn = sa.func.row_number().over(order_by=key_cols).label("_rn")
        inner = sa.select(*key_cols, rn).select_from(t).where(*conds).subquery()
        cols = [inner.c[c.name] for c in key_cols]
        query = (
            sa.select(*cols)
            .where(inner.c._rn > 1, self.modulo(inner.c._rn - 1, every) == 0)
            .order_by(*cols)
        )
        with self.errors(f"Planning chunks of {stream.qualified}"), self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(query)]

    def window_counts(self, stream: StreamRef, scope: ReadScope, window: str) -> list[tuple[Any, int]]:
        t, _, conds = self._filtered(stream, scope, None)
        start = self.window_start(t.c[scope.cursor_field], window).label("_w")
        query = sa.select(start, sa.func.count()).select_from(t).where(*conds).group_by(start).order_by(start)
        with self.errors(f"Planning time windows of {stream.qualified}"), self.engine.connect() as conn:
            return [(r[0], int(r[1])) for r in conn.execute(query)]

    def null_cursor_count(self, stream: StreamRef, cursor_field: str) -> int:
        t = self.table_clause(stream, [cursor_field])
        query = sa.select(sa.func.count()).select_from(t).where(t.c[cursor_field].is_(None))
        return int(self._scalar_row(query, f"Counting rows of {stream.qualified}")[0])

    # --- reading ---------------------------------------------------------------------------

    def read_sql(self, stream: StreamRef, scope: ReadScope, chunk: ChunkRange) -> str:
        t, key_cols, conds = self._filtered(stream, scope, chunk)
        query = sa.select(*[t.c[c] for c in scope.columns]).select_from(t).where(*conds).order_by(*key_cols)
        return str(query.compile(dialect=self.literal_dialect, compile_kwargs={"literal_binds": True}))

    @property
    def literal_dialect(self) -> sa.Dialect:
        """The dialect that renders read queries with their values inline. A driver
        with `%` placeholders (psycopg, PyMySQL) doubles every `%`; the Arrow readers
        take the text as it is, so such subclasses return a dialect without them."""
        return self.engine.dialect

    def read(self, stream: StreamRef, scope: ReadScope, chunk: ChunkRange,
             cancel: CancelToken | None = None) -> "Iterator[pa.RecordBatch]":
        sql = self.read_sql(stream, scope, chunk)
        with self.errors(f"Reading {stream.qualified} {chunk.describe()}"):
            yield from self._read_arrow(sql, cancel)
