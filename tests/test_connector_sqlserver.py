"""SQL Server: no server can run on these machines, so these tests check the SQL the
connector would send (compiled for the mssql dialect, with the literals it renders) and
the driver's error handling (a refused connection through the real driver, and the
driver's own exception objects carrying SQL Server's messages)."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
import sqlalchemy as sa

pytest.importorskip("mssql_python")

from esg_workbench.connectors.registry import create_connector  # noqa: E402
from esg_workbench.core import errors  # noqa: E402
from esg_workbench.core.specs import (  # noqa: E402
    ChunkRange,
    ChunkStrategy,
    ColumnInfo,
    ConnectorSpec,
    LoadSettings,
    LoadType,
    ReadScope,
    StreamRef,
    TableInfo,
)
from tests.conftest import free_port  # noqa: E402

HOSTILE = StreamRef('odd "schema"]', "we]ird tab ünï")


class _Result:
    def __init__(self, rows):
        self.rows = rows

    def one(self):
        return self.rows[0]

    def all(self):
        return self.rows

    fetchall = all

    def __iter__(self):
        return iter(self.rows)


class _Conn:
    """Stands in for a connection: records each query as the mssql dialect renders it."""

    def __init__(self, engine):
        self.engine = engine

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, query, params=None):
        sql = str(query.compile(dialect=self.engine.dialect, compile_kwargs={"literal_binds": True}))
        self.engine.queries.append(sql)
        return _Result(self.engine.answers.pop(0) if self.engine.answers else [(None, None, 0)])


class _RecordingEngine:
    def __init__(self, dialect):
        self.dialect = dialect
        self.queries: list[str] = []
        self.answers: list[list[tuple]] = []

    def connect(self):
        return _Conn(self)

    def dispose(self):
        pass


def _connector(**options):
    spec = ConnectorSpec("sqlserver", "ms", {"host": "127.0.0.1", "database": "esg", "username": "esg", **options},
                         password="not-a-real-password")
    connector = create_connector(spec)
    dialect = sa.create_engine(connector.sqlalchemy_url(), **connector.engine_options()).dialect
    connector._engine = _RecordingEngine(dialect)
    info = TableInfo(
        stream=HOSTILE,
        columns=[
            ColumnInfo("select", "BIGINT", False, True, "integer"),
            ColumnInfo("my col", "NVARCHAR(20)", True, False, "text"),
            ColumnInfo("kwh", "DECIMAL(12, 3)", True, False, "decimal"),
            ColumnInfo("updated]at", "DATETIME2", False, False, "timestamp"),
            ColumnInfo("at_tz", "DATETIMEOFFSET", True, False, "timestamptz"),
            ColumnInfo("rv", "TIMESTAMP", False, False, "binary"),
        ],
        primary_key=["select"],
    )
    connector._tables[HOSTILE] = info
    return connector


COLUMNS = ("select", "my col", "kwh", "updated]at", "at_tz", "rv")


def test_url_uses_the_mssql_python_dialect_and_hides_nothing_in_options():
    connector = create_connector(ConnectorSpec("sqlserver", "ms", {"host": "db.example", "port": 1444,
                                                                    "database": "erp", "username": "u",
                                                                    "trust_server_certificate": "yes"}, password="pw"))
    url = connector.sqlalchemy_url()
    assert url.drivername == "mssql+mssqlpython" and url.port == 1444 and url.database == "erp"
    assert url.query["TrustServerCertificate"] == "yes" and url.query["Encrypt"] == "yes"
    assert connector.engine_options() == {"connect_args": {"timeout": 15}, "paramstyle": "qmark"}


def test_percent_signs_are_not_doubled_in_statements_sent_without_parameters():
    connector = _connector()
    scope = ReadScope(columns=("my col",), key=("my col",), after=("50% off",))
    assert "> N'50% off'" in connector.read_sql(HOSTILE, scope, ChunkRange())


def test_full_chunk_query_quotes_with_brackets_and_expands_row_values():
    connector = _connector()
    scope = ReadScope(columns=COLUMNS, key=("select",))
    sql = connector.read_sql(HOSTILE, scope, ChunkRange((1000,), (2000,)))
    assert "FROM [odd \"schema\"]]].[we]]ird tab ünï]" in sql
    assert "[select], [odd \"schema\"]]].[we]]ird tab ünï].[my col]" in sql or "[my col]" in sql
    assert "[updated]]at]" in sql
    assert re.search(r"\[select\] >= 1000 AND .*\[select\] < 2000", sql)
    assert sql.rstrip().endswith("ORDER BY [odd \"schema\"]]].[we]]ird tab ünï].[select]")


def test_delta_query_has_no_row_value_comparison_and_typed_full_precision_bounds():
    connector = _connector()
    after = dt.datetime(2024, 3, 1, 10, 0, 0, 123456)
    cursor_max = dt.datetime(2024, 3, 9, 23, 59, 59, 999999)
    scope = ReadScope(columns=COLUMNS, key=("updated]at", "select"), after=(after, 42),
                      cursor_field="updated]at", cursor_max=cursor_max)
    chunk = ChunkRange((dt.date(2024, 3, 4),), (dt.datetime(2024, 3, 6, 1, 2, 3, 4), 7))
    sql = connector.read_sql(HOSTILE, scope, chunk)
    flat = " ".join(sql.split())
    assert not re.search(r"\(\s*\[[^\]]*\]\s*,", flat.split("WHERE", 1)[1].split("ORDER BY")[0]), "row-value comparison"
    t = '[odd "schema"]]].[we]]ird tab ünï]'
    ts = f"{t}.[updated]]at]"
    # the checkpoint (cursor, id) > (after, 42), expanded
    assert (f"({ts} > CAST('2024-03-01 10:00:00.123456' AS datetime2(7)) OR "
            f"{ts} = CAST('2024-03-01 10:00:00.123456' AS datetime2(7)) AND {t}.[select] > 42)") in flat
    # the upper bound of the sync keeps rows whose sub-microsecond digits the maximum lost
    assert f"{ts} < DATEADD(microsecond, 1, CAST('2024-03-09 23:59:59.999999' AS datetime2(7)))" in flat
    # a window start (a date) and a (cursor, id) chunk bound
    assert f"{ts} >= CAST('2024-03-04' AS date)" in flat
    assert (f"({ts} < CAST('2024-03-06 01:02:03.000004' AS datetime2(7)) OR "
            f"{ts} = CAST('2024-03-06 01:02:03.000004' AS datetime2(7)) AND {t}.[select] < 7)") in flat
    assert f"{ts} IS NOT NULL" in flat
    assert flat.endswith(f"ORDER BY {ts}, {t}.[select]")


def test_literals_are_escaped_and_typed():
    connector = _connector()
    scope = ReadScope(columns=COLUMNS, key=("my col", "kwh"), after=("O'Brien]; DROP TABLE x;--", Decimal("1.250")))
    sql = " ".join(connector.read_sql(HOSTILE, scope, ChunkRange()).split())
    assert "N'O''Brien]; DROP TABLE x;--'" in sql and "1.250" in sql
    aware = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    scope = ReadScope(columns=COLUMNS, key=("at_tz", "select"), after=(aware, 1), cursor_field="at_tz")
    sql = " ".join(connector.read_sql(HOSTILE, scope, ChunkRange()).split())
    assert "CAST('2024-03-01 10:00:00.000000+00:00' AS datetimeoffset(7))" in sql  # compared in UTC


def test_rowversion_cursor_bounds_are_binary_literals_and_pages_by_key():
    connector = _connector()
    scope = ReadScope(columns=COLUMNS, key=("rv", "select"), after=(b"\x00\x00\x00\x00\x00\x00\x07\xd1", 5),
                      cursor_field="rv", cursor_max=b"\x00\x00\x00\x00\x00\x00\x0f\xa0")
    sql = " ".join(connector.read_sql(HOSTILE, scope, ChunkRange()).split())
    assert ".rv > 0x00000000000007d1 OR" in sql and ".rv <= 0x0000000000000fa0" in sql
    # planning: a rowversion cursor is paged by key ranges (boundaries), not time windows
    connector._engine.answers = [[(25_000,)], [(0,)], [(b"\x00" * 7 + b"\x10", 3), (b"\x00" * 7 + b"\x20", 9)]]
    settings = LoadSettings(load_type=LoadType.DELTA, cursor_field="rv", chunk_size=10_000)
    scope = ReadScope(columns=COLUMNS, key=("rv", "select"), cursor_field="rv", cursor_max=b"\xff" * 8,
                      include_null_cursor=True)
    chunks, _ = connector.plan_chunks(HOSTILE, scope, settings)
    assert [c.upper for c in chunks] == [(b"\x00" * 7 + b"\x10", 3), (b"\x00" * 7 + b"\x20", 9), None]
    boundaries = connector._engine.queries[-1]
    assert "row_number() OVER (ORDER BY" in boundaries and "% 10000 = 0" in boundaries
    assert "DATEADD" not in " ".join(connector._engine.queries)


@pytest.mark.parametrize("window, expected", [
    ("day", "CAST([updated]]at] AS date)"),
    ("week", "DATEADD(day, DATEDIFF(day, CAST('19000101' AS date), CAST([updated]]at] AS date)) - "
             "DATEDIFF(day, CAST('19000101' AS date), CAST([updated]]at] AS date)) % 7, CAST('19000101' AS date))"),
    ("month", "DATEFROMPARTS(YEAR(CAST([updated]]at] AS date)), MONTH(CAST([updated]]at] AS date)), 1)"),
])
def test_time_windows_without_datetrunc(window, expected):
    connector = _connector()
    connector._engine.answers = [[(dt.date(2024, 3, 1), 5), (dt.date(2024, 4, 1), 7)]]
    scope = ReadScope(columns=COLUMNS, key=("updated]at", "select"), cursor_field="updated]at",
                      cursor_max=dt.datetime(2024, 4, 30))
    counts = connector.window_counts(HOSTILE, scope, window)
    assert counts == [(dt.date(2024, 3, 1), 5), (dt.date(2024, 4, 1), 7)]
    sql = " ".join(connector._engine.queries[-1].split()).replace('[odd "schema"]]].[we]]ird tab ünï].', "")
    assert f"SELECT {expected} AS _w, count(*) AS count_1" in sql
    assert sql.endswith(f"GROUP BY {expected} ORDER BY _w")


def test_datetimeoffset_windows_are_taken_in_utc():
    connector = _connector()
    connector._engine.answers = [[]]
    scope = ReadScope(columns=COLUMNS, key=("at_tz", "select"), cursor_field="at_tz")
    connector.window_counts(HOSTILE, scope, "day")
    assert "CAST(SWITCHOFFSET([odd \"schema\"]]].[we]]ird tab ünï].at_tz, '+00:00') AS date)" in connector._engine.queries[-1]


def test_planning_queries_compile_for_the_dialect():
    connector = _connector()
    scope = ReadScope(columns=COLUMNS, key=("select",), cursor_field="updated]at",
                      cursor_max=dt.datetime(2024, 1, 1))
    connector._engine.answers = [[(dt.datetime(2024, 1, 1),)], [(12,)], [(1, 12, 12)], [(0,)]]
    connector.cursor_max(HOSTILE, "updated]at")
    connector.count(HOSTILE, scope)
    connector.key_range(HOSTILE, scope)
    connector.null_cursor_count(HOSTILE, "updated]at")
    q = [" ".join(s.split()) for s in connector._engine.queries]
    assert q[0].startswith("SELECT max([odd \"schema\"]]].[we]]ird tab ünï].[updated]]at]) AS max_1 FROM")
    assert "count(*)" in q[1] and "DATEADD(microsecond, 1," in q[1]
    # the key's ends by TOP 1 ... ORDER BY (no min()/max(): other databases lack them for some key types)
    assert q[2].count("SELECT TOP 1 ") == 2 and " ASC" in q[2] and " DESC" in q[2] and "count(*)" in q[2]
    assert q[3].endswith("[updated]]at] IS NULL")
    connector._engine.answers = [[(1, "a", None, None, None, None)]]
    connector.sample(HOSTILE, 5)
    assert connector._engine.queries[-1].startswith("SELECT TOP 5 ")


def test_plan_through_the_engine_planner_uses_id_ranges_for_full_loads():
    from esg_workbench.sync import planner

    connector = _connector()
    # key_range gives the count too; dense integers need no boundary query
    connector._engine.answers = [[(1, 30_000, 30_000)]]
    settings = LoadSettings(load_type=LoadType.FULL, chunk_strategy=ChunkStrategy.ID, chunk_size=10_000)
    scope = ReadScope(columns=COLUMNS, key=("select",))
    chunks, _ = planner.plan(connector, HOSTILE, scope, settings)
    assert [(c.lower, c.upper) for c in chunks] == [(None, (10_001,)), ((10_001,), (20_001,)), ((20_001,), None)]


# --- errors --------------------------------------------------------------------------------


def test_closed_port_is_unreachable_with_the_drivers_code():
    connector = create_connector(ConnectorSpec("sqlserver", "ms", {
        "host": "127.0.0.1", "port": free_port(), "database": "esg", "username": "esg", "login_timeout": 2,
        "trust_server_certificate": "yes"}, password="secret-pw-123"))
    try:
        with pytest.raises(errors.SourceUnreachable) as err:
            connector.validate()
    finally:
        connector.close()
    assert err.value.code == "08001" and "cannot be reached" in err.value.message
    assert err.value.transient and err.value.hint
    assert "secret-pw-123" not in err.value.describe()


def _driver_error(state: str, message: str):
    from mssql_python.exceptions import sqlstate_to_exception

    return sqlstate_to_exception(state, message)


@pytest.mark.parametrize("state, message, kind, code, words", [
    ("28000", "[Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Login failed for user 'esg'.",
     errors.AuthenticationFailed, "18456", "refused the login 'esg'"),
    ("42000", "[Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Cannot open database \"erp\" requested by "
              "the login. The login failed.", errors.DatabaseMissing, "4060", "database 'esg'"),
    ("42000", "[Microsoft][ODBC Driver 18 for SQL Server][SQL Server]The SELECT permission was denied on the "
              "object 'readings', database 'erp', schema 'dbo'.", errors.PermissionDenied, "229", "lacks permission"),
    ("42S02", "[Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Invalid object name 'dbo.readings'.",
     errors.TableMissing, "208", "no longer exists"),
    ("42S22", "[Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Invalid column name 'kwh'.",
     errors.SchemaDrift, "207", "columns changed"),
    ("40001", "[Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Transaction (Process ID 57) was deadlocked "
              "on lock resources with another process and has been chosen as the deadlock victim. Rerun the "
              "transaction.", errors.TransientSourceError, "1205", "deadlock victim"),
    ("HYT00", "[Microsoft][ODBC Driver 18 for SQL Server]Query timeout expired", errors.TransientSourceError,
     "-2", "query timeout"),
    ("HYT00", "[Microsoft][ODBC Driver 18 for SQL Server]Login timeout expired", errors.TransientSourceError,
     "258", "timeout"),
    ("08S01", "[Microsoft][ODBC Driver 18 for SQL Server]TCP Provider: An existing connection was forcibly "
              "closed by the remote host.", errors.TransientSourceError, "08S01", "forcibly closed"),
])
def test_sql_server_errors_are_translated(state, message, kind, code, words):
    connector = _connector()
    exc = _driver_error(state, message)
    assert exc is not None
    translated = connector.translate_error(exc, "Reading dbo.readings")
    assert type(translated) is kind, translated.describe()
    assert translated.code == code and words in translated.message
    assert translated.transient == kind.transient


def test_pymssql_style_error_numbers_are_read_too():
    connector = _connector()

    class OperationalError(Exception):
        pass

    exc = OperationalError(18456, b"Login failed for user 'esg'.DB-Lib error message 20018, severity 14")
    translated = connector.translate_error(exc, "Connecting")
    assert isinstance(translated, errors.AuthenticationFailed) and translated.code == "18456"
    exc = OperationalError(1205, b"Transaction (Process ID 51) was deadlocked on lock resources")
    assert connector.translate_error(exc, "Reading").transient


def test_unknown_driver_errors_do_not_leak_the_password():
    connector = _connector()
    exc = RuntimeError("boom with PWD=not-a-real-password in it")
    translated = connector.translate_error(exc, "Connecting")
    assert isinstance(translated, errors.SourceError)
    assert "not-a-real-password" not in translated.describe()
