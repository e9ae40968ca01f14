"""PostgreSQL tables without a primary key are read in chunks of heap pages (ctid ranges):
the chunk size is honoured, and a cancelled load resumes exactly once."""

from __future__ import annotations

from collections import Counter

import pytest
import sqlalchemy as sa

from esg_workbench.core.specs import ChunkRange, ReadScope, StreamRef, SyncStatus
from esg_workbench.connectors.registry import create_connector
from esg_workbench.sync import operations
from esg_workbench.sync.engine import SyncEngine, SyncRequest
from esg_workbench.workspace import open_workspace, sync_records

#: duplicates on purpose: rows of a keyless table need not differ
SOURCE = """CREATE TABLE heap (site text, kwh numeric(10,2), at date);
INSERT INTO heap SELECT 'S' || (g % 13), (g % 100) / 4.0, DATE '2024-01-01' + (g % 300) FROM generate_series(1, 6000) g;
INSERT INTO heap SELECT 'dup', 1, DATE '2024-01-01' FROM generate_series(1, 500);"""


@pytest.fixture
def ws(workspace_url):
    workspace = open_workspace(workspace_url)
    yield workspace
    workspace.close()


def landed(ws, raw_table) -> Counter:
    with ws.read() as conn:
        return Counter(tuple(r) for r in conn.execute(sa.text(f'SELECT site, kwh, "at" FROM "{raw_table}"')))


def source(pg_conn) -> Counter:
    return Counter(tuple(r) for r in pg_conn.execute("SELECT site, kwh, at FROM heap"))


def test_page_ranges_cover_the_table_once(pg_conn, pg_spec):
    pg_conn.execute(SOURCE)
    connector = create_connector(pg_spec)
    try:
        stream = StreamRef("public", "heap")
        scope = ReadScope(("site", "kwh", "at"), ())
        chunks = connector.keyless_chunks(stream, scope, 6500, 1000)
        assert len(chunks) >= 5 and chunks[0].lower is None and chunks[-1].upper is None
        assert all(a.upper == b.lower for a, b in zip(chunks, chunks[1:]))  # contiguous, no overlap
        per_chunk = [sum(b.num_rows for b in connector.read(stream, scope, c)) for c in chunks]
        assert sum(per_chunk) == 6500 and max(per_chunk) <= 1500
        assert "ctid >= '(" in connector.read_sql(stream, scope, chunks[1])
        # one chunk when the table is small
        assert connector.keyless_chunks(stream, scope, 6500, 10_000) == [ChunkRange()]
    finally:
        connector.close()


def test_chunk_size_is_honoured_and_the_table_lands_whole(ws, pg_conn, pg_spec):
    pg_conn.execute(SOURCE)
    operations.add_connector(ws, "pg", "postgres", {**pg_spec.options, "chunk_size": 1000})
    result = SyncEngine(ws, retry_delays=(0.01,)).run(SyncRequest(connector="pg"))
    assert result.status is SyncStatus.SUCCESS, result.error
    stream = result.streams[0]
    assert stream.chunks_planned >= 5 and stream.rows_written == 6500
    assert landed(ws, stream.raw_table) == source(pg_conn)


def test_a_cancelled_keyless_load_resumes_exactly_once(ws, pg_conn, pg_spec):
    pg_conn.execute(SOURCE)
    operations.add_connector(ws, "pg", "postgres", {**pg_spec.options, "chunk_size": 1000})
    engine = SyncEngine(ws, retry_delays=(0.01,))

    def cancel_after_two(event):
        if event.chunks_done >= 2:
            engine.cancel.cancel()

    engine.on_progress = cancel_after_two
    first = engine.run(SyncRequest(connector="pg"))
    assert first.status is SyncStatus.CANCELLED
    with ws.read() as conn:
        ledger = sync_records.ledger(conn, first.run_id)
    done = [c for c in ledger if c.status == "done"]
    assert 2 <= len(done) < len(ledger)
    resumed = SyncEngine(ws, retry_delays=(0.01,)).run(SyncRequest(connector="pg", resume=True))
    assert resumed.status is SyncStatus.SUCCESS, resumed.error
    assert resumed.streams[0].rows_written == 6500 - sum(c.rows_written for c in done)
    assert landed(ws, resumed.streams[0].raw_table) == source(pg_conn)  # no row lost, none twice
