"""Every MySQL / MariaDB type lands faithfully (connectors/mysql_types.py), case by case.

One source table per type (family), holding edge values (minimum, maximum, zero dates,
empty, unicode, NULL), is synced in full and then as a delta (every row touched, every
value added again) into a DuckDB workspace, and compared value by value after each.
"""

from __future__ import annotations

import uuid

import pymysql
import pytest
import sqlalchemy as sa

from esg_workbench.connectors import mysql_types
from esg_workbench.core.specs import SyncStatus
from esg_workbench.sync import operations
from esg_workbench.sync.engine import SyncEngine, SyncRequest
from esg_workbench.workspace import open_workspace
from tests.conftest import MYSQL_HOST, MYSQL_PORT, MYSQL_USER, port_open, service_missing

# name: (column type, SQL literals, landed DuckDB type, expected values as DuckDB text)
CASES: dict[str, tuple[str, list[str], str, list]] = {
    "tinyint": ("TINYINT", ["-128", "127", "NULL"], "TINYINT", ["-128", "127", None]),
    "boolean": ("BOOLEAN", ["TRUE", "FALSE", "7"], "TINYINT", ["1", "0", "7"]),
    "int_unsigned": ("INT UNSIGNED", ["0", "4294967295"], "UINTEGER", ["0", "4294967295"]),
    "bigint": ("BIGINT", ["-9223372036854775808", "9223372036854775807"], "BIGINT",
               ["-9223372036854775808", "9223372036854775807"]),
    "bigint_unsigned": ("BIGINT UNSIGNED", ["18446744073709551615", "0"], "UBIGINT", ["18446744073709551615", "0"]),
    "decimal_10_2": ("DECIMAL(10,2)", ["-99999999.99", "99999999.99", "0", "NULL"], "DECIMAL(10,2)",
                     ["-99999999.99", "99999999.99", "0.00", None]),
    "decimal_24_4": ("DECIMAL(24,4)", ["99999999999999999999.9999", "-12345678901234567890.1234", "0.0001"],
                     "DECIMAL(24,4)", ["99999999999999999999.9999", "-12345678901234567890.1234", "0.0001"]),
    "decimal_28_0": ("DECIMAL(28,0)", ["9999999999999999999999999999", "-1"], "DECIMAL(28,0)",
                     ["9999999999999999999999999999", "-1"]),
    "decimal_30_15": ("DECIMAL(30,15)", ["-0.000000000000001", "999999999999999.999999999999999"], "DECIMAL(30,15)",
                      ["-0.000000000000001", "999999999999999.999999999999999"]),
    "decimal_38_38": ("DECIMAL(38,38)", ["0.99999999999999999999999999999999999999", "-0.00000000000000000000000000000000000001"],
                      "DECIMAL(38,38)", [".99999999999999999999999999999999999999",  # DuckDB prints no 0
                                         "-.00000000000000000000000000000000000001"]),
    "decimal_65_30": ("DECIMAL(65,30)", ["99999999999999999999999999999999999.999999999999999999999999999999",
                                         "-0.000000000000000000000000000001", "NULL"],
                      "VARCHAR", ["99999999999999999999999999999999999.999999999999999999999999999999",
                                  "-0.000000000000000000000000000001", None]),
    "double": ("DOUBLE", ["-1.7976931348623157E308", "2.2250738585072014E-308", "0"], "DOUBLE",
               ["-1.7976931348623157e+308", "2.2250738585072014e-308", "0.0"]),
    "date": ("DATE", ["'1000-01-01'", "'9999-12-31'", "'0000-00-00'", "'2024-00-00'", "'2024-02-29'", "NULL"], "DATE",
             ["1000-01-01", "9999-12-31", None, None, "2024-02-29", None]),
    "datetime": ("DATETIME(6)", ["'1000-01-01 00:00:00.000000'", "'9999-12-31 23:59:59.999999'",
                                 "'0000-00-00 00:00:00'", "NULL"],
                 "TIMESTAMP", ["1000-01-01 00:00:00", "9999-12-31 23:59:59.999999", None, None]),
    "timestamp": ("TIMESTAMP(6) NULL", ["'1970-01-01 00:00:01'", "'2038-01-19 03:14:07.999999'",
                                        "'0000-00-00 00:00:00'"],
                  "TIMESTAMP", ["1970-01-01 00:00:01", "2038-01-19 03:14:07.999999", None]),
    "time": ("TIME(6)", ["'-838:59:59.999999'", "'838:59:59.999999'", "'-00:00:00.000001'", "'24:00:00'",
                         "'00:00:00'", "NULL"],
             "INTERVAL", ["-838:59:59.999999", "838:59:59.999999", "-00:00:00.000001", "24:00:00", "00:00:00", None]),
    "year": ("YEAR", ["1901", "2155", "0"], "SMALLINT", ["1901", "2155", "0"]),
    "varchar": ("VARCHAR(20)", ["''", "'ü 😀 \\\\ '''", "NULL"], "VARCHAR", ["", "ü 😀 \\ '", None]),
    "text": ("LONGTEXT", ["REPEAT('ü', 70000)"], "VARCHAR", ["ü" * 70000]),
    "enum": ("ENUM('a', 'ü 😀')", ["'a'", "'ü 😀'", "NULL"], "VARCHAR", ["a", "ü 😀", None]),
    "set": ("SET('x', 'y')", ["'x,y'", "''"], "VARCHAR", ["x,y", ""]),
    "json": ("JSON", ["'{\"k\": [1, \"ü\"]}'", "'null'"], "VARCHAR", ['{"k": [1, "ü"]}', "null"]),
    "blob": ("BLOB", ["x'00ff'", "x''", "NULL"], "BLOB", ["\\x00\\xFF", "", None]),
    "bit": ("BIT(5)", ["b'00101'", "b'11111'", "b'0'", "NULL"], "BIT", ["00101", "11111", "00000", None]),
    "bit64": ("BIT(64)", ["b'1000000000000000000000000000000000000000000000000000000000000001'"], "BIT",
              ["1000000000000000000000000000000000000000000000000000000000000001"]),
    "uuid": ("UUID", ["'123e4567-e89b-12d3-a456-426614174000'", "'00000000-0000-0000-0000-000000000000'", "NULL"],
             "UUID", ["123e4567-e89b-12d3-a456-426614174000", "00000000-0000-0000-0000-000000000000", None]),
    "inet6": ("INET6", ["'::1'", "'2001:db8::ff00:42:8329'", "'::ffff:1.2.3.4'"], "VARCHAR",
              ["::1", "2001:db8::ff00:42:8329", "::ffff:1.2.3.4"]),
    "inet4": ("INET4", ["'0.0.0.0'", "'255.255.255.255'"], "VARCHAR", ["0.0.0.0", "255.255.255.255"]),
    "point": ("POINT", ["POINT(1, 2)"], "BLOB", ["\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\xF0?"
                                                 "\\x00\\x00\\x00\\x00\\x00\\x00\\x00@"]),
}

