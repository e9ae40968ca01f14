"""Discovery against PostgreSQL: keys, estimates, lazy samples, drift, permissions, scale."""

from __future__ import annotations

import time

import pytest

from esg_workbench.core.errors import DatabaseMissing, PermissionDenied
from esg_workbench.sync import operations
from esg_workbench.workspace import open_workspace, schema_cache


@pytest.fixture
def ws(workspace_url):
    workspace = open_workspace(workspace_url)
    yield workspace
    workspace.close()


def test_columns_keys_estimates_and_samples(ws, pg_conn, pg_spec):
    pg_conn.execute("""
        CREATE TABLE sites (code text, region text, PRIMARY KEY (code, region));
        CREATE TABLE meters (id bigint PRIMARY KEY, site_code text NOT NULL, site_region text NOT NULL,
            installed date, factor numeric(8,4), active boolean, seen timestamptz, doc jsonb, raw bytea,
            FOREIGN KEY (site_code, site_region) REFERENCES sites);
        INSERT INTO sites VALUES ('A', 'north'), ('B', 'south');
        INSERT INTO meters SELECT g, 'A', 'north', '2024-01-01', g / 7.0, g % 2 = 0, now(), '{"k": [1, 2]}',
            '\\x00ff' FROM generate_series(1, 500) g;
        INSERT INTO meters VALUES (501, 'B', 'south', NULL, NULL, NULL, NULL, NULL, NULL);
        ANALYZE;
    """)
    operations.add_connector(ws, "pg", "postgres", pg_spec.options)
    result = operations.discover_connector(ws, "pg")
    meters = {t.stream.table: t for t in result.tables}["meters"]
    assert meters.primary_key == ["id"]
    assert [(c.name, c.family, c.nullable) for c in meters.columns] == [
        ("id", "integer", False), ("site_code", "text", False), ("site_region", "text", False),
        ("installed", "date", True), ("factor", "decimal", True), ("active", "boolean", True),
        ("seen", "timestamptz", True), ("doc", "json", True), ("raw", "binary", True)]
    assert meters.column("factor").type == "NUMERIC(8, 4)"
    fk = meters.foreign_keys[0]
    assert (fk.columns, fk.referred_table, fk.referred_columns) == (("site_code", "site_region"), "sites", ("code", "region"))
    assert meters.row_estimate == 501
    assert meters.sample_rows is None  # samples are lazy

    rows = operations.load_samples(ws, "pg", "meters", limit=100)
    assert len(rows) == 100
    odd = operations.load_samples(ws, "pg", "meters", limit=501)[-1]
    assert odd == {"id": 501, "site_code": "B", "site_region": "south", "installed": None, "factor": None,
                   "active": None, "seen": None, "doc": None, "raw": None}
    assert rows[0]["raw"] == "0x00ff" and rows[0]["doc"] == {"k": [1, 2]} and rows[0]["factor"] == "0.1429"
    with ws.read() as conn:
        cached = schema_cache.load(ws, conn, operations.get_connector(ws, "pg").id)
    assert {t.stream.table: len(t.sample_rows or []) for t in cached} == {"meters": 501, "sites": 0}


def test_rediscovery_reports_drift(ws, pg_conn, pg_spec):
    pg_conn.execute("CREATE TABLE a (id int PRIMARY KEY, qty int, note text); CREATE TABLE b (id int PRIMARY KEY)")
    operations.add_connector(ws, "pg", "postgres", pg_spec.options)
    assert operations.discover_connector(ws, "pg").drift == {}
    pg_conn.execute("ALTER TABLE a ADD COLUMN unit text; ALTER TABLE a DROP COLUMN note;"
                    "ALTER TABLE a ALTER COLUMN qty TYPE bigint; DROP TABLE b")
    drift = operations.discover_connector(ws, "pg").drift
    assert drift["public.a"].added == ("unit",) and drift["public.a"].dropped == ("note",)
    assert drift["public.a"].retyped == (("qty", "INTEGER", "BIGINT"),)
    assert drift["public.b"].dropped == ("id",)  # the whole table is gone


def test_two_thousand_tables_without_loading_samples(ws, pg_conn, pg_spec):
    pg_conn.execute("DO $$ BEGIN FOR i IN 1..2000 LOOP "
                    "EXECUTE format('CREATE TABLE t%s (id int PRIMARY KEY, v text, ts timestamptz)', i); END LOOP; END $$")
    operations.add_connector(ws, "pg", "postgres", pg_spec.options)
    started = time.monotonic()
    result = operations.discover_connector(ws, "pg", sample_rows=100)
    seconds = time.monotonic() - started
    assert len(result.tables) == 2000
    assert all(t.sample_rows is None for t in result.tables)  # too many tables to sample up front
    print(f"discovered 2,000 tables in {seconds:.1f} s")
    assert operations.load_samples(ws, "pg", "t1999") == []


def test_missing_schema_and_missing_permission(ws, pg_conn, pg_spec, pg_database):
    pg_conn.execute("CREATE SCHEMA private; CREATE TABLE private.secret (id int); REVOKE ALL ON SCHEMA private FROM PUBLIC")
    operations.add_connector(ws, "noschema", "postgres", {**pg_spec.options, "schema": "nope"})
    with pytest.raises(DatabaseMissing) as err:
        operations.validate_connector(ws, "noschema")
    assert "schema 'nope' does not exist" in err.value.message
    operations.add_connector(ws, "noperm", "postgres",
                             {**pg_spec.options, "schema": "private", "username": "esg_noperm_user"})
    try:
        with pytest.raises(PermissionDenied) as err:
            operations.validate_connector(ws, "noperm")
    except Exception:
        import psycopg

        with psycopg.connect(host=pg_spec.options["host"], user="postgres", dbname=pg_database) as c:
            if not c.execute("SELECT 1 FROM pg_roles WHERE rolname = 'esg_noperm_user'").fetchone():
                from tests.conftest import service_missing

                service_missing("the esg_noperm_user role (run scripts/setup-test-servers.sh)")
        raise
    assert "esg_noperm_user" in err.value.message and "GRANT" in err.value.hint or "grant" in err.value.hint.lower()


