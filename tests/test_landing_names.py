"""Columns that cannot land under their own name, and empty tables (real servers)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from esg_workbench.core.specs import SyncStatus
from esg_workbench.sync import operations
from esg_workbench.sync.engine import SyncEngine, SyncRequest
from esg_workbench.workspace import open_workspace
from esg_workbench.workspace.raw_tables import landing_names


@pytest.fixture
def ws(workspace_url):
    workspace = open_workspace(workspace_url)
    yield workspace
    workspace.close()


def sync(ws, name, **kw):
    return SyncEngine(ws, retry_delays=(0.01,)).run(SyncRequest(connector=name, **kw))


def columns_of(ws, table) -> list[tuple[str, str]]:
    with ws.read() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = :t "
            "AND column_name NOT LIKE '\\_esg\\_%' ESCAPE '\\' ORDER BY ordinal_position"), {"t": table})]


def test_landing_names_are_deterministic_and_never_collide():
    assert landing_names(["id", "val", "VAL", "Val"]) == {"VAL": "VAL_2", "Val": "Val_3"}
    # a generated name never takes another source column's name, wherever it stands
    assert landing_names(["val", "VAL", "val_2"]) == {"VAL": "VAL_3"}
    assert landing_names(["val_2", "val", "VAL"]) == {"VAL": "VAL_3"}
    assert landing_names(["_esg_sync_id", "_ESG_LANDED_AT", "src_esg_landed_at", "_esg_deleted_at",
                          "_esg_organization_id"]) == {
        "_esg_sync_id": "src_esg_sync_id", "_ESG_LANDED_AT": "src_ESG_LANDED_AT_2",
        "_esg_deleted_at": "src_esg_deleted_at", "_esg_organization_id": "src_esg_organization_id"}
    # a connector's own _esg_* columns (a file's name and row) keep theirs
    assert landing_names(["_esg_file", "_esg_row", "_esg_note"]) == {}
    assert landing_names(["id", "kwh"]) == {}


def test_lineage_and_case_alike_names_land_renamed_in_full_and_delta(ws, pg_conn, pg_spec):
    pg_conn.execute("""
        CREATE TABLE clash (id int PRIMARY KEY, val int, "VAL" text, "Val" numeric(6,2), _esg_sync_id text,
                            "_ESG_landed_at" date, updated_at timestamptz NOT NULL);
        INSERT INTO clash VALUES (1, 10, 'ten', 1.5, 'source sync', '2024-01-01', '2024-01-01'),
                                 (2, NULL, NULL, NULL, NULL, NULL, '2024-01-02')""")
    operations.add_connector(ws, "pg", "postgres", {**pg_spec.options, "cursor_field": "updated_at"})
    full = sync(ws, "pg")
    assert full.status is SyncStatus.SUCCESS, full.error
    stream = full.streams[0]
    assert stream.warnings == ["column VAL landed as VAL_2", "column Val landed as Val_3",
                               "column _esg_sync_id landed as src_esg_sync_id",
                               "column _ESG_landed_at landed as src_ESG_landed_at"]
    assert columns_of(ws, stream.raw_table) == [
        ("id", "INTEGER"), ("val", "INTEGER"), ("VAL_2", "VARCHAR"), ("Val_3", "DECIMAL(6,2)"),
        ("src_esg_sync_id", "VARCHAR"), ("src_ESG_landed_at", "DATE"), ("updated_at", "TIMESTAMP WITH TIME ZONE")]
    pg_conn.execute("UPDATE clash SET \"VAL\" = 'changed', _esg_sync_id = 'x', updated_at = '2024-02-01' WHERE id = 2;"
                    "INSERT INTO clash VALUES (3, 30, 'thirty', 3.25, 'y', '2024-03-03', '2024-02-02')")
    delta = sync(ws, "pg", load_type="delta")
    assert delta.status is SyncStatus.SUCCESS, delta.error
    assert delta.streams[0].rows_written == 2
    with ws.read() as conn:
        rows = conn.execute(sa.text(
            f'SELECT id, val, "VAL_2", CAST("Val_3" AS VARCHAR), src_esg_sync_id, CAST("src_ESG_landed_at" AS VARCHAR), '
            f'_esg_sync_id FROM "{stream.raw_table}" ORDER BY id')).all()
    assert [r[:6] for r in rows] == [(1, 10, "ten", "1.50", "source sync", "2024-01-01"),
                                     (2, None, "changed", None, "x", None),
                                     (3, 30, "thirty", "3.25", "y", "2024-03-03")]
    assert [r[6] for r in rows] == [full.run_id, delta.run_id, delta.run_id]  # the lineage is the workspace's own


def test_an_empty_postgres_table_lands_as_an_empty_typed_table(ws, pg_conn, pg_spec):
    pg_conn.execute("CREATE TABLE nothing (id bigint PRIMARY KEY, kwh numeric(10,3), at timestamptz, u uuid)")
    operations.add_connector(ws, "pg", "postgres", pg_spec.options)
    result = sync(ws, "pg")
    assert result.status is SyncStatus.SUCCESS, result.error
    stream = result.streams[0]
    assert (stream.rows_written, stream.chunks_planned, stream.chunks_done) == (0, 1, 1)
    assert columns_of(ws, stream.raw_table) == [
        ("id", "BIGINT"), ("kwh", "DECIMAL(10,3)"), ("at", "TIMESTAMP WITH TIME ZONE"), ("u", "UUID")]
    with ws.read() as conn:
        assert conn.execute(sa.text(f'SELECT count(*) FROM "{stream.raw_table}"')).scalar_one() == 0
    status = operations.connector_status(ws, "pg")
    assert [(s["stream"], s["raw_table"]) for s in status["streams"]] == [("public.nothing", stream.raw_table)]
    # rows arriving later land in the same table
    pg_conn.execute("INSERT INTO nothing VALUES (1, 2.5, '2024-01-01', NULL)")
    assert sync(ws, "pg").streams[0].rows_written == 1


def test_an_empty_mariadb_table_lands_as_an_empty_typed_table(ws, mysql_conn, mysql_spec):
    with mysql_conn.cursor() as cur:
        cur.execute("CREATE TABLE nothing (id BIGINT PRIMARY KEY, kwh DECIMAL(24,4), spent TIME, `_esg_chunk_id` INT)")
    operations.add_connector(ws, "my", "mysql", mysql_spec.options)
    result = sync(ws, "my")
    assert result.status is SyncStatus.SUCCESS, result.error
    stream = result.streams[0]
    assert stream.rows_written == 0
    assert columns_of(ws, stream.raw_table) == [
        ("id", "BIGINT"), ("kwh", "DECIMAL(24,4)"), ("spent", "INTERVAL"), ("src_esg_chunk_id", "INTEGER")]
    assert stream.warnings == ["column _esg_chunk_id landed as src_esg_chunk_id"]