WARNINGS = {
    "date": ["v: 2 zero dates landed as NULL"],
    "datetime": ["v: 1 zero dates landed as NULL"],
    "timestamp": ["v: 1 zero dates landed as NULL"],
}


@pytest.fixture(scope="module")
def source_db():
    if not port_open(MYSQL_HOST, MYSQL_PORT):
        service_missing(f"MariaDB on {MYSQL_HOST}:{MYSQL_PORT}")
    name = f"esg_types_{uuid.uuid4().hex[:10]}"
    admin = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER, autocommit=True, charset="utf8mb4")
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        cur.execute(f"USE `{name}`")
        cur.execute("SET SESSION sql_mode = ''")  # zero dates are accepted, as many old servers do
        for case, (my_type, literals, _, _) in CASES.items():
            cur.execute(f"CREATE TABLE `t_{case}` (id INT PRIMARY KEY, v {my_type}, "
                        "updated_at DATETIME(6) NOT NULL DEFAULT '2024-01-01')")
            for i, literal in enumerate(literals):
                cur.execute(f"INSERT INTO `t_{case}` (id, v) VALUES ({i}, {literal})")
    try:
        yield name, admin
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


def _sync(ws, **kw):
    return SyncEngine(ws, retry_delays=(0.01,)).run(SyncRequest(connector="my", **kw))


