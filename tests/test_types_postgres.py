"""Every PostgreSQL type lands faithfully (connectors/pg_types.py), case by case.

One source table per type (family), holding edge values (minimum, maximum, NaN,
infinities, empty, unicode, NULL), is synced in full and then as a delta (every row
touched, rows added) into a DuckDB workspace, and compared value by value after each.
Values landed as text are compared with PostgreSQL's own text form of the source value.
A PostgreSQL workspace gets the same values through its COPY path.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
import sqlalchemy as sa

from esg_workbench.connectors import pg_types
from esg_workbench.core.specs import SyncStatus
from esg_workbench.sync import operations
from esg_workbench.sync.engine import SyncEngine, SyncRequest
from esg_workbench.workspace import open_workspace
from tests.conftest import PG_HOST, PG_PORT, PG_USER, port_open, service_missing

SOURCE = object()  # expected: PostgreSQL's text form of the source value

# name: (column type, SQL literals, landed DuckDB type, expected values as DuckDB text)
CASES: dict[str, tuple[str, list[str], str, list | object]] = {
    "uuid": ("uuid", ["'00000000-0000-0000-0000-000000000000'", "'ffffffff-ffff-ffff-ffff-ffffffffffff'",
                      "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'", "NULL"],
             "UUID", ["00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff",
                      "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", None]),
    "inet": ("inet", ["'192.168.1.5/24'", "'::ffff:1.2.3.4'", "'0.0.0.0'", "NULL"], "VARCHAR", SOURCE),
    "cidr": ("cidr", ["'10.0.0.0/8'", "'2001:db8::/32'", "NULL"], "VARCHAR", SOURCE),
    "macaddr": ("macaddr", ["'08:00:2b:01:02:03'", "'FF-FF-FF-FF-FF-FF'", "NULL"], "VARCHAR",
                ["08:00:2b:01:02:03", "ff:ff:ff:ff:ff:ff", None]),
    "macaddr8": ("macaddr8", ["'08:00:2b:01:02:03:04:05'", "NULL"], "VARCHAR", ["08:00:2b:01:02:03:04:05", None]),
    "timetz": ("timetz", ["'00:00:00+15:59'", "'23:59:59.999999-15:59'", "'10:30:00.123456+02'", "NULL"],
               "TIME WITH TIME ZONE", ["00:00:00+15:59", "23:59:59.999999-15:59", "10:30:00.123456+02", None]),
    "time": ("time", ["'00:00'", "'24:00:00'", "'23:59:59.999999'", "NULL"], "TIME",
             ["00:00:00", "24:00:00", "23:59:59.999999", None]),
    "interval": ("interval", ["'-178000000 years'", "'178000000 years'", "'1 day -00:00:00.000001'", "'0'", "NULL"],
                 "INTERVAL", ["-178000000 years", "178000000 years", "1 day -00:00:00.000001", "00:00:00", None]),
    "bit": ("bit(4)", ["B'0000'", "B'1111'", "B'1010'", "NULL"], "BIT", ["0000", "1111", "1010", None]),
    "varbit": ("varbit", ["B'1'", "B'1010101010101010101'", "B''", "NULL"], "BIT",
               ["1", "1010101010101010101", None, None]),
    "money": ("money", ["'-92233720368547758.08'", "'92233720368547758.07'", "'0.01'", "NULL"], "DECIMAL(19,2)",
              ["-92233720368547758.08", "92233720368547758.07", "0.01", None]),
    "numeric_10_2": ("numeric(10,2)", ["'NaN'", "99999999.99", "-99999999.99", "0", "NULL"], "DECIMAL(10,2)",
                     [None, "99999999.99", "-99999999.99", "0.00", None]),
    "numeric_30_10": ("numeric(30,10)", ["'NaN'", "99999999999999999999.9999999999", "-0.0000000001", "NULL"],
                      "DECIMAL(30,10)", [None, "99999999999999999999.9999999999", "-0.0000000001", None]),
    "numeric_50_5": ("numeric(50,5)", ["'123456789012345678901234567890123456789012345.12345'", "'NaN'", "NULL"],
                     "VARCHAR", ["123456789012345678901234567890123456789012345.12345", None, None]),
    "numeric": ("numeric", ["'NaN'", "'Infinity'", "'-Infinity'", "1.5", "NULL"], "DOUBLE",
                ["nan", "inf", "-inf", "1.5", None]),
    "point": ("point", ["'(1.5,-2)'", "NULL"], "VARCHAR", SOURCE),
    "line": ("line", ["'{1,2,3}'"], "VARCHAR", SOURCE),
    "lseg": ("lseg", ["'[(0,0),(1,1)]'"], "VARCHAR", SOURCE),
    "box": ("box", ["'((0,0),(1,1))'"], "VARCHAR", SOURCE),
    "path": ("path", ["'[(0,0),(1,1),(2,0)]'", "'((0,0),(1,1))'"], "VARCHAR", SOURCE),
    "polygon": ("polygon", ["'((0,0),(1,1),(1,0))'"], "VARCHAR", SOURCE),
    "circle": ("circle", ["'<(0,0),1.5>'"], "VARCHAR", SOURCE),
    "tsvector": ("tsvector", ["'a fat cat sat on a mat'", "''", "NULL"], "VARCHAR", SOURCE),
    "tsquery": ("tsquery", ["'fat & (rat | cat)'"], "VARCHAR", SOURCE),
    "hstore": ("hstore", ["'a=>1, b=>NULL, \"ü k\"=>\"v 😀\"'", "''", "NULL"], "VARCHAR", SOURCE),
    "int4range": ("int4range", ["'[1,5)'", "'empty'", "'(,)'", "NULL"], "VARCHAR", SOURCE),
    "tstzrange": ("tstzrange", ["'[2024-01-01,infinity)'"], "VARCHAR", SOURCE),
    "numrange": ("numrange", ["'(1.5,2.5]'"], "VARCHAR", SOURCE),
    "int4multirange": ("int4multirange", ["'{[1,3),[5,7)}'", "'{}'"], "VARCHAR", SOURCE),
    "pg_lsn": ("pg_lsn", ["'16/B374D848'", "'0/0'", "'FFFFFFFF/FFFFFFFF'"], "VARCHAR", SOURCE),
    "xml": ("xml", ["'<a>ü 😀</a>'", "''", "NULL"], "VARCHAR", SOURCE),
    "date": ("date", ["'infinity'", "'-infinity'", "'4713-01-01 BC'", "'5874897-12-31'", "'2024-02-29'", "NULL"],
             "DATE", ["infinity", "-infinity", "4713-01-01 (BC)", "5874897-12-31", "2024-02-29", None]),
    "timestamp": ("timestamp", ["'infinity'", "'-infinity'", "'4713-01-01 00:00:00 BC'",
                                "'294276-12-31 23:59:59.999999'", "'2024-02-29 12:00:00.000001'", "NULL"],
                  "TIMESTAMP", ["infinity", "-infinity", "4713-01-01 (BC) 00:00:00", None,
                                "2024-02-29 12:00:00.000001", None]),
    "timestamptz": ("timestamptz", ["'infinity'", "'-infinity'", "'2024-02-29 12:00:00+02'", "NULL"],
                    "TIMESTAMP WITH TIME ZONE", ["infinity", "-infinity", "2024-02-29 10:00:00+00", None]),
    "numeric_array": ("numeric[]", ["'{1.5,NaN,NULL}'", "'{}'", "NULL"], "DOUBLE[]", ["[1.5, nan, NULL]", "[]", None]),
    "jsonb_array": ("jsonb[]", ["ARRAY['{\"a\": 1}'::jsonb, 'null'::jsonb]"], "VARCHAR[]", ['[\'{"a": 1}\', \'null\']']),
    "bit_array": ("bit(3)[]", ["ARRAY[B'101', B'000']"], "VARCHAR[]", ["[101, 000]"]),
    "timetz_array": ("timetz[]", ["ARRAY['10:00+02'::timetz]"], "VARCHAR[]", ["['10:00:00+02']"]),
    "pair_array": ("pair[]", ["ARRAY[ROW(1, 'x ü')::pair, NULL]"], "VARCHAR", ['[{"a":1,"b":"x ü"},null]']),
    "date_array": ("date[]", ["ARRAY['infinity'::date, '2024-02-29', NULL]"], "DATE[]", ["[infinity, 2024-02-29, NULL]"]),
    "timestamptz_array": ("timestamptz[]", ["ARRAY['-infinity'::timestamptz, '2024-01-01 10:00+02']"],
                          "TIMESTAMP WITH TIME ZONE[]", ["[-infinity, '2024-01-01 08:00:00+00']"]),
    "int_array": ("int[]", ["'{1,NULL,-2147483648}'", "'{}'"], "INTEGER[]", ["[1, NULL, -2147483648]", "[]"]),
    "text_array": ("text[]", ["ARRAY['', 'ü😀', NULL]"], "VARCHAR[]", ["['', ü😀, NULL]"]),
    "pair": ("pair", ["ROW(2, 'y')", "ROW(NULL, NULL)", "NULL"], "VARCHAR",
             ['{"a":2,"b":"y"}', '{"a":null,"b":null}', None]),
    "mood": ("mood", ["'sad'", "'ok 😀'", "NULL"], "VARCHAR", ["sad", "ok 😀", None]),
    "text": ("text", ["''", "'ü😀\\x'", "NULL"], "VARCHAR", ["", "ü😀\\x", None]),
    "char": ("char(3)", ["'a'", "'abc'"], "VARCHAR", ["a  ", "abc"]),
    "oid": ("oid", ["4294967295", "0"], "BIGINT", ["4294967295", "0"]),
    "jsonb": ("jsonb", ["'{\"k\": [1, \"ü\"]}'", "'null'", "NULL"], "VARCHAR", ['{"k": [1, "ü"]}', "null", None]),
    "regnamespace": ("regnamespace", ["'public'"], "VARCHAR", ["public"]),  # not in the table: as text
}

#: run warnings each case must produce (after the full load)
WARNINGS = {
    "varbit": ["v: 1 empty bit strings landed as NULL"],
    "numeric_10_2": ["v: 1 NaN values landed as NULL"],
    "numeric_30_10": ["v: 1 NaN values landed as NULL"],
    "numeric_50_5": ["v: 1 NaN values landed as NULL"],
    "timestamp": ["v: 1 values beyond the workspace's date range landed as NULL"],
    "regnamespace": ["v: type regnamespace is not known to ESG Workbench and landed as text"],
}


def _admin() -> psycopg.Connection:
    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True)


@pytest.fixture(scope="module")
def source_db():
    """One source table per case: id, the value column v, and updated_at for deltas."""
    if not port_open(PG_HOST, PG_PORT):
        service_missing(f"PostgreSQL on {PG_HOST}:{PG_PORT}")
    name = f"esg_types_{uuid.uuid4().hex[:10]}"
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=name, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION hstore; CREATE TYPE pair AS (a int, b text); "
                         "CREATE TYPE mood AS ENUM ('sad', 'ok 😀')")
            for case, (pg_type, literals, _, _) in CASES.items():
                conn.execute(f'CREATE TABLE "t_{case}" (id int PRIMARY KEY, v {pg_type}, '
                             "updated_at timestamptz NOT NULL DEFAULT '2024-01-01')")
                for i, literal in enumerate(literals):
                    conn.execute(f'INSERT INTO "t_{case}" (id, v) VALUES ({i}, {literal})')
        yield name
    finally:
        with _admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _source_text(database: str, case: str) -> list:
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=database) as conn:
        return [r[0] for r in conn.execute(f'SELECT v::text FROM "t_{case}" ORDER BY id')]


def _sync(ws, **kw):
    return SyncEngine(ws, retry_delays=(0.01,)).run(SyncRequest(connector="pg", **kw))


def _landed(ws, raw_table: str) -> tuple[str, list]:
    with ws.read() as conn:
        if ws.is_duckdb:
            type_ = conn.execute(sa.text("SELECT data_type FROM information_schema.columns "
                                         "WHERE table_name = :t AND column_name = 'v'"), {"t": raw_table}).scalar_one()
            values = [r[0] for r in conn.execute(sa.text(f'SELECT CAST(v AS VARCHAR) FROM "{raw_table}" ORDER BY id'))]
        else:
            type_ = conn.execute(sa.text("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                                         "WHERE attrelid = to_regclass(:t) AND attname = 'v'"),
                                 {"t": raw_table}).scalar_one()
            values = [r[0] for r in conn.execute(sa.text(f'SELECT v::text FROM "{raw_table}" ORDER BY id'))]
    return type_, values


@pytest.fixture(scope="module")
def synced(source_db, tmp_path_factory):
    """Full load of every case table, then a delta after touching and adding rows."""
    ws = open_workspace(f"duckdb:///{tmp_path_factory.mktemp('types')}/ws.duckdb")
    operations.add_connector(ws, "pg", "postgres", {
        "host": PG_HOST, "port": PG_PORT, "database": source_db, "username": PG_USER, "schema": "public",
        "cursor_field": "updated_at"})
    full = _sync(ws)
    assert full.status is SyncStatus.SUCCESS, full.error
    after_full = {s.stream.split(".")[-1][2:]: (s.raw_table, _landed(ws, s.raw_table), s.warnings) for s in full.streams}
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=source_db, autocommit=True) as conn:
        for case in CASES:  # every row changes; each value is added again under a new id
            conn.execute(f'UPDATE "t_{case}" SET updated_at = \'2024-02-01\'')
            conn.execute(f'INSERT INTO "t_{case}" (id, v, updated_at) SELECT id + 100, v, \'2024-02-02\' FROM "t_{case}"')
    delta = _sync(ws, load_type="delta")
    assert delta.status is SyncStatus.SUCCESS, delta.error
    after_delta = {s.stream.split(".")[-1][2:]: (_landed(ws, s.raw_table), s.rows_written) for s in delta.streams}
    yield {"full": after_full, "delta": after_delta, "source_db": source_db}
    ws.close()


@pytest.mark.parametrize("case", list(CASES))
def test_type_lands_faithfully_after_full_and_delta(synced, case):
    _, literals, landed_type, expected = CASES[case]
    if expected is SOURCE:
        expected = _source_text(synced["source_db"], case)[: len(literals)]
    _, (type_, values), warnings = synced["full"][case]
    assert type_ == landed_type
    assert values == expected
    for warning in WARNINGS.get(case, []):
        assert warning in warnings
    if case not in WARNINGS:
        assert warnings == []
    (type_, values), rows = synced["delta"][case]
    assert rows == 2 * len(literals)  # every row touched, every value added again
    assert type_ == landed_type
    assert values == expected + expected


def test_the_table_names_every_case_it_is_tested_by():
    """Each entry of the type table has a case here (or is a synonym of one that has)."""
    tested = {CASES[c][0].split("(")[0].split("[")[0] for c in CASES}
    synonyms = {"int2", "int4", "int8", "float4", "float8", "bool", "varchar", "bpchar", "name", "bytea",
                "json", "citext", "xid", "xid8", "cid", "tid", "txid_snapshot", "pg_snapshot", "regclass",
                "regtype", "regproc", "numeric", "char"}
    aliases = {"timestamp": "timestamp", "int": "int4"}
    names = {aliases.get(t, t) for t in tested}
    missing = set(pg_types.PG_TYPES) - names - synonyms
    assert missing == set()


def test_discovery_samples_of_infinite_and_bc_dates(source_db, tmp_path):
    ws = open_workspace(f"duckdb:///{tmp_path}/ws.duckdb")
    try:
        operations.add_connector(ws, "pg", "postgres", {
            "host": PG_HOST, "port": PG_PORT, "database": source_db, "username": PG_USER, "schema": "public"})
        result = operations.discover_connector(ws, "pg", tables=["t_date", "t_timestamp", "t_timestamptz"], sample_rows=10)
        samples = {t.stream.table[2:]: [r["v"] for r in t.sample_rows] for t in result.tables}
        assert samples["date"][:4] == ["infinity", "-infinity", "4713-01-01 BC", "5874897-12-31"]
        assert samples["date"][4] == "2024-02-29"
        assert samples["timestamp"][:4] == ["infinity", "-infinity", "4713-01-01 00:00:00 BC",
                                            "294276-12-31 23:59:59.999999"]
        assert samples["timestamptz"][:2] == ["infinity", "-infinity"]
    finally:
        ws.close()


@pytest.fixture
def pg_workspace_url():
    if not port_open(PG_HOST, PG_PORT):
        service_missing(f"PostgreSQL on {PG_HOST}:{PG_PORT}")
    name = f"esg_types_ws_{uuid.uuid4().hex[:10]}"
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with _admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


PG_WORKSPACE_CASES = {  # case: (landed PostgreSQL type, expected text; None: PostgreSQL's own text of the source)
    "uuid": ("uuid", None), "timetz": ("time with time zone", None), "time": ("time without time zone", None),
    "bit": ("bit varying", None), "money": ("numeric(19,2)", ["-92233720368547758.08", "92233720368547758.07", "0.01", None]),
    "date": ("date", ["infinity", "-infinity", "4713-01-01 BC", "5874897-12-31", "2024-02-29", None]),
    "timestamptz": ("timestamp with time zone", None), "interval": ("interval", None), "inet": ("text", None),
    "int_array": ("jsonb", ["[1, null, -2147483648]", "[]"]), "numeric_10_2": ("numeric(10,2)", [None, "99999999.99", "-99999999.99", "0.00", None]),
}


def test_a_postgresql_workspace_gets_the_same_values(source_db, pg_workspace_url):
    ws = open_workspace(pg_workspace_url)
    try:
        operations.add_connector(ws, "pg", "postgres", {
            "host": PG_HOST, "port": PG_PORT, "database": source_db, "username": PG_USER, "schema": "public"})
        result = _sync(ws, tables=[f"t_{c}" for c in PG_WORKSPACE_CASES])
        assert result.status is SyncStatus.SUCCESS, result.error
        for stream in result.streams:
            case = stream.stream.split(".")[-1][2:]
            landed_type, expected = PG_WORKSPACE_CASES[case]
            source = _source_text(source_db, case)  # (doubled if the delta test ran first)
            expected = source if expected is None else expected * (len(source) // len(expected))
            assert _landed(ws, stream.raw_table) == (landed_type, expected), case
    finally:
        ws.close()


def test_the_readme_lists_every_type_of_the_table():
    from pathlib import Path

    readme = Path(__file__).resolve().parent.parent.joinpath("README.md").read_text()
    section = readme[readme.index("### Source types"):]
    section = section[:section.index("MySQL / MariaDB (read by")]
    assert [t for t in pg_types.PG_TYPES if t not in section] == []


def test_a_uuid_landed_as_bytes_by_an_earlier_version_becomes_a_uuid(pg_conn, pg_spec, workspace_url):
    """Earlier versions landed uuid as its 16 bytes (BLOB): a delta into such a table
    converts the landed values."""
    pg_conn.execute("CREATE TABLE things (id int PRIMARY KEY, u uuid, updated_at timestamptz NOT NULL);"
                    "INSERT INTO things VALUES (1, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-01-01'), "
                    "(2, NULL, '2024-01-01')")
    ws = open_workspace(workspace_url)
    try:
        operations.add_connector(ws, "pg", "postgres", {**pg_spec.options, "cursor_field": "updated_at",
                                                        "load_type": "delta"})
        raw = _sync(ws).streams[0].raw_table
        with ws.transaction() as conn:  # as the earlier version left it
            conn.exec_driver_sql(f'ALTER TABLE "{raw}" ALTER COLUMN u TYPE BLOB USING unhex(replace(CAST(u AS VARCHAR), \'-\', \'\'))')
        pg_conn.execute("INSERT INTO things VALUES (3, 'ffffffff-ffff-ffff-ffff-ffffffffffff', '2024-02-01')")
        result = _sync(ws)
        assert result.status is SyncStatus.SUCCESS, result.error
        with ws.read() as conn:
            assert conn.execute(sa.text("SELECT data_type FROM information_schema.columns WHERE table_name = :t "
                                        "AND column_name = 'u'"), {"t": raw}).scalar_one() == "UUID"
            assert [r[0] for r in conn.execute(sa.text(f'SELECT CAST(u AS VARCHAR) FROM "{raw}" ORDER BY id'))] == [
                "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", None, "ffffffff-ffff-ffff-ffff-ffffffffffff"]
    finally:
        ws.close()


def test_a_shared_workspace_keeps_the_types_through_its_ddl_functions():
    """A row-level secured workspace creates raw tables through functions that accept a
    fixed list of plain types (raw_table_security.RAW_COLUMN_TYPES): uuid, timetz, bit
    strings and lists keep their types there too."""
    from esg_workbench.workspace import organizations
    from tests.pg_shared import shared_database

    with shared_database() as shared:
        with shared.admin() as conn:
            conn.execute("CREATE SCHEMA src; CREATE TABLE src.t (id int PRIMARY KEY, u uuid, tz timetz, b bit(3), "
                         "a int[], d date, m money);"
                         "INSERT INTO src.t VALUES (1, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '10:00+02', B'101', "
                         "'{1,NULL}', 'infinity', 12.5), (2, NULL, NULL, NULL, NULL, NULL, NULL)")
        alice = shared.role("alice")
        organizations.init_postgres(shared.url(alice), shared.admin_url)
        ws = open_workspace(shared.url(alice))
        try:
            assert ws.secured
            operations.add_connector(ws, "src", "postgres", {"host": PG_HOST, "port": PG_PORT, "database": shared.database,
                                                             "username": PG_USER, "schema": "src"})
            result = SyncEngine(ws, retry_delays=(0.01,)).run(SyncRequest(connector="src"))
            assert result.status is SyncStatus.SUCCESS, result.error
            raw = result.streams[0].raw_table
            with ws.read() as conn:
                types = dict(conn.execute(sa.text(
                    "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
                    "to_regclass(:t) AND attnum > 0 AND NOT attisdropped"), {"t": raw}).all())
                rows = conn.execute(sa.text(f"SELECT u, tz, b, a::text, d::text, m FROM {raw} ORDER BY id")).all()
            assert {c: types[c] for c in ("u", "tz", "b", "a", "d", "m")} == {
                "u": "uuid", "tz": "time with time zone", "b": "bit varying", "a": "jsonb", "d": "date",
                "m": "numeric(19,2)"}
            assert [tuple(map(str, r)) for r in rows] == [
                ("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "10:00:00+02:00", "101", "[1, null]", "infinity", "12.50"),
                ("None",) * 6]
        finally:
            ws.close()
