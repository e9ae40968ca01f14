"""The schema step of issue 16 (migrations.add_scheduling_review_rotation) turns a
workspace without its columns and tables into one equal to a new workspace, on DuckDB and
PostgreSQL. The step is run on its own, so the test holds whatever other steps version 3
gains."""

from __future__ import annotations

import pytest

from esg_workbench.workspace import open_workspace, schema
from esg_workbench.workspace.migrations import STEPS_2_TO_3, add_scheduling_review_rotation
from tests.conftest import PG_HOST, PG_PORT, PG_USER

ADDED_COLUMNS = {
    "scheduled_jobs": ["priority", "depends_on", "dependency_window_minutes", "dependency_accepts_partial",
                       "retry_attempts", "retry_backoff_seconds", "retry_attempt", "retry_due_at",
                       "retry_first_run_id"],
    "connector_sync_logs": ["retry_of", "attempt"],
    "connector_sync_chunks": ["first_failed_at", "review_status", "review_reason", "reviewed_by", "reviewed_at"],
}
ADDED_TABLES = ["sync_slots", "organization_settings", "connector_secrets"]


def _shape(ws) -> dict[str, list[tuple[str, str]]]:
    """Column names and types of every table the step touches."""
    with ws.read() as conn:
        if ws.is_duckdb:
            sql = ("SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
                   "WHERE table_name = ANY(?) ORDER BY table_name, column_name")
            rows = conn.exec_driver_sql(sql, ([*ADDED_COLUMNS, *ADDED_TABLES],)).all()
        else:
            sql = ("SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
                   "WHERE table_schema = current_schema() AND table_name = ANY(%(t)s) "
                   "ORDER BY table_name, column_name")
            rows = conn.exec_driver_sql(sql, {"t": [*ADDED_COLUMNS, *ADDED_TABLES]}).all()
    shape: dict[str, list[tuple[str, str]]] = {}
    for table, column, data_type, nullable in rows:
        shape.setdefault(table, []).append((column, data_type, nullable))
    return shape


@pytest.mark.parametrize("kind", ["duckdb", "postgresql"])
def test_the_step_makes_a_workspace_equal_to_a_new_one(kind, tmp_path, request):
    url = str(tmp_path / "w.duckdb") if kind == "duckdb" else \
        f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{request.getfixturevalue('pg_database')}"
    assert add_scheduling_review_rotation in STEPS_2_TO_3
    ws = open_workspace(url)
    try:
        fresh = _shape(ws)
        assert set(ADDED_TABLES) <= set(fresh)
        indexes = [i for t in ADDED_COLUMNS for i in schema.metadata.tables[t].indexes]
        with ws.transaction() as conn:  # back to the tables of before the step
            for table in ADDED_TABLES:
                conn.exec_driver_sql(f"DROP TABLE {table}")
            for index in indexes:  # DuckDB drops no column of an indexed table
                index.drop(conn)
            for table, columns in ADDED_COLUMNS.items():
                for column in columns:
                    conn.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN {column}")
            for index in indexes:
                index.create(conn)
        assert not set(ADDED_TABLES) & set(_shape(ws))
        with ws.transaction() as conn:
            add_scheduling_review_rotation(conn)
        assert _shape(ws) == fresh
        with ws.transaction() as conn:  # a second run changes nothing (the step is idempotent)
            add_scheduling_review_rotation(conn)
        assert _shape(ws) == fresh
    finally:
        ws.close()