def _landed(ws, raw_table: str) -> tuple[str, list]:
    with ws.read() as conn:
        type_ = conn.execute(sa.text("SELECT data_type FROM information_schema.columns "
                                     "WHERE table_name = :t AND column_name = 'v'"), {"t": raw_table}).scalar_one()
        values = [r[0] for r in conn.execute(sa.text(f'SELECT CAST(v AS VARCHAR) FROM "{raw_table}" ORDER BY id'))]
    return type_, values


@pytest.fixture(scope="module")
def synced(source_db, tmp_path_factory):
    name, admin = source_db
    ws = open_workspace(f"duckdb:///{tmp_path_factory.mktemp('mytypes')}/ws.duckdb")
    operations.add_connector(ws, "my", "mysql", {
        "host": MYSQL_HOST, "port": MYSQL_PORT, "database": name, "username": MYSQL_USER,
        "cursor_field": "updated_at"})
    full = _sync(ws)
    assert full.status is SyncStatus.SUCCESS, full.error
    after_full = {s.stream.split(".")[-1][2:]: (_landed(ws, s.raw_table), s.warnings) for s in full.streams}
    with admin.cursor() as cur:
        cur.execute(f"USE `{name}`")
        cur.execute("SET SESSION sql_mode = ''")
        for case in CASES:
            cur.execute(f"UPDATE `t_{case}` SET updated_at = '2024-02-01'")
            cur.execute(f"INSERT INTO `t_{case}` (id, v, updated_at) SELECT id + 100, v, '2024-02-02' FROM `t_{case}`")
    delta = _sync(ws, load_type="delta")
    assert delta.status is SyncStatus.SUCCESS, delta.error
    after_delta = {s.stream.split(".")[-1][2:]: (_landed(ws, s.raw_table), s.rows_written, s.warnings)
                   for s in delta.streams}
    yield {"full": after_full, "delta": after_delta}
    ws.close()


@pytest.mark.parametrize("case", list(CASES))
def test_type_lands_faithfully_after_full_and_delta(synced, case):
    _, literals, landed_type, expected = CASES[case]
    (type_, values), warnings = synced["full"][case]
    assert type_ == landed_type
    assert values == expected
    assert warnings == WARNINGS.get(case, [])
    (type_, values), rows, warnings = synced["delta"][case]
    assert rows == 2 * len(literals)
    assert type_ == landed_type
    assert values == expected + expected
    # the delta read the zero dates again (each twice now): counted again, per column
    assert warnings == [w.replace(w.split()[1], str(2 * int(w.split()[1]))) for w in WARNINGS.get(case, [])]


def test_every_type_of_the_table_is_a_case_or_a_synonym():
    tested = {CASES[c][0].split("(")[0].split(" ")[0].lower() for c in CASES}
    synonyms = {"smallint", "mediumint", "int", "decimal", "float", "char", "tinytext", "text", "mediumtext",
                "binary", "varbinary", "tinyblob", "mediumblob", "longblob", "geometry", "linestring", "polygon",
                "multipoint", "multilinestring", "multipolygon", "geometrycollection", "geomcollection"}
    assert set(mysql_types.MYSQL_TYPES) - tested - synonyms == set()


def test_a_type_the_table_does_not_know_is_read_as_text():
    column = mysql_types.SourceColumn("v", "vector", "vector(3)")
    assert mysql_types.rule_of(column) is mysql_types.UNKNOWN
    assert (mysql_types.UNKNOWN.read, mysql_types.UNKNOWN.landed) == ("char", "VARCHAR (landed as text)")


def test_the_readme_lists_every_type_of_the_table():
    from pathlib import Path

    readme = Path(__file__).resolve().parent.parent.joinpath("README.md").read_text()
    section = readme[readme.index("MySQL / MariaDB (read by"):]
    section = section[:section.index("\n## ")]
    assert [t for t in mysql_types.MYSQL_TYPES if t not in section] == []


