"""`auto` chunk sizes are whole DuckDB row groups, so a chunk's commit writes its rows
once, compressed, instead of through the write-ahead log and a checkpoint's rewrite
(core/specs.py, DUCKDB_ROW_GROUP_ROWS). What is checked here is the shape, on the real
DuckDB and PostgreSQL: the speed itself is measured in tests/benchmarks."""

from __future__ import annotations

import duckdb
import pytest
import sqlalchemy as sa

from esg_workbench.core.specs import DUCKDB_ROW_GROUP_ROWS
from esg_workbench.sync import operations, planner
from esg_workbench.sync.engine import SyncEngine, SyncRequest
from esg_workbench.workspace import open_workspace


def row_group_sizes(con, table: str) -> list[int]:
    """The rows of each stored row group of a table, in order (after a checkpoint)."""
    rows = con.execute(
        "SELECT row_group_id, max(start + count) - min(start) FROM pragma_storage_info(?) "
        "WHERE column_id = 0 GROUP BY row_group_id ORDER BY row_group_id", [table]).fetchall()
    return [n for _, n in rows]


def test_the_constant_is_duckdbs_row_group(tmp_path):
    # if a DuckDB upgrade changes its row group size, this says so (the chunk sizes follow it)
    con = duckdb.connect(str(tmp_path / "rg.duckdb"))
    try:
        con.execute(f"CREATE TABLE t AS SELECT range AS i FROM range({2 * DUCKDB_ROW_GROUP_ROWS + 5})")
        con.execute("CHECKPOINT")
        assert row_group_sizes(con, "t") == [DUCKDB_ROW_GROUP_ROWS, DUCKDB_ROW_GROUP_ROWS, 5]
    finally:
        con.close()


@pytest.mark.parametrize("rows", [100_000, 1_000_000, 1_000_001, 10_000_000, 10_000_001, 500_000_000])
def test_auto_chunks_of_large_tables_are_whole_row_groups(rows):
    size = planner.auto_sizing(rows).chunk_size
    assert size % DUCKDB_ROW_GROUP_ROWS == 0
    assert size <= 2 * DUCKDB_ROW_GROUP_ROWS  # memory stays bounded by the chunk size


def test_small_tables_keep_small_chunks():
    assert planner.auto_sizing(99_999).chunk_size == 10_000
    assert planner.auto_sizing(0).chunk_size == 10_000


def test_a_full_sync_lands_whole_row_groups_exactly_once(workspace_url, pg_conn, pg_spec):
    rows = 2 * DUCKDB_ROW_GROUP_ROWS + 1_000
    pg_conn.execute("CREATE TABLE readings (id bigint PRIMARY KEY, kwh numeric(12,3), site text)")
    pg_conn.execute(f"INSERT INTO readings SELECT i, i / 8.0, 'SITE-' || (i % 97) FROM generate_series(1, {rows}) i")
    pg_conn.execute("ANALYZE readings")
    ws = open_workspace(workspace_url)
    try:
        operations.add_connector(ws, "pg", "postgres", dict(pg_spec.options))
        result = SyncEngine(ws).run(SyncRequest(connector="pg", tables=["readings"]))
        assert result.status.value == "success", result
        stream = result.streams[0]
        assert stream.chunks_planned == 3 and stream.chunks_done == 3
        raw = stream.raw_table
        with ws.read() as conn:
            landed = conn.execute(sa.text(f'SELECT count(*), count(DISTINCT id), min(id), max(id) FROM "{raw}"')).one()
    finally:
        ws.close()
    assert tuple(landed) == (rows, rows, 1, rows)
    con = duckdb.connect(workspace_url.removeprefix("duckdb:///"), read_only=True)
    try:  # each chunk filled its own row groups: none was split across commits
        assert row_group_sizes(con, raw) == [DUCKDB_ROW_GROUP_ROWS, DUCKDB_ROW_GROUP_ROWS, 1_000]
    finally:
        con.close()