def test_random_samples_of_a_large_table(ws, pg_conn, pg_spec):
    """TABLESAMPLE SYSTEM picks pages without a scan; the rows kept are shuffled."""
    pg_conn.execute("CREATE TABLE big (id int PRIMARY KEY, v text);"
                    "INSERT INTO big SELECT g, 'v' || g FROM generate_series(1, 50000) g; ANALYZE big")
    operations.add_connector(ws, "pg", "postgres", pg_spec.options)
    first = operations.discover_connector(ws, "pg", tables=["big"], sample_rows=40).tables[0].sample_rows
    assert [r["id"] for r in first] == list(range(1, 41))  # the first rows, as before
    one = operations.load_samples(ws, "pg", "big", limit=40, mode="random")
    two = operations.load_samples(ws, "pg", "big", limit=40, mode="random")
    for rows in (one, two):
        assert len(rows) == 40 and all(r["v"] == f"v{r['id']}" for r in rows)  # whole rows of the table
        assert len({r["id"] for r in rows}) == 40
        assert max(r["id"] for r in rows) > 40  # not the first rows
    assert {r["id"] for r in one} != {r["id"] for r in two}  # drawn afresh
    from esg_workbench.connectors.registry import create_connector

    connector = create_connector(pg_spec)
    try:
        t = connector.table_clause(connector.list_streams()[0], ["id", "v"])
        sql = str(connector.random_sample_query(t, ["id", "v"], 40, 50000).compile(
            dialect=connector.literal_dialect, compile_kwargs={"literal_binds": True}))
        pages = pg_conn.execute("SELECT relpages FROM pg_class WHERE relname = 'big'").fetchone()[0]
        assert f"TABLESAMPLE system({round(2000 / pages, 4)})" in sql and "ORDER BY random()" in sql
        small = str(connector.random_sample_query(t, ["id", "v"], 40, 500).compile(dialect=connector.literal_dialect))
        assert "TABLESAMPLE" not in small  # a small table is shuffled whole
    finally:
        connector.close()
    by_discovery = operations.discover_connector(ws, "pg", tables=["big"], sample_rows=25, sample_mode="random")
    assert len(by_discovery.tables[0].sample_rows) == 25


def test_random_sample_mode_on_the_command_line_and_bad_modes(ws, workspace_url, pg_conn, pg_spec, tmp_path):
    import json
    import os
    import subprocess
    import sys

    from esg_workbench.core.errors import ConfigError

    pg_conn.execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 300)")
    operations.add_connector(ws, "pg", "postgres", pg_spec.options)
    with pytest.raises(ConfigError) as err:
        operations.load_samples(ws, "pg", "t", mode="shuffled")
    assert "first or random" in err.value.message
    ws.close()
    proc = subprocess.run([sys.executable, "-m", "esg_workbench", "--workspace", workspace_url.removeprefix("duckdb:///"),
                           "connector", "discover", "pg", "--table", "t", "--sample-rows", "30", "--sample-mode",
                           "random", "--json"], capture_output=True, text=True, env=dict(os.environ), timeout=120)
    assert proc.returncode == 0, proc.stderr
    ids = [r["id"] for r in json.loads(proc.stdout)["tables"][0]["sample_rows"]]
    assert len(set(ids)) == 30 and ids != list(range(1, 31))


def test_random_samples_where_the_source_offers_none(tmp_path, workspace_url):
    from esg_workbench.core.errors import ConfigError

    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "a.csv").write_text("id,v\n1,x\n2,y\n")
    workspace = open_workspace(workspace_url)
    try:
        operations.add_connector(workspace, "files", "files", {"path": str(folder)})
        operations.discover_connector(workspace, "files")
        table = operations.discover_connector(workspace, "files").tables[0].stream.qualified
        with pytest.raises(ConfigError) as err:
            operations.load_samples(workspace, "files", table, mode="random")
        assert "not available for files sources" in err.value.message
        assert len(operations.load_samples(workspace, "files", table)) == 2  # the first rows still work
    finally:
        workspace.close()


def test_discovery_names_types_sqlalchemy_does_not_know(ws, pg_conn, pg_spec):
    pg_conn.execute("CREATE TYPE pair AS (a int, b text);"
                    "CREATE TABLE odd (id int PRIMARY KEY, p point, x xml, l pg_lsn, c pair, cs pair[], "
                    "i inet, m money, o oid)")
    operations.add_connector(ws, "pg", "postgres", pg_spec.options)
    columns = {c.name: (c.type, c.family) for c in operations.discover_connector(ws, "pg").tables[0].columns}
    assert columns == {"id": ("INTEGER", "integer"), "p": ("point", "text"), "x": ("xml", "text"),
                       "l": ("pg_lsn", "text"), "c": ("pair", "json"), "cs": ("pair[]", "json"),
                       "i": ("INET", "text"), "m": ("MONEY", "decimal"), "o": ("OID", "integer")}