def test_a_time_column_landed_as_time_by_an_earlier_version_becomes_an_interval(mysql_conn, mysql_spec, workspace_url):
    """Earlier versions landed MySQL TIME as TIME: a delta into such a table converts the
    landed values (a plain TIME -> INTERVAL cast does not exist in DuckDB)."""
    with mysql_conn.cursor() as cur:
        cur.execute("CREATE TABLE shifts (id INT PRIMARY KEY, spent TIME, updated_at DATETIME NOT NULL)")
        cur.execute("INSERT INTO shifts VALUES (1, '10:30:01', '2024-01-01'), (2, NULL, '2024-01-01')")
    ws = open_workspace(workspace_url)
    try:
        operations.add_connector(ws, "my", "mysql", {**mysql_spec.options, "cursor_field": "updated_at",
                                                     "load_type": "delta"})
        raw = _sync(ws).streams[0].raw_table
        with ws.transaction() as conn:  # as the earlier version left it
            conn.exec_driver_sql(f'ALTER TABLE "{raw}" ALTER COLUMN spent TYPE TIME USING TIME \'00:00:00\' + spent')
        with mysql_conn.cursor() as cur:
            cur.execute("INSERT INTO shifts VALUES (3, '-838:59:59', '2024-02-01')")
        result = _sync(ws)
        assert result.status is SyncStatus.SUCCESS, result.error
        assert _landed_column(ws, raw, "spent") == ("INTERVAL", ["10:30:01", None, "-838:59:59"])
    finally:
        ws.close()


def _landed_column(ws, raw_table: str, column: str) -> tuple[str, list]:
    with ws.read() as conn:
        type_ = conn.execute(sa.text("SELECT data_type FROM information_schema.columns "
                                     "WHERE table_name = :t AND column_name = :c"), {"t": raw_table, "c": column}).scalar_one()
        values = [r[0] for r in conn.execute(sa.text(f'SELECT CAST("{column}" AS VARCHAR) FROM "{raw_table}" ORDER BY id'))]
    return type_, values


def test_a_postgresql_workspace_gets_the_same_values(mysql_conn, mysql_spec):
    """Through the PostgreSQL workspace's COPY path: intervals, bit strings, UUIDs, wide
    decimals and zero dates."""
    import psycopg

    from tests.conftest import PG_HOST, PG_PORT, PG_USER

    if not port_open(PG_HOST, PG_PORT):
        service_missing(f"PostgreSQL on {PG_HOST}:{PG_PORT}")
    with mysql_conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, tm TIME(6), b BIT(5), u UUID, d DECIMAL(65,30), dt DATE)")
        cur.execute("INSERT INTO t VALUES (1, '-838:59:59.999999', b'00101', '123e4567-e89b-12d3-a456-426614174000', "
                    "-0.000000000000000000000000000001, '0000-00-00'), (2, NULL, NULL, NULL, NULL, '2024-02-29')")
    name = f"esg_types_ws_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        ws = open_workspace(f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}")
        try:
            operations.add_connector(ws, "my", "mysql", mysql_spec.options)
            result = _sync(ws)
            assert result.status is SyncStatus.SUCCESS, result.error
            assert result.streams[0].warnings == ["dt: 1 zero dates landed as NULL"]
            with ws.read() as conn:
                rows = conn.execute(sa.text(f'SELECT tm::text, b::text, u::text, d::text, dt::text, '
                                            f'pg_typeof(tm)::text, pg_typeof(b)::text, pg_typeof(u)::text '
                                            f'FROM "{result.streams[0].raw_table}" ORDER BY id')).all()
            assert [tuple(r) for r in rows] == [
                ("-838:59:59.999999", "00101", "123e4567-e89b-12d3-a456-426614174000",
                 "-0.000000000000000000000000000001", None, "interval", "bit varying", "uuid"),
                (None, None, None, None, "2024-02-29", "interval", "bit varying", "uuid")]
        finally:
            ws.close()
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
