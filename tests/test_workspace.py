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
}


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
def test_version_3_duckdb_workspace_loses_the_staging_primary_key(kind, tmp_path, request):
    """DuckDB's staging_rows has no primary key (an ART index every apply maintained row by
    row): a version-3 workspace's table is rebuilt without it, rows kept. PostgreSQL keeps it."""
    from esg_workbench.workspace.migrations import STEPS_3_TO_4, drop_duckdb_staging_primary_key

    assert drop_duckdb_staging_primary_key in STEPS_3_TO_4
    if kind == "duckdb":
        url = str(tmp_path / "v3.duckdb")
    else:
        from tests.conftest import PG_HOST, PG_PORT, PG_USER

        url = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{request.getfixturevalue('pg_database')}"
    ws = open_workspace(url)
    fresh = _columns(ws, "staging_rows")
    row = ("'default', 'c1', 'readings', 'k1', 'energy', TIMESTAMP '2026-01-01 00:00:00'")
    names = "organization_id, connector_id, source_table, source_key, field, arrived_at"

    def keyed() -> int:
        with ws.read() as conn:
            if ws.is_duckdb:
                return conn.exec_driver_sql("SELECT count(*) FROM duckdb_constraints() WHERE table_name = "
                                            "'staging_rows' AND constraint_type = 'PRIMARY KEY'").scalar()
            return conn.exec_driver_sql("SELECT count(*) FROM pg_constraint WHERE conrelid = "
                                        "'staging_rows'::regclass AND contype = 'p'").scalar()

    assert keyed() == (0 if kind == "duckdb" else 1)
    with ws.transaction() as conn:  # what version 3 had: a keyed table, with rows
        if ws.is_duckdb:
            ddl = str(sa.schema.CreateTable(schema.staging_rows).compile(conn)).rstrip()
            assert ddl.endswith(")") and "PRIMARY KEY" not in ddl
            conn.exec_driver_sql("DROP TABLE staging_rows")
            conn.exec_driver_sql(ddl[:-1].rstrip() + ", PRIMARY KEY (id))")
        conn.exec_driver_sql(f"INSERT INTO staging_rows (id, {names}) VALUES (7, {row}), (8, {row})")
        conn.execute(sa.update(schema.workspace_meta).where(schema.workspace_meta.c.key == "schema_version")
                     .values(value="3"))
    assert keyed() == 1
    ws.close()
    ws = open_workspace(url)
    try:
        with ws.read() as conn:
            assert ws.schema_version(conn) == schema.SCHEMA_VERSION
            assert conn.exec_driver_sql("SELECT id, source_key FROM staging_rows ORDER BY id").all() == [
                (7, "k1"), (8, "k1")]
        assert _columns(ws, "staging_rows") == fresh
        assert keyed() == (0 if kind == "duckdb" else 1)
    finally:
        ws.close()
