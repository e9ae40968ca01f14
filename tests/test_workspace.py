"""Opening, creating, upgrading and refusing workspaces."""

from __future__ import annotations

import subprocess
import sys

import pytest
import sqlalchemy as sa

from esg_workbench.core.errors import WorkspaceError, WorkspaceTooNew
from esg_workbench.workspace import database, open_workspace, schema

EXPECTED_TABLES = {
    "connectors", "source_schema_cache", "connector_sync_state", "connector_sync_logs", "connector_sync_chunks",
    "staging_rows", "mappings", "kpi_values", "scheduled_jobs", "esg_ingestion_audit", "workspace_meta",
    "staging_records", "staging_kinds", "staging_values",
}
STAGING_TABLES = ("staging_records", "staging_kinds", "staging_values")


def table_names(ws) -> set[str]:
    with ws.read() as conn:
        return set(conn.execute(sa.text(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")).scalars())


def test_new_duckdb_workspace_has_every_table_and_index(tmp_path):
    ws = open_workspace(str(tmp_path / "w.duckdb"))
    assert EXPECTED_TABLES <= table_names(ws)
    with ws.read() as conn:
        indexes = set(conn.execute(sa.text("SELECT index_name FROM duckdb_indexes()")).scalars())
        assert ws.schema_version(conn) == schema.SCHEMA_VERSION
    # staging_rows' indexes are PostgreSQL-only (see schema.py): DuckDB prunes by zonemaps
    assert "ix_source_schema_cache_connector_table" in indexes
    for table in schema.metadata.sorted_tables:
        assert "organization_id" in table.c or table.name == "workspace_meta"
    with ws.read() as conn:  # staging_rows: a view of the three staging tables, with the table's old columns
        assert list(conn.exec_driver_sql("SELECT * FROM staging_rows LIMIT 0").keys()) == [
            c.name for c in schema.staging_rows.columns]
        assert conn.exec_driver_sql("SELECT table_type FROM information_schema.tables "
                                    "WHERE table_name = 'staging_rows'").scalar() == "VIEW"



def test_duckdb_connections_are_made_as_duckdb_engine_makes_them(tmp_path, monkeypatch):
    # the pool opens them itself (no in-memory database to list DuckDB's settings), with
    # the user agent duckdb_engine gives; relative and absolute paths alike
    import duckdb_engine
    from duckdb_engine.config import get_core_config

    get_core_config.cache_clear()
    monkeypatch.chdir(tmp_path)
    for path in (tmp_path / "w.duckdb", "w2.duckdb"):
        ws = open_workspace(str(path))
        try:
            with ws.read() as conn:
                assert isinstance(conn.connection.dbapi_connection, duckdb_engine.ConnectionWrapper)
                agent, = conn.execute(sa.text("SELECT current_setting('custom_user_agent')")).one()
                assert agent == f"duckdb_engine/{duckdb_engine.__version__}(sqlalchemy/{sa.__version__})"
                database_file = conn.execute(sa.text(
                    "SELECT path FROM duckdb_databases() WHERE database_name = current_database()")).scalar()
        finally:
            ws.close()
        assert database_file == str(tmp_path / path)
    assert get_core_config.cache_info().misses == 0

def test_postgres_workspace(pg_database):
    from tests.conftest import PG_HOST, PG_PORT, PG_USER

    ws = open_workspace(f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{pg_database}")
    try:
        assert ws.kind == "postgresql"
        assert EXPECTED_TABLES <= table_names(ws)
        with ws.read() as conn:
            indexes = set(conn.execute(sa.text("SELECT indexname FROM pg_indexes")).scalars())
        assert {"ix_staging_rows_connector_arrived", "ix_staging_rows_period",
                "ix_source_schema_cache_connector_table"} <= indexes
        assert open_workspace(ws.url.replace("postgresql+psycopg", "postgresql")).kind == "postgresql"  # twice is fine
    finally:
        ws.close()


def test_older_workspace_is_upgraded_in_order(tmp_path, monkeypatch):
    path = str(tmp_path / "w.duckdb")
    open_workspace(path).close()
    steps = []
    monkeypatch.setattr(schema, "SCHEMA_VERSION", schema.SCHEMA_VERSION + 2)
    monkeypatch.setitem(database.MIGRATIONS, schema.SCHEMA_VERSION - 2,
                        lambda conn: (steps.append("a"), conn.exec_driver_sql("CREATE TABLE added_a (x int)")))
    monkeypatch.setitem(database.MIGRATIONS, schema.SCHEMA_VERSION - 1, lambda conn: steps.append("b"))
    ws = open_workspace(path)
    assert steps == ["a", "b"]
    assert "added_a" in table_names(ws)
    with ws.read() as conn:
        assert ws.schema_version(conn) == schema.SCHEMA_VERSION


def test_newer_workspace_is_refused_plainly(tmp_path):
    path = str(tmp_path / "w.duckdb")
    ws = open_workspace(path)
    with ws.transaction() as conn:
        conn.execute(sa.update(schema.workspace_meta).where(schema.workspace_meta.c.key == "schema_version")
                     .values(value="999"))
    ws.close()
    with pytest.raises(WorkspaceTooNew) as err:
        open_workspace(path)
    assert "newer ESG Workbench" in err.value.message and "Update" in err.value.hint


def test_workspace_locked_by_another_process_says_so(tmp_path):
    path = tmp_path / "w.duckdb"
    open_workspace(str(path)).close()
    holder = subprocess.Popen([sys.executable, "-c",
                               f"import duckdb, sys, time; c = duckdb.connect({str(path)!r}); print('open', flush=True); time.sleep(30)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(WorkspaceError) as err:
            open_workspace(str(path))
        assert "open in another ESG Workbench process" in err.value.message
    finally:
        holder.kill()
        holder.wait()


def test_broken_file_and_bad_url_are_explained(tmp_path):
    broken = tmp_path / "broken.duckdb"
    broken.write_bytes(b"this is not a database" * 100)
    with pytest.raises(WorkspaceError) as err:
        open_workspace(str(broken))
    assert err.value.message.startswith("Cannot open the workspace")
    with pytest.raises(WorkspaceError):
        open_workspace("mysql://somewhere/db")


def test_runs_left_running_by_a_dead_process_are_marked_interrupted(tmp_path):
    from esg_workbench.workspace import sync_records

    path = str(tmp_path / "w.duckdb")
    ws = open_workspace(path)
    with ws.transaction() as conn:
        run_id = sync_records.start_run(ws, conn, "c1", "full", "sync")
    ws.close()  # the process "dies" with the run still running
    ws = open_workspace(path)
    with ws.read() as conn:
        run = sync_records.runs(ws, conn, "c1")[0]
    assert (run["id"], run["status"]) == (run_id, "failed")
    assert run["error"].startswith("Interrupted")


def test_postgres_keeps_runs_whose_process_lives(pg_database):
    from esg_workbench.workspace import concurrency, sync_records
    from tests.conftest import PG_HOST, PG_PORT, PG_USER

    url = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{pg_database}"
    ws = open_workspace(url)
    with ws.transaction() as conn:
        sync_records.start_run(ws, conn, "alive", "full", "sync")
        sync_records.start_run(ws, conn, "dead", "full", "sync")
    with concurrency.connector_sync_lock(ws, "alive") as held:  # the live sync's process holds its lock
        assert held
        other = open_workspace(url)
        with other.read() as conn:
            status = {r["connector_id"]: r["status"] for r in sync_records.runs(other, conn)}
        other.close()
    ws.close()
    assert status == {"alive": "running", "dead": "failed"}


V2_SCHEDULE_COLUMNS = ("timezone", "last_status", "last_message", "last_run_id")


def _downgrade_to_v1(ws) -> None:
    """Turn a fresh workspace into what version 1 of the app made."""
    with ws.transaction() as conn:
        for column in V2_SCHEDULE_COLUMNS:
            conn.exec_driver_sql(f"ALTER TABLE scheduled_jobs DROP COLUMN {column}")
        conn.exec_driver_sql("ALTER TABLE workspace_meta DROP COLUMN organization_id")
        conn.exec_driver_sql("DROP TABLE organizations")
        conn.execute(sa.update(schema.workspace_meta).where(schema.workspace_meta.c.key == "schema_version")
                     .values(value="1"))


def _columns(ws, table: str) -> list[str]:
    with ws.read() as conn:  # (DuckDB's SQLAlchemy inspector cannot list columns)
        return sorted(conn.exec_driver_sql(f"SELECT * FROM {table} LIMIT 0").keys())


@pytest.mark.parametrize("kind", ["duckdb", "postgresql"])
def test_version_1_workspace_upgrades_to_the_current_tables(kind, tmp_path, request):
    if kind == "duckdb":
        url = str(tmp_path / "v1.duckdb")
    else:
        from tests.conftest import PG_HOST, PG_PORT, PG_USER

        url = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{request.getfixturevalue('pg_database')}"
    ws = open_workspace(url)
    fresh_columns = _columns(ws, "scheduled_jobs")
    fresh_meta_columns = _columns(ws, "workspace_meta")
    _downgrade_to_v1(ws)
    ws.close()
    ws = open_workspace(url)
    try:
        with ws.read() as conn:
            assert ws.schema_version(conn) == schema.SCHEMA_VERSION
        assert _columns(ws, "scheduled_jobs") == fresh_columns
        assert set(V2_SCHEDULE_COLUMNS) <= set(fresh_columns)
        assert _columns(ws, "workspace_meta") == fresh_meta_columns == ["key", "organization_id", "value"]
        assert _columns(ws, "organizations") == ["created_at", "name", "organization_id"]
        with ws.transaction() as conn:  # organization_id defaults server-side, as in a new workspace
            conn.exec_driver_sql("INSERT INTO kpi_lineage (kpi_value_id, staging_row_id) VALUES (1, 2)")
            assert conn.exec_driver_sql("SELECT organization_id FROM kpi_lineage").scalar() == "default"
    finally:
        ws.close()


@pytest.mark.parametrize("kind", ["duckdb", "postgresql"])
def test_version_3_staging_rows_table_becomes_records_kinds_and_values(kind, tmp_path, request):
    """Until version 5 staging_rows was a table, and DuckDB's had a primary key until version
    4 (an ART index every apply maintained row by row). A version-3 workspace's rows move
    into staging_records, staging_kinds and staging_values, keeping their ids, and read back
    unchanged through the staging_rows view; the specification's indexes are on
    staging_records (PostgreSQL), and no primary key is left in DuckDB."""
    import datetime as dt

    from esg_workbench.workspace.migrations import (STEPS_3_TO_4, STEPS_4_TO_5, drop_duckdb_staging_primary_key,
                                                    split_staging_rows)

    assert drop_duckdb_staging_primary_key in STEPS_3_TO_4 and split_staging_rows in STEPS_4_TO_5
    if kind == "duckdb":
        url = str(tmp_path / "v3.duckdb")
    else:
        from tests.conftest import PG_HOST, PG_PORT, PG_USER

        url = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{request.getfixturevalue('pg_database')}"
    ws = open_workspace(url)
    fresh = {name: _columns(ws, name) for name in ("staging_rows", *STAGING_TABLES)}
    record = dict(organization_id="default", connector_id="c1", source_table="readings", sync_id=3, mapping_id=1,
                  mapping_name="m", mapping_version=2, entity="electricity", period="2026-01",
                  activity_date=dt.date(2026, 1, 5), site="S1", category="grid", subcategory=None, attributes=None,
                  value="1000", unit="kWh", arrived_at=dt.datetime(2026, 2, 1, 12, 0))
    nothing = dict(scope=None, method=None, factor_set=None, factor_id=None, factor_value=None, factor_unit=None)
    energy = dict(nothing, field="energy", normalized_unit="MWh")
    rows = [  # two source rows: one with its energy and CO2e rows, one without a value
        dict(record, **energy, id=7, source_key="k1", normalized_value=1.0, quality=None),
        dict(record, id=8, source_key="k1", field="ghg_co2e", scope="scope2", method="location",
             normalized_value=0.2, normalized_unit="tCO2e", factor_set="desnz@2024", factor_id="F1", factor_value=0.2,
             factor_unit="kg CO2e per kWh", quality="factor_vintage"),
        dict(record, **energy, id=9, source_key="k2", value=None, normalized_value=None, quality="missing_value")]
    rows = [{c.name: r[c.name] for c in schema.staging_rows.columns} for r in rows]

    def keyed(table: str) -> int:
        with ws.read() as conn:
            if ws.is_duckdb:
                return conn.exec_driver_sql("SELECT count(*) FROM duckdb_constraints() WHERE table_name = "
                                            f"'{table}' AND constraint_type = 'PRIMARY KEY'").scalar()
            return conn.exec_driver_sql("SELECT count(*) FROM pg_constraint WHERE conrelid = "
                                        f"'{table}'::regclass AND contype = 'p'").scalar()

    assert [keyed(t) for t in ("staging_records", "staging_values")] == ([0, 0] if kind == "duckdb" else [1, 1])
    with ws.transaction() as conn:  # what version 3 had: a table (keyed; on PostgreSQL indexed too), with rows
        conn.exec_driver_sql("DROP VIEW staging_rows")
        for table in STAGING_TABLES:
            conn.exec_driver_sql(f"DROP TABLE {table}")
        ddl = str(sa.schema.CreateTable(schema.staging_rows).compile(conn)).rstrip()
        if ws.is_duckdb:
            assert ddl.endswith(")") and "PRIMARY KEY" not in ddl
            ddl = ddl[:-1].rstrip() + ", PRIMARY KEY (id))"
        conn.exec_driver_sql(ddl)
        if not ws.is_duckdb:
            conn.exec_driver_sql("CREATE INDEX ix_staging_rows_connector_arrived ON staging_rows (connector_id, arrived_at)")
            conn.exec_driver_sql("CREATE INDEX ix_staging_rows_period ON staging_rows (period)")
        conn.execute(sa.insert(schema.staging_rows), rows)
        conn.execute(sa.update(schema.workspace_meta).where(schema.workspace_meta.c.key == "schema_version")
                     .values(value="3"))
    assert keyed("staging_rows") == 1
    ws.close()
    ws = open_workspace(url)
    try:
        with ws.read() as conn:
            assert ws.schema_version(conn) == schema.SCHEMA_VERSION
            assert [dict(r._mapping) for r in conn.execute(
                sa.select(schema.staging_rows).order_by(schema.staging_rows.c.id))] == rows
            # rows of one source row share their record; rows of one field, unit and factor their kind
            assert [conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar() for t in STAGING_TABLES] == [2, 2, 3]
            assert conn.exec_driver_sql("SELECT nextval('staging_records_id_seq')").scalar() > 2
            if not ws.is_duckdb:
                indexed = dict(conn.exec_driver_sql("SELECT indexname, tablename FROM pg_indexes").all())
                assert indexed["ix_staging_rows_connector_arrived"] == indexed["ix_staging_rows_period"] == \
                    "staging_records"
        assert {name: _columns(ws, name) for name in ("staging_rows", *STAGING_TABLES)} == fresh
        assert [keyed(t) for t in ("staging_records", "staging_values")] == ([0, 0] if kind == "duckdb" else [1, 1])
    finally:
        ws.close()
