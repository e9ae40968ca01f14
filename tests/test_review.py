"""Failed chunks as a review queue (issue 16): a real partial sync from PostgreSQL through
a proxy that is cut mid-sync, on DuckDB and PostgreSQL workspaces; list, ignore with a
reason (audited, still incomplete), retry a selection, and bad input refused."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from tests.conftest import PG_HOST, PG_PORT, PG_USER
from fault_proxy import FaultProxy

from esg_workbench.audit import chain
from esg_workbench.core.errors import ConfigError, NotFound
from esg_workbench.sync import operations, review
from esg_workbench.sync.engine import SyncEngine, SyncRequest
from esg_workbench.workspace import open_workspace
from esg_workbench.workspace.schema import connector_sync_chunks

FAST = (0.01, 0.02)


@pytest.fixture(params=["duckdb", "postgres"])
def ws(request, tmp_path, pg_database):
    url = str(tmp_path / "ws.duckdb") if request.param == "duckdb" else \
        f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{pg_database}"
    workspace = open_workspace(url)
    yield workspace
    workspace.close()


@pytest.fixture
def partial(ws, pg_database, pg_conn):
    """A delta sync of 300 rows in chunks of 50 whose source went away after two chunks:
    four failed chunks; the proxy is back afterwards."""
    pg_conn.execute("""
        CREATE SCHEMA src;
        CREATE TABLE src.readings (id bigint PRIMARY KEY, kwh numeric(10,2), updated_at timestamptz NOT NULL);
        INSERT INTO src.readings SELECT g, g * 1.5, '2024-01-01'::timestamptz + g * interval '1 hour'
        FROM generate_series(1, 300) g;
    """)
    with FaultProxy((PG_HOST, PG_PORT)) as proxy:
        operations.add_connector(ws, "erp", "postgres", {
            "host": PG_HOST, "port": proxy.port, "database": pg_database, "username": PG_USER, "schema": "src",
            "cursor_field": "updated_at", "chunk_size": 50, "load_type": "delta"})

        def cut_after_two(event):
            if event.chunks_done >= 2 and not proxy.is_cut:
                proxy.cut()

        result = SyncEngine(ws, retry_delays=FAST, on_progress=cut_after_two).run(SyncRequest("erp"))
        assert result.status.value == "partial_success", result.error
        proxy.restore()
        yield result


def landed(ws) -> int:
    with ws.read() as conn:
        return conn.exec_driver_sql("SELECT count(*) FROM " + _raw_table(ws)).scalar()


def _raw_table(ws) -> str:
    with ws.read() as conn:
        return conn.execute(sa.select(connector_sync_chunks.c.target_table).limit(1)).scalar()


def test_failed_chunks_are_listed_ignored_with_a_reason_and_retried_by_selection(ws, partial):
    failed = review.list_failed(ws)
    n = len(failed)  # the reader runs one chunk ahead: the cut fails the last three or four
    assert n >= 2 and n == partial.streams[0].chunks_failed
    first = failed[-1]
    assert first.connector == "erp" and first.stream.endswith("readings")
    assert first.attempts == 3 and first.error and first.retryable
    assert first.first_failed_at is not None and first.first_failed_at <= first.last_failed_at
    assert first.range_text.startswith("[") and first.review_status is None
    assert review.counts(ws) == {"unreviewed": n, "ignored": 0}

    ignored, to_retry, *rest = sorted(failed, key=lambda c: c.id)
    [marked] = review.ignore(ws, [ignored.id], "  the meter was offline that week  ")
    assert marked.ignored and marked.review_reason == "the meter was offline that week" and marked.reviewed_by
    assert {c.id for c in review.list_failed(ws, unreviewed_only=True)} == {to_retry.id, *(c.id for c in rest)}
    [entry] = [e for e in chain.entries(ws) if e["action"] == "chunk.ignore"]
    assert json.loads(entry["metadata"])["reason"] == "the meter was offline that week"
    assert chain.verify(ws).ok
    gaps = review.incomplete_ranges(ws)
    assert [(g.chunk_id, g.ignored) for g in gaps] == [(c.id, c.id == ignored.id) for c in sorted(failed, key=lambda c: c.id)]
    assert gaps[0].reason == "the meter was offline that week" and gaps[0].lower is not None

    before = landed(ws)
    [result] = review.retry(ws, [to_retry.id], retry_delays=FAST)
    # the run lands the chosen chunk; it stays partial_success while others of the plan are failed
    assert result.status.value == "partial_success" and result.rows_written > 0
    assert landed(ws) == before + result.rows_written
    left = {c.id for c in review.list_failed(ws)}
    assert to_retry.id not in left and ignored.id in left and len(left) == n - 1

    # an ignored chunk still counts as missing until it lands; then it leaves the list
    [last] = review.retry(ws, [c.id for c in review.list_failed(ws)], retry_delays=FAST)
    assert last.status.value == "success"
    assert review.list_failed(ws) == [] and review.incomplete_ranges(ws) == []
    assert landed(ws) == 300
    with ws.read() as conn:  # the review stays on the ledger row as its history
        reason = conn.execute(sa.select(connector_sync_chunks.c.review_reason)
                              .where(connector_sync_chunks.c.id == ignored.id)).scalar()
    assert reason == "the meter was offline that week"


def test_bad_review_input_is_refused_and_changes_nothing(ws, partial):
    failed = review.list_failed(ws)
    with pytest.raises(ConfigError, match="needs a reason"):
        review.ignore(ws, [failed[0].id], "   ")
    with pytest.raises(NotFound, match="No failed chunk with id 999999"):
        review.ignore(ws, [failed[0].id, 999999], "why not")
    with pytest.raises(ConfigError, match="No chunk was chosen"):
        review.retry(ws, [])
    with pytest.raises(ConfigError, match="at most"):
        review.ignore(ws, [failed[0].id], "x" * 3000)
    assert review.counts(ws) == {"unreviewed": len(failed), "ignored": 0}
    assert not [e for e in chain.entries(ws) if e["action"].startswith("chunk.")]
    review.ignore(ws, [failed[0].id], "known gap")
    [back] = review.reopen(ws, [failed[0].id])
    assert back.review_status is None and review.counts(ws)["unreviewed"] == len(failed)


def test_a_chunk_of_a_replaced_plan_cannot_be_retried_alone(ws, partial):
    failed = review.list_failed(ws)
    with ws.transaction() as conn:  # a later plan of the stream (as a new full load would make)
        conn.execute(sa.text("UPDATE connector_sync_state SET active_sync_id = active_sync_id + 1000"))
    assert not any(c.retryable for c in review.list_failed(ws))
    with pytest.raises(ConfigError, match="a later sync of its table replaced"):
        review.retry(ws, [failed[0].id], retry_delays=FAST)
    assert len(review.list_failed(ws)) == len(failed)
